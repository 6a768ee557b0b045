//! The HTTP surface: `fn router(vault) -> Router`, so tests drive it with
//! `oneshot` and the server wraps it in TLS and graceful shutdown.

mod error;
mod extract;
mod limit;
mod openapi;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use signet_client::api::*;
use signet_client::protocol::PublicKey;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::status;
use extract::{Param, Signed};

use crate::changes;
use crate::error::{Error, Result};
use crate::service::{
    access, attest, canary, clusters, cosign, delegations, enroll, grants, identities, lifecycle,
    rotation, secrets, webhooks,
};
use crate::store::Grantee;
use crate::vault::{Audience, Vault};

type AppState = State<Arc<Vault>>;

/// The route table. Each line serves a route and documents it: `routes!`
/// takes the method and path from the handler's `#[utoipa::path]`, so the
/// router and the OpenAPI document cannot drift apart. One `routes!` per
/// path: the macro mounts every handler it lists on every path they name.
fn routes() -> OpenApiRouter<Arc<Vault>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(enroll_machine))
        .routes(routes!(enroll_admin))
        .routes(routes!(machine_grants))
        .routes(routes!(revoke_self))
        .routes(routes!(machine_changes))
        .routes(routes!(read_secret))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(list_secrets))
        .routes(routes!(secret_meta, write_secret, delete_secret))
        .routes(routes!(list_grants, create_grant))
        .routes(routes!(delete_grant))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(renew_token))
        .routes(routes!(list_clusters, register_cluster))
        .routes(routes!(remove_cluster))
        .routes(routes!(list_delegations, create_delegation))
        .routes(routes!(delete_delegation))
        .routes(routes!(list_machines))
        .routes(routes!(revoke_machine))
        .routes(routes!(disable_machine))
        .routes(routes!(enable_machine))
        .routes(routes!(extend_machine))
        .routes(routes!(unlock_project))
        .routes(routes!(set_policy))
        .routes(routes!(rollback_secret))
        .routes(routes!(list_cosigns, create_cosign))
        .routes(routes!(approve_cosign))
        .routes(routes!(machine_cosign))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_rotations, create_rotation))
        .routes(routes!(trigger_rotation))
        .routes(routes!(rotation_history))
        .routes(routes!(claim_rotation))
        .routes(routes!(report_rotation))
        .routes(routes!(create_agent))
        .routes(routes!(create_admin))
        .routes(routes!(audit))
        .routes(routes!(audit_checkpoint))
        .routes(routes!(audit_checkpoint_key))
        .routes(routes!(audit_verify))
}

/// Every route of the vault, and `/v1/openapi.json` serving the document
/// of the others.
pub fn router(vault: Arc<Vault>) -> Router {
    let (routes, document) = routes().split_for_parts();
    let document = Arc::new(openapi::complete(document));
    routes
        .route(
            "/v1/openapi.json",
            get(move || openapi::document(Arc::clone(&document))),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            limit::InFlight::new(Arc::clone(&vault)),
            limit::limit,
        ))
        // Outermost: a source over its budget takes no slot in flight.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&vault),
            limit::budget,
        ))
        .with_state(vault)
}

async fn not_found() -> Response {
    error::body(ErrorCode::NotFound, "no such route".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::InvalidRequest,
                message: "method not allowed on this route".into(),
            },
        }),
    )
        .into_response()
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn no_content(_: ()) -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers a transaction.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "the store is unavailable (a text body), or the vault is at its limit of requests in flight (an ErrorBody, with Retry-After)")))]
async fn readyz(State(vault): AppState) -> Response {
    let ready = tokio::task::spawn_blocking(move || vault.with_tx(|tx, _| Ok(tx.admin_count()?)))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if ready {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "metrics", content_type = "text/plain")))]
async fn metrics(State(vault): AppState) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        vault.metrics().render(),
    )
        .into_response()
}

/// Enrolls a new machine: proof of possession of a fresh key and either an
/// enrollment token or a pod's attestation (a projected service-account
/// token the vault checks with its cluster's TokenReview API).
#[utoipa::path(post, path = "/v1/enroll", request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse), (status = 400, body = ErrorBody, description = "the body is not the enrollment JSON, or a bad public_key, hostname or metadata"), (status = 409, body = ErrorBody, description = "this public key is already enrolled"), (status = 503, body = ErrorBody, description = "the cluster's TokenReview API cannot be reached, or the vault is at its limit of requests in flight")))]
async fn enroll_machine(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    let (body, key) = parse_enroll(&vault, &request, "enroll").await?;
    // The review is network I/O: done before the transaction, and only for
    // a request that is fresh and signed by the key it enrolls. A request
    // that fails those checks is refused by the pipeline below anyway.
    let attested = match &body.attestation {
        Some(attestation) if vault.enroll_signature_holds(&request, &key) => {
            Some(attest::review(&vault, attestation).await)
        }
        Some(_) => Some(Err(Error::denied(
            ErrorCode::BadSignature,
            "the enrollment is not signed by the key it enrolls",
        ))),
        None => None,
    };
    vault
        .handle(
            request,
            "enroll",
            "token".into(),
            Audience::Enroll(key),
            move |ctx, tx| enroll::enroll(ctx, tx, &body, attested),
        )
        .await
        .map(created)
}

