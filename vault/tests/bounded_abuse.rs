//! Bounded under abuse: what a flood of unauthenticated requests costs the
//! vault (a few counted audit rows, no writer time); what a slow or greedy
//! client can hold of the server (real sockets); what a webhook request
//! can make the vault resolve; and what the background work keeps and how
//! it runs (finished history pruned, deliveries side by side).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::{Harness, START, Signer, requests_of};
use serde_json::json;
use signet_client::api::AuditEntry;
use signet_client::protocol::IdentityKey;
use signet_vault::budget::{Budget, BudgetLimits};
use signet_vault::clock::Clock as _;
use signet_vault::dns::{Lookups, Resolve};
use signet_vault::settings::Limits;
use signet_vault::store::{Attempt, Cosign, Webhook};
use signet_vault::vault::Settings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const DAY: i64 = 24 * 3600;

/// The audit rows as stored, without flushing anything held in memory.
fn stored_audit(h: &Harness) -> Vec<AuditEntry> {
    h.vault.with_tx(|tx, _| Ok(tx.audit(0, 100_000)?)).unwrap()
}

/// A request with no signature headers at all.
fn bare(target: &str) -> Request<Body> {
    Request::builder().uri(target).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_flood_of_unverified_requests_costs_a_few_counted_rows() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = stored_audit(&h).len();
    let writer_before = h
        .vault
        .writer_stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    const EACH: usize = 60;
    let attacker = "203.0.113.9";
    let mut reads = 0;
    for i in 0..EACH {
        // No headers at all.
        let r = h.raw_from(bare("/v1/secrets/shop/api-key"), attacker).await;
        assert_eq!(r.code(), "bad_signature_headers");
        // A key id that names nobody, a new one every time.
        let stranger = Signer {
            id: format!("m_{i:0>26}"),
            key: IdentityKey::generate(),
        };
        let r = h
            .call_from(&stranger, "GET", "/v1/secrets/shop/api-key", None, attacker)
            .await;
        assert_eq!(r.code(), "unknown_key");
        // The machine's id, signed with another key: a forgery.
        let forger = Signer {
            id: machine.id.clone(),
            key: IdentityKey::generate(),
        };
        let r = h
            .call_from(&forger, "GET", "/v1/secrets/shop/api-key", None, attacker)
            .await;
        assert_eq!(r.code(), "bad_signature");
        // Meanwhile the machine reads as usual.
        if i % 10 == 0 {
            let r = h.read(&machine, "shop", "api-key").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            reads += 1;
        }
    }

    // Nothing was written per request: only the machine's reads.
    let unflushed = stored_audit(&h);
    assert_eq!(
        unflushed.len() - before,
        reads,
        "an unverified denial must not be written on the request path"
    );
    // Requests without well-formed headers never reached the writer.
    let writer_used = h
        .vault
        .writer_stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed)
        - writer_before;
    assert!(
        writer_used <= (2 * EACH + reads) as u64,
        "{writer_used} writer slots for {} requests",
        3 * EACH + reads
    );

    // Flushed: one row per (source, reason, action), carrying the count.
    let audit = h.audit();
    let denials: Vec<&AuditEntry> = audit[before..]
        .iter()
        .filter(|e| e.outcome == "deny")
        .collect();
    assert!(
        denials.len() <= 3,
        "{} rows for {} unverified requests",
        denials.len(),
        3 * EACH
    );
    assert_eq!(
        denials.iter().map(|e| requests_of(e)).sum::<u64>(),
        (3 * EACH) as u64
    );
    for row in &denials {
        assert_eq!(row.source_ip, attacker);
        assert_eq!(row.action, "secret.read");
        assert!(
            row.actor.starts_with("unverified"),
            "a denial before the signature verified is attributed to {:?}",
            row.actor
        );
        assert_ne!(row.actor, machine.id);
    }
    let forged = denials
        .iter()
        .find(|e| e.reason.starts_with("bad_signature:"))
        .unwrap();
    assert_eq!(forged.actor, format!("unverified:{}", machine.id));
    assert_eq!(requests_of(forged), EACH as u64);
    assert_eq!(h.verify_audit().broken, None);

    // The machine's own reads are audited one by one, as itself.
    let allowed = audit[before..]
        .iter()
        .filter(|e| e.outcome == "allow" && e.actor == machine.id)
        .count();
    assert_eq!(allowed, reads);
}

