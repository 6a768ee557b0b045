//! Enrollment: tokens that let a new key become a machine (or the first
//! admin). Tokens are `<id>.<secret>`; only a hash of the secret is stored,
//! compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use signet_client::api::{
    AdminEnrollResponse, CreateToken, CreatedToken, EnrollRequest, EnrollResponse, ErrorCode,
    KubernetesBinding, MachineKubernetes, NamespaceRef, RenewToken, TokenConstraints, TokenList,
    TokenView,
};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::attest::PodIdentity;
use super::delegations::{self, acting_agent, check_namespace};
use super::grants;
use super::secrets;
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::geoip::Countries;
use crate::ids;
use crate::outbox;
use crate::page::{CreatedKey, Page};
use crate::policy;
use crate::request::{Caller, Ctx};
use crate::store::{
    Admin, BootstrapToken, EnrollmentToken, Grantee, Machine, MachineRestrictions, Project, Read,
    Tx,
};

/// Longest enrollment-token lifetime: one year.
const MAX_TOKEN_TTL: u64 = 366 * 24 * 3600;
/// Longest machine lifetime: one year.
const MAX_MACHINE_LIFETIME: u64 = 366 * 24 * 3600;
/// How long an admin bootstrap token stays valid.
pub const BOOTSTRAP_TTL: i64 = 24 * 3600;
const HOSTNAME_MAX: usize = 253;
const METADATA_MAX_ENTRIES: usize = 32;
/// Shortest machine lifetime of a temporary bootstrap token: one hour.
const BOOTSTRAP_MIN_LIFETIME: u64 = 3600;
/// Longest hostname regex accepted, and the compiled size it may reach.
const REGEX_MAX_LEN: usize = 512;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const NAME_MAX: usize = 128;

/// Compiles a hostname regex anchored at both ends, with a size limit so a
/// hostile pattern cannot eat the vault's memory. The pattern must compile
/// on its own first: wrapped unchecked, `a)|(.*` would close the anchoring
/// group early and turn into `^(?:a)|(.*)$`, which matches any hostname.
fn hostname_regex(pattern: &str) -> Result<regex::Regex> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(invalid(format!(
            "hostname_regex is longer than {REGEX_MAX_LEN} characters"
        )));
    }
    let build = |text: &str| {
        regex::RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| invalid(format!("hostname_regex does not compile: {e}")))
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

const PLACEHOLDERS: [&str; 5] = ["hostname", "namespace", "pod", "token", "id"];

