//! Turning a secret the vault returned into the bytes of its files.
//!
//! Exact output, for a plain secret `api-key` = `s3cr'et` and a structured
//! secret `db` = {`user`: `app`, `password`: `pw`}:
//!
//! | format | plain | structured |
//! | --- | --- | --- |
//! | `raw` | `<file>`: `s3cr'et` (verbatim, no newline added) | one file per field, `<file>.<field>`: `<file>.password` = `pw`, `<file>.user` = `app` |
//! | `env` | `<file>`: `API_KEY='s3cr'\''et'` + `\n` | `<file>`: `password='pw'\nuser='app'\n` |
//! | `json` | `<file>`: `"s3cr'et"` | `<file>`: `{"password":"pw","user":"app"}` |
//!
//! - A structured secret in `raw` format is always one file per field, even
//!   when only one field is selected, so a file's name always says which
//!   field it holds and adding a field later never renames a file (this is
//!   also what the CRD documents for users).
//! - `env` names: a field keeps its name, with every character outside
//!   `[A-Za-z0-9_]` replaced by `_` (and `_` prepended before a leading
//!   digit); a plain secret's line is named after the secret, upper-cased the
//!   same way (`api-key` → `API_KEY`). Two fields that map to the same name
//!   are refused. Values are single-quoted with `'` written as `'\''`, so
//!   `. <file>` in a POSIX shell yields the exact value, newlines included.
//! - Fields come out sorted by name. When `fields` in the [`FileSpec`] is not
//!   empty, only those fields are written and each must be present (the
//!   vault only returns granted fields).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use signet_client::api::SecretValue;
use zeroize::Zeroizing;

use crate::contract::{self, FileFormat, FileSpec};

/// Why a secret cannot be written as its [`FileSpec`] asks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{secret} is a plain secret, but fields {fields:?} were asked for")]
    PlainWithFields { secret: String, fields: Vec<String> },
    #[error(
        "field {field:?} of {secret} was not returned by the vault (not granted to this machine, or not in the live version)"
    )]
    MissingField { secret: String, field: String },
    #[error("the vault returned {secret} without a value or fields")]
    Empty { secret: String },
    #[error("fields {first:?} and {second:?} of {secret} both become the env name {name}")]
    EnvNameClash {
        secret: String,
        first: String,
        second: String,
        name: String,
    },
    #[error("field {field:?} of {secret} does not make a safe file name")]
    BadFileName { secret: String, field: String },
}

/// One file to write: a bare name under the mount path and its contents.
pub struct Output {
    pub name: String,
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("name", &self.name)
            .field("bytes", &self.contents.len())
            .finish_non_exhaustive()
    }
}

