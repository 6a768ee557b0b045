//! Rotation of a MariaDB credential against a real server
//! (tests/rotation/start-servers.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use kit::*;
use mysql_async::prelude::Queryable as _;
use signet_client::api::*;
use signet_rotator::agent::run_once;

const APP: &str = "sql";
const ADMIN: &str = "sql-admin";

async fn connect(
    user: &str,
    password: &str,
    database: Option<&str>,
) -> Result<mysql_async::Conn, String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(mysql_port())
        .user(Some(user))
        .pass(Some(password))
        .db_name(database)
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())
}

/// A fresh connection as `user` runs a query in `database`.
async fn works(user: &str, password: &str, database: &str) -> Result<(), String> {
    let mut conn = connect(user, password, Some(database)).await?;
    let one: Option<i64> = conn
        .query_first("SELECT 1")
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.disconnect().await;
    (one == Some(1))
        .then_some(())
        .ok_or_else(|| "no row".into())
}

async fn admin() -> mysql_async::Conn {
    connect(ADMIN_USER, &admin_password(), None).await.unwrap()
}

async fn users_like(prefix: &str) -> Vec<String> {
    let mut admin = admin().await;
    let users: Vec<String> = admin
        .exec(
            "SELECT user FROM mysql.user WHERE user LIKE ?",
            (format!("{prefix}\\_%"),),
        )
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    users
}

struct Db {
    role: String,
    database: String,
    user: String,
    password: String,
}

/// A role with the privileges on a database (or, with `role_may_use =
/// false`, none), and a first user holding the privileges directly.
async fn database(role_may_use: bool) -> Db {
    let u = unique();
    let db = Db {
        role: format!("r{u}"),
        database: format!("d{u}"),
        user: format!("r{u}_first"),
        password: "first-password-1".into(),
    };
    let mut admin = admin().await;
    for statement in [
        format!("CREATE DATABASE {}", db.database),
        format!("CREATE ROLE {}", db.role),
        format!(
            "CREATE USER '{}'@'%' IDENTIFIED BY '{}'",
            db.user, db.password
        ),
        format!("GRANT ALL ON {}.* TO '{}'@'%'", db.database, db.user),
    ] {
        admin.query_drop(statement).await.unwrap();
    }
    if role_may_use {
        admin
            .query_drop(format!("GRANT ALL ON {}.* TO {}", db.database, db.role))
            .await
            .unwrap();
    }
    let _ = admin.disconnect().await;
    db
}

struct Setup {
    vault: TestVault,
    agent: signet_client::sdk::Client,
    reader: signet_client::sdk::Client,
    rotation: RotationView,
    db: Db,
}

async fn setup(db: Db, role: &str) -> Setup {
    let vault = start_vault().await;
    vault.credential(APP, &db.user, &db.password).await;
    vault.credential(ADMIN, ADMIN_USER, &admin_password()).await;
    let agent = vault.machine("rotator", &[]).await;
    let reader = vault.machine("app", &[APP]).await;
    let target = RotationTarget {
        host: "127.0.0.1".into(),
        port: mysql_port(),
        role: role.to_owned(),
        database: Some(db.database.clone()),
    };
    let rotation = vault
        .rotation(Provider::Mysql, APP, ADMIN, &agent, target)
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
    if !server_up("mariadb", mysql_port()).await {
        return;
    }
    let db = database(true).await;
    let role = db.role.clone();
    let s = setup(db, &role).await;
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
    assert_eq!(
        (apply.step, apply.outcome),
        (Step::Apply, Outcome::Confirmed),
        "{:?}",
        apply.job
    );
    reader.wait_for(2).await;
    let retire = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(
        (retire.step, retire.outcome),
        (Step::Retire, Outcome::Retired),
        "{:?}",
        retire.job
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let report = reader.stop().await;
    assert!(
        report.failures.is_empty(),
        "values that did not work: {:?}",
        report.failures
    );
    assert_eq!(report.versions, [1, 2].into(), "{report:?}");

    let old = works(&s.db.user, &s.db.password, &s.db.database).await;
    assert!(
        old.as_ref().is_err_and(|e| e.contains("Access denied")),
        "{old:?}"
    );
    let fresh = s.vault.machine("app2", &[APP]).await;
    let (version, user, password) = read_credential(&fresh, APP).await;
    assert_eq!(version, 2);
    assert!(user.starts_with(&format!("{}_", s.db.role)) && user != s.db.user);
    works(&user, &password, &s.db.database).await.unwrap();
    assert_eq!(users_like(&s.db.role).await, vec![user]);
    assert!(!s.vault.audit_text().await.contains(&password));
}

#[tokio::test]
async fn a_rotation_failing_at_apply_leaves_the_live_value_working() {
    if !server_up("mariadb", mysql_port()).await {
        return;
    }
    let db = database(true).await;
    // A role that does not exist: GRANT fails and the new user is dropped.
    let missing = format!("{}_none", db.role);
    let s = setup(db, &missing).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::ApplyFailed, "{:?}", pass.job);
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!(version, 1);
    works(&user, &password, &s.db.database).await.unwrap();
    assert!(users_like(&missing).await.is_empty());
}

#[tokio::test]
async fn a_rotation_failing_at_verify_leaves_the_live_value_working() {
    if !server_up("mariadb", mysql_port()).await {
        return;
    }
    // The role holds no privilege on the database: the new user cannot use it.
    let db = database(false).await;
    let role = db.role.clone();
    let s = setup(db, &role).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::VerifyFailed, "{:?}", pass.job);
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!(version, 1);
    works(&user, &password, &s.db.database).await.unwrap();
    assert_eq!(users_like(&s.db.role).await, vec![s.db.user.clone()]);
}

#[tokio::test]
async fn two_rotations_racing_exactly_one_wins() {
    if !server_up("mariadb", mysql_port()).await {
        return;
    }
    let db = database(true).await;
    let role = db.role.clone();
    let s = setup(db, &role).await;
    let (a, b) = tokio::join!(
        s.vault.admin.trigger_rotation(&s.rotation.id),
        s.vault.admin.trigger_rotation(&s.rotation.id)
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one trigger wins: {a:?} {b:?}"
    );
    assert_eq!(a.err().or(b.err()).unwrap().code(), Some("conflict"));
    let (a, b) = tokio::join!(run_once(&s.agent), run_once(&s.agent));
    let passes: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].outcome, Outcome::Confirmed);
    assert_eq!(s.vault.live(APP).await, 2);
    assert_eq!(users_like(&s.db.role).await.len(), 2);
}
