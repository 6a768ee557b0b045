//! Rotation with proof (docs/rotation.md). A job's new credential is made
//! here, sealed under the root key in the job's row, where no read, grant
//! list or change list looks; only the config's agent machine receives it,
//! when it claims the job. The agent creates it in the database, proves it
//! with a fresh connection and confirms; only then does it become the
//! secret's live version. Any failure (reported, or a lease that ran out)
//! discards it and leaves the live version as it was. After the grace, the
//! agent retires the previous credential.
//!
//! At most one job of a secret runs (pending, claimed or promoted and not
//! yet retired): a unique index enforces it inside the transaction, so two
//! triggers racing in one batch cannot both start one.

use std::collections::BTreeMap;

use rand::Rng as _;
use signet_client::api::{
    Alphabet, CreateRotation, ErrorCode, JobState, Outcome, PasswordPolicy, Provider,
    RotationClaim, RotationJobList, RotationJobView, RotationList, RotationReport, RotationTarget,
    RotationView, Step,
};
use zeroize::Zeroizing;

use super::secrets::{self, Fields};
use crate::audit::{self, Record};
use crate::clock::rfc3339;
use crate::crypto::RootKey;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::outbox;
use crate::page::{CreatedKey, Page};
use crate::request::Ctx;
use crate::store::{Grantee, Project, Read, RotationConfig, RotationJob, Secret, Tx};

/// The id prefixes of configs and jobs.
pub const CONFIG: &str = "rot_";
pub const JOB: &str = "rj_";

/// The fields a rotated credential (and the admin credential) must have.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

/// Who starts a scheduled job (the audit actor and the job's `created_by`).
const SCHEDULE: &str = "schedule";
/// Most jobs a history answer lists.
const HISTORY_MAX: u32 = 100;
/// Longest report detail kept.
const DETAIL_MAX: usize = 300;
/// When a retire step failed, how long before it is offered again.
const RETIRE_RETRY: i64 = 60;
/// A role (and database) name: safe unquoted in SQL and in a Redis ACL.
const ROLE_MAX: usize = 20;
/// Random characters after `<role>_` in a PostgreSQL or MariaDB user name.
const USER_SUFFIX: usize = 10;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const SYMBOLS: &[u8] = b"-_.~+=^!*";

