//! SSH transport on russh: one authenticated connection per host, strict host key checking
//! against `known_hosts`, optional jump hosts (a chain, like `ProxyJump a,b`), and one
//! channel per command.
//!
//! What is where:
//! - [`SshSession`] (this file): an authenticated connection, and closing it.
//! - `options.rs`: [`SshOptions`] and [`JumpHost`], how to reach and authenticate to a host.
//! - `connect.rs`: [`connect()`]: TCP or jump host tunnel, handshake, authentication, all
//!   within the connect timeout; the russh client configuration.
//! - `host_keys.rs`: the russh handler that checks the offered key against `known_hosts`,
//!   and `HostKeyReport`, the details of a refused key.
//! - `scan.rs`: [`scan_host_key`] and [`scan_host_key_via_jump`], reading a host key for
//!   `trust`.
//! - `identity.rs`: the identity file (passphrase from `FOOBAR_SSH_PASSPHRASE`) and the
//!   ssh-agent socket, resolved before connecting.
//! - `auth.rs`: public key authentication with the identity file, then the agent's keys.
//! - `exec.rs`: running a command on a channel, the concurrency limit, the exit status.
//! - `peer.rs`: the server a connection talks to, as named in messages.
//! - `error.rs`: [`SshError`], one variant per failure, each saying what to do next.
//! - `test_sshd.rs` (tests only): a private OpenSSH sshd on 127.0.0.1 for the tests in
//!   `tests.rs` and in `cmd/reach_sshd.rs` (the SSH configuration through jump hosts).

mod auth;
mod connect;
mod error;
mod exec;
mod host_keys;
mod identity;
mod options;
mod peer;
mod scan;

#[cfg(test)]
pub(crate) mod test_sshd;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upload_bench;

use std::fmt;
use std::time::Duration;

use russh::Disconnect;
use russh::client::Handle;
use tokio::sync::Semaphore;

pub use connect::connect;
pub use error::SshError;
pub use identity::check_identity_file;
pub use options::{JumpHost, SshOptions};
#[cfg(test)]
pub use scan::scan_host_key;
pub use scan::scan_host_key_via_jump;

use exec::MAX_CONCURRENT_EXECS;
use host_keys::Client;

/// A russh session handle for this module's handler.
type SessionHandle = Handle<Client>;

/// An authenticated SSH connection to one host (through its jump host if any), reused for
/// every command. Commands may run concurrently on it, one channel each; beyond sshd's
/// default `MaxSessions` they wait for a free slot.
pub struct SshSession {
    handle: SessionHandle,
    /// The jump host connections carrying `handle`'s traffic, first hop first; kept open
    /// as long as `handle`.
    jumps: Vec<SessionHandle>,
    host_name: String,
    slots: Semaphore,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("host_name", &self.host_name)
            .field("jumps", &self.jumps.len())
            .finish_non_exhaustive()
    }
}

impl SshSession {
    fn new(handle: SessionHandle, jumps: Vec<SessionHandle>, host_name: &str) -> Self {
        SshSession {
            handle,
            jumps,
            host_name: host_name.to_string(),
            slots: Semaphore::new(MAX_CONCURRENT_EXECS),
        }
    }

    /// Says goodbye to the server (and to the jump hosts, last hop first) and waits
    /// briefly for each connection to end.
    pub async fn close(self) {
        // Bounded: saying goodbye on a connection that broke would wait forever.
        let bye = Duration::from_secs(2);
        let SshSession { handle, jumps, .. } = self;
        let _ =
            tokio::time::timeout(bye, handle.disconnect(Disconnect::ByApplication, "", "en")).await;
        let _ = tokio::time::timeout(bye, handle).await;
        for jump in jumps.into_iter().rev() {
            let _ = tokio::time::timeout(bye, jump.disconnect(Disconnect::ByApplication, "", "en"))
                .await;
            let _ = tokio::time::timeout(bye, jump).await;
        }
    }
}
