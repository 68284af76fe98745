//! [`SshError`]: everything that can go wrong while connecting to a host or running a
//! command on it, one variant per failure, each message saying what to do next.

use std::path::PathBuf;

use russh::ChannelOpenFailure;

use super::exec::MAX_CONCURRENT_EXECS;
use super::host_keys::HostKeyReport;

/// Everything that can go wrong while connecting to a host or running a command on it. Each
/// message names the host and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The known_hosts file exists but cannot be read.
    #[error(
        "cannot read the known_hosts file {} (needed to verify {host}): {source}; fix its \
         permissions or point the inventory at a readable file",
        path.display()
    )]
    KnownHostsUnreadable {
        /// Inventory name of the host being connected to.
        host: String,
        /// The known_hosts file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// The host offered a key that known_hosts does not list for it.
    #[error(
        "host key of {} is not known: it offered {} key {}, which {} does not list for {}. \
         Nothing was run on it. If this is a new host, check that fingerprint out of band \
         (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on its console), then trust it with \
         `foobar-provision trust INVENTORY --limit {}`",
        .0.peer, .0.algorithm, .0.fingerprint, .0.known_hosts.display(), .0.pattern, .0.host
    )]
    UnknownHostKey(Box<HostKeyReport>),

    /// known_hosts holds other keys for the host than the one it offered.
    #[error(
        "HOST KEY CHANGED for {}: it offered {} key {}, but {} line {} holds another key for \
         {} ({}). Either the host was rebuilt or reinstalled, or someone is intercepting the \
         connection (man-in-the-middle attack); nothing was run on it. Check the new \
         fingerprint out of band; only if it is right, remove the old entry with \
         `ssh-keygen -R '{}' -f {}` and then run `foobar-provision trust INVENTORY --limit {}`",
        .0.peer, .0.algorithm, .0.fingerprint, .0.known_hosts.display(), .0.line, .0.pattern,
        .0.known_fingerprints.join(", "), .0.pattern, .0.known_hosts.display(), .0.host
    )]
    HostKeyChanged(Box<HostKeyReport>),

    /// The offered key is marked `@revoked`.
    #[error(
        "refusing to connect to {}: its host key {} is marked @revoked in {} line {}. A \
         revoked key was withdrawn on purpose (for example it leaked), so anyone may hold it; \
         the host needs a new host key, to be trusted with `foobar-provision trust INVENTORY \
         --limit {}` once checked. Do not delete the @revoked line to get past this",
        .0.peer, .0.fingerprint, .0.known_hosts.display(), .0.line, .0.host
    )]
    HostKeyRevoked(Box<HostKeyReport>),

    /// The server proved its identity with a certificate, which is not supported.
    #[error(
        "{peer} presented a host certificate, which foobar-provision does not verify; list \
         the host's plain key in known_hosts instead (`foobar-provision trust INVENTORY \
         --limit {host}`)"
    )]
    HostCertificate {
        /// Inventory name of the host.
        host: String,
        /// What was being connected to, with address and port.
        peer: String,
    },

    /// The TCP connection could not be opened.
    #[error(
        "cannot open a TCP connection to {peer}: {source}; check that the host is up, that \
         the address and port in the inventory are right and that sshd listens there"
    )]
    Connect {
        /// What was being connected to, with address and port.
        peer: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// The SSH handshake (version exchange, key exchange) failed.
    #[error(
        "SSH handshake with {peer} failed: {source}; check that an SSH server answers on that \
         port and that it accepts current algorithms (curve25519, ed25519/ecdsa/rsa-sha2)"
    )]
    Handshake {
        /// What was being connected to, with address and port.
        peer: String,
        /// The protocol error.
        #[source]
        source: russh::Error,
    },

    /// Connecting (TCP, key exchange and authentication) took longer than allowed.
    #[error(
        "connect timed out after {seconds} s to {address}:{port}{via} (host {host}); check \
         that the host is up and reachable, that no firewall drops SSH, or raise the connect \
         timeout"
    )]
    Timeout {
        /// Inventory name of the host.
        host: String,
        /// Address of the host.
        address: String,
        /// Port of the host.
        port: u16,
        /// The limit that was exceeded, in seconds.
        seconds: f64,
        /// Empty, or ` via jump host ADDRESS:PORT`.
        via: String,
    },

    /// The identity file could not be read or decoded.
    #[error(
        "cannot use the SSH identity file {} for {host}: {reason}; check the path in the \
         inventory and that the file is an OpenSSH, PEM or PKCS#8 private key",
        path.display()
    )]
    IdentityFile {
        /// Inventory name of the host.
        host: String,
        /// The identity file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The identity file is encrypted and no passphrase was given.
    #[error(
        "the SSH identity file {} (for {host}) is encrypted: set FOOBAR_SSH_PASSPHRASE to its \
         passphrase, or add the key to ssh-agent (`ssh-add {}`) and enable the agent",
        path.display(),
        path.display()
    )]
    PassphraseRequired {
        /// Inventory name of the host.
        host: String,
        /// The identity file.
        path: PathBuf,
    },

    /// The passphrase from `FOOBAR_SSH_PASSPHRASE` does not decrypt the identity file.
    #[error(
        "cannot decrypt the SSH identity file {} (for {host}) with the passphrase in \
         FOOBAR_SSH_PASSPHRASE: {reason}; check the passphrase",
        path.display()
    )]
    BadPassphrase {
        /// Inventory name of the host.
        host: String,
        /// The identity file.
        path: PathBuf,
        /// The decryption error.
        reason: String,
    },

    /// Neither an identity file nor the agent is configured.
    #[error(
        "no way to authenticate to {host}: set an identity file for it in the inventory, or \
         enable the ssh-agent (SSH_AUTH_SOCK)"
    )]
    NoAuthMethod {
        /// Inventory name of the host.
        host: String,
    },

    /// The server accepted none of the keys.
    #[error(
        "authentication to {peer} as user {user} failed; tried: {tried}. Check that one of \
         these public keys is in ~{user}/.ssh/authorized_keys there and that the user is \
         right"
    )]
    AuthFailed {
        /// What was being connected to, with address and port.
        peer: String,
        /// The remote user.
        user: String,
        /// The keys tried, and why the agent could not be used if so.
        tried: String,
    },

    /// The jump host did not open the forwarded connection to the host.
    #[error(
        "jump host {jump} refused to forward to {address}:{port} (host {host}): {reason}; \
         check that the jump host allows TCP forwarding (AllowTcpForwarding) and can reach \
         that address"
    )]
    JumpForward {
        /// Inventory name of the host.
        host: String,
        /// The jump host, `ADDRESS:PORT`.
        jump: String,
        /// Address of the host.
        address: String,
        /// Port of the host.
        port: u16,
        /// The server's answer.
        reason: String,
    },

    /// A command channel could not be opened or used.
    #[error(
        "cannot run a command on {host}: {reason}; the SSH connection may be lost: connect \
         again and retry"
    )]
    Channel {
        /// Inventory name of the host.
        host: String,
        /// What failed.
        reason: String,
    },

    /// The server refused to open a session channel.
    #[error(
        "{host} refused to open a command channel ({reason}); check sshd's MaxSessions (this \
         tool runs up to {MAX_CONCURRENT_EXECS} commands at once per host) and that the \
         account may open sessions"
    )]
    ChannelRefused {
        /// Inventory name of the host.
        host: String,
        /// The server's reason.
        reason: String,
    },

    /// The server refused the exec request.
    #[error(
        "{host} refused to run a command (exec request denied); check that the account has a \
         login shell and no ForceCommand"
    )]
    ExecRefused {
        /// Inventory name of the host.
        host: String,
    },

    /// The command's channel closed without an exit status.
    #[error(
        "a command on {host} ended without reporting an exit status (connection lost or \
         command killed); whether it took effect is unknown: check the host and run again"
    )]
    NoExitStatus {
        /// Inventory name of the host.
        host: String,
    },
}

/// The server's reason for refusing a channel, in words.
pub(super) fn open_failure_text(failure: &ChannelOpenFailure) -> String {
    match failure {
        ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
        ChannelOpenFailure::ConnectFailed => "connect failed".into(),
        ChannelOpenFailure::UnknownChannelType => "unknown channel type".into(),
        ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
        ChannelOpenFailure::Other { code, reason } => format!("code {code}: {reason}"),
    }
}