/// Registers a new admin key with a single-use bootstrap token.
#[utoipa::path(post, path = "/v1/admin/enroll", request_body = EnrollRequest,
    responses((status = 201, body = AdminEnrollResponse), (status = 400, body = ErrorBody, description = "the body is not the enrollment JSON, or a bad public_key, hostname or metadata"), (status = 409, body = ErrorBody, description = "this public key is already an admin's")))]
async fn enroll_admin(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    let (body, key) = parse_enroll(&vault, &request, "admin.enroll").await?;
    vault
        .handle(
            request,
            "admin.enroll",
            "bootstrap".into(),
            Audience::Enroll(key),
            move |ctx, tx| enroll::enroll_admin(ctx, tx, &body),
        )
        .await
        .map(created)
}

/// The enrollment body carries the key that signed it, so it is parsed
/// before the signature can be checked; a bad one is denied and audited.
async fn parse_enroll(
    vault: &Arc<Vault>,
    request: &crate::vault::Request,
    action: &'static str,
) -> Result<(EnrollRequest, PublicKey)> {
    let parsed = serde_json::from_slice::<EnrollRequest>(&request.body)
        .map_err(|_| {
            Error::denied(
                ErrorCode::MalformedJson,
                "enrollment body must be JSON with token, public_key, hostname, metadata",
            )
        })
        .and_then(|body| {
            let key = PublicKey::parse(&body.public_key).map_err(|e| {
                Error::denied(ErrorCode::InvalidRequest, format!("public_key: {e}"))
            })?;
            Ok((body, key))
        });
    if let Err(error) = &parsed {
        vault.deny_early(request, action, error);
    }
    parsed
}

/// What the calling machine may read, with live versions.
#[utoipa::path(get, path = "/v1/machine/grants", responses((status = 200, body = GrantList)))]
async fn machine_grants(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<GrantList>> {
    vault
        .handle_query(
            request,
            "machine.grants",
            "self".into(),
            Audience::Machine,
            |ctx, tx| {
                let id = ctx.caller.machine()?.id.clone();
                Ok(GrantList {
                    grants: grants::views(tx, &Grantee::Machine(id))?,
                })
            },
        )
        .await
        .map(Json)
}

/// Waits for a change of what the calling machine may read: answers at once
/// when its grants or their live versions differ from the list `since`
/// names (or without `since`), else when they change or after `wait`
/// seconds (default 30, at most 60) with the same list and token. Names,
/// fields and versions only, never a value. A waiting request holds
/// neither the writer nor a store connection.
#[utoipa::path(get, path = "/v1/machine/changes",
    params(("since" = Option<String>, Query, description = "the token of the list the client holds"),
           ("wait" = Option<u64>, Query, description = "seconds to wait for a change, 0 to 60 (default 30)")),
    responses((status = 200, body = ChangeList, description = "the list and its token: a new token when something changed, the same one when the wait ran out"),
              (status = 400, body = ErrorBody, description = "a wait over 60 or not a number, or an unknown query parameter"),
              (status = 429, body = ErrorBody, description = "too_many_waiting: this machine (2 by default) or the vault already has as many requests waiting as it allows; poll instead. Or rate_limited (with Retry-After): too many requests from this source were denied before their signature verified")))]
