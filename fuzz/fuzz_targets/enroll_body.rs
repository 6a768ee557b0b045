//! `POST /v1/enroll` bodies through the real router and pipeline: serde into
//! `EnrollRequest`, the public key, the signature, the hostname and metadata
//! limits, the token, and the machine's creation.
//!
//! Input: the body. `@TOKEN@` stands for the harness's live enrollment
//! token; `@KEY@` for the public key of a fresh key pair, which then signs
//! (so that every valid body enrolls a new machine). Without `@KEY@` the
//! vectors' key signs, so a body naming that key gets past check 4 (and,
//! after its first enrollment, meets `409 conflict`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_client::api::EnrollRequest;
use signet_client::protocol::{ENROLL_KEY_ID, IdentityKey};
use signet_fuzz::{TOKEN_PLACEHOLDER, VAULT, check_answer, vector_key};

const KEY_PLACEHOLDER: &[u8] = b"@KEY@";

/// `data` with every `placeholder` replaced by `value`, and whether there was one.
fn substitute(data: &[u8], placeholder: &[u8], value: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::with_capacity(data.len());
    let mut rest = data;
    let mut found = false;
    while let Some(at) = rest
        .windows(placeholder.len())
        .position(|w| w == placeholder)
    {
        body.extend_from_slice(&rest[..at]);
        body.extend_from_slice(value);
        rest = &rest[at + placeholder.len()..];
        found = true;
    }
    body.extend_from_slice(rest);
    (body, found)
}

fuzz_target!(|data: &[u8]| {
    let vault = &*VAULT;
    let (body, _) = substitute(data, TOKEN_PLACEHOLDER, vault.token.as_bytes());
    let fresh = IdentityKey::generate();
    let (body, fresh_key) = substitute(&body, KEY_PLACEHOLDER, fresh.public_key().as_bytes());
    let key = if fresh_key { fresh } else { vector_key() };
    let (status, reply) = vault.send(&key, ENROLL_KEY_ID, "POST", "/v1/enroll", &body);
    check_answer("enroll", status, &reply, &[&vault.token]);
    if status.is_success() {
        // Only a body of the documented shape, within its limits, enrolls.
        let request: EnrollRequest =
            serde_json::from_slice(&body).expect("an enrolled body parses");
        assert!(request.hostname.len() <= 253);
        assert!(request.metadata.len() <= 32);
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert!(reply["machine_id"].is_string(), "{reply}");
    }
});
