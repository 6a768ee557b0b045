//! The four `Signet-*` header values, parsed as the vault parses them
//! (check 1 of docs/protocol.md), then verified against the first request
//! of docs/protocol-vectors.json.
//!
//! Input: the values of Signet-Key, Signet-Timestamp, Signet-Nonce and
//! Signet-Signature, one per line; a missing line is a missing header.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use signet_client::protocol::{KEY_ID_MAX_LEN, ParsedHeaders, PublicKey};
use signet_fuzz::VECTOR_PUBLIC_KEY;

/// The first vector: the only headers that verify for its request.
const KEY_ID: &str = "m_01HZX3K6Q8J9V2T4N5P7R8S9W0";
const TIMESTAMP: &str = "1700000000";
const NONCE: &str = "BwcHBwcHBwcHBwcHBwcHBw";
const SIGNATURE: &str =
    "M-eZeckHOKb6xOlDRqpEBxin4dmjDU8qBxY38O8m0duUsqX28bpodB20qCphp_WFSrM-EempcnchmnsNBCwTCg";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (key_id, timestamp, nonce, signature) =
        (lines.next(), lines.next(), lines.next(), lines.next());
    let Ok(parsed) = ParsedHeaders::parse(key_id, timestamp, nonce, signature) else {
        return;
    };
    let (key_id, timestamp, nonce, signature) = (
        key_id.unwrap_or_default(),
        timestamp.unwrap_or_default(),
        nonce.unwrap_or_default(),
        signature.unwrap_or_default(),
    );

    // What was accepted is what the protocol allows.
    assert!(!key_id.is_empty() && key_id.len() <= KEY_ID_MAX_LEN);
    assert!(
        key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    assert_eq!(parsed.key_id, key_id);
    // Decimal, no sign, no leading zeros: the text is the number's one spelling.
    assert_eq!(parsed.timestamp.to_string(), timestamp);
    let nonce_bytes = URL_SAFE_NO_PAD.decode(nonce).unwrap();
    assert!((16..=64).contains(&nonce_bytes.len()));
    assert_eq!(URL_SAFE_NO_PAD.encode(&nonce_bytes), nonce);
    let signature_bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert_eq!(signature_bytes.len(), 64);
    // Strict, canonical base64: one spelling per signature.
    assert_eq!(URL_SAFE_NO_PAD.encode(&signature_bytes), signature);

    // No malleability: over the vector's request, only the vector's own
    // headers verify.
    let key = PublicKey::parse(VECTOR_PUBLIC_KEY).unwrap();
    let verified = parsed
        .verify(&key, "GET", "/v1/secrets/payments/stripe-key", b"")
        .is_ok();
    let is_vector =
        key_id == KEY_ID && timestamp == TIMESTAMP && nonce == NONCE && signature == SIGNATURE;
    assert_eq!(verified, is_vector, "verification of {text:?}");
});
