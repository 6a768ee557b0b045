//! The tools: one table (`tools!`) gives each its name, description,
//! hints, input and output type, and the method that runs it; the catalog
//! (`tools/list`) and the dispatch (`tools/call`) both come from it.
//!
//! Inputs ([`input`](super::input)) and outputs ([`output`](super::output))
//! are types of their own, never the API's.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};

use regex::Regex;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::input::{self, *};
use super::output::{self as out, *};
use super::vault::AgentVault;
use crate::api;
use crate::sdk;

/// Audit entries one `read_audit` call returns at most.
pub const AUDIT_LIMIT_MAX: u32 = 500;
/// Vault refusals this session remembers for `explain_denial`.
const DENIALS_KEPT: usize = 50;

/// Why a tool call failed: shown to the assistant as a tool error
/// (`isError: true`), so it can read the reason and correct itself.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments: {0}")]
    Arguments(String),
    /// The vault refused or could not be reached; the SDK's text carries
    /// the vault's code and reason.
    #[error(transparent)]
    Vault(#[from] sdk::Error),
    /// Found nothing to report.
    #[error("{0}")]
    NotFound(String),
}

// ---------------------------------------------------------------------------
// What the error codes mean, for `explain_denial`.

/// What a vault error code means to an agent, and what to do about it.
pub fn explain(code: &str) -> &'static str {
    match code {
        "not_delegated" => {
            "this agent may hand out only what an admin delegated to it: a secret (or some of its fields) for one Kubernetes namespace, or for machines outside Kubernetes. list_delegations shows what it holds; an admin adds more with `signet delegation add`"
        }
        "forbidden" => {
            "the route needs a scope this agent lacks (metadata, tokens, grants, machines, policies, audit), or it is for admins only (secret values, delegations); an admin decides"
        }
        "not_a_machine" => {
            "only machines read secret values; agents and admins never do, by design"
        }
        "not_granted" | "field_not_granted" => {
            "the machine holds no grant for that secret (or field)"
        }
        "not_found" => "no such project, secret, machine, token or grant",
        "conflict" => "it exists already or clashes with an existing one",
        "invalid_request" | "malformed_json" => {
            "the request is malformed; the reason names the field"
        }
        "project_locked" => {
            "a canary secret of the project was read, so the whole project is locked until an admin unlocks it"
        }
        "policy_time_window" => "the secret's time-of-day window is closed now",
        "policy_ip" => "the request came from outside the secret's IP allowlist",
        "policy_country" => {
            "the request came from a country outside the machine's country allowlist (or one the vault's database does not know)"
        }
        "policy_daily_cap" => "the secret's daily read cap is used up",
        "cosign_required" => "each read of this secret needs a co-sign approved by an admin",
        "token_expired" | "token_exhausted" | "invalid_token" => {
            "the enrollment token is expired, used up or unknown"
        }
        "hostname_not_allowed" | "source_not_allowed" => {
            "the enrollment came from a hostname or address the token does not allow"
        }
        "unknown_key"
        | "identity_disabled"
        | "bad_signature"
        | "timestamp_skew"
        | "nonce_replayed"
        | "bad_signature_headers" => {
            "the request's signature did not verify (unknown or disabled identity, clock skew, or a replay)"
        }
        "overloaded" => "the vault is at its limit of requests in flight: retry shortly",
        "internal" => "the vault failed on its side; its log says why",
        _ => "see docs/protocol.md for this code",
    }
}

/// Splits an audit reason `code: message` (how the vault writes denials).
fn split_reason(reason: &str) -> (String, String) {
    match reason.split_once(": ") {
        Some((code, message))
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            (code.to_owned(), message.to_owned())
        }
        _ => ("unknown".to_owned(), reason.to_owned()),
    }
}

// ---------------------------------------------------------------------------
// The tools.

