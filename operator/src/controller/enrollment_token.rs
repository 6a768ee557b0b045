//! The EnrollmentToken reconciler.
//!
//! Apply: make sure a live vault policy backs the resource. By default it is
//! an attested policy bound to (cluster, namespace, resource name): pods
//! prove who they are with a projected service-account token, and nothing
//! is written into the namespace. With `rawToken: true` the vault issues a
//! raw token instead, which goes into the Secret `signet-token-<name>`
//! (owned by the resource, server-side applied, annotated with the id of the
//! vault token it holds).
//!
//! The resource's vault tokens are found by their name in the vault's own
//! list ([`vault_token_name`]: namespace, name and the UID the API server
//! gave the object), never by `status.tokenId`: anyone allowed to write the
//! status could point that field at another resource's token and have the
//! operator renew, grant on or revoke it. The status only reports.
//!
//! The current token is the newest live one of the resource. What happens
//! to it ([`renewal`]):
//! - none, or none live (revoked, expired), or the spec changed (generation,
//!   or a binding other than the desired one: a mode switch, a token from
//!   before attestation): a fresh one is created, seeded with the grants its
//!   SecretGrants resolve to, and every other live token of the resource is
//!   revoked once the new one is recorded;
//! - in the last third of its lifetime: renewed. The successor shares the
//!   remaining uses (so `maxUses` caps across renewals), grants, constraints
//!   and binding; a raw token's predecessor stays valid for
//!   `Settings::renewal_grace` while the kubelet updates the mounted Secret,
//!   an attested policy's is replaced at once (no pod holds it);
//! - a raw token whose Secret is missing, empty or holds another token:
//!   renewed without grace, so deleting the Secret cannot reset the uses.
//!
//! The reconcile requeues before the renewal time. A vault refusal with code
//! `not_delegated` (the vault's admin has delegated nothing in the project
//! for this namespace to the operator) is a `Ready=False` condition with
//! reason `NotDelegated` and a Warning event carrying the vault's message,
//! which names the missing delegation. When only some seed grants are not
//! delegated, the policy is created without seed grants instead, and each
//! SecretGrant reports its own refusals.
//!
//! Cleanup (finalizer `signet.dev/token`): revoke the resource's vault tokens
//! (not found is success) and, for a raw token, delete the Secret (its owner
//! reference would too, where a garbage collector runs).

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
use signet_client::api::{
    CreateToken, CreatedToken, KubernetesBinding, RenewToken, TokenConstraints, TokenGrant,
    TokenView,
};
use zeroize::Zeroizing;

use super::{
    Error,
    context::{Context, MANAGER, merge_condition, ready_condition},
    grants,
    vault::{VaultApi, is_not_found, not_delegated},
};
use crate::crd::{
    EnrollmentToken, EnrollmentTokenSpec, EnrollmentTokenStatus, READY_CONDITION, SecretGrant,
    TOKEN_SECRET_KEY, token_secret_name,
};

/// Finalizer that holds the resource until its vault token is revoked.
pub const FINALIZER: &str = "signet.dev/token";

/// Annotation on a raw token's Secret: the id of the vault token it holds,
/// so a Secret left behind by an interrupted renewal is noticed and healed.
pub const TOKEN_ID_ANNOTATION: &str = "signet.dev/token-id";

/// Condition reasons of an EnrollmentToken.
pub mod reason {
    /// The policy (or raw token) is live, and a raw token's Secret written.
    pub const READY: &str = "TokenReady";
    /// A duration of the spec does not parse.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The vault refused or could not be reached.
    pub const VAULT_ERROR: &str = "VaultError";
    /// The vault refused because its admin has not delegated this namespace,
    /// or a secret or field asked for, to the operator.
    pub const NOT_DELEGATED: &str = "NotDelegated";
    /// Every allowed use of the token is spent.
    pub const EXHAUSTED: &str = "TokenExhausted";
    /// `rawToken: true`, but the operator may not manage Secrets here.
    pub const SECRETS_FORBIDDEN: &str = "SecretsForbidden";
}

/// Why the current vault token is replaced or renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The resource has no vault token yet.
    Missing,
    /// The spec (or the binding it asks for) changed since the token was
    /// issued.
    SpecChanged,
    /// The token is in the last third of its lifetime.
    Expiring,
    /// Every vault token of the resource was revoked, or has expired.
    GoneInVault,
    /// A raw token's Secret is missing, empty or holds another token.
    SecretLost,
}