async fn machine_changes(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<ChangeList>> {
    // Before the list is read: a change committed after that read wakes
    // the wait below.
    let seen = vault.changes().subscribe();
    let waiters = Arc::clone(vault.changes());
    let (held, slot, wait) = vault
        .handle_query(
            request,
            "machine.changes",
            "self".into(),
            Audience::Machine,
            move |ctx, tx| {
                let query: changes::Query = ctx.query()?;
                let wait = query.wait()?;
                let id = ctx.caller.machine()?.id.clone();
                let held = changes::list(grants::views(tx, &Grantee::Machine(id.clone()))?)?;
                // Stale or absent `since`, or no wait: answered at once,
                // without a place among the waiting.
                let slot = match query.since {
                    Some(since) if since == held.token && !wait.is_zero() => {
                        Some(waiters.enter(&id, &ctx.settings.limits)?)
                    }
                    _ => None,
                };
                Ok((held, slot, wait))
            },
        )
        .await?;
    let Some(slot) = slot else {
        return Ok(Json(held));
    };
    changes::wait(
        Arc::clone(&vault.store),
        vault.durability(),
        seen,
        slot,
        held,
        wait,
    )
    .await
    .map(Json)
}

/// A machine revokes itself (on shutdown).
#[utoipa::path(delete, path = "/v1/machine/self", responses((status = 204)))]
async fn revoke_self(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle_change(
            request,
            "machine.revoke_self",
            "self".into(),
            Audience::Machine,
            identities::revoke_self,
        )
        .await
        .map(no_content)
}

/// Reads a granted secret (machines only). Query: `version`, `field`.
#[utoipa::path(get, path = "/v1/secrets/{project}/{secret}",
    params(("project" = String, Path), ("secret" = String, Path),
           ("version" = Option<u32>, Query), ("field" = Option<String>, Query)),
    responses((status = 200, body = SecretValue), (status = 400, body = ErrorBody, description = "a bad version or field query, or a field asked of a plain secret"), (status = 404, body = ErrorBody, description = "no such version, or no such field in it"), (status = 423, body = ErrorBody, description = "the project is locked (a canary was read): an admin must unlock it")))]
async fn read_secret(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Json<SecretValue>> {
    let target = format!("secret:{project}/{secret}");
    let names = (project.clone(), secret.clone());
    vault
        .handle_read(
            request,
            "secret.read",
            target,
            move |r, root, machine, request_target| {
                secrets::read_ahead(r, root, machine, (&names.0, &names.1), request_target)
            },
            move |ctx, tx| secrets::read(ctx, tx, &project, &secret),
        )
        .await
        .map(Json)
}

/// Projects by name, one page at a time.
#[utoipa::path(get, path = "/v1/projects", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = ProjectList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_projects(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<ProjectList>> {
    vault
        .list(
            request,
            "project.list",
            "projects".into(),
            Audience::Management(Some(Scope::Metadata)),
            |ctx, _| ctx.page(),
            |r, page| secrets::list_projects(r, &page),
        )
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject, responses((status = 201, body = ProjectView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a bad name"), (status = 409, body = ErrorBody, description = "a project of that name exists")))]
async fn create_project(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "project.create",
            "project".into(),
            Audience::Management(None),
            |ctx, tx| {
                let body: CreateProject = ctx.json()?;
                secrets::create_project(ctx, tx, &body.name)
            },
        )
        .await
        .map(created)
}

/// A project's secrets by name, one page at a time.
#[utoipa::path(get, path = "/v1/projects/{project}/secrets", params(("project" = String, Path), ("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = SecretList), (status = 400, body = ErrorBody, description = "a bad limit or cursor"), (status = 404, body = ErrorBody, description = "no such project")))]
async fn list_secrets(
    State(vault): AppState,
    Param(project): Param<String>,
    Signed(request): Signed,
) -> Result<Json<SecretList>> {
    let target = format!("project:{project}");
    vault
        .list(
            request,
            "secret.list",
            target,
            Audience::Management(Some(Scope::Metadata)),
            move |ctx, tx| Ok((secrets::project(tx, &project)?, ctx.page()?)),
            |r, (project, page)| secrets::list(r, &project, &page),
        )
        .await
        .map(Json)
}

/// Metadata of a secret: versions and field names, never values.
#[utoipa::path(get, path = "/v1/projects/{project}/secrets/{secret}", params(("project" = String, Path), ("secret" = String, Path)), responses((status = 200, body = SecretMeta), (status = 404, body = ErrorBody, description = "no such project or secret")))]
async fn secret_meta(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Json<SecretMeta>> {
    let target = format!("secret:{project}/{secret}");
    vault
        .handle(
            request,
            "secret.meta",
            target,
            Audience::Management(Some(Scope::Metadata)),
            move |_, tx| {
                let p = secrets::project(tx, &project)?;
                let s = secrets::secret(tx, &p, &secret)?;
                secrets::meta(tx, &p, &s)
            },
        )
        .await
        .map(Json)
}

/// Writes a new version of a secret (admins only) and makes it live.
#[utoipa::path(put, path = "/v1/projects/{project}/secrets/{secret}", params(("project" = String, Path), ("secret" = String, Path)), request_body = WriteSecret, responses((status = 200, body = SecretMeta), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, a bad secret or field name, or not exactly one of value and fields"), (status = 404, body = ErrorBody, description = "no such project")))]
async fn write_secret(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Json<SecretMeta>> {
    let target = format!("secret:{project}/{secret}");
    vault
        .handle_change(
            request,
            "secret.write",
            target,
            Audience::Management(None),
            move |ctx, tx| secrets::write(ctx, tx, &project, &secret),
        )
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/projects/{project}/secrets/{secret}", params(("project" = String, Path), ("secret" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such project or secret")))]
async fn delete_secret(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("secret:{project}/{secret}");
    vault
        .handle_change(
            request,
            "secret.delete",
            target,
            Audience::Management(None),
            move |ctx, tx| secrets::delete(ctx, tx, &project, &secret),
        )
        .await
        .map(no_content)
}

/// Grants by project, secret and id, one page at a time.
#[utoipa::path(get, path = "/v1/grants", params(("machine_id" = Option<String>, Query), ("token_id" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = GrantRecordList), (status = 400, body = ErrorBody, description = "a bad limit or cursor, or both machine_id and token_id")))]
async fn list_grants(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<GrantRecordList>> {
    vault
        .list(
            request,
            "grant.list",
            "grants".into(),
            Audience::Management(Some(Scope::Grants)),
            |ctx, _| grants::list_query(ctx),
            |r, (grantee, page)| grants::list(r, grantee.as_ref(), &page),
        )
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/v1/grants", request_body = CreateGrant, responses((status = 201, body = GrantRecord), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, not exactly one of machine_id and token_id, or fields the secret does not have"), (status = 404, body = ErrorBody, description = "no such machine, token, project, secret or live version")))]
async fn create_grant(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle_change(
            request,
            "grant.create",
            "grant".into(),
            Audience::Management(Some(Scope::Grants)),
            grants::create,
        )
        .await
        .map(created)
}

