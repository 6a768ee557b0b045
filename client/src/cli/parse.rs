//! Parsers for argument text shared by several nouns.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;

use crate::api::TimeWindow;

/// `PROJECT/SECRET` into its two names.
pub(super) fn split_path(path: &str) -> anyhow::Result<(&str, &str)> {
    path.split_once('/')
        .filter(|(p, s)| !p.is_empty() && !s.is_empty() && !s.contains('/'))
        .with_context(|| format!("{path:?} is not PROJECT/SECRET"))
}

/// `DAYS@HH:MM-HH:MM` or `HH:MM-HH:MM`.
pub(super) fn parse_window(text: &str) -> Result<TimeWindow, String> {
    let (days, hours) = text.split_once('@').unwrap_or(("*", text));
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| "a window is DAYS@HH:MM-HH:MM, e.g. mon,fri@09:00-17:00".to_owned())?;
    let days = if days == "*" {
        Vec::new()
    } else {
        days.split(',').map(|d| d.trim().to_owned()).collect()
    };
    Ok(TimeWindow {
        days,
        start: start.to_owned(),
        end: end.to_owned(),
    })
}

/// A whole text file; the error names the file, never its content.
pub(super) fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// All of standard input.
pub(super) fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_two_non_empty_names() {
        assert_eq!(split_path("app/db").unwrap(), ("app", "db"));
        for bad in ["app", "app/", "/db", "app/db/x", ""] {
            assert!(split_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_window_without_days_is_every_day() {
        let window = parse_window("09:00-17:00").unwrap();
        assert!(window.days.is_empty());
        assert_eq!(
            (window.start.as_str(), window.end.as_str()),
            ("09:00", "17:00")
        );
        let window = parse_window("mon, tue@08:00-12:00").unwrap();
        assert_eq!(window.days, ["mon", "tue"]);
        assert!(parse_window("9to5").is_err());
    }
}