/// `POST /v1/rotations` (admins).
pub fn create(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<RotationView> {
    let body: CreateRotation = ctx.json()?;
    ctx.audit.target = format!("secret:{}/{}", body.project, body.secret);
    check_target(body.provider, &body.target)?;
    check_policy(&body.policy)?;
    let interval = bounded("interval_seconds", body.interval_seconds, 60..=31_536_000)?;
    let lease = bounded("lease_seconds", body.lease_seconds, 30..=3600)?.unwrap_or(300);
    let grace = bounded("grace_seconds", body.grace_seconds, 0..=86_400)?.unwrap_or(60);
    let project = secrets::project(tx, &body.project)?;
    let secret = secrets::secret(tx, &project, &body.secret)?;
    let admin_secret = secrets::secret(tx, &project, &body.admin_secret)?;
    if admin_secret.id == secret.id {
        return Err(invalid(
            "the admin credential must be another secret than the rotated one",
        ));
    }
    for (what, s) in [("rotated", &secret), ("admin", &admin_secret)] {
        let fields = secrets::version_fields(tx, ctx.root, &project, &s.id, s.live_version)?;
        if !fields.is_some_and(|f| f.0.contains_key(USERNAME) && f.0.contains_key(PASSWORD)) {
            return Err(invalid(format!(
                "the {what} secret {}/{} must be structured, with `username` and `password` fields",
                project.name, s.name
            )));
        }
    }
    let agent = tx
        .machine(&body.agent_machine_id)?
        .filter(|m| m.project_id == project.id)
        .ok_or_else(|| {
            not_found(format!(
                "machine {} in project {}",
                body.agent_machine_id, project.name
            ))
        })?;
    // The admin credential is the agent's alone: it reaches the agent with
    // each claim, and no grant may hand it to anyone else.
    let others = tx.grants(None)?.into_iter().any(|g| {
        g.grant.secret_id == admin_secret.id
            && g.grant.grantee != Grantee::Machine(agent.id.clone())
    });
    if others {
        return Err(Error::denied(
            ErrorCode::Conflict,
            format!(
                "{}/{} is granted to other machines or tokens; an admin credential may only be the rotation agent's",
                project.name, admin_secret.name
            ),
        ));
    }
    let config = RotationConfig {
        id: ids::new(CONFIG),
        secret_id: secret.id.clone(),
        provider: body.provider,
        target: body.target,
        admin_secret_id: admin_secret.id.clone(),
        agent_machine_id: agent.id,
        interval_seconds: interval,
        next_due_at: interval.map(|i| ctx.now.saturating_add(i)),
        policy: body.policy,
        lease_seconds: lease,
        grace_seconds: grace,
        created_at: ctx.now,
        created_by: ctx.caller.id(),
    };
    tx.insert_rotation(&config)?;
    ctx.audit.target = format!(
        "rotation:{} secret:{}/{}",
        config.id, project.name, secret.name
    );
    Ok(view(&config, project.name, secret.name, admin_secret.name))
}

/// Refuses a grant on a rotation's admin credential to anyone but that
/// rotation's agent machine.
pub fn check_admin_grant(tx: &mut dyn Tx, secret_id: &str, grantee: &Grantee) -> Result<()> {
    let held = tx.rotations()?.into_iter().find(|c| {
        c.admin_secret_id == secret_id && *grantee != Grantee::Machine(c.agent_machine_id.clone())
    });
    match held {
        Some(config) => Err(Error::denied(
            ErrorCode::Conflict,
            format!(
                "this secret is the admin credential of rotation {}: only its agent machine may hold a grant on it",
                config.id
            ),
        )),
        None => Ok(()),
    }
}

/// `GET /v1/rotations` (admins).
pub fn list(r: &mut dyn Read, page: &Page<CreatedKey>) -> Result<RotationList> {
    let (listed, next_cursor) = page.finish(r.rotations_page(page)?, |l| {
        (l.config.created_at, l.config.id.clone())
    });
    Ok(RotationList {
        rotations: listed
            .into_iter()
            .map(|l| view(&l.config, l.project, l.secret, l.admin_secret))
            .collect(),
        next_cursor,
    })
}

/// `GET /v1/rotations/{id}/jobs` (admins): newest first.
pub fn history(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<RotationJobList> {
    ctx.audit.target = format!("rotation:{id}");
    let config = config(tx, id)?;
    expire_leases(tx, ctx.root, ctx.now)?;
    Ok(RotationJobList {
        jobs: tx
            .rotation_jobs(&config.id, HISTORY_MAX)?
            .iter()
            .map(job_view)
            .collect(),
    })
}

/// `POST /v1/rotations/{id}/trigger` (admins): a new job, unless one of
/// the secret runs (`409 conflict`).
pub fn trigger(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<RotationJobView> {
    ctx.audit.target = format!("rotation:{id}");
    let config = config(tx, id)?;
    expire_leases(tx, ctx.root, ctx.now)?;
    let job = start(tx, ctx.root, &config, ctx.now, &ctx.caller.id())?;
    ctx.audit.target = format!("rotation:{id} job:{}", job.id);
    Ok(job_view(&job))
}

/// `POST /v1/machine/rotations/claim` (the agent machine): the oldest job
/// it may work on, or `None`. A machine that is no config's agent is refused.
pub fn claim(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<Option<RotationClaim>> {
    let machine = ctx.caller.machine()?.clone();
    ctx.audit.target = "rotations".into();
    if !tx
        .rotations()?
        .iter()
        .any(|c| c.agent_machine_id == machine.id)
    {
        return Err(Error::denied(
            ErrorCode::Forbidden,
            "this machine is the rotation agent of no rotation config",
        ));
    }
    expire_leases(tx, ctx.root, ctx.now)?;
    let Some(mut job) = tx.rotation_job_to_claim(&machine.id, ctx.now)? else {
        return Ok(None);
    };
    let config = config(tx, &job.config_id)?;
    let (project, secret) = secret_of(tx, &job.secret_id)?;
    let admin = tx
        .secret(&config.admin_secret_id)?
        .ok_or_else(|| not_found("the admin credential's secret"))?;
    let admin = fields(tx, ctx.root, &project, &admin.id, admin.live_version)?;
    let lease_until = ctx.now.saturating_add(config.lease_seconds);
    let (step, new, old) = match job.state {
        JobState::Pending => {
            job.state = JobState::Claimed;
            let sealed = job
                .sealed_credential
                .as_deref()
                .ok_or_else(|| corrupt("a pending job without its credential"))?;
            let new = open_pending(ctx.root, &job.id, sealed)?;
            let old = fields(tx, ctx.root, &project, &secret.id, job.from_version)?;
            (Step::Apply, new, old)
        }
        JobState::Promoted => {
            let to = job
                .to_version
                .ok_or_else(|| corrupt("a promoted job without its version"))?;
            let new = fields(tx, ctx.root, &project, &secret.id, to)?;
            let old = fields(tx, ctx.root, &project, &secret.id, job.from_version)?;
            (Step::Retire, new, old)
        }
        _ => return Err(corrupt("a finished job offered to claim")),
    };
    job.lease_until = Some(lease_until);
    tx.update_rotation_job(&job)?;
    ctx.audit.target = format!(
        "rotation:{} job:{} {}",
        config.id,
        job.id,
        match step {
            Step::Apply => "apply",
            Step::Retire => "retire",
        }
    );
    let mut claim = RotationClaim {
        job_id: job.id.clone(),
        rotation_id: config.id.clone(),
        step,
        provider: config.provider,
        target: config.target.clone(),
        admin: BTreeMap::new(),
        new: BTreeMap::new(),
        old: BTreeMap::new(),
        lease_until: rfc3339(lease_until),
    };
    // Moved, not cloned: the zeroizing wrappers are left empty.
    for (from, to) in [
        (admin, &mut claim.admin),
        (new, &mut claim.new),
        (old, &mut claim.old),
    ] {
        let mut from = from;
        *to = std::mem::take(&mut from.0);
    }
    Ok(Some(claim))
}

/// `POST /v1/machine/rotations/{job}/report` (the job's agent).
pub fn report(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, job_id: &str) -> Result<RotationJobView> {
    ctx.audit.target = format!("rotation job:{job_id}");
    let body: RotationReport = ctx.json()?;
    let detail = body.detail.as_deref().map(clean_detail).unwrap_or_default();
    let machine_id = ctx.caller.machine()?.id.clone();
    let mut job = tx
        .rotation_job(job_id)?
        .ok_or_else(|| not_found(format!("rotation job {job_id}")))?;
    let config = config(tx, &job.config_id)?;
    ctx.audit.target =
        format!("rotation:{} job:{job_id} {:?}", config.id, body.outcome).to_lowercase();
    if config.agent_machine_id != machine_id {
        return Err(Error::denied(
            ErrorCode::Forbidden,
            format!("this machine is not the rotation agent of {}", config.id),
        ));
    }
    let leased = job.lease_until.is_some_and(|until| until > ctx.now);
    match (job.state, body.outcome) {
        (JobState::Claimed, _) if !leased => {
            // Commit the failure with the refusal: the job is over.
            fail(
                tx,
                ctx.root,
                ctx.now,
                &mut job,
                "the agent's lease ran out before it reported",
            )?;
            ctx.commit_denial = true;
            Err(Error::denied(
                ErrorCode::Conflict,
                "the lease of this job ran out: it failed and its credential was discarded",
            ))
        }
        (JobState::Claimed, Outcome::Confirmed)
            if secret_of(tx, &job.secret_id)?.1.live_version != job.from_version =>
        {
            // Someone wrote the secret meanwhile: promoting would undo that
            // write, and retiring would remove a credential that is not the
            // live one.
            fail(
                tx,
                ctx.root,
                ctx.now,
                &mut job,
                "the secret was written during the rotation",
            )?;
            ctx.commit_denial = true;
            Err(Error::denied(
                ErrorCode::Conflict,
                "the secret was written during the rotation: it failed and its credential was discarded",
            ))
        }
        (JobState::Claimed, Outcome::Confirmed) => {
            let sealed = job
                .sealed_credential
                .take()
                .ok_or_else(|| corrupt("a claimed job without its credential"))?;
            let new = open_pending(ctx.root, &job.id, &sealed)?;
            let (project, secret) = secret_of(tx, &job.secret_id)?;
            let version = secrets::promote_fields(
                tx,
                ctx.root,
                (&project, &secret),
                new,
                (ctx.now, &format!("rotation:{}", config.id)),
            )?;
            job.state = JobState::Promoted;
            job.to_version = Some(version);
            job.lease_until = None;
            job.retire_after = Some(ctx.now.saturating_add(config.grace_seconds));
            tx.update_rotation_job(&job)?;
            event(tx, ctx.now, &config, &job)?;
            Ok(job_view(&job))
        }
        (JobState::Claimed, outcome @ (Outcome::ApplyFailed | Outcome::VerifyFailed)) => {
            let stage = if outcome == Outcome::ApplyFailed {
                "apply"
            } else {
                "verify"
            };
            fail(
                tx,
                ctx.root,
                ctx.now,
                &mut job,
                &format!("{stage} failed: {detail}"),
            )?;
            Ok(job_view(&job))
        }
        (JobState::Promoted, Outcome::Retired) if leased => {
            job.state = JobState::Retired;
            job.lease_until = None;
            job.finished_at = Some(ctx.now);
            tx.update_rotation_job(&job)?;
            event(tx, ctx.now, &config, &job)?;
            Ok(job_view(&job))
        }
        (JobState::Promoted, Outcome::RetireFailed) if leased => {
            job.lease_until = None;
            job.retire_after = Some(ctx.now.saturating_add(RETIRE_RETRY));
            job.reason = Some(format!("retire failed: {detail}"));
            tx.update_rotation_job(&job)?;
            event(tx, ctx.now, &config, &job)?;
            Ok(job_view(&job))
        }
        (JobState::Promoted, _) if !leased => Err(Error::denied(
            ErrorCode::Conflict,
            "this job's retire step is not claimed (or its lease ran out): claim it again",
        )),
        (state, outcome) => Err(Error::denied(
            ErrorCode::Conflict,
            format!(
                "a job that is {} cannot take the outcome {}",
                state.as_str(),
                serde_json::to_string(&outcome).unwrap_or_default()
            ),
        )),
    }
}

/// The background pass: jobs whose lease ran out fail, and configs whose
/// schedule is due get a job (unless one runs). Returns the jobs started.
pub fn sweep(tx: &mut dyn Tx, root: &RootKey, now: i64) -> Result<usize> {
    expire_leases(tx, root, now)?;
    let mut started = 0;
    for config in tx.rotations_due(now)? {
        let next = config.interval_seconds.map(|i| now.saturating_add(i));
        tx.set_rotation_due(&config.id, next)?;
        tx.savepoint()?;
        match start(tx, root, &config, now, SCHEDULE) {
            Ok(job) => {
                tx.release_savepoint()?;
                started += 1;
                record(
                    tx,
                    root,
                    now,
                    "rotation.schedule",
                    &config,
                    &job,
                    true,
                    "the schedule was due",
                )?;
            }
            Err(error) => {
                tx.rollback_to_savepoint()?;
                tx.release_savepoint()?;
                tracing::info!(rotation = %config.id, code = error.code().as_str(), "scheduled rotation not started");
            }
        }
    }
    Ok(started)
}

impl crate::vault::Vault {
    /// [`sweep`] in a transaction of its own (the background worker).
    pub fn sweep_rotations(&self) -> Result<usize> {
        self.with_tx(|tx, now| sweep(tx, &self.root, now))
    }
}

/// Fails every claimed job whose lease ran out at `now`.
fn expire_leases(tx: &mut dyn Tx, root: &RootKey, now: i64) -> Result<()> {
    for mut job in tx.rotation_jobs_expired(now)? {
        fail(
            tx,
            root,
            now,
            &mut job,
            "the agent's lease ran out before it reported",
        )?;
    }
    Ok(())
}

/// Discards the job's credential and records why, with an audit row and
/// a webhook event.
fn fail(
    tx: &mut dyn Tx,
    root: &RootKey,
    now: i64,
    job: &mut RotationJob,
    reason: &str,
) -> Result<()> {
    job.state = JobState::Failed;
    job.sealed_credential = None;
    job.lease_until = None;
    job.finished_at = Some(now);
    job.reason = Some(reason.to_owned());
    tx.update_rotation_job(job)?;
    let config = config(tx, &job.config_id)?;
    record(tx, root, now, "rotation.fail", &config, job, false, reason)?;
    event(tx, now, &config, job)
}

#[allow(clippy::too_many_arguments)]
fn record(
    tx: &mut dyn Tx,
    root: &RootKey,
    now: i64,
    action: &str,
    config: &RotationConfig,
    job: &RotationJob,
    allowed: bool,
    reason: &str,
) -> Result<()> {
    audit::append(
        tx,
        &root.audit_chain_key(),
        now,
        &Record {
            actor: "vault".into(),
            action: action.into(),
            target: format!("rotation:{} job:{}", config.id, job.id),
            allowed,
            reason: reason.into(),
            source_ip: String::new(),
            committed: false,
        },
    )?;
    Ok(())
}

/// The `rotation` webhook event: the job's state, never a credential.
fn event(tx: &mut dyn Tx, now: i64, config: &RotationConfig, job: &RotationJob) -> Result<()> {
    let (project, secret) = secret_of(tx, &config.secret_id)?;
    outbox::enqueue(
        tx,
        now,
        outbox::ROTATION,
        serde_json::json!({
            "rotation": config.id,
            "job": job.id,
            "secret": format!("{}/{}", project.name, secret.name),
            "state": job.state.as_str(),
            "from_version": job.from_version,
            "to_version": job.to_version,
            "reason": job.reason,
        }),
    )
}

/// A new pending job of `config`, its credential generated and sealed.
fn start(
    tx: &mut dyn Tx,
    root: &RootKey,
    config: &RotationConfig,
    now: i64,
    by: &str,
) -> Result<RotationJob> {
    let (project, secret) = secret_of(tx, &config.secret_id)?;
    let mut credential = fields(tx, root, &project, &secret.id, secret.live_version)?;
    let username = match config.provider {
        Provider::Redis => config.target.role.clone(),
        Provider::Postgresql | Provider::Mysql => {
            let suffix: String = {
                let mut rng = rand::rngs::OsRng;
                (0..USER_SUFFIX)
                    .map(|_| {
                        char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)])
                    })
                    .collect()
            };
            format!("{}_{suffix}", config.target.role)
        }
    };
    credential.0.insert(USERNAME.into(), username);
    credential
        .0
        .insert(PASSWORD.into(), password(&config.policy).to_string());
    let id = ids::new(JOB);
    let sealed = seal_pending(root, &id, &credential)?;
    let job = RotationJob {
        id,
        config_id: config.id.clone(),
        secret_id: secret.id.clone(),
        state: JobState::Pending,
        sealed_credential: Some(sealed),
        from_version: secret.live_version,
        to_version: None,
        created_at: now,
        created_by: by.to_owned(),
        lease_until: None,
        retire_after: None,
        finished_at: None,
        reason: None,
    };
    match tx.insert_rotation_job(&job) {
        Err(crate::store::Error::Duplicate(_)) => Err(Error::denied(
            ErrorCode::Conflict,
            format!(
                "a rotation of {}/{} is already running; one at a time",
                project.name, secret.name
            ),
        )),
        other => Ok(other.map(|()| job)?),
    }
}

/// A password of the policy's length and alphabet, from the OS's CSPRNG.
fn password(policy: &PasswordPolicy) -> Zeroizing<String> {
    let alphabet: Vec<u8> = match policy.alphabet {
        Alphabet::Alphanumeric => ALPHANUMERIC.to_vec(),
        Alphabet::Symbols => [ALPHANUMERIC, SYMBOLS].concat(),
    };
    let mut rng = rand::rngs::OsRng;
    let mut out = Zeroizing::new(String::with_capacity(usize::from(policy.length)));
    for _ in 0..policy.length {
        out.push(char::from(alphabet[rng.gen_range(0..alphabet.len())]));
    }
    out
}

fn pending_aad(job_id: &str) -> Vec<u8> {
    format!("signet rotation pending {job_id}").into_bytes()
}

fn seal_pending(root: &RootKey, job_id: &str, credential: &Fields) -> Result<Vec<u8>> {
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&credential.0)
            .map_err(|_| corrupt("a credential that does not encode"))?,
    );
    Ok(root.key().seal(&plaintext, &pending_aad(job_id))?)
}

