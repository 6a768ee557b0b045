//! Admins, agents and machines as the management API sees them.

use signet_client::api::{CreateIdentity, IdentityView, MachineList, MachineView};
use signet_client::protocol::PublicKey;

use super::check_display_name;
use crate::clock::rfc3339;
use crate::error::{Result, invalid, not_found};
use crate::ids;
use crate::page::{CreatedKey, Page};
use crate::request::{Caller, Ctx};
use crate::store::{Admin, Agent, Machine, Read, Tx};

fn parse_identity(ctx: &Ctx<'_>) -> Result<(CreateIdentity, String)> {
    let body: CreateIdentity = ctx.json()?;
    check_display_name(&body.name)?;
    let key =
        PublicKey::parse(&body.public_key).map_err(|e| invalid(format!("public_key: {e}")))?;
    Ok((body, key.encode()))
}

pub fn create_agent(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<IdentityView> {
    let (body, public_key) = parse_identity(ctx)?;
    let agent = Agent {
        id: ids::new(ids::AGENT),
        name: body.name,
        public_key,
        scopes: body.scopes,
        created_at: ctx.now,
        disabled_at: None,
    };
    tx.insert_agent(&agent)?;
    ctx.audit.target = format!("agent:{}", agent.id);
    Ok(IdentityView {
        id: agent.id,
        name: agent.name,
        scopes: agent.scopes,
        created_at: rfc3339(agent.created_at),
    })
}

pub fn create_admin(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<IdentityView> {
    let (body, public_key) = parse_identity(ctx)?;
    if !body.scopes.is_empty() {
        return Err(invalid(
            "admins hold every management right; scopes are for agents",
        ));
    }
    let admin = Admin {
        id: ids::new(ids::ADMIN),
        name: body.name,
        public_key,
        created_at: ctx.now,
        disabled_at: None,
    };
    tx.insert_admin(&admin)?;
    ctx.audit.target = format!("admin:{}", admin.id);
    Ok(IdentityView {
        id: admin.id,
        name: admin.name,
        scopes: Vec::new(),
        created_at: rfc3339(admin.created_at),
    })
}

pub fn machine_view(m: &Machine, project: &str, now: i64) -> MachineView {
    MachineView {
        id: m.id.clone(),
        name: m.name.clone(),
        project: project.to_owned(),
        token_id: m.token_id.clone(),
        hostname: m.hostname.clone(),
        created_at: rfc3339(m.created_at),
        expires_at: rfc3339(m.expires_at),
        disabled: m.disabled_at.is_some() || m.expires_at <= now,
        metadata: m.metadata.clone(),
        kubernetes: m.kubernetes.clone(),
    }
}

/// One page of machines, oldest first, each with its project's name.
pub fn list_machines(r: &mut dyn Read, page: &Page<CreatedKey>, now: i64) -> Result<MachineList> {
    let (rows, next_cursor) = page.finish(r.machines_page(page)?, |(m, _)| {
        (m.created_at, m.id.clone())
    });
    Ok(MachineList {
        machines: rows
            .iter()
            .map(|(machine, project)| machine_view(machine, project, now))
            .collect(),
        next_cursor,
    })
}

/// Deletes a machine (an admin or agent revoking it, or the machine itself).
pub fn revoke_machine(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<()> {
    ctx.audit.target = format!("machine:{id}");
    if !tx.delete_machine(id)? {
        return Err(not_found(format!("machine {id}")));
    }
    Ok(())
}

/// `DELETE /v1/machine/self`
pub fn revoke_self(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<()> {
    let id = match &ctx.caller {
        Caller::Machine(m) => m.id.clone(),
        _ => return Err(invalid("only a machine can revoke itself")),
    };
    revoke_machine(ctx, tx, &id)
}
