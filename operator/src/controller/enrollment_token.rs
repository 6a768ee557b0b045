//! The EnrollmentToken reconciler.
//!
//! Apply: make sure a live vault token backs the resource and that its raw
//! value sits in the Secret `signet-token-<name>` (owned by the resource,
//! server-side applied). A new vault token is issued when there is none, when
//! the spec changed (`generation != observedGeneration`), when the current
//! one entered the last third of its TTL, when it was revoked or vanished in
//! the vault, or when the Secret lost it. A new token is seeded with the
//! grants its SecretGrants resolve to, then every other live vault token of
//! this resource (the previous one, or one orphaned by a failed status
//! write) is revoked. The reconcile requeues before the renewal time.
//!
//! Cleanup (finalizer `signet.dev/token`): revoke the resource's vault tokens
//! (not found is success) and delete the Secret (its owner reference would
//! too, where a garbage collector runs).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Resource as _, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use signet_client::api::{CreateToken, TokenConstraints, TokenGrant, TokenView};
use zeroize::Zeroizing;

use super::{
    Error,
    context::{Context, MANAGER, merge_condition, ready_condition},
    grants,
    vault::{VaultApi, is_not_found},
};
use crate::crd::{
    EnrollmentToken, EnrollmentTokenSpec, EnrollmentTokenStatus, SecretGrant, TOKEN_SECRET_KEY,
    token_secret_name,
};

/// Finalizer that holds the resource until its vault token is revoked.
pub const FINALIZER: &str = "signet.dev/token";

/// Condition reasons of an EnrollmentToken.
pub mod reason {
    /// The token is live and its Secret written.
    pub const READY: &str = "TokenReady";
    /// A duration of the spec does not parse.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The vault refused or could not be reached.
    pub const VAULT_ERROR: &str = "VaultError";
    /// Every allowed use of the token is spent.
    pub const EXHAUSTED: &str = "TokenExhausted";
}

/// Why a new vault token is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The resource has no vault token yet.
    Missing,
    /// The spec changed since the token was issued.
    SpecChanged,
    /// The token is in the last third of its lifetime (or past it).
    Expiring,
    /// The vault no longer has the token, or it was revoked there.
    GoneInVault,
    /// The Secret holding the raw token is missing or incomplete.
    SecretLost,
}

impl Renewal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "no token yet",
            Self::SpecChanged => "spec changed",
            Self::Expiring => "token near expiry",
            Self::GoneInVault => "token revoked or missing in the vault",
            Self::SecretLost => "token Secret missing",
        }
    }
}

/// The parsed durations of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    /// Lifetime of the raw token.
    pub ttl: Duration,
    /// Lifetime of each enrolled machine.
    pub machine_lifetime: Duration,
}

impl Durations {
    /// Parses `tokenTtl` and `machineLifetime`, naming the bad field.
    pub fn parse(spec: &EnrollmentTokenSpec) -> Result<Self, String> {
        let ttl = crate::duration::parse(&spec.token_ttl).map_err(|e| format!("tokenTtl: {e}"))?;
        let machine_lifetime = crate::duration::parse(&spec.machine_lifetime)
            .map_err(|e| format!("machineLifetime: {e}"))?;
        if ttl.as_secs() == 0 || machine_lifetime.as_secs() == 0 {
            return Err("tokenTtl and machineLifetime must be at least one second".to_owned());
        }
        Ok(Self {
            ttl,
            machine_lifetime,
        })
    }
}

/// When a token expiring at `expires` with lifetime `ttl` is renewed: at the
/// start of the last third of its lifetime.
pub fn renew_at(expires: Timestamp, ttl: Duration) -> Timestamp {
    let third = SignedDuration::try_from(ttl / 3).unwrap_or(SignedDuration::ZERO);
    expires.checked_sub(third).unwrap_or(expires)
}

/// Whether (and why) a new vault token must be issued.
pub fn renewal(
    status: &EnrollmentTokenStatus,
    generation: Option<i64>,
    current: Option<&TokenView>,
    secret_holds_token: bool,
    ttl: Duration,
    now: Timestamp,
) -> Option<Renewal> {
    if status.token_id.is_none() {
        return Some(Renewal::Missing);
    }
    let Some(current) = current.filter(|view| !view.revoked) else {
        return Some(Renewal::GoneInVault);
    };
    if generation.is_some() && status.observed_generation != generation {
        return Some(Renewal::SpecChanged);
    }
    if !secret_holds_token {
        return Some(Renewal::SecretLost);
    }
    match current.expires_at.parse::<Timestamp>() {
        Ok(expires) if now < renew_at(expires, ttl) => None,
        _ => Some(Renewal::Expiring),
    }
}