#[utoipa::path(delete, path = "/v1/grants/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such grant")))]
async fn delete_grant(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("grant:{id}");
    vault
        .handle_change(
            request,
            "grant.delete",
            target,
            Audience::Management(Some(Scope::Grants)),
            move |ctx, tx| grants::delete(ctx, tx, &id),
        )
        .await
        .map(no_content)
}

/// Enrollment tokens, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/enrollment-tokens", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = TokenList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_tokens(State(vault): AppState, Signed(request): Signed) -> Result<Json<TokenList>> {
    vault
        .list(
            request,
            "token.list",
            "tokens".into(),
            Audience::Management(Some(Scope::Tokens)),
            |ctx, _| ctx.page(),
            |r, page| enroll::list_tokens(r, &page),
        )
        .await
        .map(Json)
}

/// Creates an enrollment token; the raw token is in this answer only.
#[utoipa::path(post, path = "/v1/enrollment-tokens", request_body = CreateToken, responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a bad ttl, constraint, binding or grant"), (status = 404, body = ErrorBody, description = "no such project or secret")))]
async fn create_token(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "token.create",
            "token".into(),
            Audience::Management(Some(Scope::Tokens)),
            enroll::create_token,
        )
        .await
        .map(created)
}

#[utoipa::path(delete, path = "/v1/enrollment-tokens/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such token")))]
async fn revoke_token(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("token:{id}");
    vault
        .handle(
            request,
            "token.revoke",
            target,
            Audience::Management(Some(Scope::Tokens)),
            move |ctx, tx| enroll::revoke_token(ctx, tx, &id),
        )
        .await
        .map(no_content)
}

/// A raw token's successor: same project, binding, constraints and grants,
/// sharing the remaining uses; the old token stays valid for the grace.
#[utoipa::path(post, path = "/v1/enrollment-tokens/{id}/renew", params(("id" = String, Path)), request_body = RenewToken, responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, a bad ttl or grace, or a bootstrap token"), (status = 404, body = ErrorBody, description = "no such token"), (status = 409, body = ErrorBody, description = "the token is revoked or expired")))]
async fn renew_token(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("token:{id}");
    vault
        .handle(
            request,
            "token.renew",
            target,
            Audience::Management(Some(Scope::Tokens)),
            move |ctx, tx| enroll::renew_token(ctx, tx, &id),
        )
        .await
        .map(created)
}

/// Registers a cluster whose pods may enroll by attestation (admins only).
#[utoipa::path(post, path = "/v1/clusters", request_body = RegisterCluster, responses((status = 201, body = ClusterView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a bad name, URL, CA, audience or reviewer token"), (status = 409, body = ErrorBody, description = "a cluster of that name exists")))]
async fn register_cluster(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "cluster.register",
            "cluster".into(),
            Audience::Management(None),
            clusters::register,
        )
        .await
        .map(created)
}

/// Registered clusters by name, one page at a time.
#[utoipa::path(get, path = "/v1/clusters", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = ClusterList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_clusters(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<ClusterList>> {
    vault
        .list(
            request,
            "cluster.list",
            "clusters".into(),
            Audience::Management(Some(Scope::Metadata)),
            |ctx, _| ctx.page(),
            |r, page| clusters::list(r, &page),
        )
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/clusters/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such cluster")))]
async fn remove_cluster(
    State(vault): AppState,
    Param(name): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("cluster:{name}");
    vault
        .handle(
            request,
            "cluster.remove",
            target,
            Audience::Management(None),
            move |ctx, tx| clusters::remove(ctx, tx, &name),
        )
        .await
        .map(no_content)
}

