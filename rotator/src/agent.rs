//! One pass of the agent: claim, do the step with the claim's provider,
//! report. Nothing here logs or reports a credential.

use signet_client::api::{Outcome, Provider, RotationClaim, RotationJobView, RotationReport, Step};
use signet_client::sdk::Client;

use crate::provider::{self, Credential, Database};

/// Why a pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the vault did not answer as expected")]
    Vault(#[from] signet_client::sdk::Error),
}

/// What one pass did.
#[derive(Debug)]
pub struct Pass {
    pub step: Step,
    pub outcome: Outcome,
    /// The vault's view of the job after the report.
    pub job: RotationJobView,
}

/// Claims one job, does it and reports; `None` when there was nothing to do.
pub async fn run_once(client: &Client) -> Result<Option<Pass>, Error> {
    let Some(claim) = client.claim_rotation().await? else {
        return Ok(None);
    };
    let target = &claim.target;
    let (outcome, detail) = match claim.provider {
        Provider::Postgresql => match provider::postgres::Postgres::new(target) {
            Ok(db) => step(&db, &claim).await,
            Err(e) => failed(&claim, &e),
        },
        Provider::Redis => match provider::redis::Redis::new(target) {
            Ok(db) => step(&db, &claim).await,
            Err(e) => failed(&claim, &e),
        },
        Provider::Mysql => match provider::mysql::Mysql::new(target) {
            Ok(db) => step(&db, &claim).await,
            Err(e) => failed(&claim, &e),
        },
    };
    tracing::info!(job = %claim.job_id, step = ?claim.step, outcome = ?outcome, "rotation step done");
    let job = client
        .report_rotation(&claim.job_id, &RotationReport { outcome, detail })
        .await?;
    Ok(Some(Pass {
        step: claim.step,
        outcome,
        job,
    }))
}

fn failure_of(step: Step) -> Outcome {
    match step {
        Step::Apply => Outcome::ApplyFailed,
        Step::Retire => Outcome::RetireFailed,
    }
}

fn failed(claim: &RotationClaim, error: &provider::Error) -> (Outcome, Option<String>) {
    (
        failure_of(claim.step),
        Some(scrub(&error.to_string(), claim)),
    )
}

/// Does the claimed step with `db`.
pub async fn step<D: Database>(db: &D, claim: &RotationClaim) -> (Outcome, Option<String>) {
    let (Some(admin), Some(new)) = (credential(&claim.admin), credential(&claim.new)) else {
        return (
            failure_of(claim.step),
            Some("the claim lacks a username or password".into()),
        );
    };
    match claim.step {
        Step::Apply => {
            if let Err(e) = db.create(admin, new).await {
                return failed(claim, &e);
            }
            match db.verify(new).await {
                Ok(()) => (Outcome::Confirmed, None),
                Err(e) => {
                    let mut detail = scrub(&e.to_string(), claim);
                    if let Err(undo) = db.undo(admin, new).await {
                        detail.push_str(&format!(
                            "; removing it again failed: {}",
                            scrub(&undo.to_string(), claim)
                        ));
                    }
                    (Outcome::VerifyFailed, Some(detail))
                }
            }
        }
        Step::Retire => {
            let Some(old) = credential(&claim.old) else {
                return (
                    Outcome::RetireFailed,
                    Some("the claim lacks the previous credential".into()),
                );
            };
            match db.retire(admin, old, new).await {
                Ok(()) => (Outcome::Retired, None),
                Err(e) => failed(claim, &e),
            }
        }
    }
}

fn credential(fields: &std::collections::BTreeMap<String, String>) -> Option<Credential<'_>> {
    Some(Credential {
        username: fields.get("username")?,
        password: fields.get("password")?,
    })
}

/// `text` without any of the claim's passwords.
fn scrub(text: &str, claim: &RotationClaim) -> String {
    let mut text = text.to_owned();
    for fields in [&claim.admin, &claim.new, &claim.old] {
        if let Some(password) = fields.get("password").filter(|p| !p.is_empty()) {
            text = text.replace(password.as_str(), "[redacted]");
        }
    }
    text
}
