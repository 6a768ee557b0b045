//! A request and what an operation sees of it: the types shared by the
//! pipeline ([`crate::vault`]), which fills them, and the services, which
//! read them. Neither imports the other.

use signet_client::api::{ErrorCode, Scope};
use signet_client::protocol::{ENROLL_KEY_ID, PublicKey};

use crate::audit::Record;
use crate::crypto::RootKey;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::store::{Admin, Agent, Machine};

/// One request as it arrived.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path and query exactly as on the request line.
    pub target: String,
    pub key_id: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub source_ip: String,
}

/// Which identities a route serves.
#[derive(Clone, Copy, Debug)]
pub enum Audience {
    /// Machines only; the identity is looked up in the machines table alone.
    Machine,
    /// Admins, and agents holding the scope (`None`: admins only).
    Management(Option<Scope>),
    /// A new key proving possession (`Signet-Key: enroll`).
    Enroll(PublicKey),
}

/// Who made a request, once verified.
#[derive(Clone, Debug)]
pub enum Caller {
    Machine(Box<Machine>),
    Admin(Admin),
    Agent(Agent),
    /// A new key, verified against the public key in its own body.
    Enrolling(PublicKey),
}

impl Caller {
    /// The id audited as the actor.
    pub fn id(&self) -> String {
        match self {
            Self::Machine(m) => m.id.clone(),
            Self::Admin(a) => a.id.clone(),
            Self::Agent(a) => a.id.clone(),
            Self::Enrolling(_) => ENROLL_KEY_ID.to_owned(),
        }
    }

    /// The machine, for machine-only operations.
    pub fn machine(&self) -> Result<&Machine> {
        match self {
            Self::Machine(m) => Ok(m.as_ref()),
            _ => Err(Error::denied(
                ErrorCode::NotAMachine,
                "only machines may do this",
            )),
        }
    }
}

/// What an operation sees: the verified caller, the time, the raw body, and
/// the audit record it may enrich.
pub struct Ctx<'a> {
    pub caller: Caller,
    pub now: i64,
    pub body: &'a [u8],
    pub target: &'a str,
    pub source_ip: &'a str,
    /// The root key, for the services that seal or unwrap under it.
    pub root: &'a RootKey,
    pub settings: &'a Settings,
    pub audit: &'a mut Record,
    /// Set by an operation whose refusal must still commit what it wrote
    /// (a canary read locks the project and is refused in one transaction).
    pub commit_denial: bool,
}

impl Ctx<'_> {
    /// The body as JSON of `T`, or `400 malformed_json`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.body).map_err(|e| {
            // serde's message names the position and the expected shape, never
            // echoes a value longer than a token of the input.
            Error::denied(
                ErrorCode::MalformedJson,
                format!(
                    "request body is not the expected JSON: {}",
                    redact_serde(&e)
                ),
            )
        })
    }

    /// The query string parsed as `T`, or `400 invalid_request`.
    pub fn query<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        serde_urlencoded::from_str(query)
            .map_err(|e| Error::denied(ErrorCode::InvalidRequest, format!("bad query: {e}")))
    }
}

fn redact_serde(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        }
        // Data errors name fields ("missing field `token`", "unknown field `x`"),
        // which is what a caller needs to fix the request; the values they
        // quote ("invalid type: string \"...\"") may be secrets, so every
        // quoted value is cut out.
        Category::Data => {
            let text = e.to_string();
            redact_quoted(text.split(" at line ").next().unwrap_or(&text))
        }
    }
}

/// `text` with every double-quoted part replaced by `"…"`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_quoted;

    #[test]
    fn quoted_values_never_reach_an_error() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "hunter2", expected a map"#),
            r#"invalid type: string "…", expected a map"#
        );
        assert_eq!(
            redact_quoted("unknown field `valu`, expected `value`"),
            "unknown field `valu`, expected `value`"
        );
        assert_eq!(redact_quoted(r#"a "b" c "d"#), r#"a "…" c "…""#);
    }
}
