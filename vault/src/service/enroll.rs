//! Enrollment: tokens that let a new key become a machine (or the first
//! admin). Tokens are `<id>.<secret>`; only a hash of the secret is stored,
//! compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use signet_client::api::{
    AdminEnrollResponse, CreateToken, CreatedToken, EnrollRequest, EnrollResponse, ErrorCode,
    TokenConstraints, TokenList, TokenView,
};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::secrets;
use super::{access, grants, webhooks};
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::store::{
    Admin, BootstrapToken, EnrollmentToken, Grantee, Machine, MachineRestrictions, Tx,
};
use crate::vault::{Caller, Ctx};

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
/// hostile pattern cannot eat the vault's memory.
fn hostname_regex(pattern: &str) -> Result<regex::Regex> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(invalid(format!(
            "hostname_regex is longer than {REGEX_MAX_LEN} characters"
        )));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(format!("hostname_regex does not compile: {e}")))
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
    token: &EnrollmentToken,
    machine_id: &str,
) -> String {
    let meta = |key: &str| request.metadata.get(key).map_or("", String::as_str);
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
fn validate_constraints(c: &TokenConstraints, body: &CreateToken) -> Result<()> {
    if let Some(pattern) = &c.hostname_regex {
        hostname_regex(pattern)?;
    }
    access::parse_cidrs(&c.source_cidrs)?;
    if let Some(template) = &c.name_template {
        validate_template(template)?;
    }
    access::parse_cidrs(&c.machine_ip_allowlist)?;
    access::time_zone(c.machine_timezone.as_deref())?;
    if let Some(window) = &c.machine_window {
        access::validate_window(window)?;
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
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let secret_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
    let hash = Sha256::digest(secret_text.as_bytes()).to_vec();
    let raw = Zeroizing::new(format!("{id}.{}", secret_text.as_str()));
    (id, raw, hash)
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

pub fn create_token(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<CreatedToken> {
    let body: CreateToken = ctx.json()?;
    ctx.audit.target = format!("project:{}", body.project);
    if body.ttl_seconds == 0 || body.ttl_seconds > MAX_TOKEN_TTL {
        return Err(invalid("ttl_seconds must be between 1 and one year"));
    }
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
    validate_constraints(&body.constraints, &body)?;
    let project = secrets::project(tx, &body.project)?;
    let (id, raw, hash) = mint(ids::TOKEN);
    let token = EnrollmentToken {
        id: id.clone(),
        name: if body.name.is_empty() {
            id.clone()
        } else {
            body.name.clone()
        },
        project_id: project.id.clone(),
        secret_hash: hash,
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
    };
    tx.insert_token(&token)?;
    for grant in &body.grants {
        grants::insert(
            ctx,
            tx,
            Grantee::Token(id.clone()),
            &project,
            &grant.secret,
            grant.fields.clone(),
        )?;
    }
    ctx.audit.target = format!("token:{id}");
    Ok(CreatedToken {
        token: raw.to_string(),
        view: token_view(&token, &project.name),
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
    }
}

pub fn list_tokens(tx: &mut dyn Tx) -> Result<TokenList> {
    let tokens = tx.tokens()?;
    let mut views = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let project = tx
            .project(&token.project_id)?
            .map(|p| p.name)
            .unwrap_or_default();
        views.push(token_view(token, &project));
    }
    Ok(TokenList { tokens: views })
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

/// `POST /v1/enroll`: a new key becomes a machine. The token's use is counted
/// in the transaction that creates the machine.
pub fn enroll(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    request: &EnrollRequest,
) -> Result<EnrollResponse> {
    let Caller::Enrolling(public_key) = &ctx.caller else {
        return Err(invalid("enrollment is signed with Signet-Key: enroll"));
    };
    let public_key = public_key.encode();
    check_enroll_request(request)?;
    let (token_id, presented_hash) = split(&request.token, ids::TOKEN).ok_or_else(invalid_token)?;
    ctx.audit.target = format!("token:{token_id}");
    let token = tx.token(&token_id)?.ok_or_else(invalid_token)?;
    if !bool::from(token.secret_hash.ct_eq(&presented_hash)) {
        return Err(invalid_token());
    }
    if token.revoked_at.is_some() {
        return Err(Error::denied(
            ErrorCode::InvalidToken,
            "the enrollment token was revoked",
        ));
    }
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
        && !access::ip_allowed(&constraints.source_cidrs, ctx.source_ip)?
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
    let machine_id = ids::new(ids::MACHINE);
    let name = match &constraints.name_template {
        Some(template) => render_name(template, request, &token, &machine_id),
        None if request.hostname.is_empty() => token.name.clone(),
        None => request.hostname.clone(),
    };
    let restrictions = MachineRestrictions {
        ip_allowlist: constraints.machine_ip_allowlist.clone(),
        window: constraints.machine_window.clone(),
        timezone: constraints.machine_timezone.clone(),
    };
    let machine = Machine {
        id: machine_id,
        name,
        project_id: token.project_id.clone(),
        token_id: Some(token.id.clone()),
        public_key,
        hostname: request.hostname.clone(),
        metadata: request.metadata.clone(),
        created_at: ctx.now,
        expires_at: ctx.now + token.machine_lifetime,
        disabled_at: None,
        restrictions: (restrictions != MachineRestrictions::default()).then_some(restrictions),
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
    webhooks::enqueue(
        tx,
        ctx.now,
        webhooks::MACHINE_ENROLLED,
        serde_json::json!({
            "machine_id": machine.id,
            "name": machine.name,
            "hostname": machine.hostname,
            "token_id": token.id,
            "expires_at": rfc3339(machine.expires_at),
            "source_ip": ctx.source_ip,
        }),
    )?;
    ctx.audit.actor = machine.id.clone();
    ctx.audit.target = format!("machine:{} via token:{}", machine.id, token.id);
    Ok(EnrollResponse {
        machine_id: machine.id,
        expires_at: rfc3339(machine.expires_at),
        grants: granted,
    })
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
