//! Redis: the target's ACL user holds two passwords while a rotation runs.
//! Apply adds the new one (`ACL SETUSER <user> >new`), so the live one keeps
//! working; verify opens a fresh connection that authenticates with the new
//! one and runs `PING` (the user needs `+ping`); retire removes the old one
//! (`ACL SETUSER <user> <old`). The user must exist already: apply never
//! creates one.

use signet_client::api::RotationTarget;

use super::{Credential, Database, Error, Result, check_ident, check_password};

pub struct Redis {
    host: String,
    port: u16,
    user: String,
}

impl Redis {
    pub fn new(target: &RotationTarget) -> Result<Self> {
        check_ident(&target.role)?;
        Ok(Self {
            host: target.host.clone(),
            port: target.port,
            user: target.role.clone(),
        })
    }

    async fn connect(&self, who: Credential<'_>) -> Result<redis::aio::MultiplexedConnection> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(self.host.clone(), self.port),
            redis: redis::RedisConnectionInfo {
                db: 0,
                username: Some(who.username.to_owned()),
                password: Some(who.password.to_owned()),
                ..Default::default()
            },
        };
        let client = redis::Client::open(info).map_err(|e| Error::Connect(describe(&e)))?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| Error::Connect(describe(&e)))
    }

    async fn acl(&self, admin: Credential<'_>, rule: String) -> Result<()> {
        let mut admin = self.connect(admin).await?;
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&self.user)
            .arg(rule)
            .query_async::<()>(&mut admin)
            .await
            .map_err(|e| Error::Refused(describe(&e)))
    }
}

/// The server's error kind and code, never the command (which holds a
/// password).
fn describe(error: &redis::RedisError) -> String {
    match error.code() {
        Some(code) => format!("{code}: {}", error.detail().unwrap_or_default()),
        None => format!("{:?}", error.kind()),
    }
}

impl Database for Redis {
    async fn create(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_password(new.password)?;
        if new.username != self.user {
            return Err(Error::Invalid(
                "the new credential is not for the target's ACL user",
            ));
        }
        let mut conn = self.connect(admin).await?;
        let exists: Option<redis::Value> = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(&self.user)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::Refused(describe(&e)))?;
        if exists.is_none_or(|v| v == redis::Value::Nil) {
            return Err(Error::Refused(format!("no ACL user {}", self.user)));
        }
        self.acl(admin, format!(">{}", new.password)).await
    }

    async fn verify(&self, new: Credential<'_>) -> Result<()> {
        let mut conn = self.connect(new).await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::Refused(describe(&e)))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Refused("PING did not answer PONG".into()))
        }
    }

    async fn undo(&self, admin: Credential<'_>, new: Credential<'_>) -> Result<()> {
        check_password(new.password)?;
        self.acl(admin, format!("<{}", new.password)).await
    }

    async fn retire(
        &self,
        admin: Credential<'_>,
        old: Credential<'_>,
        new: Credential<'_>,
    ) -> Result<()> {
        if old.username != self.user || old.password == new.password {
            return Err(Error::Invalid(
                "the previous credential is not an older password of the target's ACL user",
            ));
        }
        // The first credential may come from elsewhere: any password Redis
        // holds is removed, whatever its alphabet, as one argument.
        self.acl(admin, format!("<{}", old.password)).await
    }
}