fn open_pending(root: &RootKey, job_id: &str, sealed: &[u8]) -> Result<Fields> {
    let plaintext = root.key().open(sealed, &pending_aad(job_id))?;
    serde_json::from_slice(&plaintext)
        .map(Fields)
        .map_err(|_| corrupt("a pending credential"))
}

fn fields(
    tx: &mut dyn Tx,
    root: &RootKey,
    project: &Project,
    secret_id: &str,
    version: u32,
) -> Result<Fields> {
    secrets::version_fields(tx, root, project, secret_id, version)?
        .ok_or_else(|| corrupt("a rotated secret's version that is not structured"))
}

fn config(tx: &mut dyn Tx, id: &str) -> Result<RotationConfig> {
    tx.rotation(id)?
        .ok_or_else(|| not_found(format!("rotation {id}")))
}

fn secret_of(tx: &mut dyn Tx, secret_id: &str) -> Result<(Project, Secret)> {
    let secret = tx
        .secret(secret_id)?
        .ok_or_else(|| corrupt("a rotation of a missing secret"))?;
    let project = tx
        .project(&secret.project_id)?
        .ok_or_else(|| corrupt("a secret of a missing project"))?;
    Ok((project, secret))
}

fn corrupt(what: &str) -> Error {
    crate::store::Error::Corrupt(what.into()).into()
}

