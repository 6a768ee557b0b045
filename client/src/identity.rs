//! Identity files: an Ed25519 private key, the id the vault issued for it,
//! and the vault it belongs to. Written with mode 0600, never world-readable.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::protocol::IdentityKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read identity file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write identity file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path} already exists (refusing to overwrite a key)")]
    Exists { path: PathBuf },
    #[error("identity file {path} is not a Signet identity: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The kind of identity a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A key pair not yet registered with a vault.
    Unregistered,
    Admin,
    Agent,
    Machine,
}

/// A key pair with the id the vault knows it by.
pub struct Identity {
    pub kind: Kind,
    pub id: Option<String>,
    pub vault: Option<String>,
    pub key: IdentityKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vault: Option<String>,
    public_key: String,
    private_key: Zeroizing<String>,
}

impl Identity {
    /// A fresh, unregistered key pair.
    pub fn generate() -> Self {
        Self {
            kind: Kind::Unregistered,
            id: None,
            vault: None,
            key: IdentityKey::generate(),
        }
    }

    /// Reads an identity file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?);
        let invalid = |reason: &str| Error::Invalid {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let disk: OnDisk = serde_json::from_str(&text)
            .map_err(|_| invalid("not valid JSON of the expected shape"))?;
        let seed = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(disk.private_key.as_bytes())
                .map_err(|_| invalid("private_key is not base64url"))?,
        );
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| invalid("private_key is not 32 bytes"))?;
        let key = IdentityKey::from_seed(seed);
        if key.public_key() != disk.public_key {
            return Err(invalid("public_key does not match private_key"));
        }
        Ok(Self {
            kind: disk.kind,
            id: disk.id,
            vault: disk.vault,
            key,
        })
    }

    /// Writes the identity with mode 0600. With `overwrite` false an existing
    /// file is an error, so a registered key is never lost by accident.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let disk = OnDisk {
            kind: self.kind,
            id: self.id.clone(),
            vault: self.vault.clone(),
            public_key: self.key.public_key(),
            private_key: Zeroizing::new(URL_SAFE_NO_PAD.encode(self.key.seed().as_ref())),
        };
        let json =
            Zeroizing::new(
                serde_json::to_string_pretty(&disk).map_err(|e| Error::Invalid {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?,
            );
        if path.exists() && !overwrite {
            return Err(Error::Exists {
                path: path.to_owned(),
            });
        }
        let write_err = |source| Error::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_err)?;
        // Write a private temporary file beside the target and rename it, so a
        // crash never leaves a truncated key behind. The file is new (never
        // one that was already there, or a symlink planted in its place, whose
        // mode or target would then hold the key) and 0600 from its creation.
        let (tmp, mut file) = create_private(dir, path).map_err(write_err)?;
        let written = file
            .write_all(json.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(write_err)
    }
}

/// Creates a new file with mode 0600 beside `path`, under a name no one can
/// predict, and returns its path and handle.
fn create_private(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("identity");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut attempt = 0;
    loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.json");
        let mut identity = Identity::generate();
        identity.kind = Kind::Admin;
        identity.id = Some("ad_1".into());
        identity.save(&path, false).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.id.as_deref(), Some("ad_1"));
        assert_eq!(loaded.kind, Kind::Admin);
        assert_eq!(loaded.key.public_key(), identity.key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            identity.save(&path, false),
            Err(Error::Exists { .. })
        ));
    }

    /// A file already waiting where the old code put its temporary file (a
    /// world-readable leftover, or a symlink an attacker planted) never
    /// receives the key, and the identity file is 0600 all the same.
    #[cfg(unix)]
    #[test]
    fn a_planted_temporary_file_never_receives_the_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let path = dir.path().join("admin.json");
        let leftover = dir.path().join(".admin.json.tmp");
        std::fs::write(&leftover, "").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        let identity = Identity::generate();
        identity.save(&path, false).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&leftover).unwrap(), "");

        let path = dir.path().join("agent.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".agent.json.tmp")).unwrap();
        identity.save(&path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            Identity::load(&path).unwrap().key.public_key(),
            identity.key.public_key()
        );
    }

    #[test]
    fn a_mismatched_public_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        Identity::generate().save(&path, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let other = Identity::generate().key.public_key();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let old = v["public_key"].as_str().unwrap().to_owned();
        std::fs::write(&path, text.replace(&old, &other)).unwrap();
        assert!(matches!(Identity::load(&path), Err(Error::Invalid { .. })));
    }
}