impl Renewal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "no token yet",
            Self::SpecChanged => "spec changed",
            Self::Expiring => "token near expiry",
            Self::GoneInVault => "token revoked, expired or missing in the vault",
            Self::SecretLost => "token Secret missing or stale",
        }
    }

    /// Whether the current token is renewed (its successor keeps the spent
    /// uses) rather than replaced by a fresh one.
    fn renews(self) -> bool {
        matches!(self, Self::Expiring | Self::SecretLost)
    }
}

/// The parsed durations of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    /// Lifetime of the vault policy or raw token.
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

/// Name of the vault tokens of this resource: its namespace, name and UID.
/// The UID is set by the API server and never changes, so no other object
/// (in this cluster or another sharing the vault) can claim these tokens.
pub fn vault_token_name(token: &EnrollmentToken) -> String {
    format!(
        "k8s:{}/{}:{}",
        token.namespace().unwrap_or_default(),
        token.name_any(),
        token.uid().unwrap_or_default()
    )
}

/// Whether `view` can still enroll at `now`: not revoked, not expired. An
/// unreadable expiry counts as live (and is renewed at once, see
/// [`renewal`]).
fn is_live(view: &TokenView, now: Timestamp) -> bool {
    !view.revoked
        && view
            .expires_at
            .parse::<Timestamp>()
            .map_or(true, |expires| expires > now)
}

/// Every vault token of `token` in `views`, found by name (never by an id
/// read from the object), live ones only, newest (latest expiry) first.
pub fn live_tokens<'a>(
    views: &'a [TokenView],
    token: &EnrollmentToken,
    now: Timestamp,
) -> Vec<&'a TokenView> {
    let name = vault_token_name(token);
    let mut live: Vec<&TokenView> = views
        .iter()
        .filter(|view| view.name == name && is_live(view, now))
        .collect();
    live.sort_by_key(|view| std::cmp::Reverse(view.expires_at.parse::<Timestamp>().ok()));
    live
}

/// The binding a token of this resource must carry.
pub fn desired_binding(token: &EnrollmentToken, cluster: &str) -> KubernetesBinding {
    KubernetesBinding {
        cluster: cluster.to_owned(),
        namespace: token.namespace().unwrap_or_default(),
        policy: token.name_any(),
        service_accounts: token.spec.allowed_service_accounts.clone(),
        raw_token: token.spec.raw_token,
    }
}

/// Whether the vault's binding is the desired one (service accounts
/// compared as a set: the vault may sort or deduplicate them).
fn binding_matches(actual: Option<&KubernetesBinding>, desired: &KubernetesBinding) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    fn set(accounts: &[String]) -> std::collections::BTreeSet<&str> {
        accounts.iter().map(String::as_str).collect()
    }
    actual.cluster == desired.cluster
        && actual.namespace == desired.namespace
        && actual.policy == desired.policy
        && actual.raw_token == desired.raw_token
        && set(&actual.service_accounts) == set(&desired.service_accounts)
}

/// What the reconciler knows about the resource's vault tokens.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The newest live vault token of the resource.
    pub current: Option<&'a TokenView>,
    /// Whether the resource has vault tokens at all (live or not).
    pub any: bool,
    /// For a raw token: whether its Secret holds the current token. Always
    /// true for an attested policy, which has no Secret.
    pub secret_holds_current: bool,
}