/// What a config is shown as, by the names of its project, secret and
/// admin secret.
fn view(c: &RotationConfig, project: String, secret: String, admin_secret: String) -> RotationView {
    RotationView {
        id: c.id.clone(),
        project,
        secret,
        provider: c.provider,
        target: c.target.clone(),
        admin_secret,
        agent_machine_id: c.agent_machine_id.clone(),
        interval_seconds: c.interval_seconds.map(|i| i.unsigned_abs()),
        next_due_at: c.next_due_at.map(rfc3339),
        policy: c.policy,
        lease_seconds: c.lease_seconds.unsigned_abs(),
        grace_seconds: c.grace_seconds.unsigned_abs(),
        created_at: rfc3339(c.created_at),
        created_by: c.created_by.clone(),
    }
}

fn job_view(j: &RotationJob) -> RotationJobView {
    RotationJobView {
        id: j.id.clone(),
        rotation_id: j.config_id.clone(),
        state: j.state,
        from_version: j.from_version,
        to_version: j.to_version,
        created_by: j.created_by.clone(),
        created_at: rfc3339(j.created_at),
        lease_until: j.lease_until.map(rfc3339),
        finished_at: j.finished_at.map(rfc3339),
        reason: j.reason.clone(),
    }
}

/// The agent's detail, printable and bounded, for the audit log.
fn clean_detail(detail: &str) -> String {
    detail
        .chars()
        .filter(|c| !c.is_control())
        .take(DETAIL_MAX)
        .collect()
}

