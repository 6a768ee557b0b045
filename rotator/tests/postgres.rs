//! Rotation of a PostgreSQL credential against a real server
//! (tests/rotation/start-servers.sh): the agent is the real `signet-rotator`
//! code, the vault a real one on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use kit::*;
use signet_client::api::*;
use signet_rotator::agent::run_once;

const APP: &str = "db";
const ADMIN: &str = "db-admin";

async fn connect(
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pg_port())
        .user(user)
        .password(password)
        .dbname(database);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
    })?;
    tokio::spawn(connection);
    Ok(client)
}

/// A fresh connection as `user` runs a query in `database`.
async fn works(user: &str, password: &str, database: &str) -> Result<(), String> {
    let client = connect(user, password, database).await?;
    client
        .query_one("SELECT 1", &[])
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn admin() -> tokio_postgres::Client {
    connect(ADMIN_USER, &admin_password(), "postgres")
        .await
        .unwrap()
}

async fn role_exists(name: &str) -> bool {
    admin()
        .await
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// A group role holding the privileges, a database, and a first login
/// user in the group; with `group_may_connect = false` only that first
/// user may connect to the database (so a new member's fresh connection
/// fails, as a verify failure needs).
struct Db {
    group: String,
    database: String,
    user: String,
    password: String,
}

async fn database(group_may_connect: bool) -> Db {
    let u = unique();
    let db = Db {
        group: format!("g{u}"),
        database: format!("d{u}"),
        user: format!("g{u}_first"),
        password: "first-password-1".into(),
    };
    let admin = admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {g} NOLOGIN; CREATE ROLE {user} LOGIN PASSWORD '{pw}' IN ROLE {g};",
            g = db.group,
            user = db.user,
            pw = db.password
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {}", db.database))
        .await
        .unwrap();
    if !group_may_connect {
        admin
            .batch_execute(&format!(
                "REVOKE CONNECT ON DATABASE {d} FROM PUBLIC; GRANT CONNECT ON DATABASE {d} TO {user};",
                d = db.database,
                user = db.user
            ))
            .await
            .unwrap();
    }
    db
}

fn target(db: &Db) -> RotationTarget {
    RotationTarget {
        host: "127.0.0.1".into(),
        port: pg_port(),
        role: db.group.clone(),
        database: Some(db.database.clone()),
    }
}

struct Setup {
    vault: TestVault,
    agent: signet_client::sdk::Client,
    reader: signet_client::sdk::Client,
    rotation: RotationView,
    db: Db,
}

async fn setup(db: Db, target: RotationTarget) -> Setup {
    let vault = start_vault().await;
    vault.credential(APP, &db.user, &db.password).await;
    vault.credential(ADMIN, ADMIN_USER, &admin_password()).await;
    let agent = vault.machine("rotator", &[]).await;
    let reader = vault.machine("app", &[APP]).await;
    let rotation = vault
        .rotation(Provider::Postgresql, APP, ADMIN, &agent, target)
        .await;
    Setup {
        vault,
        agent,
        reader,
        rotation,
        db,
    }
}

#[tokio::test]
async fn a_rotation_succeeds_and_the_old_password_is_refused_afterwards() {
    if !server_up("postgresql", pg_port()).await {
        return;
    }
    let db = database(true).await;
    let t = target(&db);
    let s = setup(db, t).await;
    let database = s.db.database.clone();
    let reader = ReaderLoop::start(s.reader, APP, move |user, password| {
        let database = database.clone();
        async move { works(&user, &password, &database).await }
    });
    reader.wait_for(1).await;

    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let apply = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(apply.step, Step::Apply);
    assert_eq!(apply.outcome, Outcome::Confirmed);
    assert_eq!(apply.job.state, JobState::Promoted);
    assert_eq!(s.vault.live(APP).await, 2);
    reader.wait_for(2).await;

    // The grace (0 here) is over: the agent retires the first login.
    let retire = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(
        (retire.step, retire.outcome),
        (Step::Retire, Outcome::Retired)
    );
    assert_eq!(retire.job.state, JobState::Retired);
    // The reader keeps reading (the new value) a little after the retire.
    let after = reader.newest.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let report = reader.stop().await;
    assert!(after >= 2);
    assert!(
        report.failures.is_empty(),
        "values that did not work: {:?}",
        report.failures
    );
    assert_eq!(report.versions, [1, 2].into(), "{report:?}");

    let old = works(&s.db.user, &s.db.password, &s.db.database).await;
    assert!(
        old.as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "the old login still works: {old:?}"
    );
    assert!(!role_exists(&s.db.user).await);
    let reader = s.vault.machine("app2", &[APP]).await;
    let (version, user, password) = read_credential(&reader, APP).await;
    assert_eq!(version, 2);
    assert!(user.starts_with(&format!("{}_", s.db.group)) && user != s.db.user);
    assert_eq!(password.len(), 32);
    works(&user, &password, &s.db.database).await.unwrap();
    // The new password is in no audit entry.
    assert!(!s.vault.audit_text().await.contains(&password));
}

#[tokio::test]
async fn a_rotation_failing_at_apply_leaves_the_live_value_working() {
    if !server_up("postgresql", pg_port()).await {
        return;
    }
    let db = database(true).await;
    // A group role that does not exist: CREATE ROLE ... GRANT fails.
    let mut t = target(&db);
    t.role = format!("{}_none", db.group);
    let s = setup(db, t).await;

    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::ApplyFailed);
    assert_eq!(pass.job.state, JobState::Failed);
    let reason = pass.job.reason.unwrap();
    assert!(reason.starts_with("apply failed: "), "{reason}");
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!((version, user.as_str()), (1, s.db.user.as_str()));
    works(&user, &password, &s.db.database).await.unwrap();
    // Nothing was left behind in the database.
    let leftovers = admin()
        .await
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("{}_%", s.db.group)],
        )
        .await
        .unwrap();
    assert_eq!(
        leftovers.len(),
        1,
        "only the first login is in the group's name space"
    );
    // The failure is audited.
    assert!(s.vault.audit_text().await.contains("rotation.fail"));
}

