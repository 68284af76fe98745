//! foobar-provision: keep a multi-tier web stack exactly as its repository describes.
//!
//! The pipeline flows one way (see ARCHITECTURE.md):
//! inventory -> roles + templates -> desired state -> facts (SSH) -> plan -> apply.
//! Every stage before the SSH transport is pure and unit-tested.
//!
//! The library is the binary's inside: only what `main` and the integration tests use is
//! public (the CLI, the commands, and the offline input stages).

mod apply;
mod backup;
pub mod cli;
pub mod cmd;
mod desired;
pub mod diag;
mod drain;
mod facts;
mod gather;
pub mod inventory;
mod monitoring;
mod ordered_map;
mod pattern;
mod pki;
mod plan;
mod plan_file;
mod progress;
mod release;
mod render;
mod replica;
mod report;
pub mod role;
mod rollout;
mod secrets;
mod shell;
mod suggest;
mod timings;
mod trace;
mod transport;
