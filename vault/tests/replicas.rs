//! Several `signet-vault serve` processes on one PostgreSQL database, every
//! one of them serving, none a leader. Each rule that must be exact holds
//! under concurrent load spread over the replicas: a nonce is accepted once
//! whichever replicas see it, a canary read locks its project for every
//! replica, daily caps and token uses are exact, the audit log is one hash
//! chain in commit order, a revoked machine is refused by every replica at
//! once. Then the failures: a replica killed with SIGKILL mid-load, and
//! PostgreSQL restarted mid-load.
//!
//! Needs `SIGNET_TEST_DATABASE_URL` (tests/postgres/start.sh); without it
//! the tests fail under CI and are skipped elsewhere. The restart test also
//! needs `SIGNET_PG_DIR` and `SIGNET_PG_BIN` from that script.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signet_client::api::{AccessPolicy, AuditEntry, CreateToken, WriteSecret};
use signet_client::identity::Identity;
use signet_client::protocol;
use signet_client::sdk::{Client, Options};

const VAULT: &str = env!("CARGO_BIN_EXE_signet-vault");

/// One test at a time: the restart test restarts the shared server.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The server's URL, or `None` to skip (never under CI).
fn database_url() -> Option<String> {
    match std::env::var("SIGNET_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but SIGNET_TEST_DATABASE_URL is not: run tests/postgres/start.sh")
        }
        Err(_) => {
            eprintln!("SIGNET_TEST_DATABASE_URL is not set: skipping the replica tests");
            None
        }
    }
}

/// A running vault process.
struct Replica {
    child: Child,
    address: String,
    data: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `url` with its own data directory (for the first-start
/// token file only) and waits until it listens.
fn start_replica(url: &str, root_hex: &str) -> Replica {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(VAULT)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data.path())
        .env("SIGNET_DATABASE_URL", url)
        .env("SIGNET_ROOT_KEY", root_hex)
        .env(
            "SIGNET_LOG",
            std::env::var("SIGNET_REPLICA_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let address = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the vault exited before listening: {seen}");
        }
        seen.push_str(&line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(address) = v["fields"]["address"].as_str()
        {
            break address.to_owned();
        }
        assert!(Instant::now() < deadline, "never listened: {seen}");
    };
    // The rest of the log goes to a file beside the data, for a failure's
    // post-mortem (the directory is kept when the test fails).
    let log = data.path().join("vault.log");
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        let _ = std::fs::write(log, seen + &rest);
    });
    Replica {
        child,
        address,
        data,
    }
}

/// `n` replicas on a schema of their own, and their first admin.
struct Cluster {
    url: String,
    root_hex: String,
    replicas: Vec<Replica>,
    admin: Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(base: &str, n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = kit::schema_url(base, dir.path());
        let root_hex = signet_vault::crypto::RootKey::generate()
            .to_hex()
            .to_string();
        let mut replicas = vec![start_replica(&url, &root_hex)];
        for _ in 1..n {
            replicas.push(start_replica(&url, &root_hex));
        }
        let token = std::fs::read_to_string(replicas[0].data.path().join("bootstrap-token"))
            .unwrap()
            .trim()
            .to_owned();
        let mut admin = Client::new(
            &replicas[0].address,
            Identity::generate(),
            &Options::default(),
        )
        .unwrap();
        admin.enroll_admin(&token, "ops").await.unwrap();
        Self {
            url,
            root_hex,
            replicas,
            admin,
            _dir: dir,
        }
    }

    fn address(&self, i: usize) -> &str {
        &self.replicas[i % self.replicas.len()].address
    }

    /// The same identity, talking to replica `i`.
    fn on(&self, identity: &Identity, i: usize) -> Client {
        let copy = Identity {
            kind: identity.kind,
            id: identity.id.clone(),
            vault: identity.vault.clone(),
            key: protocol::IdentityKey::from_seed(&identity.key.seed()),
        };
        Client::new(self.address(i), copy, &Options::default()).unwrap()
    }

    async fn secret(&self, project: &str, name: &str, policy: Option<AccessPolicy>) {
        self.admin
            .write_secret(
                project,
                name,
                &WriteSecret {
                    value: Some(format!("value of {name}")),
                    fields: None,
                },
            )
            .await
            .unwrap();
        if let Some(policy) = policy {
            self.admin.set_policy(project, name, &policy).await.unwrap();
        }
    }

