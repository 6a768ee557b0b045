//! `signet mcp` end to end: a real `signet-vault dev`, an agent with a
//! delegation for one namespace, and the real `signet mcp` process driven
//! over its stdin and stdout by the MCP SDK's client. Every byte the server
//! writes is kept, and the secret's value is never among them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use rmcp::ServiceExt as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProtocolVersion,
};
use rmcp::service::ServiceError;
use serde_json::{Value, json};
use support::{ADMIN, CLI, Setup};
use tokio::io::{AsyncRead, ReadBuf};

const CA_PEM: &str = include_str!("fixtures/cluster-ca.pem");
const AGENT: &str = "agent.json";
/// The value that must never leave the vault towards the assistant.
const VALUE: &str = "hunter2-mcp-never-shown-5f0c";
const OTHER_VALUE: &str = "sk_live_mcp_never_shown_77a1";

/// Reads through to `inner` and keeps a copy of every byte.
struct Tee<R> {
    inner: R,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let fresh = buf.filled()[before..].to_vec();
            self.seen.lock().unwrap().extend_from_slice(&fresh);
        }
        poll
    }
}

/// A vault with `demo/db-password` and `demo/stripe`, a registered cluster
/// `prod`, and an agent (`agent.json`) delegated `demo/db-password` for the
/// pods of `prod/payments` only.
fn vault_with_delegated_agent() -> (Setup, String) {
    let s = Setup::new();
    s.project("demo", &[("db-password", VALUE), ("stripe", OTHER_VALUE)]);
    std::fs::write(s.work.path().join("ca.pem"), CA_PEM).unwrap();
    s.ok(
        Some(ADMIN),
        &[
            "cluster",
            "add",
            "prod",
            "--api-url",
            "https://prod.example.invalid:6443",
            "--ca-file",
            "ca.pem",
        ],
    );
    s.ok(Some(ADMIN), &["keygen", "--out", AGENT]);
    let mut args = vec![
        "agent",
        "create",
        "--name",
        "assistant",
        "--key-file",
        AGENT,
    ];
    for scope in [
        "metadata", "tokens", "grants", "machines", "policies", "audit",
    ] {
        args.extend(["--scope", scope]);
    }
    let agent_id = s.json(ADMIN, &args)["id"].as_str().unwrap().to_owned();
    s.ok(
        Some(ADMIN),
        &[
            "delegation",
            "add",
            "--agent",
            &agent_id,
            "--project",
            "demo",
            "--secret",
            "db-password",
            "--cluster",
            "prod",
            "--namespace",
            "payments",
        ],
    );
    (s, agent_id)
}

/// A `tools/call` of `name` with `arguments` (a JSON object).
fn call(name: &'static str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    CallToolRequestParams::new(name).with_arguments(arguments)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_assistant_manages_within_its_delegation_and_never_sees_a_value() {
    let (s, _agent_id) = vault_with_delegated_agent();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stdout, stderr) = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), session(&s))
            .await
            .expect("the MCP session did not finish within 120 s")
    });
    // Not a byte of the values, plain or base64, in anything the server wrote.
    for written in [&stdout, &stderr] {
        let written = String::from_utf8_lossy(written);
        for secret in [VALUE, OTHER_VALUE] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
            let encoded_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
            for form in [secret, encoded.as_str(), encoded_url.as_str()] {
                assert!(!written.contains(form), "{form} appeared in:\n{written}");
            }
        }
    }
    // The copy is of the real stream: the session's answers are in it.
    let all = String::from_utf8_lossy(&stdout);
    for expected in [
        "\"protocolVersion\":\"2025-11-25\"",
        "db-password",
        "not_delegated",
    ] {
        assert!(all.contains(expected), "{expected} not in:\n{all}");
    }
    // The vault holds the values all along: a machine reads them.
    let token = s.json(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "demo",
            "--grant",
            "db-password",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.enroll(&token, "host-1", "m.json");
    assert_eq!(s.read("m.json", "demo/db-password").0, VALUE);
}

