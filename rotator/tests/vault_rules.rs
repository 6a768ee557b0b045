//! The vault's rules of rotation, without a database: the agent's steps are
//! reported directly through the SDK. What no reader may see, who may claim
//! and report (each denial audited with its reason), leases, graces and
//! schedules on the injectable clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::sync::Arc;

use kit::*;
use signet_client::api::*;
use signet_client::sdk::Client;
use signet_vault::store::Webhook;

const APP: &str = "db";
const ADMIN: &str = "db-admin";

fn target() -> RotationTarget {
    RotationTarget {
        host: "db.invalid".into(),
        port: 5432,
        role: "app".into(),
        database: Some("app".into()),
    }
}

struct Setup {
    vault: TestVault,
    agent: Client,
    reader: Client,
    rotation: RotationView,
}

async fn setup(grace: u64, interval: Option<u64>) -> Setup {
    let vault = start_vault().await;
    vault.credential(APP, "app_first", "first-password-1").await;
    vault
        .credential(ADMIN, "signet_admin", "admin-password-1")
        .await;
    let agent = vault.machine("rotator", &[]).await;
    let reader = vault.machine("app", &[APP]).await;
    let rotation = vault
        .admin
        .create_rotation(&CreateRotation {
            project: PROJECT.into(),
            secret: APP.into(),
            provider: Provider::Postgresql,
            target: target(),
            admin_secret: ADMIN.into(),
            agent_machine_id: agent.identity().id.clone().unwrap(),
            interval_seconds: interval,
            policy: PasswordPolicy {
                length: 24,
                alphabet: Alphabet::Symbols,
            },
            lease_seconds: Some(30),
            grace_seconds: Some(grace),
        })
        .await
        .unwrap();
    Setup {
        vault,
        agent,
        reader,
        rotation,
    }
}

fn report(outcome: Outcome) -> RotationReport {
    RotationReport {
        outcome,
        detail: None,
    }
}

/// A webhook subscribed to `rotation`, written straight into the store (the
/// route would resolve and refuse a loopback destination).
fn webhook(vault: &TestVault) -> String {
    let id = "wh_rotation_test".to_owned();
    let hook = Webhook {
        id: id.clone(),
        url: "https://hooks.invalid/rotation".into(),
        events: vec!["rotation".into()],
        sealed_secret: vec![0; 40],
        created_at: 0,
        created_by: "test".into(),
    };
    vault
        .vault
        .with_tx(|tx, _| Ok(tx.insert_webhook(&hook)?))
        .unwrap();
    id
}

