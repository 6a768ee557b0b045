//! PostgreSQL: one login role per rotation, a member of the target's group
//! role (which holds the privileges). The live role keeps working while the
//! new one is created and proven; retiring drops the previous login role
//! after ending its sessions and handing anything it owned to the group.
//! The password is sent as a SCRAM-SHA-256 verifier computed here, so the
//! server (and its statement log) never sees it in clear.

use signet_client::api::RotationTarget;
use tokio_postgres::{Client, NoTls};

use super::{Credential, Database, Error, Result, check_ident, check_password, database};

pub struct Postgres {
    host: String,
    port: u16,
    group: String,
    database: String,
}

impl Postgres {
    pub fn new(target: &RotationTarget) -> Result<Self> {
        check_ident(&target.role)?;
        Ok(Self {
            host: target.host.clone(),
            port: target.port,
            group: target.role.clone(),
            database: database(target)?.to_owned(),
        })
    }

    async fn connect(&self, who: Credential<'_>) -> Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(who.username)
            .password(who.password)
            .dbname(&self.database)
            .application_name("signet-rotator")
            .connect_timeout(std::time::Duration::from_secs(10));
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| Error::Connect(describe(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %describe(&error), "postgresql connection ended");
            }
        });
        Ok(client)
    }
}

/// The server's message and code, without the statement.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

fn refused(error: tokio_postgres::Error) -> Error {
    Error::Refused(describe(&error))
}

impl Database for Postgres {
    async fn create(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_ident(new.username)?;
        check_password(new.password)?;
        let verifier = postgres_protocol::password::scram_sha_256(new.password.as_bytes());
        let admin = self.connect(admin).await?;
        // One transaction: a role that cannot join the group is not left behind.
        let statement = format!(
            "BEGIN; CREATE ROLE \"{user}\" LOGIN INHERIT PASSWORD '{verifier}'; GRANT \"{group}\" TO \"{user}\"; COMMIT;",
            user = new.username,
            group = self.group,
        );
        admin.batch_execute(&statement).await.map_err(refused)
    }

    async fn verify(&self, new: Credential<'_>) -> Result<()> {
        let client = self.connect(new).await?;
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(refused)?;
        let user: String = row.try_get(0).map_err(refused)?;
        if user == new.username {
            Ok(())
        } else {
            Err(Error::Refused("connected as another user".into()))
        }
    }

    async fn undo(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_ident(new.username)?;
        let admin = self.connect(admin).await?;
        drop_login(&admin, new.username, &self.group).await
    }

    async fn retire(
        &self,
        admin: Credential<'_>,
        old: Credential<'_>,
        new: Credential<'_>,
    ) -> Result<()> {
        check_ident(old.username)?;
        if old.username == self.group
            || old.username == admin.username
            || old.username == new.username
        {
            return Err(Error::Invalid(
                "the previous login is the group, the admin or the new login; not dropping it",
            ));
        }
        let admin = self.connect(admin).await?;
        drop_login(&admin, old.username, &self.group).await
    }
}

/// Ends `user`'s sessions, hands what it owns to `group`, and drops it.
async fn drop_login(admin: &Client, user: &str, group: &str) -> Result<()> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .map_err(refused)?;
    if exists.is_none() {
        return Ok(());
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .map_err(refused)?;
    admin
        .batch_execute(&format!(
            "BEGIN; REASSIGN OWNED BY \"{user}\" TO \"{group}\"; DROP OWNED BY \"{user}\"; DROP ROLE \"{user}\"; COMMIT;"
        ))
        .await
        .map_err(refused)
}
