//! The SecretGrant reconciler.
//!
//! Apply: once the named EnrollmentToken has a vault token, check each
//! secret (and field) against the vault's metadata and converge the token's
//! pre-baked grants to the union of every live SecretGrant naming that token
//! (see [`super::grants`]); report `resolved`, `unresolved` and a `Ready`
//! condition. A missing secret is an `unresolved` entry and a slower requeue,
//! never an error loop.
//!
//! Cleanup (finalizer `signet.dev/grant`): converge again without this
//! SecretGrant, so grants nobody wants any more leave the token (and the
//! machines it enrolled).

use std::sync::Arc;

use kube::{
    Api, ResourceExt as _,
    api::ListParams,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};

use super::{
    Error,
    context::{Context, merge_condition, ready_condition},
    grants,
    vault::VaultApi,
};
use crate::crd::{EnrollmentToken, READY_CONDITION, SecretGrant, SecretGrantStatus};

/// Finalizer that holds the resource until its grants are withdrawn.
pub const FINALIZER: &str = "signet.dev/grant";

/// Condition reasons of a SecretGrant.
pub mod reason {
    /// Every secret is granted on the token.
    pub const RESOLVED: &str = "Resolved";
    /// Some secrets could not be granted; see `status.unresolved`.
    pub const UNRESOLVED: &str = "SecretsUnresolved";
    /// The EnrollmentToken does not exist or has no vault token yet.
    pub const TOKEN_NOT_READY: &str = "TokenNotReady";
}

/// Entry point for the controller.
pub async fn reconcile<V: VaultApi>(
    grant: Arc<SecretGrant>,
    ctx: Arc<Context<V>>,
) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let key = format!("SecretGrant/{namespace}/{}", grant.name_any());
    let api: Api<SecretGrant> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            Finalizer::Apply(grant) => apply(&grant, &ctx).await,
            Finalizer::Cleanup(grant) => cleanup(&grant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// The project and vault token id of the EnrollmentToken `name`, when it
/// exists, is not being deleted and has a vault token.
async fn token_target<V: VaultApi>(
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
) -> Result<Option<(String, String)>, Error> {
    let tokens: Api<EnrollmentToken> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(tokens.get_opt(name).await?.and_then(|token| {
        if token.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let id = token.status.as_ref()?.token_id.clone()?;
        Some((token.spec.project, id))
    }))
}

async fn apply<V: VaultApi>(grant: &SecretGrant, ctx: &Context<V>) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let name = grant.name_any();
    let token_name = &grant.spec.enrollment_token;
    let generation = grant.metadata.generation;
    let previous = grant.status.clone().unwrap_or_default();
    let now = ctx.now();

    let Some((project, token_id)) = token_target(ctx, &namespace, token_name).await? else {
        let message =
            format!("EnrollmentToken {token_name} does not exist or has no vault token yet");
        let status = SecretGrantStatus {
            conditions: merge_condition(
                &previous.conditions,
                ready_condition(
                    false,
                    reason::TOKEN_NOT_READY,
                    message.clone(),
                    generation,
                    now,
                ),
            ),
            observed_generation: generation,
            ..previous.clone()
        };
        if status != previous {
            ctx.event(
                grant,
                EventType::Normal,
                reason::TOKEN_NOT_READY,
                "Resolve",
                message,
            )
            .await;
        }
        ctx.apply_status::<SecretGrant, _>(&namespace, &name, &previous, &status)
            .await?;
        // The EnrollmentToken watch triggers a reconcile as soon as it gets
        // its vault token; the requeue is a safety net.
        return Ok(Action::requeue(ctx.settings.waiting_retry));
    };

    let siblings = siblings(ctx, &namespace, token_name).await?;
    let resolution = grants::resolve(&ctx.vault, &project, &siblings).await?;
    let outcome = grants::converge(&ctx.vault, &project, &token_id, &resolution.desired).await?;
    if !outcome.created.is_empty() || !outcome.removed.is_empty() {
        tracing::info!(
            namespace, token = %token_name, token_id = %token_id,
            created = ?outcome.created, removed = ?outcome.removed,
            "converged token grants"
        );
    }

    let mut resolved = resolution.resolved.get(&name).cloned().unwrap_or_default();
    let mut unresolved = resolution
        .unresolved
        .get(&name)
        .cloned()
        .unwrap_or_default();
    // A secret the vault refused after metadata said it was fine (deleted
    // meanwhile, for instance) is unresolved too.
    for refused in &outcome.refused {
        if resolved.contains(&refused.secret) {
            resolved.retain(|s| s != &refused.secret);
            unresolved.push(refused.clone());
        }
    }

    let condition = if unresolved.is_empty() {
        ready_condition(
            true,
            reason::RESOLVED,
            format!(
                "{} secret(s) granted on vault token {token_id}",
                resolved.len()
            ),
            generation,
            now,
        )
    } else {
        let names: Vec<&str> = unresolved.iter().map(|u| u.secret.as_str()).collect();
        ready_condition(
            false,
            reason::UNRESOLVED,
            format!("not granted: {}", names.join(", ")),
            generation,
            now,
        )
    };
    let status = SecretGrantStatus {
        conditions: merge_condition(&previous.conditions, condition),
        resolved,
        unresolved,
        observed_generation: generation,
    };
    let was_ready = previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY_CONDITION)
        .map(|c| (c.status.clone(), c.message.clone()));
    let is_ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY_CONDITION)
        .map(|c| (c.status.clone(), c.message.clone()));
    if was_ready != is_ready {
        let (type_, reason) = if status.unresolved.is_empty() {
            (EventType::Normal, reason::RESOLVED)
        } else {
            (EventType::Warning, reason::UNRESOLVED)
        };
        let note = is_ready.map(|(_, message)| message).unwrap_or_default();
        ctx.event(grant, type_, reason, "Resolve", note).await;
    }
    let waiting = !status.unresolved.is_empty();
    ctx.apply_status::<SecretGrant, _>(&namespace, &name, &previous, &status)
        .await?;
    Ok(Action::requeue(if waiting {
        ctx.settings.waiting_retry
    } else {
        ctx.settings.resync
    }))
}

/// The SecretGrants of the namespace that name `token`.
async fn siblings<V: VaultApi>(
    ctx: &Context<V>,
    namespace: &str,
    token: &str,
) -> Result<Vec<SecretGrant>, Error> {
    let api: Api<SecretGrant> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|g| g.spec.enrollment_token == token)
        .collect())
}

async fn cleanup<V: VaultApi>(grant: &SecretGrant, ctx: &Context<V>) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let token_name = &grant.spec.enrollment_token;
    if let Some((project, token_id)) = token_target(ctx, &namespace, token_name).await? {
        // This grant carries a deletion timestamp, so `resolve` leaves it out.
        let siblings = siblings(ctx, &namespace, token_name).await?;
        let resolution = grants::resolve(&ctx.vault, &project, &siblings).await?;
        grants::converge(&ctx.vault, &project, &token_id, &resolution.desired).await?;
    }
    // Without a vault token there is nothing to withdraw: the token's
    // revocation ends its grants' use.
    Ok(Action::await_change())
}