fn deliveries(vault: &TestVault, id: &str) -> Vec<serde_json::Value> {
    let id = id.to_owned();
    vault
        .vault
        .with_tx(move |tx, _| Ok(tx.deliveries(&id)?))
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str(&d.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_pending_credential_is_served_to_no_reader_and_only_to_the_claiming_agent() {
    let s = setup(0, None).await;
    let (before, _) = {
        let list = s
            .reader
            .changes(None, std::time::Duration::ZERO)
            .await
            .unwrap();
        (list.token.clone(), list)
    };
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();

    // Reads, explicit versions, grant lists, change lists and metadata all
    // keep showing version 1 only.
    assert_eq!(read_credential(&s.reader, APP).await.0, 1);
    let explicit = s
        .reader
        .read_secret(PROJECT, APP, Some(2))
        .await
        .unwrap_err();
    assert_eq!(explicit.code(), Some("not_found"));
    let grants = s.reader.grants().await.unwrap();
    assert_eq!(grants.grants[0].version, Some(1));
    let after = s
        .reader
        .changes(None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(after.token, before);
    let meta = s.vault.admin.secret_meta(PROJECT, APP).await.unwrap();
    assert_eq!(meta.versions.len(), 1);

    // The agent receives it, and the admin credential, with its claim.
    let claim = s.agent.claim_rotation().await.unwrap().unwrap();
    assert_eq!(claim.step, Step::Apply);
    assert_eq!(claim.admin["password"], "admin-password-1");
    assert_eq!(claim.old["username"], "app_first");
    let new_password = claim.new["password"].clone();
    assert_eq!(new_password.len(), 24);
    assert!(claim.new["username"].starts_with("app_"));
    // Claimed, not confirmed: still invisible.
    assert_eq!(read_credential(&s.reader, APP).await.0, 1);
    // Nowhere in the history, the config list or the audit log.
    let history = serde_json::to_string(&s.vault.jobs(&s.rotation.id).await).unwrap();
    let configs = serde_json::to_string(&s.vault.admin.rotations().await.unwrap()).unwrap();
    for text in [history, configs, s.vault.audit_text().await] {
        assert!(!text.contains(&new_password));
        assert!(!text.contains("admin-password-1"));
    }
    // Confirmed: live at once, and the changes route says so.
    let job = s
        .agent
        .report_rotation(&claim.job_id, &report(Outcome::Confirmed))
        .await
        .unwrap();
    assert_eq!((job.state, job.to_version), (JobState::Promoted, Some(2)));
    let (version, _, password) = read_credential(&s.reader, APP).await;
    assert_eq!((version, password), (2, new_password));
    let changed = s
        .reader
        .changes(Some(&before), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_ne!(changed.token, before);
}

#[tokio::test]
async fn only_the_configs_agent_may_claim_or_report_and_each_denial_is_audited() {
    let s = setup(0, None).await;
    let job = s
        .vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();

    // A machine that is no config's agent.
    let refused = s.reader.claim_rotation().await.unwrap_err();
    assert_eq!(refused.code(), Some("forbidden"));
    let refused = s
        .reader
        .report_rotation(&job.id, &report(Outcome::Confirmed))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("forbidden"));
    // The agent of another config finds nothing of this one.
    s.vault
        .credential("other", "other_first", "other-password-1")
        .await;
    let other_agent = s.vault.machine("rotator2", &[]).await;
    s.vault
        .admin
        .create_rotation(&CreateRotation {
            project: PROJECT.into(),
            secret: "other".into(),
            provider: Provider::Redis,
            target: RotationTarget {
                host: "cache.invalid".into(),
                port: 6379,
                role: "other_first".into(),
                database: None,
            },
            admin_secret: ADMIN.into(),
            agent_machine_id: other_agent.identity().id.clone().unwrap(),
            interval_seconds: None,
            policy: PasswordPolicy::default(),
            lease_seconds: None,
            grace_seconds: None,
        })
        .await
        .unwrap();
    assert!(other_agent.claim_rotation().await.unwrap().is_none());
    let refused = other_agent
        .report_rotation(&job.id, &report(Outcome::Confirmed))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("forbidden"));
    assert_eq!(s.vault.live(APP).await, 1);
    assert_eq!(
        s.vault.jobs(&s.rotation.id).await[0].state,
        JobState::Pending
    );

    let audit = s.vault.admin.audit(0, 5000).await.unwrap();
    let denied: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.action.starts_with("rotation.") && e.outcome == "deny")
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(denied[0].contains("rotation agent of no rotation config"));
    assert!(denied[1].contains("not the rotation agent of"));
    assert!(denied[2].contains("not the rotation agent of"));
}

#[tokio::test]
async fn a_lease_that_runs_out_fails_the_job_and_keeps_the_live_value() {
    let s = setup(0, None).await;
    let hook = webhook(&s.vault);
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let claim = s.agent.claim_rotation().await.unwrap().unwrap();
    s.vault.clock.advance(31);
    let late = s
        .agent
        .report_rotation(&claim.job_id, &report(Outcome::Confirmed))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some("conflict"));
    let job = &s.vault.jobs(&s.rotation.id).await[0];
    assert_eq!(job.state, JobState::Failed);
    assert!(job.reason.as_deref().unwrap().contains("lease ran out"));
    assert_eq!(s.vault.live(APP).await, 1);
    let events = deliveries(&s.vault, &hook);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["state"], "failed");
    assert!(!events[0].to_string().contains(&claim.new["password"]));

    // Without any report, the background sweep fails it the same way.
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    s.agent.claim_rotation().await.unwrap().unwrap();
    s.vault.clock.advance(29);
    let inner = Arc::clone(&s.vault.vault);
    assert_eq!(inner.sweep_rotations().unwrap(), 0);
    assert_eq!(
        s.vault.jobs(&s.rotation.id).await[0].state,
        JobState::Claimed
    );
    s.vault.clock.advance(1);
    inner.sweep_rotations().unwrap();
    assert_eq!(
        s.vault.jobs(&s.rotation.id).await[0].state,
        JobState::Failed
    );
    assert_eq!(deliveries(&s.vault, &hook).len(), 2);
    let audit = s.vault.audit_text().await;
    assert_eq!(audit.matches("rotation.fail").count(), 2);
}