/// Name of the vault token of this resource: unique per resource (its UID)
/// so several clusters can share a vault.
fn vault_token_name(token: &EnrollmentToken) -> String {
    format!(
        "k8s:{}/{}:{}",
        token.namespace().unwrap_or_default(),
        token.name_any(),
        token.uid().unwrap_or_default()
    )
}

/// Entry point for the controller: the finalizer dispatches to apply and
/// cleanup.
pub async fn reconcile<V: VaultApi>(
    token: Arc<EnrollmentToken>,
    ctx: Arc<Context<V>>,
) -> Result<Action, Error> {
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let key = format!("EnrollmentToken/{namespace}/{}", token.name_any());
    let api: Api<EnrollmentToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, token, |event| async {
        match event {
            Finalizer::Apply(token) => apply(&token, &ctx).await,
            Finalizer::Cleanup(token) => cleanup(&token, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn apply<V: VaultApi>(token: &EnrollmentToken, ctx: &Context<V>) -> Result<Action, Error> {
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let name = token.name_any();
    let generation = token.metadata.generation;
    let previous = token.status.clone().unwrap_or_default();

    let durations = match Durations::parse(&token.spec) {
        Ok(durations) => durations,
        Err(message) => {
            let mut status = previous.clone();
            status.observed_generation = generation;
            status.conditions = merge_condition(
                &previous.conditions,
                ready_condition(
                    false,
                    reason::INVALID_SPEC,
                    message.clone(),
                    generation,
                    ctx.now(),
                ),
            );
            ctx.apply_status::<EnrollmentToken, _>(&namespace, &name, &previous, &status)
                .await?;
            ctx.event(
                token,
                EventType::Warning,
                reason::INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };

    match ensure_token(token, ctx, &namespace, &name, durations, &previous).await {
        Ok(action) => Ok(action),
        Err(error) => {
            if let Error::Vault(vault_error) = &error {
                let mut status = previous.clone();
                status.conditions = merge_condition(
                    &previous.conditions,
                    ready_condition(
                        false,
                        reason::VAULT_ERROR,
                        vault_error.to_string(),
                        generation,
                        ctx.now(),
                    ),
                );
                // Best effort: the original error is what gets reported.
                if let Err(patch_error) = ctx
                    .apply_status::<EnrollmentToken, _>(&namespace, &name, &previous, &status)
                    .await
                {
                    tracing::warn!(error = %patch_error, "cannot record the vault error in the status");
                }
                ctx.event(
                    token,
                    EventType::Warning,
                    reason::VAULT_ERROR,
                    "Reconcile",
                    vault_error.to_string(),
                )
                .await;
            }
            Err(error)
        }
    }
}

async fn ensure_token<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    durations: Durations,
    previous: &EnrollmentTokenStatus,
) -> Result<Action, Error> {
    let generation = token.metadata.generation;
    let secret_name = token_secret_name(name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_holds_token = secrets
        .get_opt(&secret_name)
        .await?
        .and_then(|secret| secret.data)
        .is_some_and(|data| data.get(TOKEN_SECRET_KEY).is_some_and(|v| !v.0.is_empty()));

    let views = ctx.vault.tokens().await?;
    let current = previous
        .token_id
        .as_deref()
        .and_then(|id| views.iter().find(|view| view.id == id));
    let now = ctx.now();
    let why = renewal(
        previous,
        generation,
        current,
        secret_holds_token,
        durations.ttl,
        now,
    );

    let view = match why {
        None => current
            .cloned()
            .ok_or(Error::Inconsistent("current token"))?,
        Some(why) => {
            let view = issue(token, ctx, namespace, name, durations).await?;
            tracing::info!(namespace, name, token_id = %view.id, reason = why.as_str(), "issued enrollment token");
            ctx.event(
                token,
                EventType::Normal,
                "TokenIssued",
                "IssueToken",
                format!("issued vault token {} ({})", view.id, why.as_str()),
            )
            .await;
            view
        }
    };

    let expires = view.expires_at.parse::<Timestamp>().ok();
    let exhausted = token.spec.max_uses.is_some_and(|max| view.uses >= max);
    let condition = if exhausted {
        ready_condition(
            false,
            reason::EXHAUSTED,
            format!("all {} uses of token {} are spent", view.uses, view.id),
            generation,
            now,
        )
    } else {
        ready_condition(
            true,
            reason::READY,
            format!("vault token {} is live", view.id),
            generation,
            now,
        )
    };
    let status = EnrollmentTokenStatus {
        conditions: merge_condition(&previous.conditions, condition),
        token_id: Some(view.id.clone()),
        secret_name: Some(secret_name),
        uses: Some(view.uses),
        expires_at: expires.map(Time),
        observed_generation: generation,
    };
    ctx.apply_status::<EnrollmentToken, _>(namespace, name, previous, &status)
        .await?;

    if why.is_some() {
        // Only once the new token is recorded: revoke the ones it replaces.
        revoke_others(token, ctx, &views, Some(&view.id)).await?;
    }

    let next = expires.map_or(ctx.settings.resync, |expires| {
        let until = renew_at(expires, durations.ttl).duration_since(now);
        Duration::try_from(until)
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), ctx.settings.resync)
    });
    Ok(Action::requeue(next))
}

/// Creates the vault token, seeded with the grants of the SecretGrants that
/// name this resource, and writes its raw value into the Secret. If the
/// Secret cannot be written the new token is revoked again.
async fn issue<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    durations: Durations,
) -> Result<TokenView, Error> {
    let spec = &token.spec;
    let grants_api: Api<SecretGrant> = Api::namespaced(ctx.client.clone(), namespace);
    let mine: Vec<SecretGrant> = grants_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|grant| grant.spec.enrollment_token == name)
        .collect();
    let resolution = grants::resolve(&ctx.vault, &spec.project, &mine).await?;
    let body = CreateToken {
        project: spec.project.clone(),
        name: vault_token_name(token),
        max_uses: spec.max_uses,
        ttl_seconds: durations.ttl.as_secs(),
        machine_lifetime_seconds: durations.machine_lifetime.as_secs(),
        grants: resolution
            .desired
            .iter()
            .map(|(secret, fields)| TokenGrant {
                secret: secret.clone(),
                fields: grants::api_fields(fields),
            })
            .collect(),
        constraints: TokenConstraints {
            hostname_regex: spec.hostname_regex.clone(),
            source_cidrs: spec.source_cidrs.clone(),
            name_template: spec.name_template.clone(),
            ..TokenConstraints::default()
        },
    };
    let created = ctx.vault.create_token(&body).await?;
    let raw = Zeroizing::new(created.token.into_bytes());
    let view = created.view;
    if let Err(error) = write_secret(token, ctx, namespace, name, &raw).await {
        if let Err(revoke_error) = ctx.vault.revoke_token(&view.id).await {
            tracing::warn!(error = %revoke_error, token_id = %view.id, "cannot revoke a token whose Secret was not written");
        }
        return Err(error);
    }
    Ok(view)
}

async fn write_secret<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    raw: &[u8],
) -> Result<(), Error> {
    let owner = token
        .controller_owner_ref(&())
        .ok_or(Error::Inconsistent("owner reference"))?;
    let secret_name = token_secret_name(name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                ),
                ("signet.dev/enrollment-token".to_owned(), name.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_SECRET_KEY.to_owned(),
            ByteString(raw.to_vec()),
        )])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &secret_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await?;
    Ok(())
}