#[tokio::test]
async fn unverified_denials_are_counted_in_metrics() {
    let h = Harness::new();
    for _ in 0..7 {
        h.raw_from(bare("/v1/machine/grants"), "198.51.100.7").await;
    }
    let (_, metrics) = h.text("/metrics").await;
    assert!(
        metrics.contains(r#"signet_unverified_denials_total{code="bad_signature_headers"} 7"#),
        "{metrics}"
    );
}

/// `request` from `source_ip` through the router: its status, its
/// `Retry-After` and its error code; `None` when no answer came within 5 s.
async fn answer_from(
    h: &Harness,
    mut request: Request<Body>,
    source_ip: &str,
) -> Option<(StatusCode, Option<String>, String)> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let ip: IpAddr = source_ip.parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::new(ip, 40_001)));
    let response = tokio::time::timeout(Duration::from_secs(5), h.app.clone().oneshot(request))
        .await
        .ok()?
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    Some((status, retry_after, code))
}

#[tokio::test]
async fn a_source_over_its_budget_is_refused_early_while_signed_reads_go_on() {
    let h = Harness::with_settings(limits(Limits {
        unverified: BudgetLimits {
            burst: 4,
            per_second: 2,
            sources_max: 100,
        },
        // Answered at once: the delay has a test of its own.
        unverified_tarpit: Duration::ZERO,
        ..Limits::default()
    }));
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let neighbour = h.machine("shop", &["api-key"]).await;
    let attacker = "203.0.113.9";
    // The machine reads now and then, from the address that will flood.
    let r = h.read_from(&machine, "shop", "api-key", attacker).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = stored_audit(&h).len();

    // Within its budget, a source's garbage is refused as usual...
    for _ in 0..4 {
        let r = h.raw_from(bare("/v1/secrets/shop/api-key"), attacker).await;
        assert_eq!(r.code(), "bad_signature_headers");
    }
    // ...past it, with 429 and Retry-After, whatever the garbage.
    let writer = || h.vault.writer_stats().requests.load(Ordering::Relaxed);
    let writer_before = writer();
    const FLOOD: u64 = 50;
    for i in 0..FLOOD {
        let stranger = Signer {
            id: format!("m_{i:0>26}"),
            key: IdentityKey::generate(),
        };
        let forger = Signer {
            id: machine.id.clone(),
            key: IdentityKey::generate(),
        };
        let bare = h.raw_from(bare("/v1/secrets/shop/api-key"), attacker).await;
        let unknown = h
            .call_from(&stranger, "GET", "/v1/secrets/shop/api-key", None, attacker)
            .await;
        // The machine's id with another key: it gets past the early check
        // (the id is known), and is refused before the writer.
        let forged = h
            .call_from(&forger, "GET", "/v1/secrets/shop/api-key", None, attacker)
            .await;
        for r in [bare, unknown, forged] {
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
            assert_eq!(r.code(), "rate_limited");
        }
    }
    assert_eq!(writer(), writer_before, "refused garbage took the writer");
    let (status, retry_after, code) = answer_from(&h, bare("/v1/machine/grants"), attacker)
        .await
        .unwrap();
    assert_eq!(
        (status, retry_after.as_deref(), code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("1"), "rate_limited")
    );
    // Refused before the body is read: one that never ends is answered.
    let endless = Request::builder()
        .method("POST")
        .uri("/v1/projects")
        .header("content-length", "100")
        .body(Body::from_stream(futures::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >()))
        .unwrap();
    let answered = answer_from(&h, endless, attacker).await;
    assert_eq!(
        answered.map(|(status, _, code)| (status, code)),
        Some((StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())),
        "the body of a source over its budget was waited for"
    );
    // An enrollment cannot be verified before its token is checked.
    let token = h
        .token(
            json!({"project": "shop", "max_uses": 5, "ttl_seconds": 3600,
                      "machine_lifetime_seconds": 600, "grants": []}),
        )
        .await;
    let (r, _) = h.enroll(&token, "web-1", json!({}), attacker).await;
    assert_eq!(r.code(), "rate_limited", "{}", r.body);
    // Probes and metrics are never refused for the budget.
    assert_eq!(
        answer_from(&h, bare("/healthz"), attacker).await.unwrap().0,
        StatusCode::OK
    );

    // Signed reads go on: from the same address and from another.
    for _ in 0..3 {
        let r = h.read_from(&machine, "shop", "api-key", attacker).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = h.read(&neighbour, "shop", "api-key").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // So do the first admin's requests, from its own address.
    let r = h.admin("GET", "/v1/projects", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A second later the budget has refilled by its rate, no more.
    h.clock.advance(1);
    for _ in 0..2 {
        let r = h.raw_from(bare("/v1/secrets/shop/api-key"), attacker).await;
        assert_eq!(r.code(), "bad_signature_headers");
    }
    let r = h.raw_from(bare("/v1/secrets/shop/api-key"), attacker).await;
    assert_eq!(r.code(), "rate_limited");

    // Every refusal audited, in a few counted rows.
    let refused = 4 + 3 * FLOOD + 1 + 1 + 1 + 2 + 1;
    let audit = h.audit();
    let rows: Vec<&AuditEntry> = audit[before..]
        .iter()
        .filter(|e| e.outcome == "deny")
        .collect();
    assert!(rows.len() <= 5, "{rows:#?}");
    assert_eq!(rows.iter().map(|r| requests_of(r)).sum::<u64>(), refused);
    assert!(rows.iter().all(|r| r.source_ip == attacker), "{rows:#?}");
    assert_eq!(h.denied_requests("rate_limited"), 3 * FLOOD + 4);
    let (_, metrics) = h.text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            r#"signet_unverified_denials_total{{code="rate_limited"}} {}"#,
            3 * FLOOD + 4
        )),
        "{metrics}"
    );
    assert_eq!(h.verify_audit().broken, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_the_budget_is_answered_only_after_the_tarpit_delay() {
    let h = Arc::new(Harness::with_settings(limits(Limits {
        unverified: BudgetLimits {
            burst: 2,
            per_second: 1,
            sources_max: 100,
        },
        unverified_tarpit: Duration::from_secs(1),
        ..Limits::default()
    })));
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let attacker = "203.0.113.9";
    let r = h.read_from(&machine, "shop", "api-key", attacker).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Within its budget, garbage is answered at once.
    for _ in 0..2 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            h.raw_from(bare("/v1/secrets/shop/api-key"), attacker),
        )
        .await
        .expect("garbage within the budget was held");
        assert_eq!(r.code(), "bad_signature_headers");
    }

    // Over it: garbage, and a forgery on the machine's id, are held.
    let held_bare = tokio::spawn({
        let h = Arc::clone(&h);
        async move { answer_from(&h, bare("/v1/secrets/shop/api-key"), attacker).await }
    });
    let held_forged = tokio::spawn({
        let h = Arc::clone(&h);
        let forger = Signer {
            id: machine.id.clone(),
            key: IdentityKey::generate(),
        };
        async move {
            h.call_from(&forger, "GET", "/v1/secrets/shop/api-key", None, attacker)
                .await
        }
    });
    // Meanwhile the machine's reads from the same address are served at
    // once, and another source's garbage is answered at once.
    for i in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            h.read_from(&machine, "shop", "api-key", attacker),
        )
        .await
        .expect("a signed read from a source over its budget was held");
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            h.raw_from(bare("/v1/secrets/shop/api-key"), &format!("198.51.100.{i}")),
        )
        .await
        .expect("another source's refusal was held");
        assert_eq!(r.code(), "bad_signature_headers");
    }
    // The clock has not moved: nothing held is answered, however long.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held_bare.is_finished() && !held_forged.is_finished(),
        "a refusal for the budget was answered before the tarpit's delay"
    );

    h.clock.advance(1);
    let (status, retry_after, code) = tokio::time::timeout(Duration::from_secs(5), held_bare)
        .await
        .expect("a held refusal was never answered")
        .unwrap()
        .unwrap();
    assert_eq!(
        (status, retry_after.as_deref(), code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("1"), "rate_limited")
    );
    let forged = tokio::time::timeout(Duration::from_secs(5), held_forged)
        .await
        .expect("a held forgery was never answered")
        .unwrap();
    assert_eq!(forged.code(), "rate_limited", "{}", forged.body);
}

