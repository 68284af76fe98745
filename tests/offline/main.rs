//! Offline tests of the real binary and the parsers: plain `cargo test` runs them on any
//! machine (no Docker, no root, no network, no sshd).
//!
//! - [`cli`]: check, render, hosts, error messages and exit codes;
//! - [`corpus`]: every bad input of tests/corpus/ fails cleanly;
//! - [`fuzz_inventory`]: property tests of the inventory and role parsers;
//! - [`habits`]: --limit patterns, --role, --var, --timings, --color, names, the SSH
//!   configuration, identity files, secret commands, completions and man.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod corpus;
mod fuzz_inventory;
mod habits;