/// The tools over one vault, and what this session remembers: the vault's
/// refusals of its own calls (codes and reasons, never arguments).
pub struct Tools<V> {
    vault: V,
    denials: Mutex<VecDeque<Denial>>,
}

impl<V: AgentVault> Tools<V> {
    pub fn new(vault: V) -> Self {
        Self {
            vault,
            denials: Mutex::default(),
        }
    }

    async fn list_projects(&self, _: NoArguments) -> Result<Projects, ToolError> {
        let projects = self.vault.projects().await?;
        Ok(Projects {
            projects: projects.into_iter().map(out::project).collect(),
        })
    }

    async fn list_secrets(&self, input: ProjectArgument) -> Result<Secrets, ToolError> {
        let secrets = self.vault.secrets(input.project.as_str()).await?;
        Ok(Secrets {
            secrets: secrets.into_iter().map(out::secret).collect(),
        })
    }

    async fn list_machines(&self, _: NoArguments) -> Result<Machines, ToolError> {
        let machines = self.vault.machines().await?;
        Ok(Machines {
            machines: machines.into_iter().map(out::machine).collect(),
        })
    }

    async fn list_tokens(&self, _: NoArguments) -> Result<EnrollmentTokens, ToolError> {
        let tokens = self.vault.tokens().await?;
        Ok(EnrollmentTokens {
            tokens: tokens.into_iter().map(out::token).collect(),
        })
    }

    async fn list_delegations(&self, _: NoArguments) -> Result<Delegations, ToolError> {
        let delegations = self.vault.delegations().await?;
        Ok(Delegations {
            delegations: delegations.into_iter().map(out::delegation).collect(),
        })
    }

    async fn list_grants(&self, input: GrantFilter) -> Result<Grants, ToolError> {
        let grants = self
            .vault
            .grants(
                input.machine_id.as_ref().map(Id::as_str),
                input.token_id.as_ref().map(Id::as_str),
            )
            .await?;
        Ok(Grants {
            grants: grants.into_iter().map(out::grant).collect(),
        })
    }

