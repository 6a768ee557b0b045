//! Cursor pagination of the list routes (docs/protocol.md, "Lists"): every
//! item once, in the route's order, `next_cursor` null at the end; a bad
//! `limit` or `cursor` is `400 invalid_request`; pages are read on a
//! snapshot beside the writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::http::StatusCode;
use kit::Harness;
use serde_json::{Value, json};
use signet_vault::page::{Page, cursor};
use signet_vault::store::{Project, SqliteStore, Store as _};

/// Five projects, five secrets in `p0` (one with two versions), five
/// machines (five tokens, ten grants) and five delegations to an agent.
async fn populated() -> Harness {
    let h = Harness::new();
    for p in ["p3", "p0", "p4", "p1", "p2"] {
        h.project(p).await;
    }
    for s in ["s2", "s0", "s4", "s1", "s3"] {
        h.write("p0", s, "value").await;
    }
    h.write("p0", "s1", "second").await;
    for _ in 0..5 {
        h.machine("p0", &["s0"]).await;
    }
    let agent = h.agent(&["metadata"]).await;
    for s in ["s4", "s3", "s2", "s1", "s0"] {
        let reply = h
            .admin(
                "POST",
                "/v1/delegations",
                Some(json!({"agent_id": agent.id, "project": "p0", "secret": s})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    h
}

/// The list routes, with their list field, the item key that must not
/// repeat, and how many items `populated` makes.
const LISTS: &[(&str, &str, &str, usize)] = &[
    ("/v1/projects", "projects", "name", 5),
    ("/v1/projects/p0/secrets", "secrets", "name", 5),
    ("/v1/machines", "machines", "id", 5),
    ("/v1/enrollment-tokens", "tokens", "id", 5),
    ("/v1/grants", "grants", "id", 10),
    ("/v1/grants?token_id=", "grants", "id", 1),
    ("/v1/delegations", "delegations", "id", 5),
    ("/v1/clusters", "clusters", "name", 0),
    ("/v1/webhooks", "webhooks", "id", 0),
    ("/v1/cosign", "requests", "id", 0),
];

fn keys(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_list_pages_through_every_item_once_in_order() {
    let h = populated().await;
    let token = h.admin("GET", "/v1/enrollment-tokens", None).await.body["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for &(target, field, key, count) in LISTS {
        let target = if target.ends_with('=') {
            format!("{target}{token}")
        } else {
            target.to_owned()
        };
        // One page of all of them is the reference order.
        let whole = h
            .admin(
                "GET",
                &format!(
                    "{target}{}limit=1000",
                    if target.contains('?') { '&' } else { '?' }
                ),
                None,
            )
            .await;
        assert_eq!(whole.status, StatusCode::OK, "{target}: {:?}", whole.body);
        assert!(whole.body["next_cursor"].is_null(), "{target}");
        let whole = keys(whole.body[field].as_array().unwrap(), key);
        assert_eq!(whole.len(), count, "{target}: {whole:?}");
        for limit in [1, 2, 3] {
            let (items, pages) = h.pages(&target, field, limit).await;
            let paged = keys(&items, key);
            assert_eq!(paged, whole, "{target} by {limit}");
            assert_eq!(
                pages,
                count.div_ceil(limit as usize).max(1),
                "{target} by {limit}"
            );
        }
    }
    let (projects, _) = h.pages("/v1/projects", "projects", 2).await;
    assert_eq!(keys(&projects, "name"), ["p0", "p1", "p2", "p3", "p4"]);
    let (secrets, _) = h.pages("/v1/projects/p0/secrets", "secrets", 2).await;
    assert_eq!(keys(&secrets, "name"), ["s0", "s1", "s2", "s3", "s4"]);
    // The versions of each secret come with it, read for the whole page.
    assert_eq!(secrets[1]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(secrets[1]["live_version"], 2);
    assert_eq!(secrets[2]["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rotation_configs_page_in_creation_order_with_their_names() {
    let h = Harness::new();
    h.project("p0").await;
    let credential = json!({"username": "app", "password": "pw"});
    h.write_fields("p0", "admin", credential.clone()).await;
    // (Granting it `admin` through its token would make the token a second
    // holder of the admin credential, which a rotation refuses.)
    h.write("p0", "other", "value").await;
    let agent = h.machine("p0", &["other"]).await;
    let mut created = Vec::new();
    for secret in ["r3", "r0", "r4", "r1", "r2"] {
        h.write_fields("p0", secret, credential.clone()).await;
        let reply = h
            .admin(
                "POST",
                "/v1/rotations",
                Some(json!({
                    "project": "p0", "secret": secret, "provider": "postgresql",
                    "target": {"host": "db", "port": 5432, "role": "app", "database": "app"},
                    "admin_secret": "admin", "agent_machine_id": agent.id,
                })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        created.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    for limit in [1, 2, 3, 1000] {
        let (items, pages) = h.pages("/v1/rotations", "rotations", limit).await;
        assert_eq!(keys(&items, "id"), created, "by {limit}");
        assert_eq!(pages, 5_usize.div_ceil(limit as usize), "by {limit}");
        // Each shown by the names of its project, secret and admin secret.
        assert_eq!(
            keys(&items, "secret"),
            ["r3", "r0", "r4", "r1", "r2"],
            "by {limit}"
        );
        assert!(
            items
                .iter()
                .all(|r| r["project"] == "p0" && r["admin_secret"] == "admin")
        );
    }
    let reply = h.admin("GET", "/v1/rotations?limit=1001", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
}

#[tokio::test]
async fn the_default_page_is_a_hundred_and_an_exact_page_ends_with_a_null_cursor() {
    let h = Harness::new();
    for i in 0..101 {
        h.project(&format!("p{i:03}")).await;
    }
    let first = h.admin("GET", "/v1/projects", None).await;
    assert_eq!(first.body["projects"].as_array().unwrap().len(), 100);
    let next = first.body["next_cursor"].as_str().unwrap();
    let last = h
        .admin("GET", &format!("/v1/projects?cursor={next}"), None)
        .await;
    assert_eq!(last.body["projects"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["projects"][0]["name"], "p100");
    assert!(last.body["next_cursor"].is_null());
    // A page that ends exactly at the last item says so at once.
    let exact = h.admin("GET", "/v1/projects?limit=101", None).await;
    assert!(exact.body["next_cursor"].is_null());
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_refused_and_audited() {
    let h = populated().await;
    let project_cursor = h.admin("GET", "/v1/projects?limit=1", None).await.body["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for &(target, ..) in LISTS {
        let join = if target.contains('?') { '&' } else { '?' };
        let target = format!(
            "{target}{}",
            if target.ends_with('=') { "t_none" } else { "" }
        );
        let mut bad = vec![
            "limit=0".to_owned(),
            "limit=1001".to_owned(),
            "limit=-1".to_owned(),
            "limit=ten".to_owned(),
            "cursor=%%%".to_owned(),
            "cursor=bm90IGpzb24".to_owned(),
            "page=2".to_owned(),
        ];
        if !target.starts_with("/v1/projects") && !target.starts_with("/v1/clusters") {
            // A cursor of another list (a name where a key of two parts is
            // expected) is not this list's.
            bad.push(format!("cursor={project_cursor}"));
        }
        for query in bad {
            let page = format!("{target}{join}{query}");
            let reply = h.admin("GET", &page, None).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{page}: {:?}",
                reply.body
            );
            assert_eq!(reply.code(), "invalid_request", "{page}");
            let row = h.last_audit();
            assert_eq!(row.outcome, "deny", "{page}");
        }
    }
}

#[tokio::test]
async fn an_audit_position_past_the_largest_sequence_number_is_a_bad_request() {
    let h = populated().await;
    // Schemathesis found this one: 2^63 overflowed SQLite's integer (500).
    for after in ["9223372036854775808", "18446744073709551615"] {
        let reply = h
            .admin("GET", &format!("/v1/audit?after={after}"), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{after}"
        );
    }
    let last = h
        .admin("GET", "/v1/audit?after=9223372036854775807", None)
        .await;
    assert_eq!(last.status, StatusCode::OK, "{:?}", last.body);
    assert_eq!(last.body["entries"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn the_audit_log_pages_by_seq_and_never_shows_the_request_reading_it() {
    let h = populated().await;
    let head = h.audit().last().unwrap().seq;
    let (mut after, mut seen) = (0, Vec::new());
    loop {
        let reply = h
            .admin("GET", &format!("/v1/audit?after={after}&limit=7"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let entries = reply.body["entries"].as_array().unwrap();
        seen.extend(entries.iter().map(|e| e["seq"].as_u64().unwrap()));
        if entries.len() < 7 {
            break;
        }
        after = *seen.last().unwrap();
    }
    // Every entry, each once, in order: those before the first page and
    // the entries of the earlier pages' own requests; never the entry of
    // the request that read the page (the last one, not shown).
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected);
    assert!(seen.len() as u64 > head);
    assert_eq!(h.audit().last().unwrap().seq, seen.len() as u64 + 1);
}

#[test]
fn a_snapshot_reads_beside_an_open_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let project = |name: &str| Project {
        id: format!("p_{name}"),
        name: name.to_owned(),
        wrapped_key: vec![0; 8],
        created_at: 1,
        locked_at: None,
        lock_reason: None,
    };
    let mut tx = store.begin().unwrap();
    tx.insert_project(&project("committed")).unwrap();
    tx.commit().unwrap();
    let page = Page::<String>::parse(Some(10), None).unwrap();

    // The writer's transaction stays open (holding the store's write
    // connection) while a snapshot reads: it neither waits nor sees the
    // uncommitted row.
    let mut writing = store.begin().unwrap();
    writing.insert_project(&project("pending")).unwrap();
    let names = |rows: Vec<Project>| rows.into_iter().map(|p| p.name).collect::<Vec<_>>();
    let seen = names(store.read().unwrap().projects_page(&page).unwrap());
    assert_eq!(seen, ["committed"]);
    writing.commit().unwrap();
    let seen = names(store.read().unwrap().projects_page(&page).unwrap());
    assert_eq!(seen, ["committed", "pending"]);
    let after = Page::<String>::parse(Some(10), Some(&cursor(&"committed"))).unwrap();
    let seen = names(store.read().unwrap().projects_page(&after).unwrap());
    assert_eq!(seen, ["pending"]);
}

/// Each list reads its rows in the order of an index (EXPLAIN QUERY PLAN on
/// the vault's own schema): a page stops after `limit + 1` rows instead of
/// sorting the whole table first. The queries have the shape of the store's
/// (`*_page` in src/store/sqlite.rs): the same tables, joins, filters and
/// `ORDER BY`.
#[test]
fn pages_read_in_index_order_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let db = rusqlite::Connection::open(dir.path().join("signet.db")).unwrap();
    let created = "?1 IS NULL OR (created_at, id) > (?1, ?2)";
    let lists = [
        (
            "machines_by_created",
            format!(
                "SELECT m.*, COALESCE(p.name, '') FROM machines m
                 LEFT JOIN projects p ON p.id = m.project_id
                 WHERE {} ORDER BY m.created_at, m.id LIMIT ?3",
                created.replace("(created_at, id)", "(m.created_at, m.id)")
            ),
        ),
        (
            "tokens_by_created",
            format!(
                "SELECT t.*, COALESCE(p.name, '') FROM enrollment_tokens t
                 LEFT JOIN projects p ON p.id = t.project_id
                 WHERE {} ORDER BY t.created_at, t.id LIMIT ?3",
                created.replace("(created_at, id)", "(t.created_at, t.id)")
            ),
        ),
        (
            "cosign_by_created",
            "SELECT c.*, COALESCE(p.name, ''), COALESCE(s.name, '') FROM cosign_requests c
             LEFT JOIN secrets s ON s.id = c.secret_id
             LEFT JOIN projects p ON p.id = s.project_id
             WHERE c.consumed_at IS NULL AND c.expires_at > ?1
               AND (?2 IS NULL OR (c.created_at, c.id) > (?2, ?3))
             ORDER BY c.created_at, c.id LIMIT ?4"
                .to_owned(),
        ),
        (
            "webhooks_by_created",
            format!("SELECT * FROM webhooks WHERE {created} ORDER BY created_at, id LIMIT ?3"),
        ),
        (
            // The unique index on `name`.
            "sqlite_autoindex_projects_2",
            "SELECT * FROM projects WHERE ?1 IS NULL OR name > ?1 ORDER BY name LIMIT ?2"
                .to_owned(),
        ),
        (
            // The unique index on `(project_id, name)`.
            "sqlite_autoindex_secrets_2",
            "SELECT * FROM secrets WHERE project_id = ?1 AND (?2 IS NULL OR name > ?2)
             ORDER BY name LIMIT ?3"
                .to_owned(),
        ),
        (
            "sqlite_autoindex_clusters_1",
            "SELECT * FROM clusters WHERE ?1 IS NULL OR name > ?1 ORDER BY name LIMIT ?2"
                .to_owned(),
        ),
    ];
    for (index, query) in lists {
        let mut explain = db.prepare(&format!("EXPLAIN QUERY PLAN {query}")).unwrap();
        // Planned when prepared, before anything is bound: NULLs will do.
        let unbound = std::iter::repeat_n(rusqlite::types::Null, explain.parameter_count());
        let plan: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(unbound), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let outer = &plan[0];
        assert!(
            outer.contains(&format!("USING INDEX {index}"))
                || outer.contains(&format!("USING COVERING INDEX {index}")),
            "{query}\n{plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{query}\n{plan:#?}"
        );
    }
}