#[tokio::test]
async fn a_failure_report_discards_the_credential_and_fires_the_event() {
    let s = setup(0, None).await;
    let hook = webhook(&s.vault);
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let claim = s.agent.claim_rotation().await.unwrap().unwrap();
    let job = s
        .agent
        .report_rotation(
            &claim.job_id,
            &RotationReport {
                outcome: Outcome::VerifyFailed,
                detail: Some("password authentication failed\nfor user x".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.reason.as_deref(),
        Some("verify failed: password authentication failedfor user x")
    );
    assert_eq!(s.vault.live(APP).await, 1);
    assert_eq!(deliveries(&s.vault, &hook)[0]["data"]["state"], "failed");
    // The job is over: a second report is refused, and the next rotation may start.
    let again = s
        .agent
        .report_rotation(&claim.job_id, &report(Outcome::Confirmed))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("conflict"));
    assert_eq!(s.vault.live(APP).await, 1);
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_old_credential_is_offered_for_retirement_only_after_the_grace() {
    let s = setup(20, None).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let claim = s.agent.claim_rotation().await.unwrap().unwrap();
    s.agent
        .report_rotation(&claim.job_id, &report(Outcome::Confirmed))
        .await
        .unwrap();
    assert!(s.agent.claim_rotation().await.unwrap().is_none());
    s.vault.clock.advance(19);
    assert!(s.agent.claim_rotation().await.unwrap().is_none());
    s.vault.clock.advance(1);
    let retire = s.agent.claim_rotation().await.unwrap().unwrap();
    assert_eq!(retire.step, Step::Retire);
    assert_eq!(retire.old["username"], "app_first");
    assert_eq!(retire.new["password"], claim.new["password"]);
    let job = s
        .agent
        .report_rotation(&retire.job_id, &report(Outcome::Retired))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Retired);
    // Nothing runs any more: a new rotation may start.
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schedule_starts_a_job_when_due_and_never_a_second_one() {
    let s = setup(0, Some(60)).await;
    let inner = Arc::clone(&s.vault.vault);
    assert_eq!(inner.sweep_rotations().unwrap(), 0);
    s.vault.clock.advance(60);
    assert_eq!(inner.sweep_rotations().unwrap(), 1);
    let jobs = s.vault.jobs(&s.rotation.id).await;
    assert_eq!((jobs.len(), jobs[0].created_by.as_str()), (1, "schedule"));
    // Due again while the first still runs: not started.
    s.vault.clock.advance(60);
    assert_eq!(inner.sweep_rotations().unwrap(), 0);
    assert_eq!(s.vault.jobs(&s.rotation.id).await.len(), 1);
}

#[tokio::test]
async fn a_config_is_refused_when_the_admin_credential_is_anyone_elses() {
    let vault = start_vault().await;
    vault.credential(APP, "app_first", "first-password-1").await;
    vault
        .credential(ADMIN, "signet_admin", "admin-password-1")
        .await;
    let agent = vault.machine("rotator", &[]).await;
    let _leak = vault.machine("app", &[ADMIN]).await;
    let body = CreateRotation {
        project: PROJECT.into(),
        secret: APP.into(),
        provider: Provider::Postgresql,
        target: target(),
        admin_secret: ADMIN.into(),
        agent_machine_id: agent.identity().id.clone().unwrap(),
        interval_seconds: None,
        policy: PasswordPolicy::default(),
        lease_seconds: None,
        grace_seconds: None,
    };
    let refused = vault.admin.create_rotation(&body).await.unwrap_err();
    assert_eq!(refused.code(), Some("conflict"));
    // A plain secret has no username and password to rotate.
    vault
        .admin
        .write_secret(
            PROJECT,
            "plain",
            &WriteSecret {
                value: Some("x".into()),
                fields: None,
            },
        )
        .await
        .unwrap();
    let refused = vault
        .admin
        .create_rotation(&CreateRotation {
            secret: "plain".into(),
            ..body.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("invalid_request"));
    // An identifier that would need quoting.
    let mut bad = body;
    bad.target.role = "app\"; DROP".into();
    let refused = vault.admin.create_rotation(&bad).await.unwrap_err();
    assert_eq!(refused.code(), Some("invalid_request"));
}

#[tokio::test]
async fn the_admin_credential_cannot_be_granted_to_anyone_else_later() {
    let s = setup(0, None).await;
    let reader_id = s.reader.identity().id.clone().unwrap();
    let body: CreateGrant = serde_json::from_value(serde_json::json!({
        "machine_id": reader_id,
        "project": PROJECT,
        "secret": ADMIN,
    }))
    .unwrap();
    let refused = s.vault.admin.create_grant(&body).await.unwrap_err();
    assert_eq!(refused.code(), Some("conflict"));
    // The agent itself may hold it.
    let agent_id = s.agent.identity().id.clone().unwrap();
    let body: CreateGrant = serde_json::from_value(serde_json::json!({
        "machine_id": agent_id,
        "project": PROJECT,
        "secret": ADMIN,
    }))
    .unwrap();
    s.vault.admin.create_grant(&body).await.unwrap();
}

#[tokio::test]
async fn a_secret_written_during_the_rotation_fails_it_instead_of_being_overwritten() {
    let s = setup(0, None).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let claim = s.agent.claim_rotation().await.unwrap().unwrap();
    s.vault
        .credential(APP, "app_manual", "manual-password-1")
        .await;
    let refused = s
        .agent
        .report_rotation(&claim.job_id, &report(Outcome::Confirmed))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("conflict"));
    let job = &s.vault.jobs(&s.rotation.id).await[0];
    assert_eq!(job.state, JobState::Failed);
    let (version, user, _) = read_credential(&s.reader, APP).await;
    assert_eq!((version, user.as_str()), (2, "app_manual"));
}
