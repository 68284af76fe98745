//! How a run ends, for people and for programs: each host's [`Outcome`] (with an
//! [`ErrorKind`] when it failed), the recap as text or as the typed JSON document
//! ([`Recap`], versioned by its `format_version`), a plan as text, the run as Markdown
//! (pull-request comments, job summaries) and as JUnit XML, and GitHub annotations.
//!
//! Pure: nothing here prints. [`crate::progress`] prints what this module makes.

#[cfg(test)]
pub(crate) mod fixtures;
mod github;
mod junit;
mod markdown;
mod outcome;
mod plan_text;
mod recap;
#[cfg(test)]
pub(crate) mod schema_check;

pub use github::error_annotation;
pub use junit::{JunitHost, junit};
pub use markdown::markdown;
pub use outcome::{ErrorKind, Failure, Interruption, Outcome};
pub use plan_text::plan_text;
pub use recap::{HostEnd, Recap, RunMode, Status, mask_json, outcome_word, recap_text};
