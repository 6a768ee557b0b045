//! The canonical message of docs/protocol.md: its seven lines, and signing
//! then parsing then verifying a request made of the fuzzed fields.
//!
//! Input: method, target, body, timestamp, nonce and key id separated by NUL
//! bytes (the body may be any bytes; the other fields must be UTF-8).

#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_client::protocol::{
    ParsedHeaders, PublicKey, VERSION_TAG, body_hash, canonical_message,
};
use signet_fuzz::{VECTOR_PUBLIC_KEY, vector_key};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(6, |&b| b == 0);
    let (Some(method), Some(target), Some(body), Some(timestamp), Some(nonce), Some(key_id)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return;
    };
    let text = |b| std::str::from_utf8(b).ok();
    let (Some(method), Some(target), Some(timestamp), Some(nonce), Some(key_id)) = (
        text(method),
        text(target),
        text(timestamp),
        text(nonce),
        text(key_id),
    ) else {
        return;
    };

    let message = canonical_message(method, target, body, timestamp, nonce, key_id);
    let hash = body_hash(body);
    assert_eq!(hash.len(), 64);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(message.starts_with("signet-v1\n"));

    // Without a newline in a field, the message is exactly its seven lines.
    let single_lines = [method, target, timestamp, nonce, key_id]
        .iter()
        .all(|f| !f.contains('\n'));
    if single_lines {
        let lines: Vec<&str> = message.split('\n').collect();
        let upper = method.to_ascii_uppercase();
        assert_eq!(
            lines,
            [VERSION_TAG, &upper, target, &hash, timestamp, nonce, key_id]
        );
    }

    // Signed with the vectors' key: headers the parser accepts verify for
    // this request and no other.
    let key = vector_key();
    let signature = key.sign(message.as_bytes());
    let Ok(parsed) =
        ParsedHeaders::parse(Some(key_id), Some(timestamp), Some(nonce), Some(&signature))
    else {
        return;
    };
    let public = PublicKey::parse(VECTOR_PUBLIC_KEY).unwrap();
    assert!(parsed.verify(&public, method, target, body).is_ok());
    let mut other_body = body.to_vec();
    other_body.push(b'x');
    assert!(parsed.verify(&public, method, target, &other_body).is_err());
    assert!(
        parsed
            .verify(&public, method, &format!("{target}x"), body)
            .is_err()
    );
    assert!(
        parsed
            .verify(&public, &format!("{method}X"), target, body)
            .is_err()
    );
});