/// Whether (and why) the current vault token must be replaced or renewed.
pub fn renewal(
    status: &EnrollmentTokenStatus,
    generation: Option<i64>,
    observed: Observed<'_>,
    desired: &KubernetesBinding,
    ttl: Duration,
    now: Timestamp,
) -> Option<Renewal> {
    let Some(current) = observed.current else {
        return Some(if observed.any {
            Renewal::GoneInVault
        } else {
            Renewal::Missing
        });
    };
    // The status can only ask for a fresh token here, which is harmless.
    let generation_changed = generation.is_some() && status.observed_generation != generation;
    if generation_changed || !binding_matches(current.kubernetes.as_ref(), desired) {
        return Some(Renewal::SpecChanged);
    }
    if !observed.secret_holds_current {
        return Some(Renewal::SecretLost);
    }
    match current.expires_at.parse::<Timestamp>() {
        Ok(expires) if now < renew_at(expires, ttl) => None,
        _ => Some(Renewal::Expiring),
    }
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
        Err(error @ Error::SecretsForbidden(_)) => {
            // Waiting for the cluster's admin: no raw token is minted
            // without a Secret to hold it.
            report_waiting(
                token,
                ctx,
                &previous,
                reason::SECRETS_FORBIDDEN,
                error.to_string(),
            )
            .await?;
            Ok(Action::requeue(ctx.settings.waiting_retry))
        }
        Err(Error::Vault(vault_error)) => {
            if let Some(message) = not_delegated(&vault_error) {
                // Waiting for the vault's admin, like a missing secret: a
                // condition and a slower retry, not an error loop.
                report_waiting(
                    token,
                    ctx,
                    &previous,
                    reason::NOT_DELEGATED,
                    format!("the vault refused: {message}"),
                )
                .await?;
                return Ok(Action::requeue(ctx.settings.waiting_retry));
            }
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
            Err(Error::Vault(vault_error))
        }
        Err(error) => Err(error),
    }
}

/// Records a refusal only an admin can lift (`NotDelegated`,
/// `SecretsForbidden`): `Ready=False` with `reason` and `note`, and a
/// Warning event with the same note when that condition is new.
async fn report_waiting<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    previous: &EnrollmentTokenStatus,
    reason: &str,
    note: String,
) -> Result<(), Error> {
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let name = token.name_any();
    let condition = ready_condition(
        false,
        reason,
        note.clone(),
        token.metadata.generation,
        ctx.now(),
    );
    let unchanged = previous.conditions.iter().any(|c| {
        c.type_ == READY_CONDITION
            && c.status == condition.status
            && c.reason == condition.reason
            && c.message == condition.message
    });
    let mut status = previous.clone();
    status.conditions = merge_condition(&previous.conditions, condition);
    tracing::warn!(namespace, name, reason, %note, "waiting for an admin");
    if !unchanged {
        ctx.event(token, EventType::Warning, reason, "IssueToken", note)
            .await;
    }
    ctx.apply_status::<EnrollmentToken, _>(&namespace, &name, previous, &status)
        .await?;
    Ok(())
}

/// A Kubernetes error on a raw token's Secret, with 403 told apart.
fn secret_error(error: kube::Error, namespace: &str) -> Error {
    match error {
        kube::Error::Api(response) if response.code == 403 => {
            Error::SecretsForbidden(namespace.to_owned())
        }
        error => Error::Kube(error),
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
    let raw = token.spec.raw_token;
    let now = ctx.now();
    let views = ctx.vault.tokens().await?;
    let own_name = vault_token_name(token);
    let live = live_tokens(&views, token, now);
    let current = live.first().copied();
    let secret_holds_current = if raw {
        let held = secret_token_id(ctx, namespace, name).await?;
        current.is_some_and(|view| held.as_deref() == Some(view.id.as_str()))
    } else {
        true
    };
    let observed = Observed {
        current,
        any: views.iter().any(|view| view.name == own_name),
        secret_holds_current,
    };
    let desired = desired_binding(token, &ctx.settings.cluster);
    let why = renewal(previous, generation, observed, &desired, durations.ttl, now);

    let (view, replaced) = match (why, current) {
        (None, Some(current)) => (current.clone(), false),
        (Some(why), Some(current)) if why.renews() => {
            // Without grace when the Secret lost the token (whoever copied
            // it keeps nothing), and for an attested policy (nobody holds it).
            let grace = if raw && why == Renewal::Expiring {
                ctx.settings.renewal_grace
            } else {
                Duration::ZERO
            };
            match renew(token, ctx, namespace, name, current, durations, grace).await {
                Ok(view) => {
                    announce(token, ctx, &view, why, "TokenRenewed", "renewed").await;
                    (view, false)
                }
                // Gone between the list and the renewal: start afresh.
                Err(Error::Vault(error)) if is_not_found(&error) => {
                    let view = issue(token, ctx, namespace, name, durations, &desired).await?;
                    announce(
                        token,
                        ctx,
                        &view,
                        Renewal::GoneInVault,
                        "TokenIssued",
                        "issued",
                    )
                    .await;
                    (view, true)
                }
                Err(error) => return Err(error),
            }
        }
        (why, _) => {
            let why = why.unwrap_or(Renewal::Missing);
            let view = issue(token, ctx, namespace, name, durations, &desired).await?;
            announce(token, ctx, &view, why, "TokenIssued", "issued").await;
            (view, true)
        }
    };

    let expires = view.expires_at.parse::<Timestamp>().ok();
    // The vault's counters, which span renewals.
    let exhausted = view.max_uses.is_some_and(|max| view.uses >= max);
    let what = if raw { "vault token" } else { "vault policy" };
    let condition = if exhausted {
        ready_condition(
            false,
            reason::EXHAUSTED,
            format!("all {} uses of {what} {} are spent", view.uses, view.id),
            generation,
            now,
        )
    } else {
        ready_condition(
            true,
            reason::READY,
            format!("{what} {} is live", view.id),
            generation,
            now,
        )
    };
    let status = EnrollmentTokenStatus {
        conditions: merge_condition(&previous.conditions, condition),
        token_id: Some(view.id.clone()),
        secret_name: raw.then(|| token_secret_name(name)),
        uses: Some(view.uses),
        expires_at: expires.map(Time),
        observed_generation: generation,
    };
    ctx.apply_status::<EnrollmentToken, _>(namespace, name, previous, &status)
        .await?;

    if replaced {
        // Only once the new token is recorded: revoke the ones it replaces
        // (found by name, so an id planted in the status is never revoked).
        revoke_tokens(ctx, &live, None).await?;
    }
    if !raw && previous.secret_name.is_some() {
        // Switched from a raw token: its Secret holds a revoked token now.
        delete_secret(ctx, namespace, name).await;
    }

    let next = expires.map_or(ctx.settings.resync, |expires| {
        let until = renew_at(expires, durations.ttl).duration_since(now);
        Duration::try_from(until)
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), ctx.settings.resync)
    });
    Ok(Action::requeue(next))
}

