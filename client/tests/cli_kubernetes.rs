//! The Kubernetes and delegation subcommands of `signet` (clusters,
//! namespace-bound enrollment policies, token renewal, and the delegations
//! that bound what an agent may hand out), each driven through the real
//! `signet` binary against a real `signet-vault dev`. No apiserver is needed:
//! registering a cluster only stores it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::{ADMIN, Setup};

/// A self-signed CA certificate (no key anywhere): what `--ca-file` takes.
const CA_PEM: &str = include_str!("fixtures/cluster-ca.pem");
/// Stands for a reviewer token: a credential no output may contain.
const REVIEWER_TOKEN: &str = "reviewer-credential-never-echoed-8d1f";
const AGENT: &str = "agent.json";

/// Writes the CA and reviewer-token files into the work directory.
fn cluster_files(s: &Setup) {
    std::fs::write(s.work.path().join("ca.pem"), CA_PEM).unwrap();
    std::fs::write(
        s.work.path().join("reviewer.token"),
        format!("{REVIEWER_TOKEN}\n"),
    )
    .unwrap();
}

/// Registers cluster `name` (no reviewer token).
fn add_cluster(s: &Setup, name: &str) {
    cluster_files(s);
    let url = format!("https://{name}.example.invalid:6443");
    s.ok(
        Some(ADMIN),
        &[
            "cluster",
            "add",
            name,
            "--api-url",
            &url,
            "--ca-file",
            "ca.pem",
        ],
    );
}

