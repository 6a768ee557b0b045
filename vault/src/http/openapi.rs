//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use signet_client::api::*;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signet vault",
        description = "Every route except /healthz, /readyz, /metrics and /v1/openapi.json is signed: \
            headers Signet-Key, Signet-Timestamp, Signet-Nonce and Signet-Signature as docs/protocol.md \
            (signet wire protocol, version 1) describes. There are no bearer tokens."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::enroll_machine,
        super::enroll_admin,
        super::machine_grants,
        super::revoke_self,
        super::read_secret,
        super::list_projects,
        super::create_project,
        super::list_secrets,
        super::secret_meta,
        super::write_secret,
        super::delete_secret,
        super::list_grants,
        super::create_grant,
        super::delete_grant,
        super::list_tokens,
        super::create_token,
        super::revoke_token,
        super::renew_token,
        super::register_cluster,
        super::list_clusters,
        super::remove_cluster,
        super::create_delegation,
        super::list_delegations,
        super::delete_delegation,
        super::list_machines,
        super::revoke_machine,
        super::create_agent,
        super::create_admin,
        super::audit,
        super::audit_checkpoint,
        super::audit_checkpoint_key,
        super::audit_verify,
        super::disable_machine,
        super::enable_machine,
        super::extend_machine,
        super::unlock_project,
        super::set_policy,
        super::rollback_secret,
        super::list_cosigns,
        super::create_cosign,
        super::machine_cosign,
        super::approve_cosign,
        super::list_webhooks,
        super::create_webhook,
        super::delete_webhook,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        Scope,
        TokenGrant,
        VersionMeta,
        TokenView,
        TokenConstraints,
        TimeWindow,
        AccessPolicy,
        AuditAnchor,
        AuditBreak,
        AuditBreakKind,
        Attestation,
        KubernetesBinding,
        MachineKubernetes,
        NamespaceRef
    ))
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
