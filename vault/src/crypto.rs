//! Envelope encryption. A root key (only ever in memory) wraps one key per
//! project, which wraps one data key per secret version, which encrypts the
//! value. Every layer is AES-256-GCM with the ids of what it protects as
//! associated data, so a ciphertext copied onto another row fails to open.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore as _;
use zeroize::{Zeroize as _, Zeroizing};

const NONCE_LEN: usize = 12;
const ROOT_CHECK_AAD: &[u8] = b"signet:root-check:v1";
const ROOT_CHECK_PLAINTEXT: &[u8] = b"signet root key check value";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("ciphertext does not open with this key and context")]
    Open,
    #[error("encryption failed")]
    Seal,
    #[error("root key must be 32 bytes, given as 64 hex characters or base64 (got {0})")]
    RootKeyFormat(String),
}

/// A 256-bit symmetric key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct Key(Zeroizing<[u8; 32]>);

impl Key {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    /// Encrypts `plaintext` bound to `aad`: `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref()).map_err(|_| Error::Seal)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens what [`Key::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref()).map_err(|_| Error::Open)?;
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Open)
    }

    /// Wraps `key` under this key.
    pub fn wrap(&self, key: &Key, aad: &[u8]) -> Result<Vec<u8>, Error> {
        self.seal(key.0.as_ref(), aad)
    }

    /// Unwraps a key wrapped by [`Key::wrap`].
    pub fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Key, Error> {
        let bytes = self.open(wrapped, aad)?;
        Key::from_slice(&bytes).ok_or(Error::Open)
    }
}

/// The root key: parsed from its text form, held only in memory.
pub struct RootKey(Key);

impl RootKey {
    /// A fresh root key (for `signet-vault dev` and `signet-vault root-key`).
    pub fn generate() -> Self {
        Self(Key::generate())
    }

    /// Parses 64 hex characters, standard or URL-safe base64 (surrounding
    /// white space ignored), or exactly 32 raw bytes.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        if input.len() == 32 && std::str::from_utf8(input).map_or(true, |s| s.trim().len() != 32) {
            return Key::from_slice(input)
                .map(Self)
                .ok_or_else(|| Error::RootKeyFormat("32 raw bytes".into()));
        }
        let text = std::str::from_utf8(input)
            .map_err(|_| Error::RootKeyFormat(format!("{} bytes of binary", input.len())))?
            .trim();
        let mut decoded = Zeroizing::new(Vec::new());
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            *decoded = hex::decode(text).map_err(|_| Error::RootKeyFormat("bad hex".into()))?;
        } else {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                if let Ok(bytes) = engine.decode(text) {
                    *decoded = bytes;
                    break;
                }
            }
        }
        let key = Key::from_slice(&decoded)
            .ok_or_else(|| Error::RootKeyFormat(format!("{} characters", text.len())));
        decoded.zeroize();
        key.map(Self)
    }

    /// The hex form, for printing once in dev mode.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.0.as_ref()))
    }

    /// A value stored beside the data that opens only under this root key.
    pub fn check_value(&self) -> Result<Vec<u8>, Error> {
        self.0.seal(ROOT_CHECK_PLAINTEXT, ROOT_CHECK_AAD)
    }

    /// True when `check` was made by [`RootKey::check_value`] with this key.
    pub fn matches(&self, check: &[u8]) -> bool {
        self.0
            .open(check, ROOT_CHECK_AAD)
            .is_ok_and(|plain| plain.as_slice() == ROOT_CHECK_PLAINTEXT)
    }

    pub fn key(&self) -> &Key {
        &self.0
    }
}

/// Associated data for a project key wrapped by the root key.
pub fn project_key_aad(project_id: &str) -> Vec<u8> {
    format!("signet:project-key:v1:{project_id}").into_bytes()
}

/// Associated data for a version's data key wrapped by its project key.
pub fn data_key_aad(project_id: &str, secret_id: &str, version: u32) -> Vec<u8> {
    format!("signet:data-key:v1:{project_id}:{secret_id}:{version}").into_bytes()
}

/// Associated data for a version's value encrypted by its data key.
pub fn value_aad(project_id: &str, secret_id: &str, version: u32) -> Vec<u8> {
    format!("signet:value:v1:{project_id}:{secret_id}:{version}").into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_ciphertext_opens_only_in_its_own_context() {
        let key = Key::generate();
        let sealed = key.seal(b"hunter2", &value_aad("p1", "s1", 1)).unwrap();
        assert_eq!(
            key.open(&sealed, &value_aad("p1", "s1", 1))
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
        assert_eq!(
            key.open(&sealed, &value_aad("p1", "s1", 2)).err(),
            Some(Error::Open)
        );
        assert_eq!(
            key.open(&sealed, &value_aad("p2", "s1", 1)).err(),
            Some(Error::Open)
        );
        assert_eq!(
            Key::generate()
                .open(&sealed, &value_aad("p1", "s1", 1))
                .err(),
            Some(Error::Open)
        );
    }

    #[test]
    fn wrapped_keys_round_trip() {
        let root = RootKey::generate();
        let project = Key::generate();
        let wrapped = root.key().wrap(&project, &project_key_aad("p1")).unwrap();
        let back = root
            .key()
            .unwrap_key(&wrapped, &project_key_aad("p1"))
            .unwrap();
        let sealed = project.seal(b"x", b"ctx").unwrap();
        assert_eq!(back.open(&sealed, b"ctx").unwrap().as_slice(), b"x");
        assert!(
            root.key()
                .unwrap_key(&wrapped, &project_key_aad("p2"))
                .is_err()
        );
    }

    #[test]
    fn root_key_forms_parse_and_check_values_tell_keys_apart() {
        let root = RootKey::generate();
        let hex = root.to_hex();
        let parsed = RootKey::parse(format!("  {}\n", hex.as_str()).as_bytes()).unwrap();
        let check = root.check_value().unwrap();
        assert!(parsed.matches(&check));
        assert!(!RootKey::generate().matches(&check));
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(hex::decode(hex.as_str()).unwrap());
        assert!(RootKey::parse(b64.as_bytes()).unwrap().matches(&check));
        assert!(matches!(
            RootKey::parse(b"too short"),
            Err(Error::RootKeyFormat(_))
        ));
    }
}