/// Delegates a secret (or some fields) to an agent for one namespace of a
/// registered cluster, or for machines outside Kubernetes (admins only).
#[utoipa::path(post, path = "/v1/delegations", request_body = CreateDelegation, responses((status = 201, body = DelegationView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, bad fields or namespace, or a cluster not registered"), (status = 404, body = ErrorBody, description = "no such agent, project or secret")))]
async fn create_delegation(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "delegation.create",
            "delegation".into(),
            Audience::Management(None),
            delegations::create,
        )
        .await
        .map(created)
}

/// Delegations: all for an admin (query `agent_id` to filter), its own for
/// an agent; one page at a time.
#[utoipa::path(get, path = "/v1/delegations", params(("agent_id" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = DelegationList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_delegations(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<DelegationList>> {
    vault
        .list(
            request,
            "delegation.list",
            "delegations".into(),
            Audience::Management(Some(Scope::Metadata)),
            |ctx, _| delegations::list_query(ctx),
            |r, (agent, page)| delegations::list(r, agent.as_deref(), &page),
        )
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/delegations/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such delegation")))]
async fn delete_delegation(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("delegation:{id}");
    vault
        .handle(
            request,
            "delegation.delete",
            target,
            Audience::Management(None),
            move |ctx, tx| delegations::delete(ctx, tx, &id),
        )
        .await
        .map(no_content)
}

/// Machines, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/machines", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = MachineList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_machines(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<MachineList>> {
    vault
        .list(
            request,
            "machine.list",
            "machines".into(),
            Audience::Management(Some(Scope::Machines)),
            |ctx, _| Ok((ctx.page()?, ctx.now)),
            |r, (page, now)| identities::list_machines(r, &page, now),
        )
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/machines/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such machine")))]
async fn revoke_machine(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("machine:{id}");
    vault
        .handle_change(
            request,
            "machine.revoke",
            target,
            Audience::Management(Some(Scope::Machines)),
            move |ctx, tx| identities::revoke_machine(ctx, tx, &id),
        )
        .await
        .map(no_content)
}

/// Registers an agent (automation such as the operator) by its public key.
#[utoipa::path(post, path = "/v1/agents", request_body = CreateIdentity, responses((status = 201, body = IdentityView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a bad name or public_key"), (status = 409, body = ErrorBody, description = "an agent with this public key exists")))]
async fn create_agent(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "agent.create",
            "agent".into(),
            Audience::Management(None),
            identities::create_agent,
        )
        .await
        .map(created)
}

/// Registers another admin by its public key.
#[utoipa::path(post, path = "/v1/admins", request_body = CreateIdentity, responses((status = 201, body = IdentityView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, a bad name or public_key, or scopes"), (status = 409, body = ErrorBody, description = "an admin with this public key exists")))]
async fn create_admin(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "admin.create",
            "admin".into(),
            Audience::Management(None),
            identities::create_admin,
        )
        .await
        .map(created)
}

/// The hash-chained audit log (admins, and agents with the audit scope). Query: `after`, `limit`.
#[utoipa::path(get, path = "/v1/audit", params(("after" = Option<u64>, Query, description = "the last seq already read (0 for the first page)"), ("limit" = Option<u32>, Query, description = "1 to 5000 (default 500)")), responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody, description = "a bad after or limit")))]
async fn audit(State(vault): AppState, Signed(request): Signed) -> Result<Json<AuditPage>> {
    vault
        .list(
            request,
            "audit.list",
            "audit".into(),
            Audience::Management(Some(Scope::Audit)),
            crate::service::audit::range,
            crate::service::audit::page,
        )
        .await
        .map(Json)
}

