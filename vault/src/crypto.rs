//! Envelope encryption. A root key (only ever in memory) wraps one key per
//! project, which wraps one data key per secret version, which encrypts the
//! value. Every layer is AES-256-GCM with the ids of what it protects as
//! associated data, so a ciphertext copied onto another row fails to open.
//!
//! The root key also derives, deterministically (so every replica and every
//! restart holds the same ones), the audit log's keys: the HMAC key of its
//! chain ([`ChainKey`]) and the Ed25519 key that signs its checkpoints.

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use signet_client::protocol::IdentityKey;
use zeroize::{Zeroize as _, Zeroizing};

const NONCE_LEN: usize = 12;
const ROOT_CHECK_AAD: &[u8] = b"signet:root-check:v1";
const ROOT_CHECK_PLAINTEXT: &[u8] = b"signet root key check value";
/// Domain label of the audit chain's HMAC key.
const AUDIT_CHAIN_LABEL: &[u8] = b"signet audit chain v1";
/// Domain label of the audit checkpoint signing key's seed.
const AUDIT_CHECKPOINT_LABEL: &[u8] = b"signet audit checkpoint v1";

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

    /// A 32-byte key for one purpose: HMAC-SHA256 of `label` under the root
    /// key. Keys of different labels are independent, and none reveals the
    /// root key.
    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hmac_sha256(self.0.0.as_ref(), label))
    }

    /// The HMAC key of the audit chain.
    pub fn audit_chain_key(&self) -> ChainKey {
        ChainKey(self.derive(AUDIT_CHAIN_LABEL))
    }

    /// The Ed25519 key that signs audit checkpoints.
    pub fn audit_checkpoint_key(&self) -> IdentityKey {
        IdentityKey::from_seed(&self.derive(AUDIT_CHECKPOINT_LABEL))
    }
}

/// The audit chain's HMAC key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl ChainKey {
    /// Lower-case hex HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> String {
        hex::encode(hmac_sha256(self.0.as_ref(), message))
    }

    /// Whether `mac` (hex) is the MAC of `message`, compared in constant time.
    pub fn verifies(&self, message: &[u8], mac: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.mac(message);
        expected.len() == mac.len() && bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
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
    fn audit_keys_are_deterministic_per_root_key_and_purpose() {
        let root = RootKey::generate();
        let again = RootKey::parse(root.to_hex().as_bytes()).unwrap();
        let other = RootKey::generate();
        let mac = root.audit_chain_key().mac(b"entry");
        assert_eq!(mac, again.audit_chain_key().mac(b"entry"));
        assert_ne!(mac, other.audit_chain_key().mac(b"entry"));
        assert_ne!(mac, root.audit_chain_key().mac(b"other entry"));
        assert!(root.audit_chain_key().verifies(b"entry", &mac));
        assert!(!other.audit_chain_key().verifies(b"entry", &mac));
        assert!(!root.audit_chain_key().verifies(b"entry", &mac[..63]));
        // RFC 4231 test case 2: the MAC is HMAC-SHA256 itself.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let signer = root.audit_checkpoint_key();
        assert_eq!(
            signer.public_key(),
            again.audit_checkpoint_key().public_key()
        );
        assert_ne!(
            signer.public_key(),
            other.audit_checkpoint_key().public_key()
        );
        // The two purposes never share key material.
        assert_ne!(
            hex::encode(*root.derive(AUDIT_CHAIN_LABEL)),
            hex::encode(*root.derive(AUDIT_CHECKPOINT_LABEL))
        );
    }

    #[test]
    fn a_wrapped_data_key_opens_only_for_its_own_version() {
        let project = Key::generate();
        let data = Key::generate();
        let wrapped = project.wrap(&data, &data_key_aad("p1", "s1", 1)).unwrap();
        assert!(
            project
                .unwrap_key(&wrapped, &data_key_aad("p1", "s1", 1))
                .is_ok()
        );
        for other in [
            data_key_aad("p1", "s1", 2),
            data_key_aad("p1", "s2", 1),
            data_key_aad("p2", "s1", 1),
            value_aad("p1", "s1", 1),
            project_key_aad("p1"),
        ] {
            assert!(project.unwrap_key(&wrapped, &other).is_err());
        }
    }

    #[test]
    fn a_sealed_value_shorter_than_its_nonce_is_refused_not_a_panic() {
        let key = Key::generate();
        for len in [0, 1, NONCE_LEN - 1, NONCE_LEN] {
            assert_eq!(key.open(&vec![7; len], b"ctx").err(), Some(Error::Open));
        }
    }

    #[test]
    fn thirty_two_printable_characters_are_text_not_a_raw_key() {
        // 32 bytes that read as text are parsed as text (and refused: not
        // 64 hex digits, not the base64 of 32 bytes); binary ones are raw.
        assert!(matches!(
            RootKey::parse(b"0123456789abcdef0123456789abcdef"),
            Err(Error::RootKeyFormat(_))
        ));
        let mut raw = [0x80_u8; 32];
        raw[0] = 0xff;
        assert!(RootKey::parse(&raw).is_ok());
        // Base64 that happens to use hex digits only is still base64: 43
        // zeros are the unpadded form of 32 bytes.
        let zeros = "0".repeat(43);
        let from_text = RootKey::parse(zeros.as_bytes()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&zeros)
            .unwrap();
        let check = from_text.check_value().unwrap();
        assert!(RootKey::parse(&bytes).unwrap().matches(&check));
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
