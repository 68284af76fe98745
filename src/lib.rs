//! foobar-provision: keep a multi-tier web stack exactly as its repository describes.
//!
//! The pipeline flows one way (see ARCHITECTURE.md):
//! inventory -> roles + templates -> desired state -> facts (SSH) -> plan -> apply.
//! Every stage before [`transport`] is pure and unit-tested.

pub mod apply;
pub mod cli;
pub mod desired;
pub mod diag;
pub mod facts;
pub mod inventory;
pub mod ordered_map;
pub mod output;
pub mod plan;
pub mod render;
pub mod role;
pub mod run;
pub mod secrets;
pub mod shell;
pub mod suggest;
pub mod transport;