/// An agent identity in `agent.json` with `scopes`; returns its id.
fn agent(s: &Setup, scopes: &[&str]) -> String {
    s.ok(Some(ADMIN), &["keygen", "--out", AGENT]);
    let mut args = vec!["agent", "create", "--name", "operator", "--key-file", AGENT];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    s.json(ADMIN, &args)["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Value, key: &str, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {list}"))
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn clusters_are_added_listed_and_removed() {
    let s = Setup::new();
    cluster_files(&s);

    let prod = s.json(
        ADMIN,
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
    assert_eq!(prod["name"], "prod", "{prod}");
    assert_eq!(prod["api_url"], "https://prod.example.invalid:6443");
    assert_eq!(prod["audience"], "signet");
    assert_eq!(prod["reviewer"], "service-account");

    let text = s.ok(
        Some(ADMIN),
        &[
            "cluster",
            "add",
            "edge",
            "--api-url",
            "https://edge.example.invalid",
            "--ca-file",
            "ca.pem",
            "--audience",
            "vault.example",
            "--reviewer-token-file",
            "reviewer.token",
        ],
    );
    assert_eq!(
        text.trim(),
        "cluster edge registered: https://edge.example.invalid (audience vault.example, reviews with the registered reviewer token)"
    );

    let list = s.json(ADMIN, &["cluster", "list"]);
    assert_eq!(ids(&list, "clusters", "name"), ["edge", "prod"], "{list}");
    let edge = list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "edge")
        .unwrap();
    assert_eq!(
        (&edge["audience"], &edge["reviewer"]),
        (&"vault.example".into(), &"token".into()),
        "{list}"
    );
    let text = s.ok(Some(ADMIN), &["cluster", "list"]);
    assert!(
        text.contains(
            "prod\thttps://prod.example.invalid:6443\taudience signet\treviewer service-account\t"
        ),
        "{text}"
    );

    // The reviewer token is a credential: no answer and no audit entry shows it.
    let audit = s.ok(Some(ADMIN), &["--json", "audit", "list"]);
    for output in [&list.to_string(), &text, &audit] {
        assert!(!output.contains(REVIEWER_TOKEN), "{output}");
    }

    // A file that is not a certificate is refused without being echoed.
    let stderr = s.refused(
        ADMIN,
        &[
            "cluster",
            "add",
            "bad",
            "--api-url",
            "https://bad.example.invalid",
            "--ca-file",
            "reviewer.token",
        ],
        400,
        "invalid_request",
    );
    assert!(!stderr.contains(REVIEWER_TOKEN), "{stderr}");
    // A missing file never reaches the vault.
    let output = s.signet(
        Some(ADMIN),
        &[
            "cluster",
            "add",
            "bad",
            "--api-url",
            "https://bad.example.invalid",
            "--ca-file",
            "missing.pem",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("signet: cannot read missing.pem"),
        "{stderr}"
    );

    let removed = s.json(ADMIN, &["cluster", "remove", "prod"]);
    assert_eq!(removed["removed"], "prod");
    let text = s.ok(Some(ADMIN), &["cluster", "remove", "edge"]);
    assert_eq!(text.trim(), "removed cluster edge");
    let list = s.json(ADMIN, &["cluster", "list"]);
    assert_eq!(list["clusters"], serde_json::json!([]), "{list}");
    s.refused(ADMIN, &["cluster", "remove", "prod"], 404, "not_found");

    // Only admins register clusters.
    agent(&s, &["metadata", "tokens", "grants", "machines"]);
    s.refused(
        AGENT,
        &[
            "cluster",
            "add",
            "prod",
            "--api-url",
            "https://prod.example.invalid",
            "--ca-file",
            "ca.pem",
        ],
        403,
        "forbidden",
    );
}

#[test]
fn delegations_are_added_listed_and_removed() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    s.ok(
        Some(ADMIN),
        &[
            "secret",
            "set",
            "app/stripe",
            "--field",
            "key=sk",
            "--field",
            "account=acct",
        ],
    );
    add_cluster(&s, "prod");
    // Listing its own delegations takes the metadata scope.
    let agent_id = agent(&s, &["tokens", "metadata"]);

    let outside = s.json(
        ADMIN,
        &[
            "delegation",
            "add",
            "--agent",
            &agent_id,
            "--project",
            "app",
            "--secret",
            "db",
        ],
    );
    assert_eq!(outside["agent_id"], agent_id.as_str(), "{outside}");
    assert_eq!(
        (&outside["project"], &outside["secret"]),
        (&"app".into(), &"db".into())
    );
    assert!(outside.get("kubernetes").is_none(), "{outside}");
    assert!(outside.get("fields").is_none(), "{outside}");

    let text = s.ok(
        Some(ADMIN),
        &[
            "delegation",
            "add",
            "--agent",
            &agent_id,
            "--project",
            "app",
            "--secret",
            "stripe",
            "--field",
            "key",
            "--cluster",
            "prod",
            "--namespace",
            "payments",
        ],
    );
    let text = text.trim();
    assert!(
        text.starts_with("delegation ")
            && text.ends_with(&format!(
                ": agent {agent_id} may hand out app/stripe (fields: key) to machines of prod/payments"
            )),
        "{text}"
    );

    let list = s.json(ADMIN, &["delegation", "list"]);
    assert_eq!(list["delegations"].as_array().unwrap().len(), 2, "{list}");
    let scoped = list["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["secret"] == "stripe")
        .unwrap();
    assert_eq!(
        scoped["kubernetes"],
        serde_json::json!({"cluster": "prod", "namespace": "payments"})
    );
    assert_eq!(scoped["fields"], serde_json::json!(["key"]));
    // Filtered by agent, and as the agent itself: the same two.
    let mine = s.json(ADMIN, &["delegation", "list", "--agent", &agent_id]);
    assert_eq!(
        ids(&mine, "delegations", "id"),
        ids(&list, "delegations", "id")
    );
    let own = s.json(AGENT, &["delegation", "list"]);
    assert_eq!(
        ids(&own, "delegations", "id"),
        ids(&list, "delegations", "id")
    );
    let none = s.json(ADMIN, &["delegation", "list", "--agent", "ag_nosuchagent"]);
    assert_eq!(none["delegations"], serde_json::json!([]), "{none}");
    let text = s.ok(Some(ADMIN), &["delegation", "list"]);
    assert!(
        text.contains(&format!(
            "{agent_id}\tapp/db\twhole secret\tmachines outside Kubernetes"
        )),
        "{text}"
    );

    // Only admins delegate.
    s.refused(
        AGENT,
        &[
            "delegation",
            "add",
            "--agent",
            &agent_id,
            "--project",
            "app",
            "--secret",
            "db",
        ],
        403,
        "forbidden",
    );
    // A namespace of an unregistered cluster is refused.
    s.refused(
        ADMIN,
        &[
            "delegation",
            "add",
            "--agent",
            &agent_id,
            "--project",
            "app",
            "--secret",
            "db",
            "--cluster",
            "elsewhere",
            "--namespace",
            "payments",
        ],
        400,
        "invalid_request",
    );

    let id = outside["id"].as_str().unwrap();
    let removed = s.json(ADMIN, &["delegation", "remove", id]);
    assert_eq!(removed["removed"], id);
    let list = s.json(ADMIN, &["delegation", "list"]);
    assert_eq!(list["delegations"].as_array().unwrap().len(), 1, "{list}");
    s.refused(ADMIN, &["delegation", "remove", id], 404, "not_found");
}

/// The regression for "an agent reads secrets": an agent with the `tokens`
/// scope could mint a token granting any secret, enroll a machine with it
/// and read through the machine. It may hand out only what was delegated.
#[test]
fn an_agent_hands_out_only_delegated_secrets() {
    let s = Setup::new();
    s.project(
        "demo",
        &[("db-password", "hunter2"), ("stripe", "sk_live_x")],
    );
    let agent_id = agent(&s, &["tokens"]);

    let create = ["token", "create", "--project", "demo", "--grant", "stripe"];
    let stderr = s.refused(AGENT, &create, 403, "not_delegated");
    assert!(!stderr.contains("sk_live_x"), "{stderr}");
    // Not even a token without grants in a project it holds nothing of.
    s.refused(
        AGENT,
        &["token", "create", "--project", "demo"],
        403,
        "not_delegated",
    );

    // Delegated for machines outside Kubernetes, the same command works, and
    // the machine it enrolls reads the secret; the agent itself still cannot.
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
            "stripe",
        ],
    );
    let created = s.json(AGENT, &create);
    let token = created["token"].as_str().unwrap();
    s.enroll(token, "host-1", "m.json");
    assert_eq!(s.read("m.json", "demo/stripe").0, "sk_live_x");
    s.refused(AGENT, &["read", "demo/stripe"], 403, "not_a_machine");
    // Other secrets of the project are still not the agent's to give.
    s.refused(
        AGENT,
        &[
            "token",
            "create",
            "--project",
            "demo",
            "--grant",
            "db-password",
        ],
        403,
        "not_delegated",
    );
}

