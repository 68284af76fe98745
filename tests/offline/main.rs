//! Offline tests of the real binary and the parsers: plain `cargo test` runs them on any
//! machine (no Docker, no network). Those that plan and apply for real use a private sshd
//! on loopback and need root and /usr/sbin/sshd; without them they skip, saying so.
//!
//! - [`cli`]: check, render, hosts, error messages, exit codes, reports without a host;
//! - [`reviewed`]: the confirmation (on a pseudo-terminal), saved plans applied or refused
//!   as stale, Markdown, JUnit and the JSON schemas, against a private sshd;
//! - [`corpus`]: every bad input of tests/corpus/ fails cleanly;
//! - [`fuzz_inventory`]: property tests of the inventory and role parsers;
//! - [`habits`]: --limit patterns, --role, --var, --timings, --color, names, the SSH
//!   configuration, identity files, secret commands, completions and man.

#[path = "../support/mod.rs"]
mod support;

/// The JSON Schema checker the unit tests use too.
#[path = "../../src/report/schema_check.rs"]
mod schema_check;

mod cli;
mod corpus;
mod fuzz_inventory;
mod habits;
mod reviewed;
