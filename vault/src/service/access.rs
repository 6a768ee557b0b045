//! Access rules that stack on top of grants: per-machine restrictions from
//! bootstrap tokens, per-secret policies (time window, IP allowlist, daily
//! read cap, co-sign), canaries and project locks, version rollback.
//!
//! Every rule is checked inside the transaction that serves the read, so a
//! cap counted here, a co-sign consumed here and a lock taken here commit
//! together with the read (or its refusal) or not at all.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use signet_client::api::{
    AccessPolicy, CosignList, CosignView, CreateCosign, ErrorCode, ProjectView, Rollback,
    SecretMeta, TimeWindow,
};

use super::{secrets, webhooks};
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::store::{Cosign, Machine, MachineRestrictions, Project, Secret, Tx};
use crate::vault::{Caller, Ctx};

/// How long a co-sign request waits for its approval.
pub const COSIGN_PENDING_TTL: i64 = 3600;
/// How long an approval stays usable for its one read.
pub const COSIGN_APPROVAL_TTL: i64 = 15 * 60;
/// Most CIDRs in one allowlist.
const MAX_CIDRS: usize = 64;

/// True for the codes that count as `policy.denied` webhook events.
pub fn is_policy_denial(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PolicyTimeWindow
            | ErrorCode::PolicyIp
            | ErrorCode::PolicyDailyCap
            | ErrorCode::CosignRequired
            | ErrorCode::HostnameNotAllowed
            | ErrorCode::SourceNotAllowed
    )
}

/// The IANA zone `name` (UTC when absent), from the bundled database so a
/// host without zoneinfo behaves the same.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| invalid(format!("unknown IANA time zone {name:?}")))
        }
    }
}

fn minutes(text: &str) -> Result<i32> {
    let part = |p: &str| {
        (1..=2)
            .contains(&p.len())
            .then(|| p.parse::<i32>().ok())
            .flatten()
    };
    let parsed = text
        .split_once(':')
        .and_then(|(h, m)| Some((part(h)?, part(m)?)))
        .filter(|(h, m)| *m < 60 && h * 60 + m <= 24 * 60);
    parsed.map(|(h, m)| h * 60 + m).ok_or_else(|| {
        invalid(format!(
            "time {text:?} is not HH:MM between 00:00 and 24:00"
        ))
    })
}

fn weekday(name: &str) -> Result<Weekday> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(invalid(format!(
                "day {name:?} is not one of mon, tue, wed, thu, fri, sat, sun"
            )));
        }
    })
}

/// Checks a window's shape.
pub fn validate_window(window: &TimeWindow) -> Result<()> {
    let (start, end) = (minutes(&window.start)?, minutes(&window.end)?);
    if start == end {
        return Err(invalid("a time window needs different start and end times"));
    }
    for day in &window.days {
        weekday(day)?;
    }
    Ok(())
}

/// True when `now` falls inside `window` in `zone`. A window whose end is
/// before its start spans midnight; its day list names the day it opens.
pub fn window_open(window: &TimeWindow, zone: &TimeZone, now: i64) -> Result<bool> {
    let start = minutes(&window.start)?;
    let end = minutes(&window.end)?;
    let local = jiff::Timestamp::from_second(now)
        .map_err(|_| invalid("time out of range"))?
        .to_zoned(zone.clone());
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let day_ok = |day: Weekday| -> Result<bool> {
        if window.days.is_empty() {
            return Ok(true);
        }
        for name in &window.days {
            if weekday(name)? == day {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let today = local.weekday();
    Ok(if start < end {
        minute >= start && minute < end && day_ok(today)?
    } else {
        // Spanning midnight: the evening part belongs to today, the morning
        // part to the window that opened yesterday.
        (minute >= start && day_ok(today)?) || (minute < end && day_ok(today.previous())?)
    })
}

/// Parses a CIDR list (a bare address is a /32 or /128).
pub fn parse_cidrs(list: &[String]) -> Result<Vec<IpNet>> {
    if list.len() > MAX_CIDRS {
        return Err(invalid(format!("at most {MAX_CIDRS} CIDRs")));
    }
    list.iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| invalid(format!("{text:?} is not a CIDR such as 10.0.0.0/8")))
        })
        .collect()
}