/// A request on `stream`, kept alive, and its answer (head and body).
async fn ask(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|n| n.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        body.len() >= length
    };
    while !complete(&answer) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("no answer in time")
            .unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// `request` as HTTP/1.1 text, kept alive.
fn wire(request: &Request<Body>) -> String {
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: v\r\n",
        request.method(),
        request.uri()
    );
    for (name, value) in request.headers() {
        text.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    text + "\r\n"
}

/// Whether the server closes a new connection to `addr` with no answer (a
/// request sent on it, if the socket still takes one, is never answered).
/// The reset may come before the connection is even reported open.
async fn closed_unanswered(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = stream.write_all(BARE_KEEP_ALIVE.as_bytes()).await;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await {
        Err(_) => false,
        Ok(_) => answer.is_empty(),
    }
}

const BARE_KEEP_ALIVE: &str = "GET /v1/machine/grants HTTP/1.1\r\nHost: v\r\n\r\n";

/// Waits (at most 5 s) until the vault counts `n` connections from `ip`.
async fn open_from(h: &Harness, ip: &str, n: usize) {
    let ip: IpAddr = ip.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.vault.connections().from_source(ip) != n {
        assert!(
            Instant::now() < deadline,
            "{} connections open from {ip}, not {n}",
            h.vault.connections().from_source(ip)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_budget_holds_a_bounded_number_of_connections() {
    let h = Harness::with_settings(limits(Limits {
        unverified: BudgetLimits {
            burst: 1,
            per_second: 1,
            sources_max: 100,
        },
        unverified_tarpit: Duration::from_secs(1),
        unverified_connections_max: 2,
        ..Limits::default()
    }));
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    // Its key verified once: the vault knows it.
    let r = h.read(&machine, "shop", "api-key").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let addr = serve(&h).await;
    let before = h.audit().len();
    let flooder = "127.0.0.1";

    // One garbage request spends the budget; the next on the same
    // connection is held (the clock does not move).
    let mut held = TcpStream::connect(addr).await.unwrap();
    let answer = ask(&mut held, BARE_KEEP_ALIVE).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    held.write_all(BARE_KEEP_ALIVE.as_bytes()).await.unwrap();
    // A second connection is taken...
    let mut second = TcpStream::connect(addr).await.unwrap();
    open_from(&h, flooder, 2).await;
    // ...a third is closed unanswered, its request never read.
    assert!(
        closed_unanswered(addr).await,
        "a source over its budget opened a connection past the cap"
    );

    // A signed read from the same source, on a connection it holds, is
    // served at once.
    let read = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/shop/api-key",
        b"",
    );
    let answer = ask(&mut second, &wire(&read)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Another source is not affected: its garbage is answered at once.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(addr).await.unwrap();
    let answer = ask(&mut other, BARE_KEEP_ALIVE).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // Hanging up on a held refusal does not free its connection's place
    // before the delay is over.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        closed_unanswered(addr).await,
        "hanging up on a held refusal freed a connection"
    );
    h.clock.advance(1);
    open_from(&h, flooder, 1).await;

    // Counted: two connections refused, one request held, nothing else.
    let (_, metrics) = h.text("/metrics").await;
    for counted in [
        "signet_connections_refused_total 2",
        "signet_unverified_denials_overflow_total 0",
    ] {
        assert!(metrics.contains(counted), "{counted}: {metrics}");
    }
    let audit = h.audit();
    let rows: Vec<(&str, &str, &str, u64)> = audit[before..]
        .iter()
        .filter(|e| e.outcome == "deny")
        .map(|e| {
            let code = e.reason.split(':').next().unwrap();
            (
                e.source_ip.as_str(),
                e.action.as_str(),
                code,
                requests_of(e),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (flooder, "machine.grants", "bad_signature_headers", 1),
            (flooder, "connection.budget", "rate_limited", 2),
            (flooder, "request.budget", "rate_limited", 1),
            ("127.0.0.2", "machine.grants", "bad_signature_headers", 1),
        ],
        "{:#?}",
        &audit[before..]
    );
    assert_eq!(h.verify_audit().broken, None);
}

#[test]
fn a_flood_from_many_addresses_tracks_a_bounded_number_of_sources() {
    let budget = Budget::new(BudgetLimits {
        burst: 1,
        per_second: 1,
        sources_max: 64,
    });
    for i in 0..100_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        budget.spend(&ip, START);
    }
    assert_eq!(budget.tracked(), 64);
    // The sources that found no room share a budget, spent too.
    assert!(budget.over("192.0.2.200", START));
}

/// Inserts a delivered, a failed and a pending delivery for a webhook, a
/// decided, an expired and an open co-sign request, and read counts of
/// several days, all at `at`.
async fn history(h: &Harness, at: i64) -> String {
    let machine = h.machine("shop", &["api-key"]).await;
    let machine_id = machine.id.clone();
    h.vault
        .with_tx(move |tx, _| {
            let project = tx.project_by_name("shop")?.unwrap();
            let secret = tx.secret_by_name(&project.id, "api-key")?.unwrap();
            let hook_id = signet_vault::ids::new(signet_vault::ids::WEBHOOK);
            tx.insert_webhook(&Webhook {
                id: hook_id.clone(),
                url: "https://hooks.example.com/".into(),
                events: vec!["policy.denied".into()],
                sealed_secret: vec![0; 32],
                created_at: at,
                created_by: "test".into(),
            })?;
            for _ in 0..3 {
                tx.enqueue_delivery(&hook_id, "policy.denied", "{}", at)?;
            }
            let claimed = tx.claim_deliveries(at, at + 60, 10)?;
            tx.finish_delivery(claimed[0].id, &Attempt::Delivered, at)?;
            tx.finish_delivery(
                claimed[1].id,
                &Attempt::Failed {
                    error: "gone".into(),
                },
                at,
            )?;
            let cosign = |id: &str, expires_at: i64, consumed_at: Option<i64>| Cosign {
                id: id.into(),
                secret_id: secret.id.clone(),
                machine_id: machine_id.clone(),
                requested_by: "a_x".into(),
                created_at: at,
                expires_at,
                approved_by: consumed_at.map(|_| "a_y".into()),
                approved_at: consumed_at,
                consumed_at,
            };
            tx.insert_cosign(&cosign("cs_used", at + 900, Some(at)))?;
            tx.insert_cosign(&cosign("cs_lapsed", at + 3600, None))?;
            tx.insert_cosign(&cosign("cs_open", at + 40 * DAY, None))?;
            for day in ["2024-05-01", "2024-06-02", "2024-06-03"] {
                tx.count_read(&secret.id, day, 10)?;
            }
            Ok(())
        })
        .unwrap();
    h.dir.path().join("signet.db").display().to_string()
}

fn count(db: &str, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn the_sweep_prunes_finished_history_past_its_retention() {
    let h = Harness::new();
    h.seed("shop").await;
    let db = history(&h, START).await;
    let deliveries = "SELECT count(*) FROM webhook_deliveries";
    let cosigns = "SELECT count(*) FROM cosign_requests";
    let days = "SELECT group_concat(day, ' ') FROM (SELECT day FROM read_counts ORDER BY day)";

    // The same day: only read counts of days over in every time zone go
    // (10:00 UTC is still yesterday at UTC-12).
    h.vault.sweep(h.clock.now()).unwrap();
    assert_eq!(count(&db, deliveries), 3);
    assert_eq!(count(&db, cosigns), 3);
    let kept: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(days, [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "2024-06-02 2024-06-03");

    // A day short of the default retention (30 days): kept.
    h.clock.set(START + 30 * DAY - 1);
    h.vault.sweep(h.clock.now()).unwrap();
    assert_eq!(count(&db, deliveries), 3);
    assert_eq!(count(&db, cosigns), 3);

    // Past it: the delivered and the failed delivery go, the pending one
    // stays; the used and the lapsed co-sign requests go, the open one stays
    // (its machine, expired at START + 1 day, is not yet swept itself).
    h.clock.set(START + 30 * DAY + 2 * 3600);
    h.vault.sweep(h.clock.now()).unwrap();
    assert_eq!(count(&db, deliveries), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL"
        ),
        1
    );
    assert_eq!(count(&db, cosigns), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM read_counts"), 0);
}

#[tokio::test]
async fn past_the_group_cap_sources_share_one_overflow_row() {
    let h = Harness::with_settings(Settings {
        denial_groups_max: 4,
        ..Settings::default()
    });
    let before = h.audit().len();
    for i in 0..20 {
        let r = h
            .raw_from(bare("/v1/machine/grants"), &format!("198.51.100.{i}"))
            .await;
        assert_eq!(r.code(), "bad_signature_headers");
    }
    let audit = h.audit();
    let rows = &audit[before..];
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert_eq!(rows.iter().map(requests_of).sum::<u64>(), 20);
    let overflow = rows.last().unwrap();
    assert!(overflow.reason.starts_with("overflow: "), "{overflow:?}");
    assert_eq!(requests_of(overflow), 16);
    let (_, metrics) = h.text("/metrics").await;
    assert!(
        metrics.contains("signet_unverified_denials_overflow_total 16"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_flush_the_store_refuses_leaves_its_counts_for_the_next() {
    let h = Harness::new();
    let before = h.audit().len();
    for _ in 0..5 {
        let r = h.raw_from(bare("/v1/machine/grants"), "198.51.100.7").await;
        assert_eq!(r.code(), "bad_signature_headers");
    }
    // The database refuses every audit row, as a full disk would.
    let db = h.db();
    db.execute_batch(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    assert!(h.vault.flush_denials().is_err());
    assert_eq!(stored_audit(&h).len(), before);
    // Counted while the store refused: one source again, one new.
    for source in ["198.51.100.7", "198.51.100.8"] {
        let r = h.raw_from(bare("/v1/machine/grants"), source).await;
        assert_eq!(r.code(), "bad_signature_headers");
    }
    db.execute_batch("DROP TRIGGER refuse_audit").unwrap();

    assert_eq!(h.vault.flush_denials().unwrap(), 2);
    let audit = stored_audit(&h);
    let rows: Vec<(&str, u64)> = audit[before..]
        .iter()
        .map(|row| (row.source_ip.as_str(), requests_of(row)))
        .collect();
    assert_eq!(rows, [("198.51.100.7", 6), ("198.51.100.8", 1)]);
    assert_eq!(h.verify_audit().broken, None);
}

// The server, on real sockets.

/// Serves `h`'s vault on a loopback port until the test ends.
async fn serve(h: &Harness) -> SocketAddr {
    let listener = signet_vault::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(signet_vault::server::serve_until(
        Arc::clone(&h.vault),
        listener,
        None,
        std::future::pending(),
    ));
    addr
}

fn limits(limits: Limits) -> Settings {
    Settings {
        limits,
        ..Settings::default()
    }
}

/// Waits (at most `within`) for the server to close `stream`; how long it
/// took, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            within.saturating_sub(start.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `request` on a new connection and reads the whole answer (the
/// request asks the server to close).
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_writes_the_denials_counted_since_the_last_flush() {
    let h = Harness::new();
    let listener = signet_vault::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(signet_vault::server::serve_until(
        Arc::clone(&h.vault),
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let before = stored_audit(&h).len();
    for _ in 0..3 {
        let answer = exchange(
            addr,
            "GET /v1/machine/grants HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // Well inside the flush interval (10 s): nothing written yet.
    assert_eq!(stored_audit(&h).len(), before);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
    let rows: Vec<AuditEntry> = stored_audit(&h)
        .into_iter()
        .skip(before)
        .filter(|e| e.outcome == "deny")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(requests_of(&rows[0]), 3);
    assert_eq!(rows[0].source_ip, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_half_a_header_is_disconnected() {
    let h = Harness::with_settings(limits(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    }));
    let addr = serve(&h).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Slow: ")
        .await
        .unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(10)).await;
    let took = closed.expect("a client that never finishes its header keeps its connection");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // Others are served meanwhile and after.
    let answer = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let h = Harness::with_settings(limits(Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    }));
    let addr = serve(&h).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive, then silent: closed after the idle timeout, well before
    // the header timeout (10 s) would.
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "an idle connection is kept for ever");

    // A connection that never says anything is idle too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_refused_in_time() {
    let h = Harness::with_settings(limits(Limits {
        body_timeout: Duration::from_millis(300),
        ..Limits::default()
    }));
    let addr = serve(&h).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /v1/projects HTTP/1.1\r\nHost: v\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"name\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("a trickled body holds the request for ever")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_of_requests_in_flight_the_vault_answers_503() {
    let h = Harness::with_settings(limits(Limits {
        max_in_flight: 2,
        retry_after_seconds: 7,
        ..Limits::default()
    }));
    let addr = serve(&h).await;
    // Two requests in flight, their bodies still coming.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /v1/projects HTTP/1.1\r\nHost: v\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{")
            .await
            .unwrap();
        held.push(stream);
    }
    let metrics = || async {
        exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n",
        )
        .await
    };
    // Wait until both are in flight: the third request is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = metrics().await;
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(Instant::now() < deadline, "never over the limit: {answer}");
        tokio::task::yield_now().await;
    };
    assert!(
        refused.to_lowercase().contains("retry-after: 7"),
        "{refused}"
    );
    assert!(refused.contains("\"overloaded\""), "{refused}");
    // Liveness is exempt: an overloaded vault is not a dead one.
    let alive = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(alive.starts_with("HTTP/1.1 200"), "{alive}");
    // Once one finishes, requests are served again.
    let mut first = held.remove(0);
    first.write_all(b"\"n\":\"a\"} ").await.unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.unwrap();
    let answer = metrics().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("signet_overloaded_total"), "{answer}");
}

// Webhook destinations: resolved for authenticated callers only, bounded.

/// A resolver that counts its lookups and, when `stall` is set, blocks them
/// until the test opens the gate.
#[derive(Default)]
struct FakeResolver {
    calls: AtomicUsize,
    stall: bool,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl FakeResolver {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Resolve for FakeResolver {
    fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.stall {
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
        }
        Ok(vec!["203.0.113.5".parse().unwrap()])
    }
}

fn hook_body() -> serde_json::Value {
    json!({"url": "https://hooks.example.com/signet", "events": ["policy.denied"],
           "secret": "a-shared-webhook-secret"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_authenticated_webhook_request_makes_the_vault_resolve() {
    let resolver = Arc::new(FakeResolver::default());
    let h = Harness::with_settings(Settings {
        lookups: Lookups::new(resolver.clone(), 2, Duration::from_secs(5)),
        ..Settings::default()
    });
    // The admin's id with another key: a forgery.
    let forger = Signer {
        id: h.admin.id.clone(),
        key: IdentityKey::generate(),
    };
    let r = h
        .call(&forger, "POST", "/v1/webhooks", Some(hook_body()))
        .await;
    assert_eq!(r.code(), "bad_signature", "{}", r.body);
    // A key id that names nobody.
    let stranger = Signer {
        id: format!("a_{:0>26}", 1),
        key: IdentityKey::generate(),
    };
    let r = h
        .call(&stranger, "POST", "/v1/webhooks", Some(hook_body()))
        .await;
    assert_eq!(r.code(), "unknown_key", "{}", r.body);
    // An agent is authenticated but may not create webhooks.
    let agent = h.agent(&["metadata"]).await;
    let r = h
        .call(&agent, "POST", "/v1/webhooks", Some(hook_body()))
        .await;
    assert_eq!(r.code(), "forbidden", "{}", r.body);
    assert_eq!(
        resolver.calls.load(Ordering::SeqCst),
        0,
        "resolved for an unauthenticated caller"
    );

    let r = h.admin("POST", "/v1/webhooks", Some(hook_body())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lookup_is_given_up_and_lookups_are_bounded() {
    let resolver = Arc::new(FakeResolver {
        stall: true,
        ..FakeResolver::default()
    });
    let h = Arc::new(Harness::with_settings(Settings {
        lookups: Lookups::new(resolver.clone(), 1, Duration::from_millis(300)),
        ..Settings::default()
    }));
    let started = Instant::now();
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.admin("POST", "/v1/webhooks", Some(hook_body())).await })
        })
        .collect();
    for attempt in attempts {
        let r = attempt.await.unwrap();
        assert_eq!(r.code(), "destination_not_allowed", "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no answer within"),
            "{}",
            r.body
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // One slot: the stalled lookup holds it, the others never started one.
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    resolver.open();
}

// Background work.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_run_side_by_side() {
    // The receiver answers only once three deliveries are waiting at once:
    // one at a time, each would time out.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (barrier, seen) = (Arc::clone(&barrier), Arc::clone(&seen));
            move || async move {
                seen.fetch_add(1, Ordering::SeqCst);
                barrier.wait().await;
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let h = Harness::with_settings(Settings {
        webhook_allow: vec!["127.0.0.0/8".parse().unwrap()],
        webhook_timeout: Duration::from_secs(3),
        ..Settings::default()
    });
    let r = h
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": url, "events": ["machine.enrolled"], "secret": "a-shared-webhook-secret"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    h.seed("shop").await;
    for _ in 0..3 {
        h.machine("shop", &["api-key"]).await;
    }
    let report = h.vault.deliver_webhooks().await.unwrap();
    assert_eq!((report.delivered, report.retrying), (3, 0), "{report:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}
