//! The private CA that injected containers trust for the vault's HTTPS.
//!
//! The webhook reads it once at start (`--vault-ca-file`) and hands it to
//! every injected `signet-init` as `SIGNET_CA_PEM`. A CA certificate is
//! public, so an environment variable is fine; a private key is not, so the
//! file must hold certificates and nothing else, and only the re-encoded
//! certificates (no comments, no other text) reach the pods.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls::{
    RootCertStore,
    pki_types::{
        CertificateDer,
        pem::{self, PemObject as _, SectionKind},
    },
};

/// Largest CA file accepted. Its PEM lands in the spec of every injected
/// pod, so a whole OS trust store does not belong there.
pub const MAX_BYTES: u64 = 64 * 1024;

/// Why the CA file is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the vault CA file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_BYTES`].
    #[error("the vault CA file {path} is larger than {MAX_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content is not a PEM bundle of CA certificates.
    #[error("the vault CA file {path} is not a PEM certificate bundle: {reason}")]
    NotCertificates {
        /// The file.
        path: PathBuf,
        /// What is wrong, without the file's content.
        reason: Reason,
    },
}

/// What is wrong with the content of the CA file.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// Malformed PEM.
    #[error("{0}")]
    Pem(pem::Error),
    /// A section other than `CERTIFICATE` (a private key would otherwise be
    /// copied into every pod).
    #[error("it holds a {0:?} section; only CERTIFICATE sections are allowed")]
    NotCertificate(SectionKind),
    /// Text that looks like a private key the PEM parser skipped.
    #[error("it holds a private key; only CERTIFICATE sections are allowed")]
    PrivateKey,
    /// No certificate at all.
    #[error("it holds no -----BEGIN CERTIFICATE----- section")]
    Empty,
    /// A certificate that cannot be a trust anchor.
    #[error("certificate {index} is invalid: {source}")]
    Invalid {
        /// 1-based position in the file.
        index: usize,
        /// Why webpki refused it.
        source: rustls::Error,
    },
}

/// Reads and checks the CA file at `path`; returns the certificates
/// re-encoded as PEM, ready for `SIGNET_CA_PEM`.
pub fn load(path: &Path) -> Result<String, Error> {
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells "exactly at the cap" from "over it".
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
        });
    }
    parse(&bytes).map_err(|reason| Error::NotCertificates {
        path: path.to_owned(),
        reason,
    })
}

/// Checks that `bytes` is a PEM bundle of one or more certificates usable as
/// trust anchors and returns them re-encoded (64-column base64, one block
/// per certificate, nothing else).
pub fn parse(bytes: &[u8]) -> Result<String, Reason> {
    if bytes
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(Reason::PrivateKey);
    }
    let mut roots = RootCertStore::empty();
    let mut out = String::new();
    for (index, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes).enumerate() {
        let (kind, der) = section.map_err(Reason::Pem)?;
        if kind != SectionKind::Certificate {
            return Err(Reason::NotCertificate(kind));
        }
        out.push_str(&encode(&der));
        roots
            .add(CertificateDer::from(der))
            .map_err(|source| Reason::Invalid {
                index: index + 1,
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(Reason::Empty);
    }
    Ok(out)
}

fn encode(der: &[u8]) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII, so splitting bytes never splits a character.
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::webhook::certs;

    fn issued() -> certs::ServingCert {
        certs::generate(
            "vault",
            "signet-system",
            &[],
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_ca_bundle_and_keeps_only_the_certificates() {
        let certs = issued();
        let text = format!(
            "# our private CA\n{}subject=whatever\n{}",
            certs.ca_pem, certs.cert_pem
        );
        let pem = parse(text.as_bytes()).unwrap();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        assert!(!pem.contains('#') && !pem.contains("subject="));
        // Re-encoding is lossless.
        let der: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            der[0],
            CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).unwrap()
        );
        assert_eq!(parse(pem.as_bytes()).unwrap(), pem);
    }

    #[test]
    fn refuses_keys_garbage_and_nothing() {
        let certs = issued();
        let with_key = format!("{}{}", certs.ca_pem, certs.key_pem());
        assert!(matches!(
            parse(with_key.as_bytes()),
            Err(Reason::PrivateKey)
        ));
        assert!(matches!(parse(b""), Err(Reason::Empty)));
        assert!(matches!(parse(b"hello"), Err(Reason::Empty)));
        let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse(not_der.as_bytes()),
            Err(Reason::Invalid { index: 1, .. })
        ));
    }

    #[test]
    fn load_caps_the_size_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let error = load(&missing).unwrap_err();
        assert!(matches!(error, Error::Read { .. }));
        assert!(error.to_string().contains("missing.crt"));

        let big = dir.path().join("big.crt");
        let mut text = issued().ca_pem;
        while (text.len() as u64) <= MAX_BYTES {
            text.push_str("# padding padding padding padding padding padding\n");
        }
        std::fs::write(&big, &text).unwrap();
        assert!(matches!(load(&big), Err(Error::TooLarge { .. })));

        let ok = dir.path().join("ca.crt");
        std::fs::write(&ok, issued().ca_pem).unwrap();
        assert_eq!(load(&ok).unwrap().matches("BEGIN CERTIFICATE").count(), 1);
    }
}