/// Runs `signet mcp` as the agent and drives it; returns every byte it
/// wrote to stdout and to stderr.
async fn session(s: &Setup) -> (Vec<u8>, Vec<u8>) {
    let mut child = tokio::process::Command::new(CLI)
        .arg("mcp")
        .current_dir(s.work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SIGNET_VAULT", &s.address)
        .env("SIGNET_IDENTITY", AGENT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stdout = Tee {
        inner: child.stdout.take().unwrap(),
        seen: Arc::clone(&seen),
    };
    let stdin = child.stdin.take().unwrap();
    let mut child_stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut child_stderr, &mut buf).await;
        buf
    });

    let config = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("signet-mcp-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25);
    let client = config.serve((stdout, stdin)).await.unwrap();

    // initialize: the version we asked for, the tools capability, Signet.
    let server = client.peer_info().unwrap();
    assert_eq!(server.protocol_version, ProtocolVersion::V_2025_11_25);
    assert!(server.capabilities.tools.is_some());
    assert_eq!(
        server.server_info.as_ref().map(|i| i.name.as_str()),
        Some("signet")
    );

    // tools/list: what agents may do, and nothing that reads a value.
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "list_projects",
        "list_secrets",
        "list_machines",
        "list_tokens",
        "create_enrollment_token",
        "add_grant",
        "remove_grant",
        "set_policy",
        "read_audit",
        "verify_audit",
        "explain_denial",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("read_secret") || n.contains("value")),
        "{names:?}"
    );

    // Metadata, never values.
    let secrets = client
        .call_tool(call("list_secrets", json!({"project": "demo"})))
        .await
        .unwrap();
    assert_eq!(secrets.is_error, Some(false), "{}", text(&secrets));
    let listed = secrets.structured_content.clone().unwrap();
    let names: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-password", "stripe"], "{listed}");
    assert_eq!(listed["secrets"][0]["live_version"], 1);

    // Within the delegation: accepted, an attested policy with no raw token.
    let inside = client
        .call_tool(call(
            "create_enrollment_token",
            json!({
                "project": "demo", "cluster": "prod", "namespace": "payments",
                "policy": "api", "service_accounts": ["api"],
                "grants": [{"secret": "db-password"}],
            }),
        ))
        .await
        .unwrap();
    assert_eq!(inside.is_error, Some(false), "{}", text(&inside));
    let created = &inside.structured_content.clone().unwrap()["created"];
    assert_eq!(created["project"], "demo", "{created}");
    assert_eq!(created["kubernetes"]["namespace"], "payments", "{created}");
    assert_eq!(created["kubernetes"]["raw_token"], false, "{created}");
    assert!(created.get("token").is_none(), "{created}");
    let policy_id = created["id"].as_str().unwrap().to_owned();

    // Outside it (another namespace, or a secret not delegated): refused,
    // with the vault's own code and reason in the tool error.
    for (namespace, secret) in [("checkout", "db-password"), ("payments", "stripe")] {
        let outside = client
            .call_tool(call(
                "create_enrollment_token",
                json!({
                    "project": "demo", "cluster": "prod", "namespace": namespace,
                    "policy": "api", "grants": [{"secret": secret}],
                }),
            ))
            .await
            .unwrap();
        assert_eq!(outside.is_error, Some(true), "{namespace}/{secret}");
        let reason = text(&outside);
        assert!(
            reason.starts_with("vault refused the request (403, not_delegated): "),
            "{reason}"
        );
        assert!(outside.structured_content.is_none());
    }

    // explain_denial remembers this session's refusals.
    let explained = client
        .call_tool(call("explain_denial", json!({})))
        .await
        .unwrap();
    let denials = explained.structured_content.clone().unwrap();
    assert_eq!(denials["denials"].as_array().unwrap().len(), 2, "{denials}");
    assert_eq!(denials["denials"][0]["code"], "not_delegated");
    assert_eq!(denials["denials"][0]["action"], "create_enrollment_token");

    // Grants within the delegation, on the policy just made; then removed.
    let grants = client
        .call_tool(call("list_grants", json!({"token_id": policy_id})))
        .await
        .unwrap();
    let grants = grants.structured_content.unwrap();
    assert_eq!(grants["grants"][0]["secret"], "db-password", "{grants}");
    let grant_id = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let removed = client
        .call_tool(call("remove_grant", json!({"id": grant_id})))
        .await
        .unwrap();
    assert_eq!(removed.is_error, Some(false), "{}", text(&removed));
    let added = client
        .call_tool(call(
            "add_grant",
            json!({"token_id": policy_id, "project": "demo", "secret": "db-password"}),
        ))
        .await
        .unwrap();
    assert_eq!(added.is_error, Some(false), "{}", text(&added));
    let not_delegated = client
        .call_tool(call(
            "add_grant",
            json!({"token_id": policy_id, "project": "demo", "secret": "stripe"}),
        ))
        .await
        .unwrap();
    assert_eq!(not_delegated.is_error, Some(true));
    assert!(text(&not_delegated).contains("not_delegated"));

    // The rest of the list tools answer for this agent.
    for tool in [
        "list_projects",
        "list_machines",
        "list_tokens",
        "list_delegations",
    ] {
        let result = client.call_tool(call(tool, json!({}))).await.unwrap();
        assert_eq!(result.is_error, Some(false), "{tool}: {}", text(&result));
    }
    // The audit tools, with the audit scope; a policy that tightens the
    // delegated secret's, then one that would loosen it (refused).
    for (tool, args) in [
        ("read_audit", json!({"limit": 5})),
        ("verify_audit", json!({})),
        (
            "set_policy",
            json!({"project": "demo", "secret": "db-password", "policy": {"daily_read_cap": 100}}),
        ),
    ] {
        let result = client.call_tool(call(tool, args)).await.unwrap();
        assert_eq!(result.is_error, Some(false), "{tool}: {}", text(&result));
    }
    let loosen = json!({"project": "demo", "secret": "db-password", "policy": {}});
    let result = client.call_tool(call("set_policy", loosen)).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).starts_with("vault refused the request (403, forbidden)"),
        "{}",
        text(&result)
    );

    // Asking for a value: there is no tool for it, so the protocol refuses.
    for (name, args) in [
        (
            "read_secret",
            json!({"project": "demo", "secret": "db-password"}),
        ),
        ("get_secret_value", json!({"path": "demo/db-password"})),
    ] {
        match client.call_tool(call(name, args)).await {
            Err(ServiceError::McpError(error)) => {
                assert_eq!(error.code.0, -32602, "{name}: {error:?}");
            }
            other => panic!("{name}: expected a JSON-RPC error, got {other:?}"),
        }
    }
    // Nor through a listing tool with an extra argument…
    let sneaky = client
        .call_tool(call(
            "list_secrets",
            json!({"project": "demo", "include_values": true}),
        ))
        .await
        .unwrap();
    assert_eq!(sneaky.is_error, Some(true));
    assert!(text(&sneaky).starts_with("invalid arguments: "));
    // …nor as a resource or a prompt: the server offers neither.
    assert!(client.list_resources(None).await.is_err());
    assert!(client.list_prompts(None).await.is_err());

    // Closing the session ends the server cleanly.
    client.cancel().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("signet mcp did not exit after its stdin closed")
        .unwrap();
    let stderr = stderr.await.unwrap();
    assert!(
        status.success(),
        "signet mcp: {status}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    let stdout = seen.lock().unwrap().clone();
    (stdout, stderr)
}

