//! Duration strings as they appear in the CRDs (`"24h"`, `"5m"`, `"1h30m"`).
//!
//! The CRD schema restricts these fields to [`PATTERN`] so the apiserver
//! rejects nonsense before it reaches us; [`parse`] is the one place that turns
//! the string into a [`Duration`], shared by the webhook and the controller.

use std::time::Duration;

/// Regular expression every duration field in the CRDs must match: one or more
/// `<integer><unit>` groups with units `ms`, `s`, `m`, `h` or `d`.
///
/// Deliberately narrower than what humantime accepts (no spaces, no long unit
/// names) so that the schema, the docs and the parser agree on one spelling.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// A duration field that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The string is not a duration at all.
    #[error("invalid duration {input:?}: {source}")]
    Invalid {
        /// The rejected input.
        input: String,
        /// Why humantime rejected it.
        #[source]
        source: humantime::DurationError,
    },
    /// The string parses but is zero, which no field accepts.
    #[error("duration {0:?} must be greater than zero")]
    Zero(String),
}

/// Parses a duration field such as `"24h"` or `"1h30m"`; zero is rejected.
pub fn parse(input: &str) -> Result<Duration, Error> {
    let duration = humantime::parse_duration(input).map_err(|source| Error::Invalid {
        input: input.to_owned(),
        source,
    })?;
    if duration.is_zero() {
        return Err(Error::Zero(input.to_owned()));
    }
    Ok(duration)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_forms() {
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(24 * 3600));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(2 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_garbage_and_zero() {
        assert!(matches!(parse("soon"), Err(Error::Invalid { .. })));
        assert!(matches!(parse(""), Err(Error::Invalid { .. })));
        assert!(matches!(parse("0s"), Err(Error::Zero(_))));
    }
}
