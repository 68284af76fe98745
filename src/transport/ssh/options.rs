//! How to reach and authenticate to one host: [`SshOptions`] and its [`JumpHost`].

use std::path::PathBuf;
use std::time::Duration;

/// An SSH server used as a hop to reach a host (like OpenSSH's `ProxyJump`). It is
/// authenticated with the same identity and checked against the same known_hosts file as the
/// host itself. Connecting runs `true` once on it: OpenSSH's sshd turns TCP_NODELAY on only
/// when a session is used, and until then each round trip through it costs ~40 ms more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Name or IP address of the jump host.
    pub address: String,
    /// Its SSH port.
    pub port: u16,
    /// The user to log in as on the jump host.
    pub user: String,
}

/// How to reach and authenticate to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// Inventory name of the host, used in messages and in the suggested `trust` command.
    pub host_name: String,
    /// Name or IP address to connect to; also the name looked up in known_hosts.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Private key file. If it is encrypted, its passphrase is read from the environment
    /// variable `FOOBAR_SSH_PASSPHRASE`.
    pub identity_file: Option<PathBuf>,
    /// Also try the keys of the ssh-agent at `SSH_AUTH_SOCK` (after the identity file).
    pub use_agent: bool,
    /// The known_hosts file checked strictly; a missing file counts as empty.
    pub known_hosts: PathBuf,
    /// Limit for TCP connect, key exchange and authentication together (jump host included).
    pub connect_timeout: Duration,
    /// Reach the host through this jump host.
    pub jump: Option<JumpHost>,
}

#[cfg(test)]
impl SshOptions {
    /// Options with the usual defaults: port 22, no identity file, ssh-agent on, a 10 s
    /// connect timeout and no jump host. Only the tests build options this way; the inventory
    /// sets every field.
    pub(super) fn new(
        host_name: impl Into<String>,
        address: impl Into<String>,
        user: impl Into<String>,
        known_hosts: impl Into<PathBuf>,
    ) -> Self {
        SshOptions {
            host_name: host_name.into(),
            address: address.into(),
            port: 22,
            user: user.into(),
            identity_file: None,
            use_agent: true,
            known_hosts: known_hosts.into(),
            connect_timeout: Duration::from_secs(10),
            jump: None,
        }
    }
}
