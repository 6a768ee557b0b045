//! The MCP side: which protocol versions we speak, what we announce at
//! `initialize`, and how `tools/list` and `tools/call` map onto
//! [`Tools`](super::tools::Tools). JSON-RPC, the handshake, `ping` and the
//! protocol's own errors are the SDK's.

use std::borrow::Cow;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::tools::{Tools, catalog};
use super::vault::AgentVault;

/// The versions of the specification this server implements, oldest first:
/// both have the `initialize` handshake and structured tool output. A
/// client asking for another is answered with the newest of these, and may
/// then hang up (the specification's negotiation).
pub const VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_11_25];

const INSTRUCTIONS: &str = "Signet vault, as an agent identity. You can list projects, secrets \
(names, versions, field names, policies), machines, enrollment tokens, this agent's delegations \
and grants; create attested Kubernetes enrollment policies and add or remove grants within the \
delegations an admin gave this agent; and explain refusals. No tool reads or writes a secret \
value, and none ever will: ask a human admin for anything that needs one.";

/// The MCP server over one agent's view of the vault.
pub struct Server<V> {
    tools: Tools<V>,
}

impl<V: AgentVault> Server<V> {
    pub fn new(vault: V) -> Self {
        Self {
            tools: Tools::new(vault),
        }
    }
}

impl<V: AgentVault> ServerHandler for Server<V> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .with_server_info(
                Implementation::new("signet", env!("CARGO_PKG_VERSION")).with_title("Signet"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self.tools.call(&request.name, request.arguments).await {
            // The specification's answer to an unknown tool: a protocol
            // error, "Invalid params". The name is not echoed back.
            None => Err(ErrorData::new(
                ErrorCode::INVALID_PARAMS,
                "unknown tool: no tool of that name (tools/list shows them all; none reads a secret value)",
                None,
            )),
            Some(Ok(output)) => Ok(CallToolResult::structured(output).into()),
            Some(Err(error)) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(error.to_string())]).into())
            }
        }
    }
}

/// The wire, line by line: what a client that knows only the specification
/// sees. The SDK does the JSON-RPC; these pin what we chose on top of it.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    use crate::mcp::fake::Fake;

    /// A server on an in-memory pipe, and the client's ends.
    struct Wire {
        write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        read: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    }

    impl Wire {
        fn start() -> Self {
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(crate::mcp::serve(Fake, tokio::io::split(server)));
            let (read, write) = tokio::io::split(client);
            Self {
                write,
                read: BufReader::new(read).lines(),
            }
        }

        async fn send(&mut self, message: Value) {
            let mut line = message.to_string();
            line.push('\n');
            self.write.write_all(line.as_bytes()).await.unwrap();
        }

        async fn receive(&mut self) -> Value {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(5), self.read.next_line())
                    .await
                    .expect("no answer within 5 s")
                    .unwrap()
                    .expect("the server closed the pipe");
            serde_json::from_str(&line).unwrap()
        }

        async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
            self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
                .await;
            let answer = self.receive().await;
            assert_eq!(
                (&answer["jsonrpc"], &answer["id"]),
                (&json!("2.0"), &json!(id))
            );
            answer
        }

        /// `initialize` asking for `version`, then `initialized`; returns
        /// the `initialize` result.
        async fn initialize(&mut self, version: &str) -> Value {
            let answer = self
                .request(
                    1,
                    "initialize",
                    json!({
                        "protocolVersion": version,
                        "capabilities": {},
                        "clientInfo": {"name": "wire-test", "version": "0"},
                    }),
                )
                .await;
            self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .await;
            answer["result"].clone()
        }
    }

    #[tokio::test]
    async fn a_supported_version_is_echoed_with_the_tools_capability() {
        let mut wire = Wire::start();
        let result = wire.initialize("2025-06-18").await;
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert!(result["capabilities"]["tools"].is_object(), "{result}");
        assert!(
            result["capabilities"].get("resources").is_none(),
            "{result}"
        );
        assert!(result["capabilities"].get("prompts").is_none(), "{result}");
        assert_eq!(result["serverInfo"]["name"], "signet");
        assert!(
            result["instructions"]
                .as_str()
                .unwrap()
                .contains("No tool reads or writes a secret value")
        );
    }

    #[tokio::test]
    async fn another_version_is_answered_with_our_newest() {
        for asked in ["2024-11-05", "2025-03-26", "2099-01-01", "2026-07-28"] {
            let mut wire = Wire::start();
            let result = wire.initialize(asked).await;
            assert_eq!(result["protocolVersion"], "2025-11-25", "asked {asked}");
        }
        let mut wire = Wire::start();
        assert_eq!(
            wire.initialize("2025-11-25").await["protocolVersion"],
            "2025-11-25"
        );
    }

    #[tokio::test]
    async fn ping_tools_and_errors_follow_the_specification() {
        let mut wire = Wire::start();
        // A ping is answered even before initialization.
        let pong = wire.request(7, "ping", json!({})).await;
        assert_eq!(pong["result"], json!({}), "{pong}");
        wire.initialize("2025-11-25").await;
        let pong = wire.request(2, "ping", json!({})).await;
        assert_eq!(pong["result"], json!({}), "{pong}");

        let list = wire.request(3, "tools/list", json!({})).await;
        let tools = list["result"]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
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
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("read_secret") || n.contains("value"))
        );
        for tool in tools {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
        }

        // A tool that worked: structured content, and the same as text.
        let call = wire
            .request(
                4,
                "tools/call",
                json!({"name": "list_projects", "arguments": {}}),
            )
            .await;
        let result = &call["result"];
        assert_eq!(result["isError"], false, "{call}");
        assert_eq!(result["structuredContent"]["projects"][0]["name"], "demo");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            result["structuredContent"]
        );

        // Bad arguments: a tool error the model can read and correct.
        let call = wire
            .request(
                5,
                "tools/call",
                json!({"name": "list_secrets", "arguments": {"project": "Bad/Name"}}),
            )
            .await;
        assert_eq!(call["result"]["isError"], true, "{call}");
        let text = call["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("invalid arguments: "), "{text}");
        assert!(!text.contains("Bad/Name"), "{text}");

        // No such tool: the specification's protocol error (-32602).
        let call = wire
            .request(
                6,
                "tools/call",
                json!({"name": "read_secret", "arguments": {"project": "demo", "secret": "db"}}),
            )
            .await;
        assert_eq!(call["error"]["code"], -32602, "{call}");
        assert!(call.get("result").is_none(), "{call}");

        // Capabilities we do not announce are not there.
        for (id, method) in [
            (8, "resources/list"),
            (9, "prompts/list"),
            (10, "no/such/method"),
        ] {
            let answer = wire.request(id, method, json!({})).await;
            assert_eq!(answer["error"]["code"], -32601, "{method}: {answer}");
        }
    }
}
