//! Countries of source addresses, for the country allowlists of machines
//! enrolled with a restricted token.
//!
//! The operator supplies the database (`--geoip-db FILE`): any MaxMind DB
//! file with a `country.iso_code` per network, such as MaxMind's
//! GeoLite2-Country or GeoLite2-City, or DB-IP's IP-to-Country Lite. Signet
//! ships none: these databases have licences and go stale, and a vault
//! without one refuses country allowlists instead of guessing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Largest database read into memory (GeoLite2-City is about 60 MB).
const MAX_DATABASE_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the country database {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the country database {path} is larger than {MAX_DATABASE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a MaxMind DB file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A country database loaded in memory.
pub struct Countries {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for Countries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Countries")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .finish()
    }
}

impl Countries {
    /// Reads the database at `path` and checks its format.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let read = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_DATABASE_BYTES {
            return Err(Error::TooLarge {
                path: path.to_owned(),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Self::from_bytes(bytes, path)
    }

    /// A database from its bytes; `path` only names it in errors and logs.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, Error> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| Error::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            reader,
            path: path.to_owned(),
        })
    }

    /// What the database says it is (`GeoLite2-Country`, ...).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The file the database came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ISO 3166-1 alpha-2 code of the country `ip` is in, upper case;
    /// `None` when the database has no country for it (private ranges,
    /// an IPv6 address in an IPv4-only database, a record without one).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let code: &str = found
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .ok()??;
        is_country_code(code).then(|| code.to_owned())
    }
}

/// True for two ASCII upper-case letters, the shape of an ISO 3166-1
/// alpha-2 code.
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn country_codes_are_two_upper_case_letters() {
        assert!(is_country_code("DE"));
        assert!(!is_country_code("de"));
        assert!(!is_country_code("DEU"));
        assert!(!is_country_code("D"));
        assert!(!is_country_code("D1"));
        assert!(!is_country_code("ÄÖ"));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let error = Countries::from_bytes(b"not a database".to_vec(), Path::new("/x/y.mmdb"))
            .err()
            .unwrap();
        assert!(error.to_string().contains("/x/y.mmdb"), "{error}");
    }

    #[test]
    fn a_missing_file_is_refused_with_its_path() {
        let error = Countries::open(Path::new("/nonexistent/geo.mmdb"))
            .err()
            .unwrap();
        assert!(matches!(error, Error::Read { .. }));
        assert!(error.to_string().contains("/nonexistent/geo.mmdb"));
    }
}
