//! foobar-provision: keep a multi-tier web stack exactly as its repository describes.
//!
//! The pipeline flows one way (see ARCHITECTURE.md):
//! inventory -> roles + templates -> desired state -> facts (SSH) -> plan -> apply.
//! Every stage before the SSH transport is pure and unit-tested.
//!
//! The library is the binary's inside: only what `main` and the integration tests use is
//! public (the CLI, the commands, and the offline input stages).

pub mod apply;
pub mod cli;
pub mod cmd;
pub mod desired;
pub mod diag;
pub mod facts;
pub mod gather;
pub mod inventory;
pub mod ordered_map;
pub mod plan;
pub mod progress;
pub mod render;
pub mod report;
pub mod role;
pub mod rollout;
pub mod secrets;
pub mod shell;
pub mod suggest;
pub mod transport;
