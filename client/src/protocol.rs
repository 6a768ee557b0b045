//! The Signet wire protocol, version 1 (`docs/protocol.md`).
//!
//! Signing lives here once: the SDK, the CLI, `signet-init` and the vault's
//! verifier all call these functions, and the unit tests below reproduce the
//! test vectors of `docs/protocol-vectors.json` byte for byte.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Header carrying the identity's id, or [`ENROLL_KEY_ID`].
pub const HEADER_KEY: &str = "signet-key";
/// Header carrying the Unix time in whole seconds.
pub const HEADER_TIMESTAMP: &str = "signet-timestamp";
/// Header carrying the one-time nonce.
pub const HEADER_NONCE: &str = "signet-nonce";
/// Header carrying the Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "signet-signature";
/// The key id a client sends on `POST /v1/enroll`.
pub const ENROLL_KEY_ID: &str = "enroll";
/// First line of every canonical message.
pub const VERSION_TAG: &str = "signet-v1";

const NONCE_MIN_BYTES: usize = 16;
const NONCE_MAX_BYTES: usize = 64;
/// Longest key id the protocol accepts.
pub const KEY_ID_MAX_LEN: usize = 128;

/// Why a set of signature headers or a key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("public key is not 32 bytes of base64url")]
    MalformedPublicKey,
    #[error("public key is not a valid Ed25519 point")]
    InvalidPublicKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 private key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key whose RFC 8032 seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for writing to a key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half, as it travels: base64url without padding.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.verifying_key().as_bytes())
    }

    /// Signs `message`, returning the signature as it travels.
    pub fn sign(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.0.sign(message).to_bytes())
    }
}

/// A verified-shape Ed25519 public key (not small order, canonical).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses the base64url form, refusing anything that is not a canonical,
    /// non-small-order point.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Error::MalformedPublicKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| Error::MalformedPublicKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| Error::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(Error::InvalidPublicKey);
        }
        Ok(Self(key))
    }

    /// The base64url form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Strict verification (`verify_strict`) of `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
        let signature = Signature::from_bytes(signature);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// Lower-case hex SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The seven-line canonical message of `docs/protocol.md`.
pub fn canonical_message(
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: &str,
    nonce: &str,
    key_id: &str,
) -> String {
    [
        VERSION_TAG,
        &method.to_ascii_uppercase(),
        target,
        &body_hash(body),
        timestamp,
        nonce,
        key_id,
    ]
    .join("\n")
}