/// Logs and publishes a new or renewed token (its id only, never a value).
async fn announce<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    view: &TokenView,
    why: Renewal,
    reason: &str,
    verb: &str,
) {
    let what = if token.spec.raw_token {
        "raw token"
    } else {
        "attested policy"
    };
    tracing::info!(
        namespace = token.namespace().unwrap_or_default(),
        name = token.name_any(),
        token_id = %view.id,
        reason = why.as_str(),
        "{verb} {what}"
    );
    ctx.event(
        token,
        EventType::Normal,
        reason,
        "IssueToken",
        format!("{verb} vault {what} {} ({})", view.id, why.as_str()),
    )
    .await;
}

/// The id of the vault token a raw token's Secret holds, when it holds one.
async fn secret_token_id<V: VaultApi>(
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(&token_secret_name(name))
        .await
        .map_err(|e| secret_error(e, namespace))?
    else {
        return Ok(None);
    };
    let has_value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(TOKEN_SECRET_KEY))
        .is_some_and(|value| !value.0.is_empty());
    Ok(has_value
        .then(|| secret.annotations().get(TOKEN_ID_ANNOTATION).cloned())
        .flatten())
}

/// Creates a fresh vault token, seeded with the grants of the SecretGrants
/// that name this resource; a raw one is written into the Secret.
async fn issue<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    durations: Durations,
    binding: &KubernetesBinding,
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
        kubernetes: Some(binding.clone()),
    };
    let created = match ctx.vault.create_token(&body).await {
        Ok(created) => created,
        Err(error) if !body.grants.is_empty() && not_delegated(&error).is_some() => {
            // One SecretGrant asking for an undelegated secret must not hold
            // back the others: the policy is created bare, and the SecretGrant
            // reconciler grants what is delegated and reports the rest, each
            // on its own SecretGrant, as NotDelegated.
            let message = not_delegated(&error).unwrap_or_default();
            tracing::warn!(namespace, name, %message, "seed grants refused as not delegated; creating the policy without them");
            ctx.event(
                token,
                EventType::Warning,
                reason::NOT_DELEGATED,
                "IssueToken",
                format!(
                    "issued without its grants, which the SecretGrants report: the vault refused: {message}"
                ),
            )
            .await;
            let bare = CreateToken {
                grants: Vec::new(),
                ..body
            };
            ctx.vault.create_token(&bare).await?
        }
        Err(error) => return Err(error.into()),
    };
    store(token, ctx, namespace, name, created).await
}

