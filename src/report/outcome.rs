//! How one host ended: [`Outcome`], and for a failure its [`ErrorKind`].

use serde::Serialize;
use std::fmt;

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing needed changing.
    Ok,
    /// Changes were made (apply) or would be made (plan): their count.
    Changed(usize),
    /// The run failed on this host.
    Failed(Failure),
    /// No connection, or it broke.
    Unreachable(Failure),
    /// Stopped by Ctrl-C before everything was applied.
    Interrupted(Interruption),
    /// Never started, and why (an earlier tier or the lb peer failed).
    Skipped(String),
}

impl Outcome {
    /// A failure of the given kind (the message must already be masked).
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Outcome {
        Outcome::Failed(Failure::new(kind, message))
    }

    /// An unreachable host (the message must already be masked).
    pub fn unreachable(kind: ErrorKind, message: impl Into<String>) -> Outcome {
        Outcome::Unreachable(Failure::new(kind, message))
    }

    /// Whether the host makes the run fail (exit 1).
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Changed(_))
    }

    /// The kind of error, for a host that did not end well.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Outcome::Ok | Outcome::Changed(_) => None,
            Outcome::Failed(f) | Outcome::Unreachable(f) => Some(f.kind),
            Outcome::Interrupted(_) => Some(ErrorKind::Interrupted),
            Outcome::Skipped(_) => Some(ErrorKind::NotStarted),
        }
    }

    /// The role that was being applied when the host failed, if it failed in one.
    pub fn failed_role(&self) -> Option<&str> {
        match self {
            Outcome::Failed(f) | Outcome::Unreachable(f) => f.role.as_deref(),
            _ => None,
        }
    }

    /// What went wrong, for a host that did not end well.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Ok | Outcome::Changed(_) => None,
            Outcome::Failed(f) | Outcome::Unreachable(f) => Some(&f.message),
            Outcome::Interrupted(i) => Some(&i.note),
            Outcome::Skipped(why) => Some(why),
        }
    }
}

/// A failed host: what kind of step failed, and the message for the user (masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    /// The role being applied when it failed (`None`: before or outside any role, e.g.
    /// connecting, facts, the lock, packages).
    pub role: Option<String>,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            role: None,
        }
    }

    /// The same failure, said to have happened while `role` was applied.
    pub fn in_role(mut self, role: Option<&str>) -> Failure {
        self.role = role.map(str::to_string);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What failed, as a stable word for programs (the JSON recap's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host could not be reached (TCP, handshake, timeout, jump host).
    Connect,
    /// The host key is unknown, changed or revoked, or known_hosts is unreadable.
    HostKey,
    /// No key was accepted, or the identity file could not be used.
    Auth,
    /// The connection broke, or the host stopped answering, mid-run.
    ConnectionLost,
    /// The facts script failed or its output could not be read.
    Facts,
    /// Removing leftovers or installing packages failed.
    Prepare,
    /// A file could not be uploaded.
    Upload,
    /// A validator refused a rendered file or tree (nothing was changed).
    Validation,
    /// Renaming into place, or setting an owner or mode, failed.
    Swap,
    /// A service action or handler failed (rolled back).
    Handler,
    /// A health check failed (rolled back).
    HealthCheck,
    /// Taking the host out of its load balancers, or back in, failed.
    Drain,
    /// Making a key or CSR on the host, signing it, or putting the certificate in place
    /// failed (the role's files were not touched).
    Certificate,
    /// A release could not be planned (a pin the host lacks, nothing to roll back to),
    /// sent, unpacked or switched in, or its migration failed (the old release serves).
    Release,
    /// Restoring the previous files failed: the host needs a look.
    Rollback,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// Not started because something before it failed.
    NotStarted,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            ErrorKind::Connect => "connect",
            ErrorKind::HostKey => "host_key",
            ErrorKind::Auth => "auth",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Facts => "facts",
            ErrorKind::Prepare => "prepare",
            ErrorKind::Upload => "upload",
            ErrorKind::Validation => "validation",
            ErrorKind::Swap => "swap",
            ErrorKind::Handler => "handler",
            ErrorKind::HealthCheck => "health_check",
            ErrorKind::Drain => "drain",
            ErrorKind::Certificate => "certificate",
            ErrorKind::Release => "release",
            ErrorKind::Rollback => "rollback",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::NotStarted => "not_started",
        };
        f.write_str(word)
    }
}

/// What an interrupted host got and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// Roles applied completely (files in place, handlers run, healthy).
    pub applied: Vec<String>,
    /// Roles with changes that were not applied (nothing of them was swapped in).
    pub not_applied: Vec<String>,
    /// Where it stopped.
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_and_changed_are_successes() {
        assert!(!Outcome::Ok.is_failure());
        assert!(!Outcome::Changed(3).is_failure());
        for o in [
            Outcome::failed(ErrorKind::Validation, "x"),
            Outcome::unreachable(ErrorKind::Connect, "x"),
            Outcome::Skipped("x".into()),
            Outcome::Interrupted(Interruption {
                applied: vec![],
                not_applied: vec![],
                note: "x".into(),
            }),
        ] {
            assert!(o.is_failure(), "{o:?}");
            assert_eq!(o.error(), Some("x"));
            assert!(o.kind().is_some());
        }
        assert_eq!(Outcome::Ok.kind(), None);
        assert_eq!(Outcome::Changed(1).error(), None);
    }

    #[test]
    fn kind_display_matches_its_json_word() {
        for k in [
            ErrorKind::Connect,
            ErrorKind::HostKey,
            ErrorKind::HealthCheck,
            ErrorKind::Drain,
            ErrorKind::NotStarted,
            ErrorKind::ConnectionLost,
        ] {
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{k}\""));
        }
    }
}