/// The facade's last line of defence: were the vault to hand the agent a
/// raw enrollment token (a credential that enrolls a machine, which reads),
/// it is revoked at once and never returned.
#[test]
fn a_raw_token_never_reaches_the_assistant() {
    use signet_client::api::{CreateToken, KubernetesBinding, TokenConstraints, TokenGrant};
    use signet_client::identity::Identity;
    use signet_client::mcp::AgentVault;
    use signet_client::sdk::{Client, Options};

    let (s, _agent_id) = vault_with_delegated_agent();
    let identity = Identity::load(&s.work.path().join(AGENT)).unwrap();
    let client = Client::new(&s.address, identity, &Options::default()).unwrap();
    let body = CreateToken {
        project: "demo".into(),
        name: "raw".into(),
        max_uses: Some(1),
        ttl_seconds: 600,
        machine_lifetime_seconds: 3600,
        grants: vec![TokenGrant {
            secret: "db-password".into(),
            fields: None,
        }],
        constraints: TokenConstraints::default(),
        kubernetes: Some(KubernetesBinding {
            cluster: "prod".into(),
            namespace: "payments".into(),
            policy: "raw".into(),
            service_accounts: Vec::new(),
            raw_token: true,
        }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(AgentVault::create_token(&client, &body))
        .unwrap_err();
    assert!(error.to_string().contains("revoked it"), "{error}");
    let tokens = runtime.block_on(AgentVault::tokens(&client)).unwrap();
    let raw = tokens.iter().find(|t| t.name == "raw").unwrap();
    assert!(raw.revoked, "{raw:?}");
}