/// Checks that a name template uses only known placeholders.
fn validate_template(template: &str) -> Result<()> {
    if template.is_empty() || template.len() > NAME_MAX {
        return Err(invalid(format!(
            "name_template must be 1 to {NAME_MAX} characters"
        )));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| invalid("name_template has an unclosed '{'"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(invalid(format!(
                "name_template placeholder {{{name}}} is not one of {{hostname}}, {{namespace}}, {{pod}}, {{token}}, {{id}}"
            )));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') || template.matches('}').count() != template.matches('{').count() {
        return Err(invalid("name_template has an unmatched '}'"));
    }
    Ok(())
}

/// Fills a name template from the enrollment.
fn render_name(
    template: &str,
    request: &EnrollRequest,
    pod: Option<&PodIdentity>,
    token: &EnrollmentToken,
    machine_id: &str,
) -> String {
    // An attested pod's namespace and name come from the cluster; otherwise
    // from what the machine said about itself.
    let meta = |key: &str| match (pod, key) {
        (Some(pod), "k8s.namespace") => pod.namespace.as_str(),
        (Some(pod), "k8s.pod.name") => pod.pod_name.as_str(),
        _ => request.metadata.get(key).map_or("", String::as_str),
    };
    let short_id = machine_id
        .get(machine_id.len().saturating_sub(8)..)
        .unwrap_or(machine_id)
        .to_ascii_lowercase();
    let name = template
        .replace("{hostname}", &request.hostname)
        .replace("{namespace}", meta("k8s.namespace"))
        .replace("{pod}", meta("k8s.pod.name"))
        .replace("{token}", &token.name)
        .replace("{id}", &short_id);
    name.chars()
        .filter(|c| !c.is_control())
        .take(NAME_MAX)
        .collect()
}

/// Checks a token's constraints before it is stored.
fn validate_constraints(
    c: &TokenConstraints,
    body: &CreateToken,
    countries: Option<&Countries>,
) -> Result<()> {
    if let Some(pattern) = &c.hostname_regex {
        hostname_regex(pattern)?;
    }
    policy::parse_cidrs(&c.source_cidrs)?;
    if let Some(template) = &c.name_template {
        validate_template(template)?;
    }
    policy::parse_cidrs(&c.machine_ip_allowlist)?;
    policy::validate_countries(&c.machine_country_allowlist, countries)?;
    policy::time_zone(c.machine_timezone.as_deref())?;
    if let Some(window) = &c.machine_window {
        policy::validate_window(window)?;
    }
    if c.bootstrap {
        if body.max_uses.is_some_and(|m| m != 1) {
            return Err(invalid(
                "a bootstrap token is single use: max_uses must be 1 or omitted",
            ));
        }
        if !(BOOTSTRAP_MIN_LIFETIME..=MAX_MACHINE_LIFETIME).contains(&body.machine_lifetime_seconds)
        {
            return Err(invalid(
                "a bootstrap token's machine lifetime must be between 1 hour and 12 months",
            ));
        }
    }
    Ok(())
}

/// A fresh `<id>.<secret>` token and the hash to store.
fn mint(prefix: &str) -> (String, Zeroizing<String>, Vec<u8>) {
    let id = ids::new(prefix);
    let (raw, hash) = mint_secret(&id);
    (id, raw, hash)
}

/// A fresh secret for token `id`: the raw `<id>.<secret>` and its hash.
fn mint_secret(id: &str) -> (Zeroizing<String>, Vec<u8>) {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let secret_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
    let hash = Sha256::digest(secret_text.as_bytes()).to_vec();
    let raw = Zeroizing::new(format!("{id}.{}", secret_text.as_str()));
    (raw, hash)
}

/// Splits a raw token and hashes its secret part.
fn split(raw: &str, prefix: &str) -> Option<(String, Vec<u8>)> {
    let (id, secret) = raw.split_once('.')?;
    if !id.starts_with(prefix) || id.len() > 64 {
        return None;
    }
    Some((id.to_owned(), Sha256::digest(secret.as_bytes()).to_vec()))
}

fn invalid_token() -> Error {
    Error::denied(ErrorCode::InvalidToken, "the enrollment token is not valid")
}

/// The namespace a token's machines belong to, checked for creation.
fn check_binding(tx: &mut dyn Tx, binding: &KubernetesBinding) -> Result<()> {
    check_namespace(&binding.namespace)?;
    if binding.policy.is_empty()
        || binding.policy.len() > 253
        || !binding
            .policy
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
    {
        return Err(invalid(
            "kubernetes.policy must be the EnrollmentToken's name (a DNS subdomain)",
        ));
    }
    if binding.service_accounts.len() > 64
        || binding
            .service_accounts
            .iter()
            .any(|sa| sa.is_empty() || sa.len() > 253 || sa.chars().any(|c| c.is_control()))
    {
        return Err(invalid(
            "kubernetes.service_accounts: at most 64 service-account names",
        ));
    }
    if tx.cluster(&binding.cluster)?.is_none() {
        return Err(invalid(format!(
            "cluster {:?} is not registered (POST /v1/clusters first)",
            binding.cluster
        )));
    }
    Ok(())
}

fn binding_scope(binding: Option<&KubernetesBinding>) -> Option<NamespaceRef> {
    binding.map(|b| NamespaceRef {
        cluster: b.cluster.clone(),
        namespace: b.namespace.clone(),
    })
}

/// Stores a token (or attested policy) with its pre-baked grants, each
/// checked against the acting agent's delegations. Returns the raw token,
/// if the token has one.
fn store_token(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    project: &Project,
    token: EnrollmentToken,
    grants: &[(String, Option<Vec<String>>)],
) -> Result<(EnrollmentToken, Option<Zeroizing<String>>)> {
    let scope = binding_scope(token.kubernetes.as_ref());
    if let Some(agent) = acting_agent(ctx) {
        // Each grant names what is missing; a token without grants still
        // needs some delegation in the project for its namespace.
        for (secret, fields) in grants {
            let secret = secrets::secret(tx, project, secret)?;
            delegations::require_grant(
                tx,
                agent,
                project,
                &secret,
                fields.as_deref(),
                scope.as_ref(),
            )?;
        }
        delegations::require_project(tx, agent, project, scope.as_ref())?;
    }
    let attested = token.kubernetes.as_ref().is_some_and(|k| !k.raw_token);
    let (token, raw) = if attested {
        (token, None)
    } else {
        let (raw, hash) = mint_secret(&token.id);
        (
            EnrollmentToken {
                secret_hash: hash,
                ..token
            },
            Some(raw),
        )
    };
    tx.insert_token(&token)?;
    for (secret, fields) in grants {
        grants::insert(
            ctx,
            tx,
            Grantee::Token(token.id.clone()),
            project,
            secret,
            fields.clone(),
        )?;
    }
    Ok((token, raw))
}

pub fn create_token(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<CreatedToken> {
    let body: CreateToken = ctx.json()?;
    ctx.audit.target = format!("project:{}", body.project);
    check_ttl(body.ttl_seconds)?;
    if body.machine_lifetime_seconds == 0 || body.machine_lifetime_seconds > MAX_MACHINE_LIFETIME {
        return Err(invalid(
            "machine_lifetime_seconds must be between 1 and one year",
        ));
    }
    if body.max_uses == Some(0) {
        return Err(invalid(
            "max_uses must be at least 1 (omit it for unlimited)",
        ));
    }
    validate_constraints(&body.constraints, &body, ctx.settings.countries.as_deref())?;
    if let Some(binding) = &body.kubernetes {
        check_binding(tx, binding)?;
    }
    let project = secrets::project(tx, &body.project)?;
    let id = ids::new(ids::TOKEN);
    let token = EnrollmentToken {
        id: id.clone(),
        name: if body.name.is_empty() {
            id.clone()
        } else {
            body.name.clone()
        },
        project_id: project.id.clone(),
        secret_hash: Vec::new(),
        // A bootstrap token is single use whatever the request said.
        max_uses: if body.constraints.bootstrap {
            Some(1)
        } else {
            body.max_uses
        },
        uses: 0,
        expires_at: ctx.now + body.ttl_seconds as i64,
        machine_lifetime: body.machine_lifetime_seconds as i64,
        created_at: ctx.now,
        created_by: ctx.caller.id(),
        revoked_at: None,
        constraints: body.constraints.clone(),
        kubernetes: body.kubernetes.clone(),
        lineage: id.clone(),
    };
    let grants: Vec<_> = body
        .grants
        .iter()
        .map(|g| (g.secret.clone(), g.fields.clone()))
        .collect();
    let (token, raw) = store_token(ctx, tx, &project, token, &grants)?;
    ctx.audit.target = format!("token:{id}");
    Ok(CreatedToken {
        token: raw.map(|raw| raw.to_string()),
        view: token_view(&token, &project.name),
    })
}

fn check_ttl(ttl_seconds: u64) -> Result<()> {
    if ttl_seconds == 0 || ttl_seconds > MAX_TOKEN_TTL {
        return Err(invalid("ttl_seconds must be between 1 and one year"));
    }
    Ok(())
}

/// `POST /v1/enrollment-tokens/{id}/renew`: a successor with the same
/// project, binding, constraints and grants that shares the remaining uses
/// (one use count per lineage), while the old token stays valid for the
/// grace period at most.
pub fn renew_token(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<CreatedToken> {
    ctx.audit.target = format!("token:{id}");
    let body: RenewToken = ctx.json()?;
    check_ttl(body.ttl_seconds)?;
    if body.grace_seconds > MAX_TOKEN_TTL {
        return Err(invalid("grace_seconds must be at most one year"));
    }
    let old = tx
        .token(id)?
        .ok_or_else(|| not_found(format!("enrollment token {id}")))?;
    if old.revoked_at.is_some() || old.expires_at <= ctx.now {
        return Err(Error::denied(
            ErrorCode::Conflict,
            "only a live token can be renewed: create a new one",
        ));
    }
    if old.constraints.bootstrap {
        return Err(invalid(
            "a bootstrap token is single use and cannot be renewed",
        ));
    }
    let project = tx
        .project(&old.project_id)?
        .ok_or_else(|| not_found(format!("project of token {id}")))?;
    let grants: Vec<_> = tx
        .grants(Some(&Grantee::Token(old.id.clone())))?
        .into_iter()
        .map(|d| (d.secret, d.grant.fields))
        .collect();
    let new_id = ids::new(ids::TOKEN);
    // Every field named: a field added to tokens must be decided here, not
    // inherited by default. (The old token is live, so not revoked; a raw
    // token gets its hash in store_token.)
    let successor = EnrollmentToken {
        id: new_id.clone(),
        name: old.name.clone(),
        project_id: old.project_id.clone(),
        secret_hash: Vec::new(),
        max_uses: old.max_uses,
        uses: old.uses,
        expires_at: ctx.now + body.ttl_seconds as i64,
        machine_lifetime: old.machine_lifetime,
        created_at: ctx.now,
        created_by: ctx.caller.id(),
        revoked_at: None,
        constraints: old.constraints.clone(),
        kubernetes: old.kubernetes.clone(),
        lineage: old.lineage.clone(),
    };
    let (successor, raw) = store_token(ctx, tx, &project, successor, &grants)?;
    tx.shorten_token(&old.id, ctx.now + body.grace_seconds as i64)?;
    ctx.audit.target = format!("token:{id} renewed as token:{new_id}");
    Ok(CreatedToken {
        token: raw.map(|raw| raw.to_string()),
        view: token_view(&successor, &project.name),
    })
}

fn token_view(t: &EnrollmentToken, project: &str) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        project: project.to_owned(),
        max_uses: t.max_uses,
        uses: t.uses,
        expires_at: rfc3339(t.expires_at),
        machine_lifetime_seconds: t.machine_lifetime as u64,
        revoked: t.revoked_at.is_some(),
        constraints: t.constraints.clone(),
        kubernetes: t.kubernetes.clone(),
    }
}

/// One page of enrollment tokens, oldest first.
pub fn list_tokens(r: &mut dyn Read, page: &Page<CreatedKey>) -> Result<TokenList> {
    let (rows, next_cursor) =
        page.finish(r.tokens_page(page)?, |(t, _)| (t.created_at, t.id.clone()));
    Ok(TokenList {
        tokens: rows
            .iter()
            .map(|(token, project)| token_view(token, project))
            .collect(),
        next_cursor,
    })
}

pub fn revoke_token(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<()> {
    ctx.audit.target = format!("token:{id}");
    if tx.token(id)?.is_none() {
        return Err(not_found(format!("enrollment token {id}")));
    }
    tx.revoke_token(id, ctx.now)?;
    Ok(())
}

fn check_enroll_request(request: &EnrollRequest) -> Result<()> {
    if request.hostname.len() > HOSTNAME_MAX || request.hostname.chars().any(|c| c.is_control()) {
        return Err(invalid("hostname must be at most 253 printable characters"));
    }
    if request.metadata.len() > METADATA_MAX_ENTRIES
        || request
            .metadata
            .iter()
            .any(|(k, v)| k.len() > 128 || v.len() > 512)
    {
        return Err(invalid(
            "metadata: at most 32 entries, keys up to 128 and values up to 512 bytes",
        ));
    }
    Ok(())
}

/// `POST /v1/enroll`: a new key becomes a machine, with a raw enrollment
/// token or, for a pod, with the identity its cluster vouched for
/// (`attested`, reviewed before this transaction). The token's use is
/// counted in the transaction that creates the machine.
pub fn enroll(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    request: &EnrollRequest,
    attested: Option<Result<PodIdentity>>,
) -> Result<EnrollResponse> {
    let Caller::Enrolling(public_key) = &ctx.caller else {
        return Err(invalid("enrollment is signed with Signet-Key: enroll"));
    };
    let public_key = public_key.encode();
    check_enroll_request(request)?;
    let (token, pod) = match attested {
        Some(review) => {
            let pod = review?;
            (attested_policy(ctx, tx, request, &pod)?, Some(pod))
        }
        None => (raw_token(ctx, tx, request)?, None),
    };
    if token.expires_at <= ctx.now {
        return Err(Error::denied(
            ErrorCode::TokenExpired,
            "the enrollment token has expired",
        ));
    }
    let constraints = &token.constraints;
    if let Some(pattern) = &constraints.hostname_regex
        && !hostname_regex(pattern)?.is_match(&request.hostname)
    {
        return Err(Error::denied(
            ErrorCode::HostnameNotAllowed,
            format!(
                "hostname {:?} does not match the token's hostname pattern",
                request.hostname
            ),
        ));
    }
    if !constraints.source_cidrs.is_empty()
        && !policy::ip_allowed(&constraints.source_cidrs, ctx.source_ip)?
    {
        return Err(Error::denied(
            ErrorCode::SourceNotAllowed,
            format!(
                "enrollment from {:?} is outside the token's source CIDRs",
                ctx.source_ip
            ),
        ));
    }
    if !tx.use_token(&token.id)? {
        return Err(Error::denied(
            ErrorCode::TokenExhausted,
            "the enrollment token has no uses left",
        ));
    }
    // One machine per pod: a restarted sidecar lost its in-memory key, so
    // the pod's earlier machine is revoked as the new one is made.
    let mut replaced = Vec::new();
    if let Some(pod) = &pod {
        for old in tx.machines_of_pod(&pod.cluster, &pod.pod_uid)? {
            tx.delete_machine(&old.id)?;
            replaced.push(old.id);
        }
    }
    let machine_id = ids::new(ids::MACHINE);
    let name = match &constraints.name_template {
        Some(template) => render_name(template, request, pod.as_ref(), &token, &machine_id),
        None if request.hostname.is_empty() => pod
            .as_ref()
            .map_or_else(|| token.name.clone(), |p| p.pod_name.clone()),
        None => request.hostname.clone(),
    };
    let restrictions = MachineRestrictions {
        ip_allowlist: constraints.machine_ip_allowlist.clone(),
        country_allowlist: constraints.machine_country_allowlist.clone(),
        window: constraints.machine_window.clone(),
        timezone: constraints.machine_timezone.clone(),
    };
    let kubernetes = match (&pod, &token.kubernetes) {
        (Some(pod), _) => Some(MachineKubernetes {
            cluster: pod.cluster.clone(),
            namespace: pod.namespace.clone(),
            service_account: Some(pod.service_account.clone()),
            pod_name: Some(pod.pod_name.clone()),
            pod_uid: Some(pod.pod_uid.clone()),
            attested: true,
        }),
        (None, Some(binding)) => Some(MachineKubernetes {
            cluster: binding.cluster.clone(),
            namespace: binding.namespace.clone(),
            ..MachineKubernetes::default()
        }),
        (None, None) => None,
    };
    let mut metadata = request.metadata.clone();
    if let Some(pod) = &pod {
        // What the machine said about itself is replaced by what the
        // cluster vouched for.
        metadata.insert("k8s.namespace".into(), pod.namespace.clone());
        metadata.insert("k8s.pod.name".into(), pod.pod_name.clone());
        metadata.insert("k8s.pod.uid".into(), pod.pod_uid.clone());
    }
    let machine = Machine {
        id: machine_id,
        name,
        project_id: token.project_id.clone(),
        token_id: Some(token.id.clone()),
        public_key,
        hostname: request.hostname.clone(),
        metadata,
        created_at: ctx.now,
        expires_at: ctx.now + token.machine_lifetime,
        disabled_at: None,
        restrictions: (restrictions != MachineRestrictions::default()).then_some(restrictions),
        kubernetes,
    };
    tx.insert_machine(&machine).map_err(|e| match e {
        crate::store::Error::Duplicate(_) => Error::denied(
            ErrorCode::Conflict,
            "this public key is already enrolled; generate a new key pair",
        ),
        other => other.into(),
    })?;
    // Pre-baked grants of the token become the machine's own.
    for detail in tx.grants(Some(&Grantee::Token(token.id.clone())))? {
        grants::copy_to_machine(tx, &detail.grant, &machine.id, ctx.now)?;
    }
    let granted = grants::views(tx, &Grantee::Machine(machine.id.clone()))?;
    outbox::enqueue(
        tx,
        ctx.now,
        outbox::MACHINE_ENROLLED,
        serde_json::json!({
            "machine_id": machine.id,
            "name": machine.name,
            "hostname": machine.hostname,
            "token_id": token.id,
            "expires_at": rfc3339(machine.expires_at),
            "source_ip": ctx.source_ip,
            "kubernetes": machine.kubernetes,
            "replaced": replaced,
        }),
    )?;
    ctx.audit.actor = machine.id.clone();
    ctx.audit.target = format!("machine:{} via token:{}", machine.id, token.id);
    if let Some(pod) = &pod {
        ctx.audit.target.push_str(&format!(
            " pod:{}/{}/{} uid:{} sa:{}",
            pod.cluster, pod.namespace, pod.pod_name, pod.pod_uid, pod.service_account
        ));
    }
    if !replaced.is_empty() {
        ctx.audit
            .target
            .push_str(&format!(" replaces machine:{}", replaced.join(",machine:")));
    }
    Ok(EnrollResponse {
        machine_id: machine.id,
        expires_at: rfc3339(machine.expires_at),
        grants: granted,
    })
}

/// The live raw token presented, checked in constant time.
fn raw_token(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    request: &EnrollRequest,
) -> Result<EnrollmentToken> {
    let (token_id, presented_hash) = split(&request.token, ids::TOKEN).ok_or_else(invalid_token)?;
    ctx.audit.target = format!("token:{token_id}");
    let token = tx.token(&token_id)?.ok_or_else(invalid_token)?;
    // An attested policy stores no hash, so no presented token matches it.
    if !bool::from(token.secret_hash.ct_eq(&presented_hash)) {
        return Err(invalid_token());
    }
    if token.revoked_at.is_some() {
        return Err(Error::denied(
            ErrorCode::InvalidToken,
            "the enrollment token was revoked",
        ));
    }
    Ok(token)
}

/// The live attested policy the pod named, in the pod's own (verified)
/// namespace, if the pod's service account may use it.
fn attested_policy(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    request: &EnrollRequest,
    pod: &PodIdentity,
) -> Result<EnrollmentToken> {
    let policy = request
        .attestation
        .as_ref()
        .map_or("", |a| a.policy.as_str());
    ctx.audit.target = format!(
        "policy:{}/{}/{} pod:{} uid:{}",
        pod.cluster,
        pod.namespace,
        policy.chars().take(253).collect::<String>(),
        pod.pod_name,
        pod.pod_uid
    );
    let token = tx
        .policy(&pod.cluster, &pod.namespace, policy, ctx.now)?
        .ok_or_else(|| {
            Error::denied(
                ErrorCode::UnknownPolicy,
                format!(
                    "no live enrollment policy {policy:?} in namespace {} of cluster {}",
                    pod.namespace, pod.cluster
                ),
            )
        })?;
    let allowed = token.kubernetes.as_ref().is_some_and(|k| {
        k.service_accounts.is_empty() || k.service_accounts.contains(&pod.service_account)
    });
    if !allowed {
        return Err(Error::denied(
            ErrorCode::ServiceAccountNotAllowed,
            format!(
                "service account {} may not enroll with policy {policy:?}",
                pod.service_account
            ),
        ));
    }
    Ok(token)
}

/// A single-use token that lets one new key become an admin.
pub fn create_bootstrap_token(tx: &mut dyn Tx, now: i64) -> Result<Zeroizing<String>> {
    let (id, raw, hash) = mint(ids::BOOTSTRAP);
    tx.insert_bootstrap_token(&BootstrapToken {
        id,
        secret_hash: hash,
        expires_at: now + BOOTSTRAP_TTL,
        used_at: None,
    })?;
    Ok(raw)
}

/// `POST /v1/admin/enroll`: a new key becomes an admin with a bootstrap token.
pub fn enroll_admin(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    request: &EnrollRequest,
) -> Result<AdminEnrollResponse> {
    let Caller::Enrolling(public_key) = &ctx.caller else {
        return Err(invalid("enrollment is signed with Signet-Key: enroll"));
    };
    let public_key = public_key.encode();
    check_enroll_request(request)?;
    let (token_id, presented_hash) =
        split(&request.token, ids::BOOTSTRAP).ok_or_else(invalid_token)?;
    ctx.audit.target = format!("bootstrap:{token_id}");
    let token = tx.bootstrap_token(&token_id)?.ok_or_else(invalid_token)?;
    if !bool::from(token.secret_hash.ct_eq(&presented_hash)) {
        return Err(invalid_token());
    }
    if token.expires_at <= ctx.now {
        return Err(Error::denied(
            ErrorCode::TokenExpired,
            "the bootstrap token has expired",
        ));
    }
    if !tx.use_bootstrap_token(&token.id, ctx.now)? {
        return Err(Error::denied(
            ErrorCode::TokenExhausted,
            "the bootstrap token was already used",
        ));
    }
    let name = if request.hostname.is_empty() {
        "admin".to_owned()
    } else {
        request.hostname.clone()
    };
    let admin = Admin {
        id: ids::new(ids::ADMIN),
        name: name.clone(),
        public_key,
        created_at: ctx.now,
        disabled_at: None,
    };
    tx.insert_admin(&admin)?;
    ctx.audit.actor = admin.id.clone();
    ctx.audit.target = format!("admin:{} via bootstrap:{token_id}", admin.id);
    Ok(AdminEnrollResponse {
        admin_id: admin.id,
        name,
    })
}