fn bounded(
    what: &str,
    value: Option<u64>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>> {
    match value {
        None => Ok(None),
        Some(v) => match i64::try_from(v) {
            Ok(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(invalid(format!(
                "{what} must be {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Names safe unquoted in SQL and in a Redis ACL rule.
fn check_ident(what: &str, name: &str) -> Result<()> {
    let ok = (1..=ROLE_MAX).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} must be 1 to {ROLE_MAX} of a-z, 0-9, '_', starting with a letter"
        )))
    }
}

fn check_target(provider: Provider, target: &RotationTarget) -> Result<()> {
    let host_ok = (1..=253).contains(&target.host.len())
        && target
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !host_ok {
        return Err(invalid(
            "target.host must be 1 to 253 characters of a host name or IP address",
        ));
    }
    if target.port == 0 {
        return Err(invalid("target.port must be 1 to 65535"));
    }
    check_ident("target.role", &target.role)?;
    match (provider, &target.database) {
        (Provider::Redis, Some(_)) => Err(invalid("a redis target has no database")),
        (Provider::Redis, None) => Ok(()),
        (_, Some(database)) => check_ident("target.database", database),
        (_, None) => Err(invalid(
            "a postgresql or mysql target needs the database to verify against",
        )),
    }
}

fn check_policy(policy: &PasswordPolicy) -> Result<()> {
    if (16..=128).contains(&policy.length) {
        Ok(())
    } else {
        Err(invalid("policy.length must be 16 to 128"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_follow_the_policy() {
        for alphabet in [Alphabet::Alphanumeric, Alphabet::Symbols] {
            let policy = PasswordPolicy {
                length: 40,
                alphabet,
            };
            let a = password(&policy);
            let b = password(&policy);
            assert_eq!(a.len(), 40);
            assert_ne!(*a, *b);
            let allowed: Vec<u8> = [
                ALPHANUMERIC,
                if alphabet == Alphabet::Symbols {
                    SYMBOLS
                } else {
                    b""
                },
            ]
            .concat();
            assert!(a.bytes().all(|c| allowed.contains(&c)));
        }
    }

    #[test]
    fn identifiers_are_safe_unquoted() {
        assert!(check_ident("role", "app_rw").is_ok());
        for bad in [
            "",
            "App",
            "1app",
            "a-b",
            "a b",
            "a'b",
            "abcdefghijklmnopqrstu",
        ] {
            assert!(check_ident("role", bad).is_err(), "{bad:?}");
        }
    }
}
