//! The SecretGrant reconciler.
//!
//! Apply: once the named EnrollmentToken has a live vault token, check each
//! secret (and field) against the vault's metadata and converge the
//! pre-baked grants of the EnrollmentToken's live vault tokens to the union
//! of every live SecretGrant naming it (see [`super::grants`]); report
//! `resolved`, `unresolved` and a `Ready` condition. A missing secret is an
//! `unresolved` entry and a slower requeue, never an error loop; one the
//! vault's admin has not delegated to the operator is reported with reason
//! `NotDelegated`, the vault's message and a Warning event.
//!
//! The vault tokens are found by the EnrollmentToken's name and UID in the
//! vault's list ([`enrollment_token::live_tokens`]), never by its
//! `status.tokenId`, which whoever may write that status could point at
//! another resource's token to have secrets granted there.
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
    enrollment_token, grants,
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
    /// The vault's admin has not delegated some of the secrets (or fields)
    /// to the operator for this namespace; the message names them.
    pub const NOT_DELEGATED: &str = super::grants::reason::NOT_DELEGATED;
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

/// One live vault token of an EnrollmentToken: its project and id.
struct Target {
    project: String,
    token_id: String,
}

/// The live vault tokens of the EnrollmentToken `name`, when it exists and
/// is not being deleted: found by its name and UID in the vault's list. All
/// of them, since a raw token's predecessor still enrolls machines during
/// its renewal grace.
async fn token_targets<V: VaultApi>(
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
) -> Result<Vec<Target>, Error> {
    let tokens: Api<EnrollmentToken> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(token) = tokens.get_opt(name).await? else {
        return Ok(Vec::new());
    };
    if token.metadata.deletion_timestamp.is_some() {
        return Ok(Vec::new());
    }
    let views = ctx.vault.tokens().await?;
    Ok(enrollment_token::live_tokens(&views, &token, ctx.now())
        .into_iter()
        .map(|view| Target {
            project: view.project.clone(),
            token_id: view.id.clone(),
        })
        .collect())
}

async fn apply<V: VaultApi>(grant: &SecretGrant, ctx: &Context<V>) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let name = grant.name_any();
    let token_name = &grant.spec.enrollment_token;
    let generation = grant.metadata.generation;
    let previous = grant.status.clone().unwrap_or_default();
    let now = ctx.now();

    let targets = token_targets(ctx, &namespace, token_name).await?;
    let Some(newest) = targets.first() else {
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
    let resolution = grants::resolve(&ctx.vault, &newest.project, &siblings).await?;
    let mut outcome = grants::Convergence::default();
    for target in &targets {
        let converged = grants::converge(
            &ctx.vault,
            &target.project,
            &target.token_id,
            &resolution.desired,
        )
        .await?;
        if !converged.created.is_empty() || !converged.removed.is_empty() {
            tracing::info!(
                namespace, token = %token_name, token_id = %target.token_id,
                created = ?converged.created, removed = ?converged.removed,
                "converged token grants"
            );
        }
        for refused in converged.refused {
            if !outcome.refused.iter().any(|r| r.secret == refused.secret) {
                outcome.refused.push(refused);
            }
        }
        outcome.not_delegated.extend(converged.not_delegated);
    }
    let mut not_delegated = resolution.not_delegated.clone();
    not_delegated.extend(outcome.not_delegated);
    let token_id = &newest.token_id;

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

    // The vault's messages for this grant's undelegated secrets.
    let refusals: Vec<&str> = unresolved
        .iter()
        .filter(|u| u.reason == reason::NOT_DELEGATED)
        .filter_map(|u| not_delegated.get(&u.secret).map(String::as_str))
        .collect();
    let condition = if !refusals.is_empty() {
        ready_condition(
            false,
            reason::NOT_DELEGATED,
            format!("the vault refused: {}", refusals.join("; ")),
            generation,
            now,
        )
    } else if unresolved.is_empty() {
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
        let (type_, reason) = if !refusals.is_empty() {
            (EventType::Warning, reason::NOT_DELEGATED)
        } else if status.unresolved.is_empty() {
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
    let targets = token_targets(ctx, &namespace, token_name).await?;
    if let Some(newest) = targets.first() {
        // This grant carries a deletion timestamp, so `resolve` leaves it out.
        let siblings = siblings(ctx, &namespace, token_name).await?;
        let resolution = grants::resolve(&ctx.vault, &newest.project, &siblings).await?;
        for target in &targets {
            grants::converge(
                &ctx.vault,
                &target.project,
                &target.token_id,
                &resolution.desired,
            )
            .await?;
        }
    }
    // Without a vault token there is nothing to withdraw: the token's
    // revocation ends its grants' use.
    Ok(Action::await_change())
}
