//! Identifier prefixes. The prefix of a key id names its identity class, so
//! the read path never has to look outside the machines table.

pub const ADMIN: &str = "ad_";
pub const AGENT: &str = "ag_";
pub const MACHINE: &str = "m_";
pub const PROJECT: &str = "p_";
pub const SECRET: &str = "s_";
pub const GRANT: &str = "g_";
pub const TOKEN: &str = "et_";
pub const BOOTSTRAP: &str = "bt_";
pub const COSIGN: &str = "cs_";
pub const WEBHOOK: &str = "wh_";
pub const DELEGATION: &str = "dg_";

/// A new unique id with `prefix` (a ULID: sortable by creation time).
pub fn new(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new())
}
