//! Rotation of a Redis ACL user's password against a real server
//! (tests/rotation/start-servers.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use kit::*;
use signet_client::api::*;
use signet_rotator::agent::run_once;

const APP: &str = "cache";
const ADMIN: &str = "cache-admin";

async fn connect(user: &str, password: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), redis_port()),
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: Some(user.to_owned()),
            password: Some(password.to_owned()),
            ..Default::default()
        },
    };
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

/// A fresh connection as `user` reads one of its keys.
async fn works(user: &str, password: &str) -> Result<(), String> {
    let mut conn = connect(user, password).await?;
    redis::cmd("GET")
        .arg(format!("{user}:k"))
        .query_async::<Option<String>>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn admin() -> redis::aio::MultiplexedConnection {
    connect("default", &admin_password()).await.unwrap()
}

/// An ACL user allowed GET and SET on its own keys (and, with `ping`,
/// PING, which the agent's verify needs).
async fn acl_user(ping: bool) -> (String, String) {
    let user = format!("u{}", unique());
    let password = "first-password-1".to_owned();
    let mut rules = vec![
        "on".to_owned(),
        format!(">{password}"),
        format!("~{user}:*"),
        "+get".into(),
        "+set".into(),
    ];
    if ping {
        rules.push("+ping".into());
    }
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(rules)
        .query_async::<()>(&mut admin().await)
        .await
        .unwrap();
    (user, password)
}

struct Setup {
    vault: TestVault,
    agent: signet_client::sdk::Client,
    reader: signet_client::sdk::Client,
    rotation: RotationView,
    user: String,
    password: String,
}

async fn setup(user: String, password: String, role: &str) -> Setup {
    let vault = start_vault().await;
    vault.credential(APP, &user, &password).await;
    vault.credential(ADMIN, "default", &admin_password()).await;
    let agent = vault.machine("rotator", &[]).await;
    let reader = vault.machine("app", &[APP]).await;
    let target = RotationTarget {
        host: "127.0.0.1".into(),
        port: redis_port(),
        role: role.to_owned(),
        database: None,
    };
    let rotation = vault
        .rotation(Provider::Redis, APP, ADMIN, &agent, target)
        .await;
    Setup {
        vault,
        agent,
        reader,
        rotation,
        user,
        password,
    }
}

#[tokio::test]
async fn a_rotation_succeeds_and_the_old_password_is_refused_afterwards() {
    if !server_up("redis", redis_port()).await {
        return;
    }
    let (user, password) = acl_user(true).await;
    let role = user.clone();
    let s = setup(user, password, &role).await;
    let reader = ReaderLoop::start(s.reader, APP, |user, password| async move {
        works(&user, &password).await
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
        (Step::Apply, Outcome::Confirmed)
    );
    // Both passwords work until the retire.
    works(&s.user, &s.password).await.unwrap();
    reader.wait_for(2).await;
    let retire = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(
        (retire.step, retire.outcome),
        (Step::Retire, Outcome::Retired)
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let report = reader.stop().await;
    assert!(
        report.failures.is_empty(),
        "values that did not work: {:?}",
        report.failures
    );
    assert_eq!(report.versions, [1, 2].into(), "{report:?}");

    let old = works(&s.user, &s.password).await;
    assert!(
        old.as_ref()
            .is_err_and(|e| e.contains("WRONGPASS") || e.contains("authentication failed")),
        "{old:?}"
    );
    let fresh = s.vault.machine("app2", &[APP]).await;
    let (version, user, password) = read_credential(&fresh, APP).await;
    assert_eq!((version, user.as_str()), (2, s.user.as_str()));
    assert_ne!(password, s.password);
    works(&user, &password).await.unwrap();
    assert!(!s.vault.audit_text().await.contains(&password));
}

#[tokio::test]
async fn a_rotation_failing_at_apply_leaves_the_live_value_working() {
    if !server_up("redis", redis_port()).await {
        return;
    }
    let (user, password) = acl_user(true).await;
    // The config names an ACL user that does not exist: apply refuses to
    // create one.
    let missing = format!("{user}_none");
    let s = setup(user, password, &missing).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::ApplyFailed);
    assert_eq!(pass.job.state, JobState::Failed);
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!(version, 1);
    works(&user, &password).await.unwrap();
    let missing_user: Option<redis::Value> = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&missing)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert!(missing_user.is_none_or(|v| v == redis::Value::Nil));
}

#[tokio::test]
async fn a_rotation_failing_at_verify_leaves_the_live_value_working() {
    if !server_up("redis", redis_port()).await {
        return;
    }
    // The user may not PING: the agent's fresh connection fails its check.
    let (user, password) = acl_user(false).await;
    let role = user.clone();
    let s = setup(user, password, &role).await;
    s.vault
        .admin
        .trigger_rotation(&s.rotation.id)
        .await
        .unwrap();
    let pass = run_once(&s.agent).await.unwrap().unwrap();
    assert_eq!(pass.outcome, Outcome::VerifyFailed);
    assert_eq!(s.vault.live(APP).await, 1);
    let (version, user, password) = read_credential(&s.reader, APP).await;
    assert_eq!(version, 1);
    works(&user, &password).await.unwrap();
    // The new password was removed again: the user holds only the first.
    let rules: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&user)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    let getuser: std::collections::HashMap<String, redis::Value> =
        redis::FromRedisValue::from_redis_value(&rules).unwrap();
    let passwords: Vec<String> =
        redis::FromRedisValue::from_redis_value(&getuser["passwords"]).unwrap();
    assert_eq!(passwords.len(), 1);
}

#[tokio::test]
async fn two_rotations_racing_exactly_one_wins() {
    if !server_up("redis", redis_port()).await {
        return;
    }
    let (user, password) = acl_user(true).await;
    let role = user.clone();
    let s = setup(user, password, &role).await;
    let (a, b) = tokio::join!(
        s.vault.admin.trigger_rotation(&s.rotation.id),
        s.vault.admin.trigger_rotation(&s.rotation.id)
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one trigger wins: {a:?} {b:?}"
    );
    let lost = a.err().or(b.err()).unwrap();
    assert_eq!(lost.code(), Some("conflict"));
    let (a, b) = tokio::join!(run_once(&s.agent), run_once(&s.agent));
    let passes: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].outcome, Outcome::Confirmed);
    assert_eq!(s.vault.jobs(&s.rotation.id).await.len(), 1);
    assert_eq!(s.vault.live(APP).await, 2);
}
