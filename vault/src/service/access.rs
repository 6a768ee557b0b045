//! Access rules that stack on top of grants: per-secret policies (time
//! window, IP allowlist, daily read cap, co-sign, canary) enforced in the
//! read's transaction. The pure rules live in [`crate::policy`], canaries in
//! [`super::canary`], co-sign requests in [`super::cosign`].
//!
//! Every rule is checked inside the transaction that serves the read, so a
//! cap counted here, a co-sign consumed here and a lock taken here commit
//! together with the read (or its refusal) or not at all.

use signet_client::api::{AccessPolicy, ErrorCode, SecretMeta};

use super::{canary, delegations, secrets};
use crate::error::{Error, Result, invalid};
use crate::policy::{ip_allowed, time_zone, validate_policy, window_open};
use crate::request::Ctx;
use crate::store::{Machine, Project, Secret, Tx};

/// Runs every rule of `secret`'s policy for a read by `machine`, inside the
/// read's transaction. The lock check comes first: once a canary fired,
/// nothing else in the project is served.
pub fn enforce_read(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project: &Project,
    secret: &Secret,
    machine: &Machine,
) -> Result<()> {
    if project.locked_at.is_some() {
        return Err(canary::locked(&project.name));
    }
    let Some(policy) = &secret.policy else {
        return Ok(());
    };
    if policy.canary {
        return canary::trip_canary(ctx, tx, project, secret, machine, policy.canary_cascade);
    }
    let zone = time_zone(policy.timezone.as_deref())?;
    if let Some(window) = &policy.window
        && !window_open(window, &zone, ctx.now)?
    {
        return Err(Error::denied(
            ErrorCode::PolicyTimeWindow,
            format!(
                "{}/{} may not be read at this time of day",
                project.name, secret.name
            ),
        ));
    }
    if !policy.ip_allowlist.is_empty() && !ip_allowed(&policy.ip_allowlist, ctx.source_ip)? {
        return Err(Error::denied(
            ErrorCode::PolicyIp,
            format!(
                "{}/{} may not be read from {:?}",
                project.name, secret.name, ctx.source_ip
            ),
        ));
    }
    if policy.cosign && !tx.consume_cosign(&secret.id, &machine.id, ctx.now)? {
        return Err(Error::denied(
            ErrorCode::CosignRequired,
            format!(
                "{}/{} needs a co-sign request approved by an admin for each read",
                project.name, secret.name
            ),
        ));
    }
    // Counted last, so a read refused by another rule does not use the cap
    // (and a refused read rolls back anyway).
    if let Some(cap) = policy.daily_read_cap {
        let day = jiff::Timestamp::from_second(ctx.now)
            .map_err(|_| invalid("time out of range"))?
            .to_zoned(zone)
            .date()
            .to_string();
        if !tx.count_read(&secret.id, &day, cap)? {
            return Err(Error::denied(
                ErrorCode::PolicyDailyCap,
                format!(
                    "{}/{} was read {cap} times today; the daily cap is reached",
                    project.name, secret.name
                ),
            ));
        }
    }
    Ok(())
}

/// `PUT /v1/projects/{p}/secrets/{s}/policy` (an empty policy removes it).
pub fn set_policy(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project_name: &str,
    name: &str,
) -> Result<SecretMeta> {
    ctx.audit.target = format!("secret:{project_name}/{name}");
    let policy: AccessPolicy = ctx.json()?;
    validate_policy(&policy)?;
    let project = secrets::project(tx, project_name)?;
    let secret = secrets::secret(tx, &project, name)?;
    if let Some(agent) = delegations::acting_agent(ctx) {
        delegations::require_whole(tx, agent, &project, &secret)?;
        require_tightening(secret.policy.as_ref(), &policy)?;
    }
    let stored = (policy != AccessPolicy::default()).then_some(policy);
    tx.set_secret_policy(&secret.id, stored.as_ref())?;
    ctx.audit.target = format!(
        "secret:{project_name}/{name} policy={}",
        serde_json::to_string(&stored).unwrap_or_default()
    );
    secrets::meta(
        tx,
        &project,
        &crate::store::Secret {
            policy: stored,
            ..secret
        },
    )
}

/// An agent only tightens a secret's policy (`current`, none for no policy).
fn require_tightening(current: Option<&AccessPolicy>, new: &AccessPolicy) -> Result<()> {
    let none = AccessPolicy::default();
    match crate::policy::loosened(current.unwrap_or(&none), new)? {
        None => Ok(()),
        Some(what) => Err(Error::denied(
            ErrorCode::Forbidden,
            format!("an agent may only tighten a secret's policy; this would loosen {what}"),
        )),
    }
}
