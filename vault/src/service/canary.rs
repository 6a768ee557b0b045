//! Canary secrets and project locks. Reading a canary locks its project
//! (optionally every project the reader can reach) in the very transaction
//! of the read; every later read in a locked project is refused until an
//! admin unlocks it.

use signet_client::api::{ErrorCode, ProjectView};

use super::secrets;
use crate::error::{Error, Result};
use crate::outbox;
use crate::request::Ctx;
use crate::store::{Machine, Project, Secret, Tx};

/// The refusal of every read in a locked project.
pub(super) fn locked(project: &str) -> Error {
    Error::denied(
        ErrorCode::ProjectLocked,
        format!("project {project} is locked; an admin must unlock it"),
    )
}

/// A canary was read: lock its project (and, with cascade, every project
/// the machine can reach) in this transaction, audit each lock, queue the
/// webhook, and refuse the read. The pipeline commits this refusal.
pub(super) fn trip_canary(
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
                &ctx.root.audit_chain_key(),
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
    outbox::enqueue(
        tx,
        ctx.now,
        outbox::CANARY_TRIPPED,
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
    // The answer is the project as now stored: unlocked.
    Ok(secrets::project_view(&secrets::project(tx, project_name)?))
}