#[tokio::test]
async fn a_rotation_failing_at_verify_leaves_the_live_value_working() {
    if !server_up("postgresql", pg_port()).await {
        return;
    }
    // The new login is created but may not connect to the database.
    let db = database(false).await;
    let t = target(&db);
    let s = setup(db, t).await;

    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::VerifyFailed);
    assert_eq!(pass.job.state, JobState::Failed);
    assert!(pass.job.reason.unwrap().starts_with("verify failed: "));
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!((version, user.as_str()), (1, s.db.user.as_str()));
    works(&user, &password, &s.db.database).await.unwrap();
    // The agent removed the login it created.
    let members = admin()
        .await
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("{}_%", s.db.group)],
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    // Nothing waits to be claimed: the job is over.
    assert!(run_once(&s.agent).await.unwrap().is_none());
}

#[tokio::test]
async fn two_rotations_racing_exactly_one_wins() {
    if !server_up("postgresql", pg_port()).await {
        return;
    }
    let db = database(true).await;
    let t = target(&db);
    let s = setup(db, t).await;

    let (a, b) = tokio::join!(
        s.vault.admin.trigger_rotation(&s.rotation.id),
        s.vault.admin.trigger_rotation(&s.rotation.id)
    );
    let (won, lost) = match (a, b) {
        (Ok(job), Err(e)) | (Err(e), Ok(job)) => (job, e),
        other => panic!("expected exactly one trigger to win: {other:?}"),
    };
    assert_eq!(won.state, JobState::Pending);
    assert_eq!(lost.code(), Some("conflict"));

    // Two agents' passes racing: one claims and applies, the other finds nothing.
    let (a, b) = tokio::join!(run_once(&s.agent), run_once(&s.agent));
    let passes: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].outcome, Outcome::Confirmed);
    let jobs = s.vault.jobs(&s.rotation.id).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(s.vault.live(APP).await, 2);
    // While the promoted job waits to retire, a third trigger is refused too.
    let third = s
        .vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap_err();
    assert_eq!(third.code(), Some("conflict"));
    // Exactly one new login exists beside the first.
    let members = admin()
        .await
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("{}_%", s.db.group)],
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
}

#[tokio::test]
async fn the_signet_rotator_process_applies_and_retires() {
    if !server_up("postgresql", pg_port()).await {
        return;
    }
    let db = database(true).await;
    let t = target(&db);
    let s = setup(db, t).await;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("rotator.json");
    s.agent.identity().save(&identity, false).unwrap();
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    for _ in 0..2 {
        let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_signet-rotator"))
            .args(["--once", "--vault", &s.vault.url, "--identity"])
            .arg(&identity)
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let jobs = s.vault.jobs(&s.rotation.id).await;
    assert_eq!(jobs[0].state, JobState::Retired);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!(version, 2);
    works(&user, &password, &s.db.database).await.unwrap();
    assert!(
        works(&s.db.user, &s.db.password, &s.db.database)
            .await
            .is_err()
    );
}