/// The files `spec` asks for, from the secret the vault returned.
pub fn render(spec: &FileSpec, value: &SecretValue) -> Result<Vec<Output>, Error> {
    let secret = format!("{}/{}", value.project, value.secret);
    if let Some(plain) = &value.value {
        if !spec.fields.is_empty() {
            return Err(Error::PlainWithFields {
                secret,
                fields: spec.fields.clone(),
            });
        }
        let contents = match spec.format {
            FileFormat::Raw => plain.as_bytes().to_vec(),
            FileFormat::Env => env_line(&env_name(&spec.secret, true), plain).into_bytes(),
            FileFormat::Json => json_string(plain),
        };
        return Ok(vec![Output {
            name: spec.file.clone(),
            contents: Zeroizing::new(contents),
        }]);
    }
    let Some(all) = &value.fields else {
        return Err(Error::Empty { secret });
    };
    let fields: BTreeMap<&str, &str> = if spec.fields.is_empty() {
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    } else {
        let mut chosen = BTreeMap::new();
        for field in &spec.fields {
            let value = all.get(field).ok_or_else(|| Error::MissingField {
                secret: secret.clone(),
                field: field.clone(),
            })?;
            chosen.insert(field.as_str(), value.as_str());
        }
        chosen
    };
    match spec.format {
        FileFormat::Raw => fields
            .into_iter()
            .map(|(field, value)| {
                let name = format!("{}.{field}", spec.file);
                if !contract::is_file_name(&name) {
                    return Err(Error::BadFileName {
                        secret: secret.clone(),
                        field: field.to_owned(),
                    });
                }
                Ok(Output {
                    name,
                    contents: Zeroizing::new(value.as_bytes().to_vec()),
                })
            })
            .collect(),
        FileFormat::Env => {
            let mut names: BTreeMap<String, &str> = BTreeMap::new();
            let mut text = Zeroizing::new(String::new());
            for (field, value) in fields {
                let name = env_name(field, false);
                match names.entry(name.clone()) {
                    Entry::Occupied(first) => {
                        return Err(Error::EnvNameClash {
                            secret,
                            first: (*first.get()).to_owned(),
                            second: field.to_owned(),
                            name,
                        });
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(field);
                    }
                }
                text.push_str(&env_line(&name, value));
            }
            Ok(vec![Output {
                name: spec.file.clone(),
                contents: Zeroizing::new(text.as_bytes().to_vec()),
            }])
        }
        FileFormat::Json => {
            let mut text = Zeroizing::new(Vec::new());
            text.push(b'{');
            for (i, (field, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(&json_string(field));
                text.push(b':');
                text.extend_from_slice(&json_string(value));
            }
            text.push(b'}');
            Ok(vec![Output {
                name: spec.file.clone(),
                contents: text,
            }])
        }
    }
}

/// A shell variable name from a field or secret name.
pub fn env_name(name: &str, upper: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    for c in name.chars() {
        out.push(match c {
            'a'..='z' if upper => c.to_ascii_uppercase(),
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        });
    }
    out
}

/// `NAME='value'\n` with `'` inside the value written as `'\''`.
fn env_line(name: &str, value: &str) -> String {
    format!("{name}='{}'\n", value.replace('\'', r"'\''"))
}

/// A JSON string literal; built by hand so no intermediate `serde_json::Value`
/// copy of the secret is left behind un-zeroized.
fn json_string(value: &str) -> Vec<u8> {
    // serde_json escapes exactly as JSON requires; serialising a &str cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(format: FileFormat, fields: &[&str]) -> FileSpec {
        FileSpec {
            secret: "api-key".into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            file: "out".into(),
            format,
        }
    }

    fn plain(value: &str) -> SecretValue {
        SecretValue {
            project: "p".into(),
            secret: "api-key".into(),
            version: 1,
            value: Some(value.into()),
            fields: None,
        }
    }

    fn structured(fields: &[(&str, &str)]) -> SecretValue {
        SecretValue {
            project: "p".into(),
            secret: "db".into(),
            version: 1,
            value: None,
            fields: Some(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }
    }

    fn files(outputs: Vec<Output>) -> Vec<(String, String)> {
        outputs
            .into_iter()
            .map(|o| (o.name, String::from_utf8(o.contents.to_vec()).unwrap()))
            .collect()
    }

    fn one(outputs: Vec<Output>) -> String {
        let mut files = files(outputs);
        assert_eq!(files.len(), 1);
        files.remove(0).1
    }

    #[test]
    fn plain_in_every_format() {
        let v = plain("s3cr'et\nx");
        assert_eq!(
            one(render(&spec(FileFormat::Raw, &[]), &v).unwrap()),
            "s3cr'et\nx"
        );
        assert_eq!(
            one(render(&spec(FileFormat::Env, &[]), &v).unwrap()),
            "API_KEY='s3cr'\\''et\nx'\n"
        );
        assert_eq!(
            one(render(&spec(FileFormat::Json, &[]), &v).unwrap()),
            r#""s3cr'et\nx""#
        );
    }

    #[test]
    fn structured_in_every_format() {
        let v = structured(&[("user", "app"), ("password", "p\"w"), ("db-host", "h")]);
        assert_eq!(
            files(render(&spec(FileFormat::Raw, &[]), &v).unwrap()),
            [
                ("out.db-host".to_owned(), "h".to_owned()),
                ("out.password".to_owned(), "p\"w".to_owned()),
                ("out.user".to_owned(), "app".to_owned()),
            ]
        );
        assert_eq!(
            files(render(&spec(FileFormat::Raw, &["user"]), &v).unwrap()),
            [("out.user".to_owned(), "app".to_owned())]
        );
        assert_eq!(
            one(render(&spec(FileFormat::Env, &["user", "db-host"]), &v).unwrap()),
            "db_host='h'\nuser='app'\n"
        );
        assert_eq!(
            one(render(&spec(FileFormat::Json, &[]), &v).unwrap()),
            r#"{"db-host":"h","password":"p\"w","user":"app"}"#
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            render(&spec(FileFormat::Raw, &["x"]), &plain("v")),
            Err(Error::PlainWithFields { .. })
        ));
        assert!(matches!(
            render(
                &spec(FileFormat::Raw, &["nope"]),
                &structured(&[("a", "1")])
            ),
            Err(Error::MissingField { .. })
        ));
        assert!(matches!(
            render(
                &spec(FileFormat::Env, &[]),
                &structured(&[("a-b", "1"), ("a.b", "2")])
            ),
            Err(Error::EnvNameClash { .. })
        ));
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("api-key", true), "API_KEY");
        assert_eq!(env_name("DB_Pass", false), "DB_Pass");
        assert_eq!(env_name("1x", false), "_1x");
    }
}