/// Revokes every live vault token of this resource except `keep`.
async fn revoke_others<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    views: &[TokenView],
    keep: Option<&str>,
) -> Result<(), Error> {
    let own_name = vault_token_name(token);
    let recorded = token.status.as_ref().and_then(|s| s.token_id.as_deref());
    for view in views.iter().filter(|view| {
        !view.revoked
            && Some(view.id.as_str()) != keep
            && (view.name == own_name || Some(view.id.as_str()) == recorded)
    }) {
        match ctx.vault.revoke_token(&view.id).await {
            Ok(()) => {
                tracing::info!(token_id = %view.id, "revoked enrollment token");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

async fn cleanup<V: VaultApi>(token: &EnrollmentToken, ctx: &Context<V>) -> Result<Action, Error> {
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let name = token.name_any();
    let views = ctx.vault.tokens().await?;
    revoke_others(token, ctx, &views, None).await?;
    // A token recorded in the status but absent from the list is gone
    // already; revoking it again is harmless and covers a stale list.
    if let Some(id) = token.status.as_ref().and_then(|s| s.token_id.as_deref()) {
        match ctx.vault.revoke_token(id).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    match secrets
        .delete(&token_secret_name(&name), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    ctx.event(
        token,
        EventType::Normal,
        "TokenRevoked",
        "RevokeToken",
        "revoked the vault token".to_owned(),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(expires_at: &str, revoked: bool) -> TokenView {
        TokenView {
            id: "tok_1".into(),
            name: "n".into(),
            project: "p".into(),
            max_uses: None,
            uses: 0,
            expires_at: expires_at.into(),
            machine_lifetime_seconds: 3600,
            revoked,
            constraints: TokenConstraints::default(),
        }
    }

    fn status(generation: i64) -> EnrollmentTokenStatus {
        EnrollmentTokenStatus {
            token_id: Some("tok_1".into()),
            observed_generation: Some(generation),
            ..EnrollmentTokenStatus::default()
        }
    }

    #[test]
    fn renewal_starts_in_the_last_third() {
        let ttl = Duration::from_secs(3 * 3600);
        let issued: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let expires = "2030-01-01T03:00:00Z";
        let fresh = view(expires, false);
        let at = |secs: i64| issued.checked_add(SignedDuration::from_secs(secs)).unwrap();
        assert_eq!(
            renew_at(expires.parse().unwrap(), ttl),
            at(2 * 3600),
            "renewal at two thirds of the lifetime"
        );
        assert_eq!(
            renewal(&status(1), Some(1), Some(&fresh), true, ttl, at(3600)),
            None
        );
        assert_eq!(
            renewal(&status(1), Some(1), Some(&fresh), true, ttl, at(2 * 3600)),
            Some(Renewal::Expiring)
        );
        assert_eq!(
            renewal(&status(1), Some(1), Some(&fresh), true, ttl, at(4 * 3600)),
            Some(Renewal::Expiring)
        );
    }

    #[test]
    fn renewal_reasons() {
        let ttl = Duration::from_secs(3600);
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let fresh = view("2030-01-01T01:00:00Z", false);
        let revoked = view("2030-01-01T01:00:00Z", true);
        let empty = EnrollmentTokenStatus::default();
        assert_eq!(
            renewal(&empty, Some(1), None, false, ttl, now),
            Some(Renewal::Missing)
        );
        assert_eq!(
            renewal(&status(1), Some(1), None, true, ttl, now),
            Some(Renewal::GoneInVault)
        );
        assert_eq!(
            renewal(&status(1), Some(1), Some(&revoked), true, ttl, now),
            Some(Renewal::GoneInVault)
        );
        assert_eq!(
            renewal(&status(1), Some(2), Some(&fresh), true, ttl, now),
            Some(Renewal::SpecChanged)
        );
        assert_eq!(
            renewal(&status(1), Some(1), Some(&fresh), false, ttl, now),
            Some(Renewal::SecretLost)
        );
        let garbled = view("soon", false);
        assert_eq!(
            renewal(&status(1), Some(1), Some(&garbled), true, ttl, now),
            Some(Renewal::Expiring)
        );
    }

    #[test]
    fn bad_durations_name_the_field() {
        let mut spec = EnrollmentTokenSpec {
            project: "p".into(),
            max_uses: None,
            token_ttl: "later".into(),
            machine_lifetime: "1h".into(),
            name_template: None,
            allowed_service_accounts: vec![],
            hostname_regex: None,
            source_cidrs: vec![],
        };
        assert!(Durations::parse(&spec).unwrap_err().starts_with("tokenTtl"));
        spec.token_ttl = "1h".into();
        spec.machine_lifetime = "0s".into();
        assert!(
            Durations::parse(&spec)
                .unwrap_err()
                .starts_with("machineLifetime")
        );
        spec.machine_lifetime = "500ms".into();
        assert!(Durations::parse(&spec).is_err());
    }
}
