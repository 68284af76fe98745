//! How to reach and authenticate to one host: [`SshOptions`] and its [`JumpHost`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An SSH server used as a hop to reach a host (like OpenSSH's `ProxyJump`). It is checked
/// against the same known_hosts file as the host itself, and authenticated with its own
/// identity files or, when it has none, the host's. Connecting runs `true` once on it:
/// OpenSSH's sshd turns TCP_NODELAY on only when a session is used, and until then each
/// round trip through it costs ~40 ms more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Name or IP address of the jump host (also the name looked up in known_hosts). The
    /// first hop resolves it here; a later hop is asked for by name of the hop before it.
    pub address: String,
    /// Its SSH port.
    pub port: u16,
    /// The user to log in as on the jump host.
    pub user: String,
    /// Its own private keys, tried in order (empty: the host's).
    pub identity_files: Vec<PathBuf>,
}

impl JumpHost {
    /// `address:port`, for messages.
    pub fn shown(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

/// How to reach and authenticate to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// Inventory name of the host, used in messages and in the suggested `trust` command.
    pub host_name: String,
    /// Name or IP address of the host: the name looked up in known_hosts (`[name]:port`
    /// for a port other than 22, as OpenSSH does) and shown in messages.
    pub address: String,
    /// The IP address to connect to (through the jump hosts, if any), when `address` is a
    /// name resolved once for the run; `None`: `address` itself.
    pub ip: Option<IpAddr>,
    /// SSH port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Private key files, tried in order. An encrypted one is decrypted with the
    /// passphrase in the environment variable `FOOBAR_SSH_PASSPHRASE`.
    pub identity_files: Vec<PathBuf>,
    /// Also try the keys of the ssh-agent at `SSH_AUTH_SOCK` (after the identity file).
    pub use_agent: bool,
    /// The known_hosts file checked strictly; a missing file counts as empty.
    pub known_hosts: PathBuf,
    /// Limit for TCP connect, key exchange and authentication together (jump host included).
    pub connect_timeout: Duration,
    /// Reach the host through these jump hosts, in order (`ProxyJump a,b`: a, then b).
    pub jumps: Vec<JumpHost>,
}

impl SshOptions {
    /// Where the TCP connection (or the last jump host's forward) goes: the resolved IP,
    /// else the address.
    pub fn target(&self) -> String {
        self.ip
            .map_or_else(|| self.address.clone(), |ip| ip.to_string())
    }

    /// Empty, or ` via jump host A:P` / ` via jump hosts A:P, B:P`, for messages.
    pub fn via(&self) -> String {
        let hops: Vec<String> = self.jumps.iter().map(JumpHost::shown).collect();
        match hops.len() {
            0 => String::new(),
            1 => format!(" via jump host {}", hops[0]),
            _ => format!(" via jump hosts {}", hops.join(", ")),
        }
    }
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
            ip: None,
            port: 22,
            user: user.into(),
            identity_files: Vec::new(),
            use_agent: true,
            known_hosts: known_hosts.into(),
            connect_timeout: Duration::from_secs(10),
            jumps: Vec::new(),
        }
    }
}
