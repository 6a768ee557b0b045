//! `PUT /v1/projects/shop/secrets/fuzzed` bodies, as the first admin,
//! through the real router and pipeline: serde into `WriteSecret`, the
//! "exactly one of value and fields" rule, the field names, encryption. A
//! version that was written must read back, as the machine granted the
//! whole secret, exactly as it was sent.
//!
//! Input: the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signet_client::api::{SecretValue, WriteSecret};
use signet_fuzz::{VAULT, check_answer};

const TARGET: &str = "/v1/projects/shop/secrets/fuzzed";

fuzz_target!(|data: &[u8]| {
    let vault = &*VAULT;
    let sent: Option<WriteSecret> = serde_json::from_slice(data).ok();
    // The values sent; a value that is also a field name may be quoted as
    // the name.
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(sent) = &sent {
        secrets.extend(sent.value.as_deref());
        if let Some(fields) = &sent.fields {
            secrets.extend(
                fields
                    .values()
                    .filter(|v| !fields.contains_key(*v))
                    .map(String::as_str),
            );
        }
    }
    let (status, reply) = vault.send(&vault.admin.key, &vault.admin.id, "PUT", TARGET, data);
    check_answer("write", status, &reply, &secrets);
    if !status.is_success() {
        return;
    }
    let sent = sent.expect("a written body parses");
    let meta: Value = serde_json::from_slice(&reply).unwrap();
    // Metadata only: names, versions, field names; never a value.
    assert!(meta.get("value").is_none());
    assert!(meta["fields"].is_null() || meta["fields"].is_array());
    let version = meta["live_version"].as_u64().unwrap();

    let (status, reply) = vault.send(
        &vault.machine.key,
        &vault.machine.id,
        "GET",
        "/v1/secrets/shop/fuzzed",
        b"",
    );
    assert!(status.is_success(), "read back: {status}");
    let read: SecretValue = serde_json::from_slice(&reply).unwrap();
    assert_eq!(u64::from(read.version), version);
    assert!(
        read.value == sent.value,
        "the plain value reads back changed"
    );
    assert!(read.fields == sent.fields, "the fields read back changed");
});
