//! `signet-rotator`: the rotation agent. It runs near the databases as a
//! machine identity that a rotation config names as its agent, and loops:
//!
//! 1. claim a job (`POST /v1/machine/rotations/claim`, signed like every
//!    machine request);
//! 2. **apply**: create the new credential beside the live one (which keeps
//!    working), open a fresh connection with it and run a query; report
//!    `confirmed`, or `apply_failed` / `verify_failed` after removing what
//!    it created;
//! 3. **retire**: once the new credential is live and the grace is over,
//!    remove the previous one and report `retired`.
//!
//! The vault promotes the new credential only on `confirmed`. A credential
//! is never logged, and a database's error text is scrubbed of every
//! credential before it goes into a report.
//!
//! Exit codes: 0 after a graceful shutdown (or `--once`), 1 on a bad
//! configuration (identity file, vault address), 2 when `--once` could not
//! reach the vault or report.

pub mod agent;
pub mod cli;
pub mod provider;
