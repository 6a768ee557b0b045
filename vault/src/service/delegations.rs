//! Delegations: what an admin lets an agent hand out. An agent may create an
//! enrollment token or policy, or a grant, only within them: per secret
//! (optionally per field), per Kubernetes namespace of a registered cluster,
//! or for machines outside Kubernetes. Admins are never limited by them.

use serde::Deserialize;
use signet_client::api::{
    CreateDelegation, DelegationList, DelegationView, ErrorCode, NamespaceRef,
};

use super::{check_field_name, secrets};
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::page::{DelegationKey, Page};
use crate::request::{Caller, Ctx};
use crate::store::{Agent, Delegation, DelegationDetail, Project, Read, Secret, Tx};

/// Kubernetes namespace names: DNS labels.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let ok = (1..=63).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "namespace {namespace:?} is not a Kubernetes namespace name"
        )))
    }
}

fn scope_text(scope: Option<&NamespaceRef>) -> String {
    match scope {
        Some(s) => format!("namespace {}/{}", s.cluster, s.namespace),
        None => "machines outside Kubernetes".to_owned(),
    }
}

fn not_delegated(message: String) -> Error {
    Error::denied(ErrorCode::NotDelegated, message)
}

fn view(d: &DelegationDetail) -> DelegationView {
    DelegationView {
        id: d.delegation.id.clone(),
        agent_id: d.delegation.agent_id.clone(),
        project: d.project.clone(),
        secret: d.secret.clone(),
        fields: d.delegation.fields.clone(),
        kubernetes: d.delegation.scope.clone(),
        created_at: rfc3339(d.delegation.created_at),
        created_by: d.delegation.created_by.clone(),
    }
}

