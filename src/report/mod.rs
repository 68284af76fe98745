//! How a run ends, for people and for programs: each host's [`Outcome`] (with an
//! [`ErrorKind`] when it failed), the recap as text or as the typed JSON document
//! ([`Recap`], versioned by its `format_version`), and a plan as text.
//!
//! Pure: nothing here prints. [`crate::progress`] prints what this module makes.

mod outcome;
mod plan_text;
mod recap;

pub use outcome::{ErrorKind, Failure, Interruption, Outcome};
pub use plan_text::plan_text;
pub use recap::{HostEnd, Recap, RunMode, Status, outcome_word, recap_text};
