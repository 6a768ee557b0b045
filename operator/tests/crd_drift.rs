//! Fails when the CRDs committed under `crds/` no longer match the Rust types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

const REGENERATE: &str =
    "run `cargo run -p signet-operator --bin crdgen -- --write crds` from the workspace root";

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let manifests = signet_operator::crd::manifests().unwrap();
    assert_eq!(manifests.len(), 2);
    for manifest in manifests {
        let path = dir.join(&manifest.file_name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); {REGENERATE}", path.display()));
        assert!(
            committed == manifest.yaml,
            "{} is stale; {REGENERATE}",
            path.display()
        );
    }
}
