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

/// A machine's request decided ahead of the writer on a snapshot (see
/// [`crate::vault::Vault::handle_read`]): the machine as the snapshot saw
/// it, the answer, and the target its audit row names.
pub struct Ahead<T> {
    pub machine: Machine,
    pub value: T,
    pub audit_target: String,
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
            Error::denied(
                ErrorCode::MalformedJson,
                format!(
                    "request body is not the expected JSON: {}",
                    redact_serde(&e)
                ),
            )
        })
    }

    /// The page a list route's query asks for (`limit`, `cursor` and
    /// nothing else), or `400 invalid_request`.
    pub fn page<K: serde::de::DeserializeOwned>(&self) -> Result<crate::page::Page<K>> {
        self.query::<crate::page::PageQuery>()?.page()
    }

    /// The query string parsed as `T`, or `400 invalid_request`.
    pub fn query<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        serde_urlencoded::from_str(query).map_err(|e| {
            Error::denied(
                ErrorCode::InvalidRequest,
                format!("bad query: {}", data_error(&e.to_string())),
            )
        })
    }
}

fn redact_serde(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        }
        Category::Data => {
            // serde_json appends the position to the message; cut it at the
            // last occurrence, since a quoted value may contain the words.
            let text = e.to_string();
            let message = match text.rfind(" at line ") {
                Some(end) if e.line() > 0 => &text[..end],
                _ => text.as_str(),
            };
            format!(
                "{} (line {} column {})",
                data_error(message),
                e.line(),
                e.column()
            )
        }
    }
}

/// Kinds of value serde names in "invalid type" and "invalid value" errors;
/// only these words are kept from the part of the message that describes
/// the input.
const VALUE_KINDS: &[&str] = &[
    "boolean",
    "integer",
    "floating point",
    "number",
    "character",
    "string",
    "byte array",
    "null",
    "unit value",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
];

/// What a caller (and the audit log) is told about input that is well
/// formed but not of the expected shape: the kind of value and what was
/// expected, the field names the type declares, never the input's own text.
/// serde quotes the offending value (`invalid type: string "hunter2"`,
/// ``integer `4111111111111111` ``, ``unknown variant `hunter2` ``), and a
/// value may be a secret typed into the wrong field, so the message is
/// rebuilt from the known forms of serde's errors; any other message (a
/// custom one may embed the value anywhere) becomes a generic one.
fn data_error(message: &str) -> String {
    const GENERIC: &str = "a value has the wrong type or form";
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expected part comes from the type, never from the input,
            // so the last separator is the real one.
            let Some((unexpected, expected)) = rest.rsplit_once(", expected ") else {
                return GENERIC.to_owned();
            };
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or_default()
                .trim();
            let kind = VALUE_KINDS
                .iter()
                .find(|k| **k == kind)
                .copied()
                .unwrap_or("a value");
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((length, expected)) = rest.split_once(", expected ")
        && length.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("invalid length {length}, expected {expected}");
    }
    for (prefix, what) in [
        ("unknown variant `", "unknown variant"),
        ("unknown field `", "unknown field"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // `name`, expected ... | `name`, there are no ...: the name is
            // the input's; the rest is the type's.
            let Some((name, tail)) = rest
                .rsplit_once("`, expected ")
                .map(|(n, t)| (n, format!(", expected {t}")))
                .or_else(|| {
                    rest.rsplit_once("`, there are no ")
                        .map(|(n, t)| (n, format!(", there are no {t}")))
                })
            else {
                return GENERIC.to_owned();
            };
            // A field name the caller mistyped is what they need to see to fix
            // the request; anything that does not look like a name is cut.
            return if what == "unknown field" && is_field_name(name) {
                format!("{what} `{name}`{tail}")
            } else {
                format!("{what}{tail}")
            };
        }
    }
    for prefix in ["missing field `", "duplicate field `"] {
        // The name is the type's own.
        if let Some(name) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('`'))
            && is_field_name(name)
        {
            return message.to_owned();
        }
    }
    GENERIC.to_owned()
}

/// Whether `name` looks like a field name: short, letters, digits, `_`,
/// `-` and `.` only.
fn is_field_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The error serde_json gives for `body` read as `T`, as a caller sees it.
    fn refused<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        redact_serde(&serde_json::from_str::<T>(body).unwrap_err())
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        value: Option<String>,
        count: Option<u32>,
        scope: Option<Scope>,
        list: Option<[u8; 2]>,
    }

    #[test]
    fn data_errors_name_the_shape_never_the_value() {
        for (body, kept) in [
            (
                r#"{"value": 4111111111111111}"#,
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"value": -42}"#,
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"value": 4.5}"#,
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"value": true}"#,
                "invalid type: boolean, expected a string",
            ),
            (
                r#"{"count": "hunter2"}"#,
                "invalid type: string, expected u32",
            ),
            (
                r#"{"count": "hun\"ter2, expected \"x"}"#,
                "invalid type: string, expected u32",
            ),
            (
                r#"{"count": 99999999999}"#,
                "invalid value: integer, expected u32",
            ),
            (
                r#"{"scope": "hunter2"}"#,
                "unknown variant, expected one of `metadata`",
            ),
            (
                r#"{"scope": "hun`, expected ter2"}"#,
                "unknown variant, expected one of `metadata`",
            ),
            (
                r#"{"list": [1]}"#,
                "invalid length 1, expected an array of length 2",
            ),
            (
                r#"{"valu": "hunter2"}"#,
                "unknown field `valu`, expected one of `value`",
            ),
            (
                r#"{"hunter2 secret": 1}"#,
                "unknown field, expected one of `value`",
            ),
            (
                r#"{"value": "a", "value": "hunter2"}"#,
                "duplicate field `value`",
            ),
        ] {
            let message = refused::<Body>(body);
            assert!(message.starts_with(kept), "{body}: {message}");
            for secret in [
                "hunter2",
                "ter2",
                "4111111111111111",
                "42",
                "4.5",
                "99999999999",
            ] {
                assert!(!message.contains(secret), "{body}: {message}");
            }
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            token: String,
        }
        assert!(refused::<Needs>("{}").starts_with("missing field `token`"));
    }

    #[test]
    fn messages_of_other_forms_are_not_echoed() {
        assert_eq!(
            data_error("bad value hunter2 in field x"),
            "a value has the wrong type or form"
        );
        assert_eq!(
            data_error("invalid type: hunter2 `x`, expected a string"),
            "invalid type: a value, expected a string"
        );
        assert_eq!(
            data_error("missing field `hunter2 x`"),
            "a value has the wrong type or form"
        );
    }
}