/// A fresh nonce: 16 random bytes, base64url.
pub fn fresh_nonce() -> String {
    let mut bytes = [0u8; NONCE_MIN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The four header values of one signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub key_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// `(name, value)` pairs ready to put on a request.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_KEY, &self.key_id),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// Signs one request with an explicit timestamp and nonce (the test vectors
/// use this; callers normally use [`sign_now`]).
pub fn sign(
    key: &IdentityKey,
    key_id: &str,
    method: &str,
    target: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> SignedHeaders {
    let timestamp = timestamp.to_string();
    let message = canonical_message(method, target, body, &timestamp, nonce, key_id);
    SignedHeaders {
        key_id: key_id.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: key.sign(message.as_bytes()),
    }
}

/// Signs one request with the current time and a fresh nonce.
pub fn sign_now(
    key: &IdentityKey,
    key_id: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> SignedHeaders {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    sign(key, key_id, method, target, body, now, &fresh_nonce())
}

/// The four headers of a request, parsed: every field is well formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedHeaders {
    pub key_id: String,
    pub timestamp: u64,
    timestamp_text: String,
    pub nonce: String,
    signature: [u8; 64],
}

impl ParsedHeaders {
    /// Parses the raw header values (`None` where a header is absent).
    pub fn parse(
        key_id: Option<&str>,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Self, Error> {
        let key_id = key_id.ok_or(Error::MissingHeader(HEADER_KEY))?;
        let timestamp_text = timestamp.ok_or(Error::MissingHeader(HEADER_TIMESTAMP))?;
        let nonce = nonce.ok_or(Error::MissingHeader(HEADER_NONCE))?;
        let signature = signature.ok_or(Error::MissingHeader(HEADER_SIGNATURE))?;

        let key_id_ok = !key_id.is_empty()
            && key_id.len() <= KEY_ID_MAX_LEN
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_id_ok {
            return Err(Error::MalformedHeader(HEADER_KEY));
        }

        let timestamp = parse_timestamp(timestamp_text)?;

        let nonce_len = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| Error::MalformedHeader(HEADER_NONCE))?
            .len();
        if !(NONCE_MIN_BYTES..=NONCE_MAX_BYTES).contains(&nonce_len) {
            return Err(Error::MalformedHeader(HEADER_NONCE));
        }

        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(Error::MalformedHeader(HEADER_SIGNATURE))?;

        Ok(Self {
            key_id: key_id.to_owned(),
            timestamp,
            timestamp_text: timestamp_text.to_owned(),
            nonce: nonce.to_owned(),
            signature,
        })
    }

    /// Verifies the signature over the request with `key`.
    pub fn verify(
        &self,
        key: &PublicKey,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(), Error> {
        let message = canonical_message(
            method,
            target,
            body,
            &self.timestamp_text,
            &self.nonce,
            &self.key_id,
        );
        key.verify(message.as_bytes(), &self.signature)
    }
}

/// Decimal ASCII, no sign, no leading zeros.
fn parse_timestamp(text: &str) -> Result<u64, Error> {
    let malformed = Error::MalformedHeader(HEADER_TIMESTAMP);
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(malformed);
    }
    text.parse().map_err(|_| malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        seed_hex: String,
        public_key: String,
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        method: String,
        target: String,
        body: String,
        timestamp: String,
        nonce: String,
        key_id: String,
        canonical: String,
        signature: String,
    }

    /// The vectors as the repository carries them.
    const VECTORS: &str = include_str!("../../docs/protocol-vectors.json");

    fn vectors() -> Vectors {
        serde_json::from_str(VECTORS).expect("vectors parse")
    }

    /// Where a checkout beside the shared design folder finds the original
    /// vectors. The repository builds and tests without it; while it exists,
    /// the copy in `docs/` must not drift from it.
    const SHARED_VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/protocol-vectors.json"
    );

    #[test]
    fn vectors_match_the_shared_original_when_present() {
        let shared = match std::fs::read(SHARED_VECTORS) {
            Ok(bytes) => bytes,
            // Only a missing file means "standing alone"; any other failure
            // (a directory, no permission) must not pass for a match.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => panic!("cannot read {SHARED_VECTORS}: {error}"),
        };
        assert!(
            shared == VECTORS.as_bytes(),
            "docs/protocol-vectors.json differs from {SHARED_VECTORS}: copy it again byte for byte"
        );
    }

    fn vector_key(v: &Vectors) -> IdentityKey {
        let seed: [u8; 32] = hex::decode(&v.seed_hex)
            .expect("hex seed")
            .try_into()
            .expect("32 bytes");
        IdentityKey::from_seed(&seed)
    }

    #[test]
    fn reproduces_every_vector_when_signing() {
        let v = vectors();
        let key = vector_key(&v);
        assert_eq!(key.public_key(), v.public_key);
        assert_eq!(v.vectors.len(), 3);
        for vector in &v.vectors {
            let canonical = canonical_message(
                &vector.method,
                &vector.target,
                vector.body.as_bytes(),
                &vector.timestamp,
                &vector.nonce,
                &vector.key_id,
            );
            assert_eq!(canonical, vector.canonical, "{}", vector.target);
            let timestamp: u64 = vector.timestamp.parse().expect("timestamp");
            let signed = sign(
                &key,
                &vector.key_id,
                &vector.method,
                &vector.target,
                vector.body.as_bytes(),
                timestamp,
                &vector.nonce,
            );
            assert_eq!(signed.signature, vector.signature, "{}", vector.target);
            assert_eq!(signed.timestamp, vector.timestamp);
        }
    }

    #[test]
    fn verifies_every_vector_and_rejects_any_change() {
        let v = vectors();
        let public = PublicKey::parse(&v.public_key).expect("public key");
        for vector in &v.vectors {
            let parsed = ParsedHeaders::parse(
                Some(&vector.key_id),
                Some(&vector.timestamp),
                Some(&vector.nonce),
                Some(&vector.signature),
            )
            .expect("headers parse");
            let body = vector.body.as_bytes();
            parsed
                .verify(&public, &vector.method, &vector.target, body)
                .expect("vector verifies");
            let other_target = format!("{}x", vector.target);
            assert_eq!(
                parsed.verify(&public, &vector.method, &other_target, body),
                Err(Error::BadSignature)
            );
            assert_eq!(
                parsed.verify(&public, "PUT", &vector.target, body),
                Err(Error::BadSignature)
            );
            assert_eq!(
                parsed.verify(&public, &vector.method, &vector.target, b"tampered"),
                Err(Error::BadSignature)
            );
        }
    }

    #[test]
    fn timestamps_must_be_plain_decimal() {
        for bad in ["", "+1700000000", "-1", "01700000000", "17e8", " 1", "1.0"] {
            assert_eq!(
                parse_timestamp(bad),
                Err(Error::MalformedHeader(HEADER_TIMESTAMP)),
                "{bad:?}"
            );
        }
        assert_eq!(parse_timestamp("0"), Ok(0));
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
    }

    #[test]
    fn nonce_length_is_bounded() {
        let sig = URL_SAFE_NO_PAD.encode([0u8; 64]);
        let parse =
            |nonce: &str| ParsedHeaders::parse(Some("m_1"), Some("1"), Some(nonce), Some(&sig));
        assert!(parse(&URL_SAFE_NO_PAD.encode([1u8; 15])).is_err());
        assert!(parse(&URL_SAFE_NO_PAD.encode([1u8; 16])).is_ok());
        assert!(parse(&URL_SAFE_NO_PAD.encode([1u8; 64])).is_ok());
        assert!(parse(&URL_SAFE_NO_PAD.encode([1u8; 65])).is_err());
        assert!(parse("not base64!").is_err());
    }

    #[test]
    fn missing_headers_are_named() {
        assert_eq!(
            ParsedHeaders::parse(None, Some("1"), Some("x"), Some("y")),
            Err(Error::MissingHeader(HEADER_KEY))
        );
        assert_eq!(
            ParsedHeaders::parse(Some("m_1"), Some("1"), Some("x"), None),
            Err(Error::MissingHeader(HEADER_SIGNATURE))
        );
    }

    #[test]
    fn small_order_public_keys_are_refused() {
        // The identity point: a small-order key that would accept forged signatures
        // under non-strict verification.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::parse(&URL_SAFE_NO_PAD.encode(identity)),
            Err(Error::InvalidPublicKey)
        );
        assert_eq!(PublicKey::parse("short"), Err(Error::MalformedPublicKey));
    }

    proptest::proptest! {
        #[test]
        fn a_signature_verifies_only_its_own_request(
            target in "/[a-z0-9/?=&]{0,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            flip in 0usize..256,
        ) {
            let key = IdentityKey::generate();
            let public = PublicKey::parse(&key.public_key()).expect("own key");
            let signed = sign(&key, "m_test", "POST", &target, &body, 1_700_000_000, &fresh_nonce());
            let parsed = ParsedHeaders::parse(
                Some(&signed.key_id), Some(&signed.timestamp), Some(&signed.nonce), Some(&signed.signature),
            ).expect("parse");
            proptest::prop_assert!(parsed.verify(&public, "POST", &target, &body).is_ok());
            let mut changed = body.clone();
            if changed.is_empty() { changed.push(0) } else { let i = flip % changed.len(); changed[i] ^= 1; }
            proptest::prop_assert!(parsed.verify(&public, "POST", &target, &changed).is_err());
        }
    }
}