/// Renews `current`: the successor keeps its spent uses, grants,
/// constraints and binding; `current` stays valid for `grace`.
async fn renew<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    current: &TokenView,
    durations: Durations,
    grace: Duration,
) -> Result<TokenView, Error> {
    let body = RenewToken {
        ttl_seconds: durations.ttl.as_secs(),
        grace_seconds: grace.as_secs(),
    };
    let created = ctx.vault.renew_token(&current.id, &body).await?;
    store(token, ctx, namespace, name, created).await
}

/// Writes a raw token into the Secret; an attested policy has nothing to
/// store. If the Secret cannot be written the token stays live but unheld:
/// the next reconcile sees a Secret that does not hold the current token and
/// renews it without grace.
async fn store<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    created: CreatedToken,
) -> Result<TokenView, Error> {
    let CreatedToken { token: raw, view } = created;
    if token.spec.raw_token {
        let raw = Zeroizing::new(
            raw.ok_or(Error::Inconsistent("the raw token in the vault's answer"))?
                .into_bytes(),
        );
        write_secret(token, ctx, namespace, name, &view.id, &raw).await?;
    } else if raw.is_some() {
        // The vault must not issue a bearer token for an attested policy;
        // dropping it here keeps it out of the cluster.
        tracing::warn!(token_id = %view.id, "the vault returned a raw token for an attested policy; discarded");
    }
    Ok(view)
}

async fn write_secret<V: VaultApi>(
    token: &EnrollmentToken,
    ctx: &Context<V>,
    namespace: &str,
    name: &str,
    token_id: &str,
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
            annotations: Some(BTreeMap::from([(
                TOKEN_ID_ANNOTATION.to_owned(),
                token_id.to_owned(),
            )])),
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
    .await
    .map_err(|e| secret_error(e, namespace))?;
    Ok(())
}

/// Best effort: deletes a raw token's Secret. It only ever holds a revoked
/// token here, and its owner reference removes it with the resource, so
/// absence (404) and a controller without Secrets access (403, the chart
/// without raw tokens) are fine.
async fn delete_secret<V: VaultApi>(ctx: &Context<V>, namespace: &str, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match secrets
        .delete(&token_secret_name(name), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(error) => {
            tracing::warn!(namespace, name, %error, "cannot delete the raw token Secret; its owner reference removes it with the EnrollmentToken");
        }
    }
}