/// A checkpoint of the audit chain's head, signed with the vault's
/// checkpoint key (admins, and agents with the audit scope). It is also published where the database
/// cannot rewrite it: the log stream and the `audit.checkpoint` webhook event.
#[utoipa::path(get, path = "/v1/audit/checkpoint", responses((status = 200, body = AuditCheckpoint)))]
async fn audit_checkpoint(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<AuditCheckpoint>> {
    let signer = Arc::clone(&vault);
    let checkpoint = vault
        .handle(
            request,
            "audit.checkpoint",
            "audit".into(),
            Audience::Management(Some(Scope::Audit)),
            move |ctx, tx| crate::service::audit::checkpoint(&signer, tx, ctx.now),
        )
        .await?;
    // Logged only now that the head it names has committed.
    crate::audit::log_checkpoint(
        &checkpoint,
        crate::service::audit::Trigger::OnDemand.as_str(),
    );
    Ok(Json(checkpoint))
}

/// The public key that signs audit checkpoints (admins, and agents with
/// the audit scope), to pin. It is
/// derived from the root key: the same on every replica and after restarts.
#[utoipa::path(get, path = "/v1/audit/checkpoint-key", responses((status = 200, body = CheckpointKey)))]
async fn audit_checkpoint_key(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<CheckpointKey>> {
    let key = vault.checkpoint_public_key();
    vault
        .handle(
            request,
            "audit.checkpoint_key",
            "audit".into(),
            Audience::Management(Some(Scope::Audit)),
            move |_, _| Ok(CheckpointKey { key }),
        )
        .await
        .map(Json)
}

/// The vault checks every stored entry's HMAC and link (admins, and
/// agents with the audit scope) and
/// names the first entry that does not hold. Only the vault holds the key
/// the hashes are keyed with; a client checks links and checkpoints itself.
#[utoipa::path(post, path = "/v1/audit/verify", responses((status = 200, body = AuditVerification)))]
async fn audit_verify(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<AuditVerification>> {
    vault
        .handle(
            request,
            "audit.verify",
            "audit".into(),
            Audience::Management(Some(Scope::Audit)),
            |_, _| Ok(()),
        )
        .await?;
    // Outside the writer, one page per transaction.
    vault.verify_audit().await.map(Json)
}

/// Disables a machine: its requests are refused with `identity_disabled`.
#[utoipa::path(post, path = "/v1/machines/{id}/disable", params(("id" = String, Path)), responses((status = 200, body = MachineView), (status = 404, body = ErrorBody, description = "no such machine")))]
async fn disable_machine(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Json<MachineView>> {
    let target = format!("machine:{id}");
    vault
        .handle(
            request,
            "machine.disable",
            target,
            Audience::Management(Some(Scope::Machines)),
            move |ctx, tx| lifecycle::disable(ctx, tx, &id),
        )
        .await
        .map(Json)
}

/// Re-enables a disabled machine (an expired one needs `extend`).
#[utoipa::path(post, path = "/v1/machines/{id}/enable", params(("id" = String, Path)), responses((status = 200, body = MachineView), (status = 404, body = ErrorBody, description = "no such machine")))]
async fn enable_machine(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Json<MachineView>> {
    let target = format!("machine:{id}");
    vault
        .handle(
            request,
            "machine.enable",
            target,
            Audience::Management(Some(Scope::Machines)),
            move |ctx, tx| lifecycle::enable(ctx, tx, &id),
        )
        .await
        .map(Json)
}

/// Sets a machine's expiry to `lifetime_seconds` from now; audited with the previous expiry.
#[utoipa::path(post, path = "/v1/machines/{id}/extend", params(("id" = String, Path)), request_body = ExtendMachine, responses((status = 200, body = MachineView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a lifetime out of range"), (status = 404, body = ErrorBody, description = "no such machine")))]
async fn extend_machine(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Json<MachineView>> {
    let target = format!("machine:{id}");
    vault
        .handle(
            request,
            "machine.extend",
            target,
            Audience::Management(Some(Scope::Machines)),
            move |ctx, tx| lifecycle::extend(ctx, tx, &id),
        )
        .await
        .map(Json)
}

/// Unlocks a project a canary read locked (admins only).
#[utoipa::path(post, path = "/v1/projects/{project}/unlock", params(("project" = String, Path)), responses((status = 200, body = ProjectView), (status = 404, body = ErrorBody, description = "no such project"), (status = 409, body = ErrorBody, description = "the project is not locked")))]
async fn unlock_project(
    State(vault): AppState,
    Param(project): Param<String>,
    Signed(request): Signed,
) -> Result<Json<ProjectView>> {
    let target = format!("project:{project}");
    vault
        .handle(
            request,
            "project.unlock",
            target,
            Audience::Management(None),
            move |ctx, tx| canary::unlock(ctx, tx, &project),
        )
        .await
        .map(Json)
}

/// Attaches an access policy to a secret (an empty object removes it).
/// Admins set any policy; an agent with the policies scope only tightens
/// the policy of a secret delegated to it whole.
#[utoipa::path(put, path = "/v1/projects/{project}/secrets/{secret}/policy", params(("project" = String, Path), ("secret" = String, Path)), request_body = AccessPolicy, responses((status = 200, body = SecretMeta), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a policy that does not hold"), (status = 404, body = ErrorBody, description = "no such project or secret")))]
async fn set_policy(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Json<SecretMeta>> {
    let target = format!("secret:{project}/{secret}");
    vault
        .handle(
            request,
            "secret.policy",
            target,
            Audience::Management(Some(Scope::Policies)),
            move |ctx, tx| access::set_policy(ctx, tx, &project, &secret),
        )
        .await
        .map(Json)
}

/// Makes an older version live again (admins only).
#[utoipa::path(post, path = "/v1/projects/{project}/secrets/{secret}/rollback", params(("project" = String, Path), ("secret" = String, Path)), request_body = Rollback, responses((status = 200, body = SecretMeta), (status = 400, body = ErrorBody, description = "the body is not the expected JSON"), (status = 404, body = ErrorBody, description = "no such project, secret or version")))]
async fn rollback_secret(
    State(vault): AppState,
    Param((project, secret)): Param<(String, String)>,
    Signed(request): Signed,
) -> Result<Json<SecretMeta>> {
    let target = format!("secret:{project}/{secret}");
    vault
        .handle_change(
            request,
            "secret.rollback",
            target,
            Audience::Management(None),
            move |ctx, tx| secrets::rollback(ctx, tx, &project, &secret),
        )
        .await
        .map(Json)
}

/// Open co-sign requests (admins only), oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/cosign", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = CosignList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_cosigns(State(vault): AppState, Signed(request): Signed) -> Result<Json<CosignList>> {
    vault
        .list(
            request,
            "cosign.list",
            "cosign".into(),
            Audience::Management(None),
            |ctx, _| Ok((ctx.page()?, ctx.now)),
            |r, (page, now)| cosign::list_cosigns(r, now, &page),
        )
        .await
        .map(Json)
}

/// An admin requests a co-signed read on behalf of a machine; another admin approves it.
#[utoipa::path(post, path = "/v1/cosign", request_body = CreateCosign, responses((status = 201, body = CosignView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or no machine_id"), (status = 404, body = ErrorBody, description = "no such machine, project or secret")))]
async fn create_cosign(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "cosign.request",
            "cosign".into(),
            Audience::Management(None),
            cosign::create_cosign,
        )
        .await
        .map(created)
}

/// A machine requests a co-signed read of a secret for itself.
#[utoipa::path(post, path = "/v1/machine/cosign", request_body = CreateCosign, responses((status = 201, body = CosignView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, or a machine_id (a machine asks for itself only)"), (status = 404, body = ErrorBody, description = "no such project or secret")))]
async fn machine_cosign(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "cosign.request",
            "cosign".into(),
            Audience::Machine,
            cosign::create_cosign,
        )
        .await
        .map(created)
}

/// Approves a co-sign request: single use, valid 15 minutes, by an admin other than the requester.
#[utoipa::path(post, path = "/v1/cosign/{id}/approve", params(("id" = String, Path)), responses((status = 200, body = CosignView), (status = 404, body = ErrorBody, description = "no such co-sign request"), (status = 409, body = ErrorBody, description = "the request is already approved, used or expired")))]
async fn approve_cosign(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Json<CosignView>> {
    let target = format!("cosign:{id}");
    vault
        .handle(
            request,
            "cosign.approve",
            target,
            Audience::Management(None),
            move |ctx, tx| cosign::approve_cosign(ctx, tx, &id),
        )
        .await
        .map(Json)
}

/// Webhooks, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/webhooks", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = WebhookList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_webhooks(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<WebhookList>> {
    vault
        .list(
            request,
            "webhook.list",
            "webhooks".into(),
            Audience::Management(None),
            |ctx, _| ctx.page(),
            |r, page| webhooks::list(r, &page),
        )
        .await
        .map(Json)
}

/// Registers a webhook. The destination is resolved and refused when it is
/// loopback, private, link-local or metadata unless the vault allowlists it.
#[utoipa::path(post, path = "/v1/webhooks", request_body = CreateWebhook, responses((status = 201, body = WebhookView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, a bad url or events, or a destination the vault refuses")))]
async fn create_webhook(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    // Resolved before the transaction (DNS must not hold the store's lock),
    // and only for a caller the vault authenticated: a forged request never
    // makes it look a name up. Lookups are bounded in number and time. An
    // unparsable body or an unauthenticated caller resolves to nothing; the
    // pipeline and the operation say why.
    let audience = Audience::Management(None);
    let resolved = match serde_json::from_slice::<CreateWebhook>(&request.body)
        .ok()
        .and_then(|body| webhooks::destination(&body.url).ok())
    {
        Some(dest) if vault.authenticated(&request, audience).await => {
            webhooks::resolve(&dest, &vault.settings().lookups).await
        }
        _ => Ok(Vec::new()),
    };
    vault
        .handle(
            request,
            "webhook.create",
            "webhook".into(),
            audience,
            move |ctx, tx| webhooks::create(ctx, tx, resolved),
        )
        .await
        .map(created)
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody, description = "no such webhook")))]
async fn delete_webhook(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("webhook:{id}");
    vault
        .handle(
            request,
            "webhook.delete",
            target,
            Audience::Management(None),
            move |ctx, tx| webhooks::delete(ctx, tx, &id),
        )
        .await
        .map(no_content)
}

/// Puts a secret under rotation (admins only): provider, target, admin
/// credential, agent machine, schedule and password policy.
#[utoipa::path(post, path = "/v1/rotations", request_body = CreateRotation, responses((status = 201, body = RotationView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON, a bad target, policy, interval, lease or grace, or a secret without `username` and `password` fields"), (status = 404, body = ErrorBody, description = "no such project, secret or agent machine in the project"), (status = 409, body = ErrorBody, description = "the secret already has a rotation config, or the admin credential is granted to someone other than the agent")))]
async fn create_rotation(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "rotation.create",
            "rotation".into(),
            Audience::Management(None),
            rotation::create,
        )
        .await
        .map(created)
}

