//! MariaDB and MySQL: one user per rotation (`'<user>'@'%'`) granted the
//! target's role as its default role, which holds the privileges. The live
//! user keeps working while the new one is created and proven; retiring
//! ends the previous user's sessions and drops it. DDL is not
//! transactional here, so a failed apply drops what it created.

use mysql_async::prelude::Queryable as _;
use signet_client::api::RotationTarget;

use super::{Credential, Database, Error, Result, check_ident, check_password, database};

pub struct Mysql {
    host: String,
    port: u16,
    role: String,
    database: String,
}

impl Mysql {
    pub fn new(target: &RotationTarget) -> Result<Self> {
        check_ident(&target.role)?;
        Ok(Self {
            host: target.host.clone(),
            port: target.port,
            role: target.role.clone(),
            database: database(target)?.to_owned(),
        })
    }

    async fn connect(
        &self,
        who: Credential<'_>,
        database: Option<&str>,
    ) -> Result<mysql_async::Conn> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(who.username))
            .pass(Some(who.password))
            .db_name(database)
            .prefer_socket(false);
        mysql_async::Conn::new(opts)
            .await
            .map_err(|e| Error::Connect(describe(&e)))
    }
}

/// The server's code and message, never a statement.
fn describe(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => format!("{} ({})", server.message, server.code),
        mysql_async::Error::Driver(driver) => driver.to_string(),
        mysql_async::Error::Io(io) => io.to_string(),
        _ => "the connection failed".into(),
    }
}

fn refused(error: mysql_async::Error) -> Error {
    Error::Refused(describe(&error))
}

async fn drop_user(admin: &mut mysql_async::Conn, user: &str) -> Result<()> {
    admin
        .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
        .await
        .map_err(refused)
}

impl Database for Mysql {
    async fn create(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_ident(new.username)?;
        check_password(new.password)?;
        let mut admin = self.connect(admin, None).await?;
        let user = new.username;
        let created = async {
            admin
                .query_drop(format!(
                    "CREATE USER '{user}'@'%' IDENTIFIED BY '{}'",
                    new.password
                ))
                .await?;
            admin
                .query_drop(format!("GRANT {} TO '{user}'@'%'", self.role))
                .await?;
            admin
                .query_drop(format!("SET DEFAULT ROLE {} FOR '{user}'@'%'", self.role))
                .await
        }
        .await;
        match created {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = drop_user(&mut admin, user).await;
                Err(refused(error))
            }
        }
    }

    async fn verify(&self, new: Credential<'_>) -> Result<()> {
        let mut conn = self.connect(new, Some(&self.database)).await?;
        let one: Option<i64> = conn.query_first("SELECT 1").await.map_err(refused)?;
        let _ = conn.disconnect().await;
        if one == Some(1) {
            Ok(())
        } else {
            Err(Error::Refused("SELECT 1 did not answer 1".into()))
        }
    }

    async fn undo(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_ident(new.username)?;
        let mut admin = self.connect(admin, None).await?;
        drop_user(&mut admin, new.username).await
    }

    async fn retire(
        &self,
        admin: Credential<'_>,
        old: Credential<'_>,
        new: Credential<'_>,
    ) -> Result<()> {
        check_ident(old.username)?;
        if old.username == self.role
            || old.username == admin.username
            || old.username == new.username
        {
            return Err(Error::Invalid(
                "the previous user is the role, the admin or the new user; not dropping it",
            ));
        }
        let mut admin = self.connect(admin, None).await?;
        let sessions: Vec<u64> = admin
            .exec(
                "SELECT id FROM information_schema.processlist WHERE user = ?",
                (old.username,),
            )
            .await
            .map_err(refused)?;
        for id in sessions {
            // A session may end by itself meanwhile.
            let _ = admin.query_drop(format!("KILL CONNECTION {id}")).await;
        }
        drop_user(&mut admin, old.username).await
    }
}