#[test]
fn a_token_bound_to_a_namespace_is_attested_unless_raw() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    add_cluster(&s, "prod");
    let bound = [
        "token",
        "create",
        "--project",
        "app",
        "--grant",
        "db",
        "--cluster",
        "prod",
        "--namespace",
        "payments",
        "--policy",
        "api",
        "--service-account",
        "api",
    ];

    // Attested: no raw token exists, and the text says so.
    let created = s.json(ADMIN, &bound);
    assert!(created.get("token").is_none(), "{created}");
    assert_eq!(
        created["kubernetes"],
        serde_json::json!({
            "cluster": "prod", "namespace": "payments", "policy": "api",
            "service_accounts": ["api"],
        })
    );
    let text = s.ok(Some(ADMIN), &bound);
    assert!(
        text.contains("pods of namespace payments in cluster prod (service accounts api) enroll by attestation, so there is no token to hand out"),
        "{text}"
    );
    // Token ids start `et_` too; a raw token also has a dot.
    assert!(
        !text
            .split_whitespace()
            .any(|w| w.starts_with("et_") && w.contains('.')),
        "{text}"
    );

    // Raw token on request: printed once, and the machine it enrolls is
    // known by cluster and namespace but not attested.
    let mut raw = bound.to_vec();
    raw.push("--raw-token");
    let created = s.json(ADMIN, &raw);
    assert_eq!(created["kubernetes"]["raw_token"], true, "{created}");
    let token = created["token"].as_str().unwrap();
    let id = s.enroll(token, "pod-1", "pod.json")["machine_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = s.machine_view(&id);
    assert_eq!(view["kubernetes"]["namespace"], "payments", "{view}");
    assert_eq!(view["kubernetes"]["attested"], false, "{view}");
    let text = s.ok(Some(ADMIN), &["machine", "list"]);
    assert!(
        text.contains(&format!("{id}\t"))
            && text.contains("\tpayments in cluster prod, not attested"),
        "{text}"
    );

    // The token list shows each binding.
    let text = s.ok(Some(ADMIN), &["token", "list"]);
    assert!(
        text.contains("\tprod/payments, policy api: attested, service accounts api"),
        "{text}"
    );
    assert!(
        text.contains("\tprod/payments, policy api: raw token, service accounts api"),
        "{text}"
    );

    // A binding is all of cluster, namespace and policy.
    let output = s.signet(
        Some(ADMIN),
        &["token", "create", "--project", "app", "--cluster", "prod"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--namespace") && stderr.contains("--policy"),
        "{stderr}"
    );
    // A namespace of an unregistered cluster is refused by the vault.
    s.refused(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--cluster",
            "elsewhere",
            "--namespace",
            "payments",
            "--policy",
            "api",
        ],
        400,
        "invalid_request",
    );
}

#[test]
fn a_renewed_token_has_a_successor_and_a_grace() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    let old = s.json(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--grant",
            "db",
            "--max-uses",
            "3",
        ],
    );
    let old_id = old["id"].as_str().unwrap();
    let old_token = old["token"].as_str().unwrap();

    let renewed = s.json(
        ADMIN,
        &["token", "renew", old_id, "--ttl", "2h", "--grace", "10m"],
    );
    let new_id = renewed["id"].as_str().unwrap();
    let new_token = renewed["token"].as_str().unwrap();
    assert_ne!(new_id, old_id, "{renewed}");
    assert_ne!(new_token, old_token);
    assert_eq!(renewed["project"], "app");

    // Both work during the grace; the machine reads its grant.
    s.enroll(new_token, "new-1", "new.json");
    s.enroll(old_token, "old-1", "old.json");
    assert_eq!(s.read("new.json", "app/db").0, "v");

    let text = s.ok(Some(ADMIN), &["token", "renew", new_id, "--ttl", "1h"]);
    assert!(text.contains("It is shown only now."), "{text}");
    assert!(
        text.trim_end()
            .ends_with(&format!("The renewed token {new_id} no longer works.")),
        "{text}"
    );
    s.refused(
        ADMIN,
        &["token", "renew", "et_nosuchtoken", "--ttl", "1h"],
        404,
        "not_found",
    );
}