/// `POST /v1/delegations` (admins only).
pub fn create(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<DelegationView> {
    let body: CreateDelegation = ctx.json()?;
    ctx.audit.target = format!(
        "agent:{} -> {}/{}",
        body.agent_id, body.project, body.secret
    );
    tx.agent(&body.agent_id)?
        .ok_or_else(|| not_found(format!("agent {}", body.agent_id)))?;
    let project = secrets::project(tx, &body.project)?;
    let secret = secrets::secret(tx, &project, &body.secret)?;
    if let Some(fields) = &body.fields {
        if fields.is_empty() {
            return Err(invalid(
                "`fields` must name at least one field (omit it for the whole secret)",
            ));
        }
        for field in fields {
            check_field_name(field)?;
        }
    }
    if let Some(scope) = &body.kubernetes {
        check_namespace(&scope.namespace)?;
        if tx.cluster(&scope.cluster)?.is_none() {
            return Err(invalid(format!(
                "cluster {:?} is not registered (POST /v1/clusters first)",
                scope.cluster
            )));
        }
    }
    let delegation = Delegation {
        id: ids::new(ids::DELEGATION),
        agent_id: body.agent_id.clone(),
        secret_id: secret.id.clone(),
        fields: body.fields.clone(),
        scope: body.kubernetes.clone(),
        created_at: ctx.now,
        created_by: ctx.caller.id(),
    };
    tx.insert_delegation(&delegation)?;
    ctx.audit.target = format!(
        "delegation:{} agent:{} -> {}/{} for {}",
        delegation.id,
        body.agent_id,
        body.project,
        body.secret,
        scope_text(body.kubernetes.as_ref())
    );
    Ok(view(&DelegationDetail {
        delegation,
        project_id: project.id,
        project: project.name,
        secret: secret.name,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub agent_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /v1/delegations`: all (or one agent's) for an admin; an agent sees
/// only its own.
///
/// The filter (whose delegations) and the page, decided in the pipeline.
pub fn list_query(ctx: &Ctx<'_>) -> Result<(Option<String>, Page<DelegationKey>)> {
    let query: ListQuery = ctx.query()?;
    let page = Page::parse(query.limit, query.cursor.as_deref())?;
    let agent = match &ctx.caller {
        Caller::Agent(agent) => Some(agent.id.clone()),
        _ => query.agent_id,
    };
    Ok((agent, page))
}

/// One page of delegations, by agent, project, secret and id.
pub fn list(
    r: &mut dyn Read,
    agent: Option<&str>,
    page: &Page<DelegationKey>,
) -> Result<DelegationList> {
    let (rows, next_cursor) = page.finish(r.delegations_page(agent, page)?, |d| {
        (
            d.delegation.agent_id.clone(),
            d.project.clone(),
            d.secret.clone(),
            d.delegation.id.clone(),
        )
    });
    Ok(DelegationList {
        delegations: rows.iter().map(view).collect(),
        next_cursor,
    })
}

/// `DELETE /v1/delegations/{id}` (admins only). What the agent already
/// handed out stays; revoke those grants to take them back.
pub fn delete(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<()> {
    ctx.audit.target = format!("delegation:{id}");
    if !tx.delete_delegation(id)? {
        return Err(not_found(format!("delegation {id}")));
    }
    Ok(())
}

/// The agent behind a request, when it is one (admins are not limited).
pub fn acting_agent<'a>(ctx: &'a Ctx<'_>) -> Option<&'a Agent> {
    match &ctx.caller {
        Caller::Agent(agent) => Some(agent),
        _ => None,
    }
}

/// Refuses an agent that holds no delegation at all in `project` for
/// `scope`: it may not even create an empty policy there.
pub fn require_project(
    tx: &mut dyn Tx,
    agent: &Agent,
    project: &Project,
    scope: Option<&NamespaceRef>,
) -> Result<()> {
    if tx.delegated_in_project(&agent.id, &project.id, scope)? {
        return Ok(());
    }
    Err(not_delegated(format!(
        "agent {} holds no delegation of project {} for {}",
        agent.id,
        project.name,
        scope_text(scope)
    )))
}

/// Refuses an agent that holds no delegation of the whole `secret` (in any
/// scope): what binds every reader of the secret, such as its policy, is
/// only for such an agent.
pub fn require_whole(
    tx: &mut dyn Tx,
    agent: &Agent,
    project: &Project,
    secret: &Secret,
) -> Result<()> {
    let delegations = tx.delegations_on(&agent.id, &secret.id)?;
    if delegations.iter().any(|d| d.fields.is_none()) {
        return Ok(());
    }
    Err(not_delegated(format!(
        "agent {} has no delegation of the whole of {}/{}: only such an agent sets its policy",
        agent.id, project.name, secret.name
    )))
}

/// Refuses a grant of `secret` (narrowed to `fields`, or whole) for
/// machines of `scope` unless a delegation covers it: same scope, and either
/// the whole secret or every granted field.
pub fn require_grant(
    tx: &mut dyn Tx,
    agent: &Agent,
    project: &Project,
    secret: &Secret,
    fields: Option<&[String]>,
    scope: Option<&NamespaceRef>,
) -> Result<()> {
    let delegations = tx.delegations_on(&agent.id, &secret.id)?;
    let in_scope: Vec<&Delegation> = delegations
        .iter()
        .filter(|d| d.scope.as_ref() == scope)
        .collect();
    let covered = |field: &str| {
        in_scope.iter().any(|d| {
            d.fields
                .as_ref()
                .is_none_or(|f| f.iter().any(|x| x == field))
        })
    };
    let whole = in_scope.iter().any(|d| d.fields.is_none());
    let missing = match fields {
        None if whole => return Ok(()),
        None => "the whole secret".to_owned(),
        Some(fields) => match fields.iter().find(|f| !covered(f)) {
            None => return Ok(()),
            Some(field) => format!("field {field:?}"),
        },
    };
    Err(not_delegated(format!(
        "agent {} has no delegation of {} of {}/{} for {}",
        agent.id,
        missing,
        project.name,
        secret.name,
        scope_text(scope)
    )))
}
