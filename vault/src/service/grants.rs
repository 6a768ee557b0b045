//! Explicit grants: one machine (or enrollment token) on one secret,
//! optionally narrowed to fields. No wildcards, no project-wide grants.

use serde::Deserialize;
use signet_client::api::{CreateGrant, GrantRecord, GrantRecordList, GrantView, NamespaceRef};

use super::delegations::{self, acting_agent};
use super::{check_field_name, secrets};
use crate::error::{Result, invalid, not_found};
use crate::ids;
use crate::page::{GrantKey, Page};
use crate::request::Ctx;
use crate::store::{Grant, GrantDetail, Grantee, Project, Read, Tx};

/// Validates and stores one grant.
pub fn insert(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    grantee: Grantee,
    project: &Project,
    secret_name: &str,
    fields: Option<Vec<String>>,
) -> Result<Grant> {
    let secret = secrets::secret(tx, project, secret_name)?;
    if let Some(fields) = &fields {
        if fields.is_empty() {
            return Err(invalid(
                "`fields` must name at least one field (omit it for the whole secret)",
            ));
        }
        for field in fields {
            check_field_name(field)?;
        }
        let live = tx
            .version(&secret.id, secret.live_version)?
            .ok_or_else(|| not_found(format!("live version of {}/{secret_name}", project.name)))?;
        let Some(names) = live.field_names else {
            return Err(invalid(format!(
                "{}/{secret_name} is a plain secret: it has no fields to grant",
                project.name
            )));
        };
        if let Some(missing) = fields.iter().find(|f| !names.contains(f)) {
            return Err(invalid(format!(
                "{}/{secret_name} has no field {missing:?}",
                project.name
            )));
        }
    }
    super::rotation::check_admin_grant(tx, &secret.id, &grantee)?;
    let grant = Grant {
        id: ids::new(ids::GRANT),
        grantee,
        secret_id: secret.id,
        fields,
        created_at: ctx.now,
    };
    tx.insert_grant(&grant)?;
    Ok(grant)
}

/// Gives `machine_id` its own copy of a token's pre-baked grant (once).
pub fn copy_to_machine(tx: &mut dyn Tx, grant: &Grant, machine_id: &str, now: i64) -> Result<()> {
    if tx.machine_grant(machine_id, &grant.secret_id)?.is_some() {
        return Ok(());
    }
    tx.insert_grant(&Grant {
        id: ids::new(ids::GRANT),
        grantee: Grantee::Machine(machine_id.to_owned()),
        secret_id: grant.secret_id.clone(),
        fields: grant.fields.clone(),
        created_at: now,
    })?;
    Ok(())
}

pub fn create(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<GrantRecord> {
    let body: CreateGrant = ctx.json()?;
    ctx.audit.target = format!("secret:{}/{}", body.project, body.secret);
    // The namespace the grantee's machines belong to decides which
    // delegations an agent needs.
    let (grantee, scope) = match (&body.machine_id, &body.token_id) {
        (Some(machine), None) => {
            let machine = tx
                .machine(machine)?
                .ok_or_else(|| not_found(format!("machine {machine}")))?;
            let scope = machine.kubernetes.map(|k| NamespaceRef {
                cluster: k.cluster,
                namespace: k.namespace,
            });
            (Grantee::Machine(machine.id), scope)
        }
        (None, Some(token)) => {
            let token = tx
                .token(token)?
                .ok_or_else(|| not_found(format!("enrollment token {token}")))?;
            let scope = token.kubernetes.map(|k| NamespaceRef {
                cluster: k.cluster,
                namespace: k.namespace,
            });
            (Grantee::Token(token.id), scope)
        }
        _ => return Err(invalid("give exactly one of `machine_id` and `token_id`")),
    };
    let project = secrets::project(tx, &body.project)?;
    if let Some(agent) = acting_agent(ctx) {
        let secret = secrets::secret(tx, &project, &body.secret)?;
        delegations::require_grant(
            tx,
            agent,
            &project,
            &secret,
            body.fields.as_deref(),
            scope.as_ref(),
        )?;
    }
    let grant = insert(
        ctx,
        tx,
        grantee.clone(),
        &project,
        &body.secret,
        body.fields.clone(),
    )?;
    // A grant on a token also reaches the machines it already enrolled.
    if let Grantee::Token(token) = &grantee {
        for machine in tx.machines()? {
            if machine.token_id.as_deref() == Some(token.as_str()) {
                copy_to_machine(tx, &grant, &machine.id, ctx.now)?;
            }
        }
    }
    let who = match &grantee {
        Grantee::Machine(m) => format!("machine:{m}"),
        Grantee::Token(t) => format!("token:{t}"),
    };
    ctx.audit.target = format!(
        "grant:{} {who} -> {}/{}",
        grant.id, body.project, body.secret
    );
    Ok(record(&GrantDetail {
        grant,
        project: body.project,
        secret: body.secret,
        live_version: 0,
    }))
}

fn record(detail: &GrantDetail) -> GrantRecord {
    let (machine_id, token_id) = match &detail.grant.grantee {
        Grantee::Machine(m) => (Some(m.clone()), None),
        Grantee::Token(t) => (None, Some(t.clone())),
    };
    GrantRecord {
        id: detail.grant.id.clone(),
        machine_id,
        token_id,
        project: detail.project.clone(),
        secret: detail.secret.clone(),
        fields: detail.grant.fields.clone(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub machine_id: Option<String>,
    pub token_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The filter and page of `GET /v1/grants`, decided in the pipeline.
pub fn list_query(ctx: &Ctx<'_>) -> Result<(Option<Grantee>, Page<GrantKey>)> {
    let query: ListQuery = ctx.query()?;
    let page = Page::parse(query.limit, query.cursor.as_deref())?;
    let grantee = match (query.machine_id, query.token_id) {
        (Some(m), None) => Some(Grantee::Machine(m)),
        (None, Some(t)) => Some(Grantee::Token(t)),
        (None, None) => None,
        _ => return Err(invalid("filter by `machine_id` or by `token_id`, not both")),
    };
    Ok((grantee, page))
}

/// One page of grants, by project, secret and id.
pub fn list(
    r: &mut dyn Read,
    grantee: Option<&Grantee>,
    page: &Page<GrantKey>,
) -> Result<GrantRecordList> {
    let (rows, next_cursor) = page.finish(r.grants_page(grantee, page)?, |d| {
        (d.project.clone(), d.secret.clone(), d.grant.id.clone())
    });
    Ok(GrantRecordList {
        grants: rows.iter().map(record).collect(),
        next_cursor,
    })
}

/// What a grantee may read, with each secret's live version.
pub fn views(tx: &mut dyn Tx, grantee: &Grantee) -> Result<Vec<GrantView>> {
    Ok(tx.grants(Some(grantee))?.into_iter().map(view).collect())
}

/// What a machine may read, with each secret's live version, on a
/// read-only snapshot (the same list as [`views`]).
pub fn read_views(r: &mut dyn Read, machine_id: &str) -> Result<Vec<GrantView>> {
    Ok(r.machine_grants(machine_id)?
        .into_iter()
        .map(view)
        .collect())
}

fn view(d: GrantDetail) -> GrantView {
    GrantView {
        id: d.grant.id,
        project: d.project,
        secret: d.secret,
        fields: d.grant.fields,
        version: Some(d.live_version),
    }
}

pub fn delete(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<()> {
    ctx.audit.target = format!("grant:{id}");
    if !tx.delete_grant(id)? {
        return Err(not_found(format!("grant {id}")));
    }
    Ok(())
}
