//! What the vault does, one module per area. Each operation runs inside the
//! request's transaction with a verified caller (see [`crate::vault`]).

pub mod access;
pub mod attest;
pub mod audit;
pub mod canary;
pub mod clusters;
pub mod cosign;
pub mod delegations;
pub mod enroll;
pub mod grants;
pub mod identities;
pub mod lifecycle;
pub mod rotation;
pub mod secrets;
pub mod webhooks;

use crate::error::{Result, invalid};

/// Project and secret names: lower-case, digits, `.`, `_`, `-`; 1 to 63
/// characters, starting with a letter or digit. Safe in a URL path and a
/// file name without escaping.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} name {name:?} must be 1 to 63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )))
    }
}

/// Field names may also hold upper case, so they can be environment names.
pub fn check_field_name(name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "field name {name:?} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'"
        )))
    }
}

/// Human names of admins and agents.
pub fn check_display_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(invalid("name must be 1 to 128 printable characters"));
    }
    Ok(())
}