/// Rotation configs by creation, a page at a time (admins only).
#[utoipa::path(get, path = "/v1/rotations", params(("limit" = Option<u32>, Query, description = "items per page, 1 to 1000 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the page before")), responses((status = 200, body = RotationList), (status = 400, body = ErrorBody, description = "a bad limit or cursor")))]
async fn list_rotations(
    State(vault): AppState,
    Signed(request): Signed,
) -> Result<Json<RotationList>> {
    vault
        .list(
            request,
            "rotation.list",
            "rotations".into(),
            Audience::Management(None),
            |ctx, _| ctx.page(),
            |r, page| rotation::list(r, &page),
        )
        .await
        .map(Json)
}

/// Starts a rotation now (admins only): a pending credential no reader
/// sees until the agent confirmed it.
#[utoipa::path(post, path = "/v1/rotations/{id}/trigger", params(("id" = String, Path)), responses((status = 201, body = RotationJobView), (status = 404, body = ErrorBody, description = "no such rotation"), (status = 409, body = ErrorBody, description = "a rotation of this secret is already running")))]
async fn trigger_rotation(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Response> {
    let target = format!("rotation:{id}");
    vault
        .handle(
            request,
            "rotation.trigger",
            target,
            Audience::Management(None),
            move |ctx, tx| rotation::trigger(ctx, tx, &id),
        )
        .await
        .map(created)
}

/// A rotation's jobs, newest first, at most 100 (admins only). Never a
/// credential.
#[utoipa::path(get, path = "/v1/rotations/{id}/jobs", params(("id" = String, Path)), responses((status = 200, body = RotationJobList), (status = 404, body = ErrorBody, description = "no such rotation")))]
async fn rotation_history(
    State(vault): AppState,
    Param(id): Param<String>,
    Signed(request): Signed,
) -> Result<Json<RotationJobList>> {
    let target = format!("rotation:{id}");
    vault
        .handle(
            request,
            "rotation.history",
            target,
            Audience::Management(None),
            move |ctx, tx| rotation::history(ctx, tx, &id),
        )
        .await
        .map(Json)
}

/// A rotation agent (a machine named as some config's agent) claims its
/// oldest job: apply a new credential, or retire the previous one. The
/// answer carries the admin credential and the new one: only ever to this
/// agent. `204` when there is nothing to do.
#[utoipa::path(post, path = "/v1/machine/rotations/claim", responses((status = 200, body = RotationClaim), (status = 204, description = "no job for this agent now"), (status = 403, body = ErrorBody, description = "this machine is no rotation config's agent")))]
async fn claim_rotation(State(vault): AppState, Signed(request): Signed) -> Result<Response> {
    vault
        .handle(
            request,
            "rotation.claim",
            "rotations".into(),
            Audience::Machine,
            rotation::claim,
        )
        .await
        .map(|claim| match claim {
            Some(claim) => Json(claim).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        })
}

/// The agent reports its step: `confirmed` promotes the new credential to
/// the live version (machines waiting on changes hear at once); a failure
/// discards it and keeps the live one; `retired` ends the job.
#[utoipa::path(post, path = "/v1/machine/rotations/{job}/report", params(("job" = String, Path)), request_body = RotationReport, responses((status = 200, body = RotationJobView), (status = 400, body = ErrorBody, description = "the body is not the expected JSON"), (status = 403, body = ErrorBody, description = "this machine is not the job's agent"), (status = 404, body = ErrorBody, description = "no such job"), (status = 409, body = ErrorBody, description = "the job's lease ran out (it failed), or the outcome does not fit its state")))]
async fn report_rotation(
    State(vault): AppState,
    Param(job): Param<String>,
    Signed(request): Signed,
) -> Result<Json<RotationJobView>> {
    let target = format!("rotation job:{job}");
    vault
        .handle_change(
            request,
            "rotation.report",
            target,
            Audience::Machine,
            move |ctx, tx| rotation::report(ctx, tx, &job),
        )
        .await
        .map(Json)
}