    async fn token(&self, project: &str, grants: &[&str], max_uses: u32) -> String {
        let grants: Vec<_> = grants
            .iter()
            .map(|s| serde_json::json!({ "secret": s }))
            .collect();
        let request: CreateToken = serde_json::from_value(serde_json::json!({
            "project": project, "name": format!("t-{}", rand_suffix()), "max_uses": max_uses,
            "ttl_seconds": 3600, "machine_lifetime_seconds": 3600, "grants": grants
        }))
        .unwrap();
        self.admin
            .create_token(&request)
            .await
            .unwrap()
            .token
            .unwrap()
    }

    /// Enrolls one machine on replica `i`.
    async fn machine(&self, token: &str, i: usize) -> Identity {
        let (client, _) = Client::enroll(
            self.address(i),
            token,
            "host",
            BTreeMap::new(),
            &Options::default(),
        )
        .await
        .unwrap();
        client.into_identity()
    }

    /// The whole audit log, read through replica `i`.
    async fn audit(&self, i: usize) -> Vec<AuditEntry> {
        let admin = self.on(self.admin.identity(), i);
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |e: &AuditEntry| e.seq);
            // Each page request is audited too: a short page is the end.
            let page = admin.audit(after, 1000).await.unwrap();
            let last = page.entries.len() < 1000;
            out.extend(page.entries);
            if last {
                return out;
            }
        }
    }

    /// The audit chain checked by every replica and by `audit-verify`, and
    /// read as one gapless chain: returns it.
    async fn one_chain(&self) -> Vec<AuditEntry> {
        let entries = self.audit(0).await;
        for (prev, next) in entries.iter().zip(entries.iter().skip(1)) {
            assert_eq!(next.seq, prev.seq + 1, "a gap after {}", prev.seq);
            assert_eq!(next.prev_hash, prev.hash, "a fork at {}", next.seq);
        }
        for i in 0..self.replicas.len() {
            let report = self
                .on(self.admin.identity(), i)
                .verify_audit()
                .await
                .unwrap();
            assert!(report.broken.is_none(), "replica {i}: {report:?}");
            assert!(report.entries >= entries.len() as u64);
        }
        let verify = Command::new(VAULT)
            .args(["audit-verify", "--data-dir"])
            .arg(self.replicas[0].data.path())
            .env("SIGNET_DATABASE_URL", &self.url)
            .env("SIGNET_ROOT_KEY", &self.root_hex)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        assert!(String::from_utf8_lossy(&verify.stdout).starts_with("audit chain intact"));
        entries
    }
}

fn rand_suffix() -> String {
    signet_vault::ids::new("")
}

/// The error code of a failed call, or `ok`.
fn outcome<T>(result: &Result<T, signet_client::sdk::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().unwrap_or("transport").to_owned(),
    }
}

/// Reads `project/secret` as `identity` round-robin over the replicas
/// until `stop`, counting successes; any other outcome than `ok` or one of
/// `allowed` fails the test.
fn load(
    cluster: &Cluster,
    identity: &Identity,
    project: &'static str,
    secret: &'static str,
    allowed: &'static [&'static str],
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<Vec<String>>, Arc<AtomicU64>) {
    let clients: Vec<Client> = (0..cluster.replicas.len())
        .map(|i| cluster.on(identity, i))
        .collect();
    let ok = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&ok);
    let task = tokio::spawn(async move {
        let mut unexpected = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let result = clients[i % clients.len()]
                .read_secret(project, secret, None)
                .await;
            let code = outcome(&result);
            if code == "ok" {
                counted.fetch_add(1, Ordering::SeqCst);
            } else if !allowed.contains(&code.as_str()) {
                unexpected.push(code);
            }
            i += 1;
        }
        unexpected
    });
    (task, ok)
}