    async fn create_enrollment_token(
        &self,
        input: CreateEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, ToolError> {
        let body = api::CreateToken {
            project: input.project.into(),
            name: input.policy.as_str().to_owned(),
            max_uses: input.max_uses,
            ttl_seconds: input.ttl_seconds.unwrap_or(3600),
            machine_lifetime_seconds: input.machine_lifetime_seconds.unwrap_or(86_400),
            grants: input
                .grants
                .into_iter()
                .map(|g| api::TokenGrant {
                    secret: g.secret.into(),
                    fields: input::field_names(g.fields),
                })
                .collect(),
            constraints: api::TokenConstraints::default(),
            kubernetes: Some(api::KubernetesBinding {
                cluster: input.cluster.into(),
                namespace: input.namespace.into(),
                policy: input.policy.into(),
                service_accounts: input
                    .service_accounts
                    .into_iter()
                    .map(String::from)
                    .collect(),
                // Never: a raw token is a credential to read.
                raw_token: false,
            }),
        };
        let created = self.vault.create_token(&body).await?;
        Ok(CreatedEnrollmentToken {
            created: out::token(created),
        })
    }

    async fn add_grant(&self, input: AddGrant) -> Result<AddedGrant, ToolError> {
        if input.machine_id.is_some() == input.token_id.is_some() {
            return Err(ToolError::Arguments(
                "give exactly one of machine_id and token_id".into(),
            ));
        }
        let body = api::CreateGrant {
            machine_id: input.machine_id.map(String::from),
            token_id: input.token_id.map(String::from),
            project: input.project.into(),
            secret: input.secret.into(),
            fields: input::field_names(input.fields),
        };
        let created = self.vault.create_grant(&body).await?;
        Ok(AddedGrant {
            grant: out::grant(created),
        })
    }

    async fn remove_grant(&self, input: RemoveGrant) -> Result<Removed, ToolError> {
        self.vault.delete_grant(input.id.as_str()).await?;
        Ok(Removed {
            removed: input.id.into(),
        })
    }

    async fn set_policy(&self, input: SetPolicy) -> Result<PolicySet, ToolError> {
        let policy = api::AccessPolicy::from(input.policy);
        let meta = self
            .vault
            .set_policy(input.project.as_str(), input.secret.as_str(), &policy)
            .await?;
        Ok(PolicySet {
            secret: out::secret(meta),
        })
    }

    async fn read_audit(&self, input: ReadAudit) -> Result<AuditEntries, ToolError> {
        let limit = input.limit.unwrap_or(100);
        if !(1..=AUDIT_LIMIT_MAX).contains(&limit) {
            return Err(ToolError::Arguments(format!(
                "limit must be 1 to {AUDIT_LIMIT_MAX}"
            )));
        }
        let page = self.vault.audit(input.after, limit).await?;
        let full = page.entries.len() == limit as usize;
        let next_after = page.entries.last().map(|e| e.seq).filter(|_| full);
        let entries = page
            .entries
            .into_iter()
            .filter(|e| match input.outcome {
                Some(Outcome::Allow) => e.outcome == "allow",
                Some(Outcome::Deny) => e.outcome == "deny",
                None => true,
            })
            .map(|e| AuditEntry {
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                reason: e.reason,
                source_ip: e.source_ip,
            })
            .collect();
        Ok(AuditEntries {
            entries,
            next_after,
        })
    }

    async fn verify_audit(&self, _: NoArguments) -> Result<AuditCheck, ToolError> {
        let check = self.vault.verify_audit().await?;
        Ok(AuditCheck {
            intact: check.broken.is_none(),
            entries: check.entries,
            keyed_from: check.keyed_from,
            head_seq: check.head.seq,
            head_hash: check.head.hash,
            broken: check.broken.map(|b| AuditBreak {
                seq: b.seq,
                kind: serde_json::to_value(b.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                message: b.message,
            }),
        })
    }

    async fn explain_denial(&self, input: ExplainDenial) -> Result<Explanations, ToolError> {
        let Some(seq) = input.seq else {
            let denials = self
                .denials
                .lock()
                .map(|d| d.iter().rev().cloned().collect())
                .unwrap_or_default();
            return Ok(Explanations { denials });
        };
        let page = self.vault.audit(seq.saturating_sub(1), 1).await?;
        let entry = page
            .entries
            .into_iter()
            .find(|e| e.seq == seq)
            .ok_or_else(|| ToolError::NotFound(format!("no audit entry {seq}")))?;
        if entry.outcome != "deny" {
            return Err(ToolError::NotFound(format!(
                "audit entry {seq} was allowed ({}), not denied",
                entry.action
            )));
        }
        let (code, reason) = split_reason(&entry.reason);
        Ok(Explanations {
            denials: vec![Denial {
                source: "audit".into(),
                seq: Some(entry.seq),
                action: entry.action,
                target: Some(entry.target),
                explanation: explain(&code).to_owned(),
                code,
                reason,
            }],
        })
    }

    /// Remembers the vault's refusal of a call of `tool`.
    fn remember(&self, tool: &str, error: &ToolError) {
        let ToolError::Vault(sdk::Error::Api { code, message, .. }) = error else {
            return;
        };
        if let Ok(mut denials) = self.denials.lock() {
            if denials.len() == DENIALS_KEPT {
                denials.pop_front();
            }
            denials.push_back(Denial {
                source: "session".into(),
                seq: None,
                action: tool.to_owned(),
                target: None,
                code: code.clone(),
                reason: message.clone(),
                explanation: explain(code).to_owned(),
            });
        }
    }
}

/// Parses a tool's arguments (absent is `{}`), or says what is wrong
/// without echoing what was sent.
fn arguments<T: DeserializeOwned>(arguments: Option<JsonObject>) -> Result<T, ToolError> {
    let value = Value::Object(arguments.unwrap_or_default());
    serde_json::from_value(value).map_err(|e| ToolError::Arguments(without_strings(&e.to_string())))
}

/// serde names fields, kinds and (for a `try_from`) the pattern, but also
/// quotes a string it did not expect (`invalid type: string "…"`). Like the
/// vault's errors, ours describe the kind of value, never the value sent.
fn without_strings(message: &str) -> String {
    static QUOTED: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r#"string "(?:[^"\\]|\\.)*""#).ok());
    match QUOTED.as_ref() {
        Some(quoted) => quoted.replace_all(message, "a string").into_owned(),
        // Unreachable with a fixed pattern; say nothing rather than echo.
        None => "the arguments do not match the tool's input schema".to_owned(),
    }
}

fn output<T: Serialize>(value: T) -> Result<Value, ToolError> {
    serde_json::to_value(value).map_err(|e| ToolError::Arguments(e.to_string()))
}

/// The hints of a tool: reads, or changes that can or cannot be undone.
#[derive(Clone, Copy, Debug)]
pub enum Effect {
    /// Only reads.
    Reads,
    /// Adds something (an enrollment policy, a grant).
    Adds,
    /// Replaces or removes something.
    Changes,
}

impl Effect {
    fn annotations(self, title: &str) -> ToolAnnotations {
        let hints = ToolAnnotations::with_title(title).open_world(false);
        match self {
            Self::Reads => hints.read_only(true),
            Self::Adds => hints.read_only(false).destructive(false),
            Self::Changes => hints.read_only(false).destructive(true).idempotent(true),
        }
    }
}

/// The JSON Schema of `T`, subschemas inlined (no `$ref`, so simple MCP
/// clients understand it), as MCP wants it: an object.
pub fn schema_of<T: JsonSchema>() -> JsonObject {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>();
    match schema.to_value() {
        Value::Object(mut object) => {
            object.remove("$schema");
            object.remove("title");
            object
        }
        _ => JsonObject::new(),
    }
}

macro_rules! tools {
    ($(
        $name:ident($input:ty) -> $output:ty, $effect:ident, $title:literal,
        $description:literal;
    )*) => {
        /// Every tool, as `tools/list` answers it.
        pub fn catalog() -> Vec<Tool> {
            vec![$(
                Tool::new(stringify!($name), $description, schema_of::<$input>())
                    .with_title($title)
                    .with_raw_output_schema(Arc::new(schema_of::<$output>()))
                    .with_annotations(Effect::$effect.annotations($title)),
            )*]
        }

        impl<V: AgentVault> Tools<V> {
            /// Runs tool `name`: `None` when there is no such tool, else its
            /// structured output or the reason it failed.
            pub async fn call(
                &self,
                name: &str,
                input: Option<JsonObject>,
            ) -> Option<Result<Value, ToolError>> {
                let result = match name {
                    $(stringify!($name) => match arguments::<$input>(input) {
                        Ok(input) => self.$name(input).await.and_then(output::<$output>),
                        Err(e) => Err(e),
                    },)*
                    _ => return None,
                };
                if let Err(error) = &result {
                    self.remember(name, error);
                }
                Some(result)
            }
        }
    };
}

tools! {
    list_projects(NoArguments) -> Projects, Reads, "List projects",
        "Lists the vault's projects (names and lock state). Needs the agent's metadata scope.";
    list_secrets(ProjectArgument) -> Secrets, Reads, "List secrets",
        "Lists the secrets of a project: names, versions, field names and access policies. Never values: no tool returns a secret value. Needs the metadata scope.";
    list_machines(NoArguments) -> Machines, Reads, "List machines",
        "Lists enrolled machines (pods and hosts), their expiry and Kubernetes identity. Needs the machines scope.";
    list_tokens(NoArguments) -> EnrollmentTokens, Reads, "List enrollment tokens",
        "Lists enrollment tokens and attested Kubernetes enrollment policies, with their uses and expiry (never a raw token). Needs the tokens scope.";
    list_delegations(NoArguments) -> Delegations, Reads, "List delegations",
        "Lists this agent's delegations: which secrets (and fields) it may hand out, to pods of which Kubernetes namespace. Needs the metadata scope.";
    list_grants(GrantFilter) -> Grants, Reads, "List grants",
        "Lists grants of secrets to machines and enrollment policies, optionally of one machine or one token. Needs the grants scope.";
    create_enrollment_token(CreateEnrollmentToken) -> CreatedEnrollmentToken, Adds, "Create an enrollment policy",
        "Creates an attested enrollment policy for the pods of one Kubernetes namespace, optionally pre-granting secrets. The vault allows it only within this agent's delegations (see list_delegations) and answers not_delegated otherwise. Pods enroll with their projected service-account token, so there is no raw token to hand out. Needs the tokens scope.";
    add_grant(AddGrant) -> AddedGrant, Adds, "Add a grant",
        "Grants a secret (or some of its fields) to one machine or one enrollment policy, within this agent's delegations. Needs the grants scope.";
    remove_grant(RemoveGrant) -> Removed, Changes, "Remove a grant",
        "Removes a grant by id (see list_grants). Needs the grants scope.";
    set_policy(SetPolicy) -> PolicySet, Changes, "Set a secret's access policy",
        "Replaces a secret's access policy (time window, IP allowlist, daily read cap, co-sign). Needs the policies scope and a delegation of the whole secret; an agent may only tighten the current policy, and never adds or removes a canary.";
    read_audit(ReadAudit) -> AuditEntries, Reads, "Read the audit log",
        "Reads a page of the vault's hash-chained audit log, oldest first (it never holds a value). Needs the audit scope.";
    verify_audit(NoArguments) -> AuditCheck, Reads, "Verify the audit log",
        "Asks the vault to check every audit entry's MAC and link, and reports the first that does not hold. Needs the audit scope.";
    explain_denial(ExplainDenial) -> Explanations, Reads, "Explain a denial",
        "Explains why a request was denied: with seq, that audit log entry (reading the audit log is for admins today); without, the vault's refusals of this session's own tool calls, newest first, each with what the code means.";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::mcp::fake::{DELEGATED, Fake, SENTINEL};

    /// Property names that name a value, or a credential that reads one.
    const FORBIDDEN_NAMES: &[&str] = &[
        "value",
        "values",
        "data",
        "secret_value",
        "plaintext",
        "ciphertext",
        "token",
        "raw",
        "private_key",
        "password",
        "contents",
        "payload",
    ];
    /// …and the words that give one away inside a longer name.
    const FORBIDDEN_WORDS: &[&str] = &["value", "plaintext", "password", "private", "cipher"];

    /// Everything in `schema` (at `path`) that could carry a secret value:
    /// an object open to more properties or keyed by pattern (a map), a
    /// property named like a value, an array of anything, or a schema that
    /// admits any JSON at all.
    fn leaks(schema: &Value, path: &str) -> Vec<String> {
        let mut found = Vec::new();
        let Some(object) = schema.as_object() else {
            if schema != &Value::Bool(false) {
                found.push(format!("{path}: admits any JSON ({schema})"));
            }
            return found;
        };
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(branches) = object.get(combinator).and_then(Value::as_array) {
                for (i, branch) in branches.iter().enumerate() {
                    found.extend(leaks(branch, &format!("{path}/{combinator}[{i}]")));
                }
            }
        }
        let types: Vec<&str> = match object.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let constrained = !types.is_empty()
            || ["anyOf", "oneOf", "allOf", "enum", "const", "$ref"]
                .iter()
                .any(|k| object.contains_key(*k));
        if !constrained {
            found.push(format!("{path}: admits any JSON ({schema})"));
        }
        if object.contains_key("$ref") {
            found.push(format!(
                "{path}: unresolved $ref (subschemas must be inlined)"
            ));
        }
        if types.contains(&"object") || object.contains_key("properties") {
            if object.get("additionalProperties") != Some(&Value::Bool(false)) {
                found.push(format!("{path}: object open to more properties (a map)"));
            }
            if object.contains_key("patternProperties") {
                found.push(format!("{path}: object keyed by pattern (a map)"));
            }
            let properties = object.get("properties").and_then(Value::as_object);
            for (name, property) in properties.into_iter().flatten() {
                let lower = name.to_lowercase();
                if FORBIDDEN_NAMES.contains(&lower.as_str())
                    || FORBIDDEN_WORDS.iter().any(|w| lower.contains(w))
                {
                    found.push(format!("{path}/{name}: named like a value"));
                }
                found.extend(leaks(property, &format!("{path}/{name}")));
            }
        }
        if types.contains(&"array") {
            match object.get("items") {
                Some(items) => found.extend(leaks(items, &format!("{path}[]"))),
                None => found.push(format!("{path}: array of anything")),
            }
        }
        found
    }

    #[test]
    fn no_tool_schema_could_carry_a_value() {
        let tools = catalog();
        assert!(tools.len() >= 13, "{} tools", tools.len());
        let mut found = Vec::new();
        for tool in &tools {
            let input = Value::Object((*tool.input_schema).clone());
            assert_eq!(
                input["type"], "object",
                "{}: input must be an object",
                tool.name
            );
            found.extend(leaks(&input, &format!("{}:input", tool.name)));
            let output = tool
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no output schema", tool.name));
            let output = Value::Object((**output).clone());
            assert_eq!(
                output["type"], "object",
                "{}: output must be an object",
                tool.name
            );
            found.extend(leaks(&output, &format!("{}:output", tool.name)));
        }
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    /// The check above is not vacuous: each way a value could travel is caught.
    #[test]
    fn the_schema_check_catches_each_way_a_value_could_travel() {
        #[derive(Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Named {
            value: String,
        }
        #[derive(Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Hidden {
            db_password_hint: String,
        }
        #[derive(Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Map {
            labels: BTreeMap<String, String>,
        }
        #[derive(Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Anything {
            extra: Value,
        }
        #[derive(Serialize, JsonSchema)]
        struct Open {
            name: String,
        }
        #[derive(Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Nested {
            items: Vec<Option<Open>>,
        }
        let check = |schema: JsonObject| leaks(&Value::Object(schema), "t");
        assert_eq!(check(schema_of::<Named>()), ["t/value: named like a value"]);
        assert_eq!(
            check(schema_of::<Hidden>()),
            ["t/db_password_hint: named like a value"]
        );
        assert!(
            check(schema_of::<Map>())
                .iter()
                .any(|f| f.contains("t/labels: object open")),
            "{:?}",
            check(schema_of::<Map>())
        );
        assert!(
            check(schema_of::<Anything>())
                .iter()
                .any(|f| f.contains("t/extra: admits any JSON")),
            "{:?}",
            check(schema_of::<Anything>())
        );
        assert_eq!(
            check(schema_of::<Open>()),
            ["t: object open to more properties (a map)"]
        );
        assert!(
            check(schema_of::<Nested>())
                .iter()
                .any(|f| f.contains("object open")),
            "{:?}",
            check(schema_of::<Nested>())
        );
    }

    /// Every key of `value` is a property its schema declares, all the way down.
    fn conforms(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            return if branches.iter().any(|b| conforms(value, b, path).is_ok()) {
                Ok(())
            } else {
                Err(format!("{path}: {value} matches no branch"))
            };
        }
        match value {
            Value::Object(object) => {
                let properties = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .ok_or_else(|| format!("{path}: an object where the schema has none"))?;
                for (key, item) in object {
                    let property = properties
                        .get(key)
                        .ok_or_else(|| format!("{path}: undeclared property {key}"))?;
                    conforms(item, property, &format!("{path}/{key}"))?;
                }
                Ok(())
            }
            Value::Array(items) => {
                let schema = schema
                    .get("items")
                    .ok_or_else(|| format!("{path}: an array where the schema has none"))?;
                items
                    .iter()
                    .try_for_each(|item| conforms(item, schema, &format!("{path}[]")))
            }
            _ => Ok(()),
        }
    }

    fn arguments_for(name: &str) -> Value {
        match name {
            "list_secrets" => json!({"project": "demo"}),
            "list_grants" => json!({"machine_id": "m_1"}),
            "create_enrollment_token" => json!({
                "project": "demo", "cluster": "prod", "namespace": DELEGATED,
                "policy": "api", "service_accounts": ["api"],
                "grants": [{"secret": "db", "fields": ["user"]}],
            }),
            "add_grant" => json!({"token_id": "et_01", "project": "demo", "secret": "db"}),
            "remove_grant" => json!({"id": "g_1"}),
            "set_policy" => json!({"project": "demo", "secret": "db", "policy": {"cosign": true}}),
            "read_audit" => json!({"limit": 3}),
            "explain_denial" => json!({"seq": 2}),
            _ => json!({}),
        }
    }

    fn object(value: Value) -> Option<JsonObject> {
        match value {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    #[tokio::test]
    async fn every_tool_answers_within_its_output_schema_and_drops_what_it_must() {
        let tools = Tools::new(Fake);
        for tool in catalog() {
            let output = tools
                .call(&tool.name, object(arguments_for(&tool.name)))
                .await
                .unwrap_or_else(|| panic!("{} is listed but not dispatched", tool.name))
                .unwrap_or_else(|e| panic!("{}: {e}", tool.name));
            let schema = Value::Object((**tool.output_schema.as_ref().unwrap()).clone());
            conforms(&output, &schema, &tool.name).unwrap();
            let text = output.to_string();
            assert!(!text.contains(SENTINEL), "{}: {text}", tool.name);
        }
        assert!(tools.call("read_secret", None).await.is_none());
    }

    #[tokio::test]
    async fn refusals_are_remembered_and_explained() {
        let tools = Tools::new(Fake);
        let outside = json!({
            "project": "demo", "cluster": "prod", "namespace": "elsewhere", "policy": "api",
        });
        let error = tools
            .call("create_enrollment_token", object(outside))
            .await
            .unwrap()
            .unwrap_err();
        assert!(error.to_string().contains("not_delegated"), "{error}");
        let explained = tools.call("explain_denial", None).await.unwrap().unwrap();
        let denial = &explained["denials"][0];
        assert_eq!(denial["source"], "session");
        assert_eq!(denial["action"], "create_enrollment_token");
        assert_eq!(denial["code"], "not_delegated");
        assert!(denial["explanation"].as_str().unwrap().contains("delegat"));

        let from_audit = tools
            .call("explain_denial", object(json!({"seq": 2})))
            .await
            .unwrap()
            .unwrap();
        let denial = &from_audit["denials"][0];
        assert_eq!(
            (denial["seq"].as_u64(), &denial["code"]),
            (Some(2), &json!("not_delegated"))
        );
        assert_eq!(denial["reason"], "no delegation for namespace prod/other");
    }

    #[tokio::test]
    async fn arguments_are_checked_before_the_vault_sees_them() {
        let tools = Tools::new(Fake);
        for (tool, arguments) in [
            (
                "list_secrets",
                json!({"project": "../../v1/secrets/demo/db"}),
            ),
            ("list_secrets", json!({"project": "demo", "value": "x"})),
            ("list_secrets", json!({})),
            ("list_grants", json!({"machine_id": "m_1&token_id=et_2"})),
            ("remove_grant", json!({"id": "g_1/../x"})),
            ("add_grant", json!({"project": "demo", "secret": "db"})),
            ("read_audit", json!({"limit": 0})),
            ("read_audit", json!({"limit": "hunter2 \\\" quoted"})),
            (
                "set_policy",
                json!({"project": "demo", "secret": "db", "policy": {"timezone": 7, "window": "hunter2"}}),
            ),
            (
                "create_enrollment_token",
                json!({
                    "project": "demo", "cluster": "prod", "namespace": DELEGATED,
                    "policy": "api", "raw_token": true,
                }),
            ),
        ] {
            let secret_looking = arguments.to_string();
            let error = tools
                .call(tool, object(arguments))
                .await
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(error, ToolError::Arguments(_)),
                "{tool} {secret_looking}: {error}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn argument_errors_say_what_is_wrong_without_the_value() {
        assert_eq!(
            without_strings(r#"invalid type: string "hunter2 \" x", expected u32"#),
            "invalid type: a string, expected u32"
        );
        assert_eq!(
            without_strings("unknown field `value`, expected `project`"),
            "unknown field `value`, expected `project`"
        );
    }

    #[tokio::test]
    async fn audit_pages_filter_and_verification_are_reported_as_the_vault_says() {
        let tools = Tools::new(Fake);
        let read = |args: Value| tools.call("read_audit", object(args));
        let full = read(json!({"limit": 3})).await.unwrap().unwrap();
        assert_eq!(full["entries"].as_array().unwrap().len(), 3, "{full}");
        assert_eq!(full["next_after"], 3, "{full}");
        let last = read(json!({"after": 3, "limit": 5}))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last["entries"][0]["seq"], 4, "{last}");
        assert!(last["next_after"].is_null(), "{last}");
        let allowed = read(json!({"outcome": "allow"})).await.unwrap().unwrap();
        assert_eq!(allowed["entries"], json!([]), "{allowed}");
        let denied = read(json!({"outcome": "deny"})).await.unwrap().unwrap();
        assert_eq!(denied["entries"].as_array().unwrap().len(), 3, "{denied}");

        let check = tools.call("verify_audit", None).await.unwrap().unwrap();
        assert_eq!(check["intact"], false, "{check}");
        assert_eq!(check["broken"]["kind"], "broken_link", "{check}");
        assert_eq!(
            (&check["head_seq"], &check["entries"]),
            (&json!(3), &json!(3))
        );
    }

    #[test]
    fn hints_say_which_tools_only_read() {
        for tool in catalog() {
            let hints = tool.annotations.clone().unwrap();
            let reads = tool.name.starts_with("list_")
                || ["read_audit", "verify_audit", "explain_denial"].contains(&tool.name.as_ref());
            assert_eq!(hints.read_only_hint, Some(reads), "{}", tool.name);
            assert_eq!(hints.open_world_hint, Some(false), "{}", tool.name);
            let destroys = ["remove_grant", "set_policy"].contains(&tool.name.as_ref());
            if !reads {
                assert_eq!(hints.destructive_hint, Some(destroys), "{}", tool.name);
            }
        }
    }

    #[test]
    fn checked_names_follow_their_patterns() {
        for ok in ["demo", "db-password", "a.b_c", "0"] {
            assert!(Name::try_from(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in ["", "Demo", "-x", "a/b", "..", ".x", "a b", &"x".repeat(64)] {
            assert!(Name::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert!(Id::try_from("et_01JABCDEF".to_owned()).is_ok());
        for bad in ["et_", "et_a?b", "g_1/x", "_x"] {
            assert!(Id::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert!(FieldName::try_from("API_KEY".to_owned()).is_ok());
        assert!(FieldName::try_from(".hidden".to_owned()).is_err());
        // Every pattern compiles (one that did not would refuse everything).
        assert!(Namespace::try_from("payments".to_owned()).is_ok());
        assert!(Namespace::try_from("pay.ments".to_owned()).is_err());
        assert!(ServiceAccount::try_from("api.v2".to_owned()).is_ok());
        assert!(ServiceAccount::try_from("API".to_owned()).is_err());
    }
}