/// The request's source address, with IPv4-mapped IPv6 unwrapped.
pub fn source_addr(source_ip: &str) -> Option<IpAddr> {
    source_ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// True when `source_ip` is inside one of `cidrs`. An unknown source is
/// never inside.
pub fn ip_allowed(cidrs: &[String], source_ip: &str) -> Result<bool> {
    let nets = parse_cidrs(cidrs)?;
    Ok(source_addr(source_ip).is_some_and(|ip| nets.iter().any(|net| net.contains(&ip))))
}

/// Restrictions a bootstrap token put on a machine, checked on every
/// request the machine makes.
pub fn check_machine(machine: &Machine, now: i64, source_ip: &str) -> Result<()> {
    let Some(restrictions) = &machine.restrictions else {
        return Ok(());
    };
    check_restrictions(restrictions, now, source_ip)
}

fn check_restrictions(r: &MachineRestrictions, now: i64, source_ip: &str) -> Result<()> {
    if !r.ip_allowlist.is_empty() && !ip_allowed(&r.ip_allowlist, source_ip)? {
        return Err(Error::denied(
            ErrorCode::PolicyIp,
            format!(
                "this machine may only make requests from its allowlist, not from {source_ip:?}"
            ),
        ));
    }
    if let Some(window) = &r.window {
        let zone = time_zone(r.timezone.as_deref())?;
        if !window_open(window, &zone, now)? {
            return Err(Error::denied(
                ErrorCode::PolicyTimeWindow,
                "this machine may not make requests at this time of day",
            ));
        }
    }
    Ok(())
}

/// Checks a policy's shape before it is stored.
pub fn validate_policy(policy: &AccessPolicy) -> Result<()> {
    time_zone(policy.timezone.as_deref())?;
    if let Some(window) = &policy.window {
        validate_window(window)?;
    }
    parse_cidrs(&policy.ip_allowlist)?;
    if policy.daily_read_cap == Some(0) {
        return Err(invalid(
            "daily_read_cap must be at least 1 (omit it for no cap)",
        ));
    }
    if policy.canary_cascade && !policy.canary {
        return Err(invalid("canary_cascade needs canary"));
    }
    Ok(())
}

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
        return Err(locked(&project.name));
    }
    let Some(policy) = &secret.policy else {
        return Ok(());
    };
    if policy.canary {
        return trip_canary(ctx, tx, project, secret, machine, policy.canary_cascade);
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

fn locked(project: &str) -> Error {
    Error::denied(
        ErrorCode::ProjectLocked,
        format!("project {project} is locked; an admin must unlock it"),
    )
}

/// A canary was read: lock its project (and, with cascade, every project
/// the machine can reach) in this transaction, audit each lock, queue the
/// webhook, and refuse the read. The pipeline commits this refusal.
fn trip_canary(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project: &Project,
    secret: &Secret,
    machine: &Machine,
    cascade: bool,
) -> Result<()> {
    let reason = format!(
        "canary {}/{} read by machine {}",
        project.name, secret.name, machine.id
    );
    let mut locked_projects = vec![project.clone()];
    if cascade {
        for detail in tx.grants(Some(&crate::store::Grantee::Machine(machine.id.clone())))? {
            if locked_projects.iter().all(|p| p.name != detail.project)
                && let Some(other) = tx.project_by_name(&detail.project)?
            {
                locked_projects.push(other);
            }
        }
    }
    let mut names = Vec::new();
    for p in &locked_projects {
        if tx.lock_project(&p.id, ctx.now, &reason)? {
            names.push(p.name.clone());
            crate::audit::append(
                tx,
                ctx.now,
                &crate::audit::Record {
                    actor: machine.id.clone(),
                    action: "project.lock".into(),
                    target: format!("project:{}", p.name),
                    allowed: true,
                    reason: reason.clone(),
                    source_ip: ctx.source_ip.to_owned(),
                    committed: false,
                },
            )?;
        }
    }
    webhooks::enqueue(
        tx,
        ctx.now,
        webhooks::CANARY_TRIPPED,
        serde_json::json!({
            "project": project.name,
            "secret": secret.name,
            "machine_id": machine.id,
            "machine_name": machine.name,
            "source_ip": ctx.source_ip,
            "locked_projects": names,
        }),
    )?;
    tracing::warn!(project = %project.name, secret = %secret.name, machine = %machine.id, "canary read: project locked");
    ctx.commit_denial = true;
    Err(locked(&project.name))
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

/// `POST /v1/projects/{p}/unlock`
pub fn unlock(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, project_name: &str) -> Result<ProjectView> {
    ctx.audit.target = format!("project:{project_name}");
    let project = secrets::project(tx, project_name)?;
    if !tx.unlock_project(&project.id)? {
        return Err(Error::denied(
            ErrorCode::Conflict,
            format!("project {project_name} is not locked"),
        ));
    }
    ctx.audit.target = format!(
        "project:{project_name} (was locked: {})",
        project.lock_reason.as_deref().unwrap_or("")
    );
    Ok(secrets::project_view(&Project {
        locked_at: None,
        lock_reason: None,
        ..project
    }))
}

/// `POST /v1/projects/{p}/secrets/{s}/rollback`: an older version becomes
/// live again (its own data key still opens it).
pub fn rollback(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project_name: &str,
    name: &str,
) -> Result<SecretMeta> {
    ctx.audit.target = format!("secret:{project_name}/{name}");
    let body: Rollback = ctx.json()?;
    let project = secrets::project(tx, project_name)?;
    let secret = secrets::secret(tx, &project, name)?;
    if tx.version(&secret.id, body.version)?.is_none() {
        return Err(not_found(format!(
            "version {} of {project_name}/{name}",
            body.version
        )));
    }
    tx.set_live_version(&secret.id, body.version)?;
    ctx.audit.target = format!(
        "secret:{project_name}/{name} live version {} -> {}",
        secret.live_version, body.version
    );
    secrets::meta(
        tx,
        &project,
        &Secret {
            live_version: body.version,
            ..secret
        },
    )
}

/// `POST /v1/cosign` (admin, naming the machine) and
/// `POST /v1/machine/cosign` (the machine for itself).
pub fn create_cosign(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<CosignView> {
    let body: CreateCosign = ctx.json()?;
    ctx.audit.target = format!("secret:{}/{}", body.project, body.secret);
    let machine_id = match (&ctx.caller, &body.machine_id) {
        (Caller::Machine(m), None) => m.id.clone(),
        (Caller::Machine(_), Some(_)) => {
            return Err(invalid("a machine requests co-sign for itself only"));
        }
        (_, Some(id)) => id.clone(),
        (_, None) => return Err(invalid("machine_id is required")),
    };
    tx.machine(&machine_id)?
        .ok_or_else(|| not_found(format!("machine {machine_id}")))?;
    let project = secrets::project(tx, &body.project)?;
    let secret = secrets::secret(tx, &project, &body.secret)?;
    if tx.machine_grant(&machine_id, &secret.id)?.is_none() {
        return Err(Error::denied(
            ErrorCode::NotGranted,
            format!(
                "machine {machine_id} has no grant on {}/{}",
                body.project, body.secret
            ),
        ));
    }
    let cosign = Cosign {
        id: ids::new(ids::COSIGN),
        secret_id: secret.id,
        machine_id,
        requested_by: ctx.caller.id(),
        created_at: ctx.now,
        expires_at: ctx.now + COSIGN_PENDING_TTL,
        approved_by: None,
        approved_at: None,
        consumed_at: None,
    };
    tx.insert_cosign(&cosign)?;
    ctx.audit.target = format!(
        "cosign:{} {}/{} for {}",
        cosign.id, body.project, body.secret, cosign.machine_id
    );
    Ok(cosign_view(&cosign, &body.project, &body.secret))
}

/// `POST /v1/cosign/{id}/approve`: an admin other than the requester.
pub fn approve_cosign(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<CosignView> {
    ctx.audit.target = format!("cosign:{id}");
    let Caller::Admin(admin) = &ctx.caller else {
        return Err(Error::denied(
            ErrorCode::Forbidden,
            "only admins approve co-sign requests",
        ));
    };
    let admin_id = admin.id.clone();
    let cosign = tx
        .cosign(id)?
        .ok_or_else(|| not_found(format!("co-sign request {id}")))?;
    if cosign.requested_by == admin_id {
        return Err(Error::denied(
            ErrorCode::Forbidden,
            "a co-sign request must be approved by a different admin than the one who made it",
        ));
    }
    let expires_at = ctx.now + COSIGN_APPROVAL_TTL;
    if !tx.approve_cosign(id, &admin_id, ctx.now, expires_at)? {
        return Err(Error::denied(
            ErrorCode::Conflict,
            format!("co-sign request {id} is already approved, used or expired"),
        ));
    }
    let (project, secret) = secret_names(tx, &cosign.secret_id)?;
    ctx.audit.target = format!("cosign:{id} {project}/{secret} for {}", cosign.machine_id);
    Ok(cosign_view(
        &Cosign {
            approved_by: Some(admin_id),
            approved_at: Some(ctx.now),
            expires_at,
            ..cosign
        },
        &project,
        &secret,
    ))
}

/// `GET /v1/cosign`: open requests.
pub fn list_cosigns(ctx: &Ctx<'_>, tx: &mut dyn Tx) -> Result<CosignList> {
    let mut requests = Vec::new();
    for cosign in tx.open_cosigns(ctx.now)? {
        let (project, secret) = secret_names(tx, &cosign.secret_id)?;
        requests.push(cosign_view(&cosign, &project, &secret));
    }
    Ok(CosignList { requests })
}

fn secret_names(tx: &mut dyn Tx, secret_id: &str) -> Result<(String, String)> {
    let secret = tx.secret(secret_id)?.ok_or_else(|| not_found("secret"))?;
    let project = tx
        .project(&secret.project_id)?
        .ok_or_else(|| not_found("project"))?;
    Ok((project.name, secret.name))
}

fn cosign_view(c: &Cosign, project: &str, secret: &str) -> CosignView {
    CosignView {
        id: c.id.clone(),
        project: project.to_owned(),
        secret: secret.to_owned(),
        machine_id: c.machine_id.clone(),
        requested_by: c.requested_by.clone(),
        created_at: rfc3339(c.created_at),
        expires_at: rfc3339(c.expires_at),
        approved_by: c.approved_by.clone(),
        consumed: c.consumed_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn window(days: &[&str], start: &str, end: &str) -> TimeWindow {
        TimeWindow {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            start: start.into(),
            end: end.into(),
        }
    }

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn window_in_a_zone() {
        let paris = time_zone(Some("Europe/Paris")).unwrap();
        let office = window(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00");
        // 2024-06-03 is a Monday; Paris is UTC+2 in June.
        assert!(window_open(&office, &paris, at("2024-06-03T07:30:00Z")).unwrap());
        assert!(!window_open(&office, &paris, at("2024-06-03T06:59:00Z")).unwrap());
        assert!(!window_open(&office, &paris, at("2024-06-03T15:00:00Z")).unwrap());
        // Saturday.
        assert!(!window_open(&office, &paris, at("2024-06-08T08:00:00Z")).unwrap());
    }

    #[test]
    fn window_across_midnight() {
        let night = window(&["fri"], "22:00", "02:00");
        let utc = TimeZone::UTC;
        assert!(window_open(&night, &utc, at("2024-06-07T23:00:00Z")).unwrap());
        assert!(window_open(&night, &utc, at("2024-06-08T01:00:00Z")).unwrap());
        assert!(!window_open(&night, &utc, at("2024-06-08T23:00:00Z")).unwrap());
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(validate_window(&window(&[], "25:00", "01:00")).is_err());
        assert!(validate_window(&window(&["funday"], "01:00", "02:00")).is_err());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
        assert!(parse_cidrs(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn ip_allowlist_matches_mapped_addresses() {
        let list = vec!["10.1.0.0/16".to_owned()];
        assert!(ip_allowed(&list, "10.1.2.3").unwrap());
        assert!(ip_allowed(&list, "::ffff:10.1.2.3").unwrap());
        assert!(!ip_allowed(&list, "10.2.0.1").unwrap());
        assert!(!ip_allowed(&list, "").unwrap());
    }
}