/// Every rule, with `n` replicas.
async fn every_rule_holds(n: usize) {
    let Some(base) = database_url() else { return };
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(&base, n).await;
    let admin = &cluster.admin;
    admin.create_project("shop").await.unwrap();
    cluster.secret("shop", "db", None).await;
    let capped = AccessPolicy {
        daily_read_cap: Some(7),
        ..AccessPolicy::default()
    };
    cluster.secret("shop", "capped", Some(capped)).await;
    admin.create_project("trap").await.unwrap();
    cluster.secret("trap", "app", None).await;
    let canary = AccessPolicy {
        canary: true,
        ..AccessPolicy::default()
    };
    cluster.secret("trap", "canary", Some(canary)).await;

    eprintln!("{n} replicas: token uses");
    // Token uses: 5 of 15 concurrent enrollments, spread over the replicas.
    let token = cluster.token("shop", &["db", "capped"], 5).await;
    let enrollments = (0..15).map(|i| {
        let (address, token) = (cluster.address(i).to_owned(), token.clone());
        async move {
            Client::enroll(
                &address,
                &token,
                "host",
                BTreeMap::new(),
                &Options::default(),
            )
            .await
        }
    });
    let enrolled = futures::future::join_all(enrollments).await;
    let outcomes: Vec<String> = enrolled.iter().map(outcome).collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "ok").count(),
        5,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o == "ok" || o == "token_exhausted"),
        "{outcomes:?}"
    );
    let machines: Vec<Identity> = enrolled
        .into_iter()
        .filter_map(|r| r.ok())
        .map(|(client, _)| client.into_identity())
        .collect();

    eprintln!("{n} replicas: load");
    // Background load on every replica for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = machines[..3]
        .iter()
        .map(|m| load(&cluster, m, "shop", "db", &[], Arc::clone(&stop)))
        .collect();

    eprintln!("{n} replicas: nonces");
    // A nonce accepted by one replica is refused by every other: the same
    // signed request sent to all of them at once.
    let m = &machines[0];
    let id = m.id.clone().unwrap();
    let http = reqwest::Client::new();
    for round in 0..20 {
        let target = "/v1/secrets/shop/db";
        let now = u64::try_from(jiff::Timestamp::now().as_second()).unwrap();
        let headers = protocol::sign(
            &m.key,
            &id,
            "GET",
            target,
            b"",
            now,
            &protocol::fresh_nonce(),
        );
        let sends = (0..n).map(|i| {
            let mut request = http.get(format!("{}{target}", cluster.address(i + round)));
            for (name, value) in headers.pairs() {
                request = request.header(name, value);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                (
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_owned(),
                )
            }
        });
        let answers = futures::future::join_all(sends).await;
        assert_eq!(
            answers.iter().filter(|(s, _)| *s == 200).count(),
            1,
            "round {round}: {answers:?}"
        );
        assert!(
            answers
                .iter()
                .all(|(s, c)| *s == 200 || c == "nonce_replayed"),
            "round {round}: {answers:?}"
        );
    }

    eprintln!("{n} replicas: daily cap");
    // A daily cap of 7, exact over 21 concurrent reads on every replica.
    let reads = (0..21).map(|i| {
        let client = cluster.on(&machines[i % machines.len()], i);
        async move { outcome(&client.read_secret("shop", "capped", None).await) }
    });
    let capped = futures::future::join_all(reads).await;
    assert_eq!(
        capped.iter().filter(|o| *o == "ok").count(),
        7,
        "{capped:?}"
    );
    assert!(
        capped.iter().all(|o| o == "ok" || o == "policy_daily_cap"),
        "{capped:?}"
    );

    eprintln!("{n} replicas: canary");
    // A canary read on replica 0 locks its project for every replica:
    // reads of another secret of it run on the others meanwhile, and none
    // is served after the canary's read committed.
    let trap_token = cluster.token("trap", &["app", "canary"], 1).await;
    let intruder = cluster.machine(&trap_token, 1).await;
    let (trap_load, trap_ok) = load(
        &cluster,
        &intruder,
        "trap",
        "app",
        &["project_locked"],
        Arc::clone(&stop),
    );
    while trap_ok.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tripped = cluster
        .on(&intruder, 0)
        .read_secret("trap", "canary", None)
        .await;
    assert!(tripped.is_err(), "a canary is never served");
    for i in 0..n {
        let after = cluster
            .on(&intruder, i)
            .read_secret("trap", "app", None)
            .await;
        assert_eq!(outcome(&after), "project_locked", "replica {i}");
    }

    eprintln!("{n} replicas: revocation");
    // A revoked machine is refused by every replica at once, while it
    // reads on all of them.
    let revoked = &machines[4];
    let (revoked_load, _) = load(
        &cluster,
        revoked,
        "shop",
        "db",
        &["unknown_key"],
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin
        .revoke_machine(revoked.id.as_deref().unwrap())
        .await
        .unwrap();
    for i in 0..n {
        let after = cluster.on(revoked, i).read_secret("shop", "db", None).await;
        assert_eq!(outcome(&after), "unknown_key", "replica {i}");
    }

    stop.store(true, Ordering::SeqCst);
    for (task, ok) in loads {
        assert_eq!(task.await.unwrap(), Vec::<String>::new());
        assert!(ok.load(Ordering::SeqCst) > 0);
    }
    assert_eq!(trap_load.await.unwrap(), Vec::<String>::new());
    assert_eq!(revoked_load.await.unwrap(), Vec::<String>::new());

    eprintln!("{n} replicas: audit chain");
    // One chain, and in it: no read of the trap project allowed after the
    // canary's denial, no read by the revoked machine after its revocation.
    let entries = cluster.one_chain().await;
    let canary_seq = entries
        .iter()
        .find(|e| e.outcome == "deny" && e.target.contains("trap/canary"))
        .map(|e| e.seq)
        .unwrap();
    assert!(
        !entries.iter().any(|e| e.seq > canary_seq
            && e.outcome == "allow"
            && e.action == "secret.read"
            && e.target.contains("trap/")),
        "a trap read was served after the canary tripped"
    );
    let revoked_id = revoked.id.as_deref().unwrap();
    let revoke_seq = entries
        .iter()
        .find(|e| e.action == "machine.revoke" && e.target == format!("machine:{revoked_id}"))
        .map(|e| e.seq)
        .unwrap();
    let late: Vec<_> = entries
        .iter()
        .filter(|e| e.seq > revoke_seq && e.outcome == "allow" && e.actor == revoked_id)
        .collect();
    assert!(
        late.is_empty(),
        "the revoked machine was served after its revocation (at {revoke_seq}): {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_every_rule_exact() {
    every_rule_holds(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_keep_every_rule_exact() {
    every_rule_holds(3).await;
}

/// One read of a load: the replica it went to, its outcome, and whether
/// it was sent after `mark` was set.
type Outcome = (usize, String, bool);

/// Reads `project/secret` as `identity` round-robin over `replicas` until
/// `stop`, recording every outcome.
fn recorded_load(
    cluster: &Cluster,
    identity: &Identity,
    mark: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    let clients: Vec<Client> = (0..cluster.replicas.len())
        .map(|i| cluster.on(identity, i))
        .collect();
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let replica = i % clients.len();
            let after = mark.load(Ordering::SeqCst);
            let result = clients[replica].read_secret("shop", "db", None).await;
            outcomes.push((replica, outcome(&result), after));
            i += 1;
        }
        outcomes
    })
}