/// Revokes each of `tokens` except `keep`.
async fn revoke_tokens<V: VaultApi>(
    ctx: &Context<V>,
    tokens: &[&TokenView],
    keep: Option<&str>,
) -> Result<(), Error> {
    for view in tokens.iter().filter(|view| Some(view.id.as_str()) != keep) {
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
    let own_name = vault_token_name(token);
    // Every unrevoked one, expired or not: found by name only.
    let own: Vec<&TokenView> = views
        .iter()
        .filter(|view| view.name == own_name && !view.revoked)
        .collect();
    revoke_tokens(ctx, &own, None).await?;
    let had_secret = token
        .status
        .as_ref()
        .is_some_and(|s| s.secret_name.is_some());
    if token.spec.raw_token || had_secret {
        delete_secret(ctx, &namespace, &name).await;
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

    fn binding() -> KubernetesBinding {
        KubernetesBinding {
            cluster: "prod".into(),
            namespace: "ns".into(),
            policy: "web".into(),
            service_accounts: vec!["a".into(), "b".into()],
            raw_token: false,
        }
    }

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
            kubernetes: Some(binding()),
        }
    }

    fn status(generation: i64) -> EnrollmentTokenStatus {
        EnrollmentTokenStatus {
            token_id: Some("tok_1".into()),
            observed_generation: Some(generation),
            ..EnrollmentTokenStatus::default()
        }
    }

    fn seen(current: Option<&TokenView>) -> Observed<'_> {
        Observed {
            current,
            any: current.is_some(),
            secret_holds_current: true,
        }
    }

    #[test]
    fn renewal_starts_in_the_last_third() {
        let ttl = Duration::from_secs(3 * 3600);
        let issued: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let expires = "2030-01-01T03:00:00Z";
        let fresh = view(expires, false);
        let at = |secs: i64| issued.checked_add(SignedDuration::from_secs(secs)).unwrap();
        let desired = binding();
        assert_eq!(
            renew_at(expires.parse().unwrap(), ttl),
            at(2 * 3600),
            "renewal at two thirds of the lifetime"
        );
        let check = |now| renewal(&status(1), Some(1), seen(Some(&fresh)), &desired, ttl, now);
        assert_eq!(check(at(3600)), None);
        assert_eq!(check(at(2 * 3600)), Some(Renewal::Expiring));
        assert_eq!(check(at(4 * 3600)), Some(Renewal::Expiring));
        assert!(Renewal::Expiring.renews());
    }

    #[test]
    fn renewal_reasons() {
        let ttl = Duration::from_secs(3600);
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let fresh = view("2030-01-01T01:00:00Z", false);
        let desired = binding();
        let empty = EnrollmentTokenStatus::default();
        let check = |status: &EnrollmentTokenStatus, generation, observed| {
            renewal(status, Some(generation), observed, &desired, ttl, now)
        };
        assert_eq!(check(&empty, 1, seen(None)), Some(Renewal::Missing));
        // A status claiming a token changes nothing: only the vault's list counts.
        assert_eq!(check(&status(1), 1, seen(None)), Some(Renewal::Missing));
        let gone = Observed {
            current: None,
            any: true,
            secret_holds_current: true,
        };
        assert_eq!(check(&status(1), 1, gone), Some(Renewal::GoneInVault));
        assert_eq!(
            check(&status(1), 2, seen(Some(&fresh))),
            Some(Renewal::SpecChanged)
        );
        let lost = Observed {
            secret_holds_current: false,
            ..seen(Some(&fresh))
        };
        assert_eq!(check(&status(1), 1, lost), Some(Renewal::SecretLost));
        assert!(Renewal::SecretLost.renews());
        assert!(!Renewal::SpecChanged.renews());
        let garbled = view("soon", false);
        assert_eq!(
            check(&status(1), 1, seen(Some(&garbled))),
            Some(Renewal::Expiring)
        );
    }

    #[test]
    fn another_binding_is_a_spec_change() {
        let ttl = Duration::from_secs(3600);
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let desired = binding();
        let check = |binding: Option<KubernetesBinding>| {
            let mut current = view("2030-01-01T01:00:00Z", false);
            current.kubernetes = binding;
            renewal(
                &status(1),
                Some(1),
                seen(Some(&current)),
                &desired,
                ttl,
                now,
            )
        };
        // Service accounts are a set.
        let mut reordered = binding();
        reordered.service_accounts = vec!["b".into(), "a".into(), "a".into()];
        assert_eq!(check(Some(reordered)), None);
        // A token from before attestation, a mode switch, another cluster.
        assert_eq!(check(None), Some(Renewal::SpecChanged));
        let raw = KubernetesBinding {
            raw_token: true,
            ..binding()
        };
        assert_eq!(check(Some(raw)), Some(Renewal::SpecChanged));
        let elsewhere = KubernetesBinding {
            cluster: "staging".into(),
            ..binding()
        };
        assert_eq!(check(Some(elsewhere)), Some(Renewal::SpecChanged));
        let fewer = KubernetesBinding {
            service_accounts: vec!["a".into()],
            ..binding()
        };
        assert_eq!(check(Some(fewer)), Some(Renewal::SpecChanged));
    }

    #[test]
    fn live_tokens_are_found_by_name_newest_first() {
        let object: EnrollmentToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "signet.dev/v1alpha1",
            "kind": "EnrollmentToken",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"project": "p"},
        }))
        .unwrap();
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let named = |id: &str, name: &str, expires: &str, revoked: bool| TokenView {
            id: id.into(),
            name: name.into(),
            ..view(expires, revoked)
        };
        let mine = "k8s:ns/web:u1";
        let views = [
            named("older", mine, "2030-01-01T01:00:00Z", false),
            named("newer", mine, "2030-01-01T05:00:00Z", false),
            named("revoked", mine, "2030-01-01T09:00:00Z", true),
            named("expired", mine, "2029-12-31T23:00:00Z", false),
            named(
                "same-name-other-uid",
                "k8s:ns/web:u0",
                "2030-01-02T00:00:00Z",
                false,
            ),
        ];
        let ids: Vec<&str> = live_tokens(&views, &object, now)
            .iter()
            .map(|v| v.id.as_str())
            .collect();
        assert_eq!(ids, ["newer", "older"]);
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
            raw_token: false,
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
