//! Running commands on hosts: the [`Transport`] trait, its SSH implementation ([`SshSession`],
//! one connection per host reused for every command) and `known_hosts` checking.
//!
//! Everything above this module talks to hosts only through [`Transport::exec`], so the whole
//! pipeline can be tested with in-memory fakes.

pub mod known_hosts;
#[cfg(test)]
pub mod local;
mod ssh;
pub mod ssh_config;
#[cfg(test)]
pub(crate) use ssh::test_sshd;

pub use ssh::{
    JumpHost, SshError, SshOptions, SshSession, check_identity_file, connect,
    scan_host_key_via_jump,
};

use std::future::Future;

/// The result of one remote command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status. A command killed by a signal reports 128 + the signal number, as shells do.
    pub status: u32,
    /// Everything the command wrote to its standard output.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to its standard error.
    pub stderr: Vec<u8>,
}

/// A way to run commands on one host. Implemented by SshSession; tests use in-memory fakes.
pub trait Transport: Send + Sync {
    /// Runs `command` (a shell command line, given as-is to the remote user's shell) with
    /// `stdin` fed to it and then closed; returns its exit status and everything it printed.
    /// A non-zero status is not an error: only failing to run the command or to learn how it
    /// ended is.
    fn exec(
        &self,
        command: &str,
        stdin: &[u8],
    ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send;
}