/// A shop with one secret and `machines` machines.
async fn shop(cluster: &Cluster, machines: usize) -> Vec<Identity> {
    cluster.admin.create_project("shop").await.unwrap();
    cluster.secret("shop", "db", None).await;
    let token = cluster
        .token("shop", &["db"], u32::try_from(machines).unwrap())
        .await;
    let mut out = Vec::new();
    for i in 0..machines {
        out.push(cluster.machine(&token, i).await);
    }
    out
}

/// Nothing acknowledged is lost: every read a machine was answered 200 has
/// its allowed audit row and its nonce, and the chain is one.
async fn nothing_acknowledged_lost(cluster: &Cluster, machines: &[Identity], acked: &[u64]) {
    let entries = cluster.one_chain().await;
    for (machine, acked) in machines.iter().zip(acked) {
        let id = machine.id.as_deref().unwrap();
        let audited = entries
            .iter()
            .filter(|e| e.actor == id && e.action == "secret.read" && e.outcome == "allow")
            .count() as u64;
        assert!(
            audited >= *acked,
            "{id}: {acked} acknowledged, {audited} audited"
        );
        let nonces: u64 = kit::pg_text(
            &cluster.url,
            &format!("SELECT COUNT(*)::text FROM nonces WHERE key_id = '{id}'"),
        )[0]
        .parse()
        .unwrap();
        assert!(
            nonces >= *acked,
            "{id}: {acked} acknowledged, {nonces} nonces"
        );
    }
}

