//! End to end, against the five-host lab (real OpenSSH, systemd, HAProxy, keepalived,
//! Nginx, MariaDB and the app in containers). Opt-in: every test is
//! `#[ignore = "needs the lab"]`; `tests/run` prepares the engine, the image and the lab,
//! then runs each module here in turn (`cargo test --test e2e -- --ignored MODULE::`).
//!
//! The tests share one converged lab and take turns on it (a lock); each one leaves it
//! converged with the repository's inventory, resetting only what it changed.

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod basics;
mod firewall;
mod monitoring;
mod paths;
mod release;
mod replica;
mod reviewed;
mod rolling;
mod safety;
mod stack;
mod tls;
mod vrrp;
