//! Co-signed reads: a secret whose policy asks for it is served only after
//! a second admin approved a request for that machine and secret. An
//! approval is single use and expires.

use signet_client::api::{CosignList, CosignView, CreateCosign, ErrorCode};

use super::secrets;
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::page::{CreatedKey, Page};
use crate::request::{Caller, Ctx};
use crate::store::{Cosign, Read, Tx};

/// How long a co-sign request waits for its approval.
pub const COSIGN_PENDING_TTL: i64 = 3600;
/// How long an approval stays usable for its one read.
pub const COSIGN_APPROVAL_TTL: i64 = 15 * 60;

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
    // The answer is the request as now stored, approval included.
    let approved = tx
        .cosign(id)?
        .ok_or_else(|| not_found(format!("co-sign request {id}")))?;
    Ok(cosign_view(&approved, &project, &secret))
}

/// `GET /v1/cosign`: open requests.
pub fn list_cosigns(r: &mut dyn Read, now: i64, page: &Page<CreatedKey>) -> Result<CosignList> {
    let (rows, next_cursor) = page.finish(r.cosigns_page(now, page)?, |d| {
        (d.cosign.created_at, d.cosign.id.clone())
    });
    Ok(CosignList {
        requests: rows
            .iter()
            .map(|d| cosign_view(&d.cosign, &d.project, &d.secret))
            .collect(),
        next_cursor,
    })
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