/// SIGKILL one of three replicas mid-load: the other two answer every
/// request, the killed one's fail only as transport errors, and nothing
/// acknowledged by any of them is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    let Some(base) = database_url() else { return };
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(&base, 3).await;
    let machines = shop(&cluster, 3).await;
    let (killed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let loads: Vec<_> = machines
        .iter()
        .map(|m| recorded_load(&cluster, m, Arc::clone(&killed), Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.replicas[2].child.kill().unwrap();
    cluster.replicas[2].child.wait().unwrap();
    killed.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for load in loads {
        let outcomes = load.await.unwrap();
        for (replica, code, after) in &outcomes {
            match (replica, after) {
                (0 | 1, _) => assert_eq!(code, "ok", "replica {replica} failed a request"),
                (_, true) => assert_eq!(code, "transport", "the killed replica answered"),
                (_, false) => {}
            }
        }
        let served_after = outcomes
            .iter()
            .filter(|(r, code, after)| *r < 2 && *after && code == "ok")
            .count();
        assert!(served_after > 0, "the others kept serving");
        acked.push(outcomes.iter().filter(|(_, code, _)| code == "ok").count() as u64);
    }
    cluster.replicas.truncate(2);
    nothing_acknowledged_lost(&cluster, &machines, &acked).await;
}

/// Restart PostgreSQL (a fast shutdown) mid-load: requests meanwhile fail
/// closed (`internal`, never a value), readiness says so, every replica
/// serves again without being restarted, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_load_loses_nothing_and_service_resumes() {
    let Some(base) = database_url() else { return };
    let (Ok(dir), Ok(bin), Ok(opts)) = (
        std::env::var("SIGNET_PG_DIR"),
        std::env::var("SIGNET_PG_BIN"),
        std::env::var("SIGNET_PG_OPTS"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but SIGNET_PG_DIR, SIGNET_PG_BIN or SIGNET_PG_OPTS is not (tests/postgres/start.sh)"
        );
        eprintln!("SIGNET_PG_DIR is not set: skipping the restart test");
        return;
    };
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(&base, 2).await;
    let machines = shop(&cluster, 2).await;
    let (restarted, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let loads: Vec<_> = machines
        .iter()
        .map(|m| recorded_load(&cluster, m, Arc::clone(&restarted), Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg_ctl = format!("{bin}/pg_ctl");
    let data = format!("{dir}/data");
    let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0";
    let pg = |args: &[&str]| {
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let status = command
            .args(["-D", &data, "-w"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    };
    pg(&["stop", "-m", "fast"]);
    // While it is down: not ready, and reads fail closed.
    let http = reqwest::Client::new();
    for i in 0..2 {
        let ready = http
            .get(format!("{}/readyz", cluster.address(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status().as_u16(),
            503,
            "replica {i} ready without its database"
        );
        let read = cluster
            .on(&machines[0], i)
            .read_secret("shop", "db", None)
            .await;
        assert_eq!(outcome(&read), "internal", "replica {i}");
    }
    let log = format!("{dir}/server.log");
    pg(&["start", "-l", &log, "-o", &opts]);
    restarted.store(true, Ordering::SeqCst);
    // Every replica serves again by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..2 {
        loop {
            let read = cluster
                .on(&machines[1], i)
                .read_secret("shop", "db", None)
                .await;
            if read.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} never recovered: {}",
                outcome(&read)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ready = http
            .get(format!("{}/readyz", cluster.address(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 200, "replica {i}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for load in loads {
        let outcomes = load.await.unwrap();
        assert!(
            outcomes
                .iter()
                .all(|(_, code, _)| code == "ok" || code == "internal"),
            "{outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .any(|(_, code, after)| *after && code == "ok")
        );
        acked.push(outcomes.iter().filter(|(_, code, _)| code == "ok").count() as u64);
    }
    nothing_acknowledged_lost(&cluster, &machines, &acked).await;
}

/// TLS to the database: with `sslmode=require` and the server's CA, the
/// vault connects over TLS; without the CA it refuses the server's
/// certificate instead of talking in the clear or trusting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_verified_tls() {
    let Some(base) = database_url() else { return };
    let Ok(ca) = std::env::var("SIGNET_PG_CA") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but SIGNET_PG_CA is not (tests/postgres/start.sh)"
        );
        eprintln!("SIGNET_PG_CA is not set: skipping the TLS test");
        return;
    };
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tls_url = kit::schema_url(&base, dir.path()).replace("sslmode=disable", "sslmode=require");
    let refused = tokio::task::spawn_blocking({
        let url = tls_url.clone();
        move || signet_vault::store::PostgresStore::connect(&url, None).err()
    })
    .await
    .unwrap();
    let refused = format!(
        "{:?}",
        refused.expect("an untrusted certificate was accepted")
    );
    assert!(
        refused.contains("Tls") || refused.contains("certificate"),
        "{refused}"
    );

    let data = tempfile::tempdir().unwrap();
    let root_hex = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    let mut child = Command::new(VAULT)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("SIGNET_DATABASE_URL", &tls_url)
        .env("SIGNET_DATABASE_CA_FILE", &ca)
        .env("SIGNET_ROOT_KEY", &root_hex)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let token = data.path().join("bootstrap-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !token.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the vault stopped instead of connecting over TLS"
        );
        assert!(Instant::now() < deadline, "no start over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let over_tls = kit::pg_text(
        &base,
        "SELECT COUNT(*)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'signet-vault' AND s.ssl",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(
        over_tls,
        vec!["0".to_owned()],
        "no vault connection uses TLS"
    );
}
