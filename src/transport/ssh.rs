//! SSH transport on russh: one authenticated connection per host, strict host key checking
//! against `known_hosts`, optional jump host, and one channel per command.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelOpenFailure, ChannelWriteHalf, Disconnect, Preferred, Sig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::known_hosts::{self, HostKeyStatus};
use super::{ExecOutput, Transport};

/// Environment variable holding the passphrase of an encrypted identity file.
pub const PASSPHRASE_ENV: &str = "FOOBAR_SSH_PASSPHRASE";

/// Commands run at the same time on one connection; more wait for a free slot. OpenSSH's sshd
/// refuses more than `MaxSessions` (default 10) open channels per connection.
pub const MAX_CONCURRENT_EXECS: usize = 10;

/// Keepalive period: when nothing came from the server for this long, ask it for a reply.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalives before the connection is declared dead (about a minute in all).
const KEEPALIVE_MAX: usize = 3;
/// Backstop for a connection on which nothing at all happens, keepalive replies included.
/// Keepalive replies count as activity, so a long silent command does not trip it.
const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a refused session channel is retried before the refusal is reported.
const CHANNEL_OPEN_RETRY_FOR: Duration = Duration::from_secs(3);
/// How long the warm-up command on a jump host may take before it is given up (see
/// [`warm_up`]).
const JUMP_WARM_UP_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// variable `FOOBAR_SSH_PASSPHRASE` ([`PASSPHRASE_ENV`]).
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

impl SshOptions {
    /// Options with the usual defaults: port 22, no identity file, ssh-agent on, a 10 s
    /// connect timeout and no jump host.
    pub fn new(
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

/// The details of a host key that was refused ([`SshError::UnknownHostKey`],
/// [`SshError::HostKeyChanged`], [`SshError::HostKeyRevoked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyReport {
    /// Inventory name of the host (the one to pass to `trust --limit`).
    pub host: String,
    /// What was being connected to: the host or its jump host, with address and port.
    pub peer: String,
    /// The name looked up in known_hosts: `addr`, or `[addr]:port` for ports other than 22.
    pub pattern: String,
    /// Algorithm of the offered key, such as `ssh-ed25519`.
    pub algorithm: String,
    /// OpenSSH-style fingerprint (`SHA256:...`) of the offered key.
    pub fingerprint: String,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// 1-based line: the first line for the host (changed key) or the `@revoked` line; 0 for
    /// an unknown key.
    pub line: usize,
    /// Fingerprints known_hosts holds for the host (changed key); empty otherwise.
    pub known_fingerprints: Vec<String>,
}

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

/// Error type of the russh handler: a host key verdict, or whatever russh reports.
#[derive(Debug)]
enum ClientError {
    HostKey(Box<SshError>),
    Russh(russh::Error),
}

impl From<russh::Error> for ClientError {
    fn from(error: russh::Error) -> Self {
        ClientError::Russh(error)
    }
}

/// Who is being connected to, for host key checks and messages.
#[derive(Debug, Clone)]
struct Peer {
    /// Inventory name of the host this connection serves.
    host: String,
    address: String,
    port: u16,
    /// Whether this is the jump host in front of `host`.
    is_jump: bool,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_jump {
            write!(
                f,
                "jump host {}:{} (for {})",
                self.address, self.port, self.host
            )
        } else if self.host == self.address {
            write!(f, "{}:{}", self.address, self.port)
        } else {
            write!(f, "{} ({}:{})", self.host, self.address, self.port)
        }
    }
}

/// What the handler does with the server's host key.
enum HostKeyPolicy {
    /// Check it against the known_hosts text.
    Verify {
        peer: Peer,
        known_hosts_text: Arc<str>,
        known_hosts: PathBuf,
    },
    /// Record it and stop the handshake (for `trust`).
    Scan(Arc<Mutex<Option<PublicKey>>>),
}

struct Client {
    policy: HostKeyPolicy,
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match &self.policy {
            HostKeyPolicy::Scan(slot) => {
                if let PublicKeyOrCertificate::PublicKey { key, .. } = offered {
                    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                    *slot = Some(key.clone());
                }
                // Never proceed: scanning is not trusting.
                Ok(false)
            }
            HostKeyPolicy::Verify {
                peer,
                known_hosts_text,
                known_hosts,
            } => {
                let key = match offered {
                    PublicKeyOrCertificate::PublicKey { key, .. } => key,
                    PublicKeyOrCertificate::Certificate(_) => {
                        return Err(ClientError::HostKey(Box::new(SshError::HostCertificate {
                            host: peer.host.clone(),
                            peer: peer.to_string(),
                        })));
                    }
                };
                verify_host_key(peer, known_hosts_text, known_hosts, key)
                    .map(|()| true)
                    .map_err(|e| ClientError::HostKey(Box::new(e)))
            }
        }
    }
}

/// Turns a known_hosts verdict into `Ok` or the error that explains it.
fn verify_host_key(
    peer: &Peer,
    known_hosts_text: &str,
    known_hosts: &Path,
    key: &PublicKey,
) -> Result<(), SshError> {
    let report = |line: usize, known_fingerprints: Vec<String>| {
        Box::new(HostKeyReport {
            host: peer.host.clone(),
            peer: peer.to_string(),
            pattern: known_hosts::host_pattern(&peer.address, peer.port),
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: known_hosts::fingerprint(key),
            known_hosts: known_hosts.to_path_buf(),
            line,
            known_fingerprints,
        })
    };
    match known_hosts::check(known_hosts_text, &peer.address, peer.port, key) {
        HostKeyStatus::Trusted => Ok(()),
        HostKeyStatus::Unknown => Err(SshError::UnknownHostKey(report(0, Vec::new()))),
        HostKeyStatus::Changed {
            known_fingerprints,
            line,
        } => Err(SshError::HostKeyChanged(report(line, known_fingerprints))),
        HostKeyStatus::Revoked { line } => Err(SshError::HostKeyRevoked(report(line, Vec::new()))),
    }
}

/// Client configuration: TCP_NODELAY (without it every exec costs ~40 ms of Nagle and delayed
/// ACK), keepalives, and host key algorithms reordered so the ones known_hosts holds for this
/// peer come first (a host known by its RSA key is then verified by that key).
fn client_config(known: &[Algorithm]) -> Arc<client::Config> {
    let default_keys = Preferred::DEFAULT.key;
    let is_known = |a: &Algorithm| {
        known
            .iter()
            .any(|k| k == a || (k.clone().is_rsa() && a.clone().is_rsa()))
    };
    let mut keys: Vec<Algorithm> = default_keys
        .iter()
        .filter(|a| is_known(a))
        .cloned()
        .collect();
    keys.extend(default_keys.iter().filter(|a| !is_known(a)).cloned());
    Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: Some(INACTIVITY_TIMEOUT),
        preferred: Preferred {
            key: keys.into(),
            ..Preferred::DEFAULT
        },
        ..client::Config::default()
    })
}

/// Reads the known_hosts file; a missing file is empty.
async fn read_known_hosts(host: &str, path: &Path) -> Result<String, SshError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SshError::KnownHostsUnreadable {
            host: host.to_string(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Decoded identity files, by path and content, so that connecting to many hosts decrypts an
/// encrypted key once.
type KeyCache = Mutex<HashMap<(PathBuf, String), Arc<PrivateKey>>>;

fn key_cache() -> &'static KeyCache {
    static CACHE: OnceLock<KeyCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads and, if needed, decrypts a private key file.
fn load_identity(
    host: &str,
    path: &Path,
    passphrase: Option<&str>,
) -> Result<Arc<PrivateKey>, SshError> {
    let text = std::fs::read_to_string(path).map_err(|e| SshError::IdentityFile {
        host: host.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let cache_key = (path.to_path_buf(), text);
    if let Some(key) = key_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        return Ok(Arc::clone(key));
    }
    let text = &cache_key.1;
    let key = match russh::keys::decode_secret_key(text, None) {
        Ok(key) => key,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let Some(passphrase) = passphrase else {
                return Err(SshError::PassphraseRequired {
                    host: host.to_string(),
                    path: path.to_path_buf(),
                });
            };
            russh::keys::decode_secret_key(text, Some(passphrase)).map_err(|e| {
                SshError::BadPassphrase {
                    host: host.to_string(),
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?
        }
        Err(e) => {
            return Err(SshError::IdentityFile {
                host: host.to_string(),
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let key = Arc::new(key);
    key_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, Arc::clone(&key));
    Ok(key)
}

/// How to authenticate, resolved before connecting.
struct Credentials {
    identity: Option<(PathBuf, Arc<PrivateKey>)>,
    /// The ssh-agent socket, when the agent is to be used; `Err` says why it cannot be.
    agent: Option<Result<PathBuf, String>>,
}

/// A russh session handle for this module's handler.
type SessionHandle = Handle<Client>;

/// An authenticated SSH connection to one host (through its jump host if any), reused for
/// every command. Up to [`MAX_CONCURRENT_EXECS`] commands run at once, one channel each.
pub struct SshSession {
    handle: SessionHandle,
    /// The jump host connection carrying `handle`'s traffic; kept open as long as `handle`.
    jump: Option<SessionHandle>,
    host_name: String,
    slots: Semaphore,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("host_name", &self.host_name)
            .field("via_jump", &self.jump.is_some())
            .finish_non_exhaustive()
    }
}

/// Connects to `opts.address:opts.port` (through `opts.jump` if set), verifies the host key
/// strictly against `opts.known_hosts`, and authenticates as `opts.user` with the identity
/// file and then the agent's keys. The whole of it is limited by `opts.connect_timeout`.
///
/// # Errors
/// Host key refused ([`SshError::UnknownHostKey`], [`SshError::HostKeyChanged`],
/// [`SshError::HostKeyRevoked`]), no key accepted ([`SshError::AuthFailed`]), identity file
/// problems, [`SshError::Timeout`], and network or protocol failures; each names the host.
pub async fn connect(opts: &SshOptions) -> Result<SshSession, SshError> {
    let passphrase = std::env::var(PASSPHRASE_ENV).ok();
    connect_with(opts, passphrase.as_deref(), agent_from_env(opts)).await
}

/// The agent socket from `SSH_AUTH_SOCK` if `opts.use_agent`; `Err` says why it is missing.
fn agent_from_env(opts: &SshOptions) -> Option<Result<PathBuf, String>> {
    if !opts.use_agent {
        return None;
    }
    match std::env::var_os("SSH_AUTH_SOCK") {
        Some(path) if !path.is_empty() => Some(Ok(PathBuf::from(path))),
        _ => Some(Err("ssh-agent: SSH_AUTH_SOCK is not set".to_string())),
    }
}

/// [`connect`] with the environment already read (tests call this directly).
async fn connect_with(
    opts: &SshOptions,
    passphrase: Option<&str>,
    agent: Option<Result<PathBuf, String>>,
) -> Result<SshSession, SshError> {
    let (credentials, known_hosts_text) = prepare(opts, passphrase, agent).await?;
    with_timeout(opts, establish(opts, &credentials, &known_hosts_text)).await
}

/// Loads the identity and the known_hosts text: local work, done before the clock starts.
async fn prepare(
    opts: &SshOptions,
    passphrase: Option<&str>,
    agent: Option<Result<PathBuf, String>>,
) -> Result<(Credentials, Arc<str>), SshError> {
    let identity = match &opts.identity_file {
        Some(path) => {
            let host = opts.host_name.clone();
            let path_owned = path.clone();
            let passphrase = passphrase.map(str::to_string);
            // Decrypting a key is CPU work (bcrypt): keep it off the async workers.
            let key = tokio::task::spawn_blocking(move || {
                load_identity(&host, &path_owned, passphrase.as_deref())
            })
            .await
            .map_err(|e| SshError::IdentityFile {
                host: opts.host_name.clone(),
                path: path.clone(),
                reason: format!("loading the key failed: {e}"),
            })??;
            Some((path.clone(), key))
        }
        None => None,
    };
    if identity.is_none() && agent.is_none() {
        return Err(SshError::NoAuthMethod {
            host: opts.host_name.clone(),
        });
    }
    let known_hosts_text = read_known_hosts(&opts.host_name, &opts.known_hosts).await?;
    Ok((Credentials { identity, agent }, known_hosts_text.into()))
}

/// Runs `work` within `opts.connect_timeout`, turning the timeout into [`SshError::Timeout`].
async fn with_timeout<T>(
    opts: &SshOptions,
    work: impl Future<Output = Result<T, SshError>>,
) -> Result<T, SshError> {
    match tokio::time::timeout(opts.connect_timeout, work).await {
        Ok(result) => result,
        Err(_elapsed) => Err(SshError::Timeout {
            host: opts.host_name.clone(),
            address: opts.address.clone(),
            port: opts.port,
            seconds: opts.connect_timeout.as_secs_f64(),
            via: match &opts.jump {
                Some(j) => format!(" via jump host {}:{}", j.address, j.port),
                None => String::new(),
            },
        }),
    }
}

/// Builds handlers and client configurations for the peers of one connection attempt.
struct Connector<'a> {
    opts: &'a SshOptions,
    credentials: &'a Credentials,
    known_hosts_text: &'a Arc<str>,
}

impl Connector<'_> {
    fn target(&self) -> Peer {
        Peer {
            host: self.opts.host_name.clone(),
            address: self.opts.address.clone(),
            port: self.opts.port,
            is_jump: false,
        }
    }

    fn verifier(&self, peer: &Peer) -> Client {
        Client {
            policy: HostKeyPolicy::Verify {
                peer: peer.clone(),
                known_hosts_text: Arc::clone(self.known_hosts_text),
                known_hosts: self.opts.known_hosts.clone(),
            },
        }
    }

    fn config(&self, peer: &Peer) -> Arc<client::Config> {
        client_config(&known_hosts::known_key_algorithms(
            self.known_hosts_text,
            &peer.address,
            peer.port,
        ))
    }

    /// Handshake and authentication as `user` over `stream`.
    async fn login<S>(&self, stream: S, peer: &Peer, user: &str) -> Result<SessionHandle, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut handle = handshake(self.config(peer), stream, self.verifier(peer), peer).await?;
        authenticate(&mut handle, peer, user, self.credentials).await?;
        Ok(handle)
    }

    /// An authenticated connection to the jump host.
    async fn jump_login(&self, jump: &JumpHost) -> Result<SessionHandle, SshError> {
        let peer = Peer {
            host: self.opts.host_name.clone(),
            address: jump.address.clone(),
            port: jump.port,
            is_jump: true,
        };
        let tcp = tcp_connect(&peer).await?;
        self.login(tcp, &peer, &jump.user).await
    }

    /// A forwarded connection from the jump host to the target.
    async fn forward(
        &self,
        jump: &JumpHost,
        jump_handle: &SessionHandle,
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let channel = jump_handle
            .channel_open_direct_tcpip(
                self.opts.address.clone(),
                u32::from(self.opts.port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|e| SshError::JumpForward {
                host: self.opts.host_name.clone(),
                jump: format!("{}:{}", jump.address, jump.port),
                address: self.opts.address.clone(),
                port: self.opts.port,
                reason: match e {
                    russh::Error::ChannelOpenFailure(f) => open_failure_text(&f),
                    other => other.to_string(),
                },
            })?;
        Ok(channel.into_stream())
    }
}

/// TCP connect (or jump host tunnel), handshake and authentication, without a time limit.
async fn establish(
    opts: &SshOptions,
    credentials: &Credentials,
    known_hosts_text: &Arc<str>,
) -> Result<SshSession, SshError> {
    let connector = Connector {
        opts,
        credentials,
        known_hosts_text,
    };
    let target = connector.target();
    let Some(jump) = &opts.jump else {
        let tcp = tcp_connect(&target).await?;
        let handle = connector.login(tcp, &target, &opts.user).await?;
        return Ok(SshSession::new(handle, None, &opts.host_name));
    };
    let jump_handle = connector.jump_login(jump).await?;
    let through_jump = async {
        let stream = connector.forward(jump, &jump_handle).await?;
        connector.login(stream, &target, &opts.user).await
    };
    let (handle, ()) = tokio::join!(through_jump, warm_up(&jump_handle));
    Ok(SshSession::new(handle?, Some(jump_handle), &opts.host_name))
}

/// Runs `true` on a jump host, ignoring the outcome. OpenSSH's sshd turns TCP_NODELAY on only
/// when a session channel is used; until then every round trip through a jump host that only
/// forwards costs ~40 ms more.
async fn warm_up(jump: &SessionHandle) {
    let run = async {
        let mut channel = jump.channel_open_session().await?;
        channel.exec(true, "true").await?;
        while let Some(msg) = channel.wait().await {
            if matches!(msg, ChannelMsg::Close) {
                break;
            }
        }
        Ok::<(), russh::Error>(())
    };
    let _ = tokio::time::timeout(JUMP_WARM_UP_TIMEOUT, run).await;
}

async fn tcp_connect(peer: &Peer) -> Result<TcpStream, SshError> {
    let tcp = TcpStream::connect((peer.address.as_str(), peer.port))
        .await
        .map_err(|source| SshError::Connect {
            peer: peer.to_string(),
            source,
        })?;
    // Best effort: a socket that refuses it still works, only slower.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn handshake<S>(
    config: Arc<client::Config>,
    stream: S,
    client: Client,
    peer: &Peer,
) -> Result<SessionHandle, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    client::connect_stream(config, stream, client)
        .await
        .map_err(|e| match e {
            ClientError::HostKey(error) => *error,
            ClientError::Russh(source) => SshError::Handshake {
                peer: peer.to_string(),
                source,
            },
        })
}

fn describe_key(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        known_hosts::fingerprint(key)
    )
}

/// Tries the identity file, then the agent's keys, until the server accepts one.
async fn authenticate(
    handle: &mut SessionHandle,
    peer: &Peer,
    user: &str,
    credentials: &Credentials,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut rsa_hash: Option<Option<HashAlg>> = None;
    if let Some((path, key)) = &credentials.identity {
        let hash = if key.algorithm().is_rsa() {
            *rsa_hash.get_or_insert(best_rsa_hash(handle).await)
        } else {
            None
        };
        let label = format!(
            "identity file {} ({})",
            path.display(),
            describe_key(key.public_key())
        );
        match handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
            .await
        {
            Ok(result) if result.success() => return Ok(()),
            Ok(_) => tried.push(label),
            Err(e) => tried.push(format!("{label}: the server closed the connection ({e})")),
        }
    }

    match &credentials.agent {
        _ if handle.is_closed() => {}
        None => {}
        Some(Err(why)) => tried.push(why.clone()),
        Some(Ok(socket)) => match AgentClient::connect_uds(socket).await {
            Err(e) => tried.push(format!("ssh-agent at {}: {e}", socket.display())),
            Ok(mut agent) => {
                if let Some(binding) = handle.agent_session_binding() {
                    // Agents that predate session binding refuse it; they still sign.
                    let _ = agent.bind_session(binding, false).await;
                }
                let identities = match agent.request_identities().await {
                    Ok(identities) => identities,
                    Err(e) => {
                        tried.push(format!("ssh-agent at {}: {e}", socket.display()));
                        Vec::new()
                    }
                };
                if identities.is_empty() {
                    tried.push(format!("ssh-agent at {} (no keys)", socket.display()));
                }
                let file_key = credentials
                    .identity
                    .as_ref()
                    .map(|(_, key)| key.public_key().key_data().clone());
                for identity in identities {
                    let AgentIdentity::PublicKey { key, comment } = identity else {
                        continue;
                    };
                    if file_key.as_ref() == Some(key.key_data()) {
                        continue;
                    }
                    let hash = if key.algorithm().is_rsa() {
                        *rsa_hash.get_or_insert(best_rsa_hash(handle).await)
                    } else {
                        None
                    };
                    let label = if comment.is_empty() {
                        format!("agent key {}", describe_key(&key))
                    } else {
                        format!("agent key {} ({comment})", describe_key(&key))
                    };
                    match handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure { .. }) => tried.push(label),
                        Err(e) => tried.push(format!("{label}: agent could not sign: {e}")),
                    }
                    if handle.is_closed() {
                        break;
                    }
                }
            }
        },
    }

    Err(SshError::AuthFailed {
        peer: peer.to_string(),
        user: user.to_string(),
        tried: if tried.is_empty() {
            "no keys".to_string()
        } else {
            tried.join("; ")
        },
    })
}

/// The RSA signature hash the server accepts (rsa-sha2-512 preferred); `None` means ssh-rsa.
async fn best_rsa_hash(handle: &SessionHandle) -> Option<HashAlg> {
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

fn open_failure_text(failure: &ChannelOpenFailure) -> String {
    match failure {
        ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
        ChannelOpenFailure::ConnectFailed => "connect failed".into(),
        ChannelOpenFailure::UnknownChannelType => "unknown channel type".into(),
        ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
        ChannelOpenFailure::Other { code, reason } => format!("code {code}: {reason}"),
    }
}

/// Exit status a shell reports for a command killed by `signal`.
fn signal_status(signal: &Sig) -> u32 {
    let number = match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    };
    128 + number
}

/// Closes a channel if the exec using it is dropped or fails before the server closed it, so
/// that the server's session slot (MaxSessions) is freed.
struct CloseOnDrop(Option<Arc<ChannelWriteHalf<client::Msg>>>);

impl CloseOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.close().await;
            });
        }
    }
}

impl SshSession {
    fn new(handle: SessionHandle, jump: Option<SessionHandle>, host_name: &str) -> Self {
        SshSession {
            handle,
            jump,
            host_name: host_name.to_string(),
            slots: Semaphore::new(MAX_CONCURRENT_EXECS),
        }
    }

    /// Inventory name of the host this session is connected to.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    fn channel_error(&self, error: russh::Error) -> SshError {
        match error {
            russh::Error::ChannelOpenFailure(failure) => SshError::ChannelRefused {
                host: self.host_name.clone(),
                reason: open_failure_text(&failure),
            },
            other => SshError::Channel {
                host: self.host_name.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Opens a session channel. sshd frees a session slot only some time after it closed the
    /// channel, so right after another exec ended a new channel may be refused although
    /// fewer than [`MAX_CONCURRENT_EXECS`] are open: refusals are retried for a while.
    async fn open_session_channel(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            match self.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(russh::Error::ChannelOpenFailure(
                    ChannelOpenFailure::ConnectFailed
                    | ChannelOpenFailure::AdministrativelyProhibited
                    | ChannelOpenFailure::ResourceShortage,
                )) if started.elapsed() < CHANNEL_OPEN_RETRY_FOR => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(self.channel_error(e)),
            }
        }
    }

    /// Runs `command` (a shell command line, passed as-is to the remote user's shell) with
    /// `stdin` fed then EOF; collects stdout, stderr and the exit status. Many execs may run
    /// concurrently on one session, one channel each.
    ///
    /// Stdin is written while output is read, so a command may stream any amount both ways.
    /// At most [`MAX_CONCURRENT_EXECS`] run at once; the others wait. A non-zero exit status is
    /// returned in [`ExecOutput::status`], not as an error; a command killed by a signal gets
    /// 128 + the signal number. The command line never appears in errors (it may hold secrets).
    ///
    /// # Errors
    /// [`SshError::Channel`] when the connection is lost, [`SshError::ChannelRefused`] or
    /// [`SshError::ExecRefused`] when the server will not run it, [`SshError::NoExitStatus`]
    /// when the command's end was not reported.
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, SshError> {
        let _slot = self.slots.acquire().await.map_err(|_| SshError::Channel {
            host: self.host_name.clone(),
            reason: "the session is closing".to_string(),
        })?;
        let channel = self.open_session_channel().await?;
        let (mut reader, writer) = channel.split();
        let writer = Arc::new(writer);
        let mut guard = CloseOnDrop(Some(Arc::clone(&writer)));
        writer
            .exec(true, command)
            .await
            .map_err(|e| self.channel_error(e))?;

        let send = async {
            if !stdin.is_empty() {
                writer.data_bytes(stdin.to_vec()).await?;
            }
            writer.eof().await
        };
        tokio::pin!(send);
        let mut sent = false;
        let mut output = ExecOutput::default();
        let mut status: Option<u32> = None;
        loop {
            tokio::select! {
                // A failed write means the channel is going away; the exit status (or its
                // absence) read below tells what happened, so the error itself is not kept.
                _ = &mut send, if !sent => sent = true,
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => output.stdout.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        output.stderr.extend_from_slice(&data)
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(signal_status(&signal_name))
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::ExecRefused {
                            host: self.host_name.clone(),
                        });
                    }
                    Some(ChannelMsg::Close) => {
                        guard.disarm();
                        break;
                    }
                    None => break,
                    Some(_) => {}
                },
            }
        }
        match status {
            Some(status) => {
                output.status = status;
                Ok(output)
            }
            None => Err(SshError::NoExitStatus {
                host: self.host_name.clone(),
            }),
        }
    }

    /// Says goodbye to the server (and to the jump host, if any) and waits briefly for the
    /// connection to end.
    pub async fn close(self) {
        // Bounded: saying goodbye on a connection that broke would wait forever.
        let bye = Duration::from_secs(2);
        let SshSession { handle, jump, .. } = self;
        let _ =
            tokio::time::timeout(bye, handle.disconnect(Disconnect::ByApplication, "", "en")).await;
        let _ = tokio::time::timeout(bye, handle).await;
        if let Some(jump) = jump {
            let _ = tokio::time::timeout(bye, jump.disconnect(Disconnect::ByApplication, "", "en"))
                .await;
            let _ = tokio::time::timeout(bye, jump).await;
        }
    }
}

impl Transport for SshSession {
    fn exec(
        &self,
        command: &str,
        stdin: &[u8],
    ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send {
        SshSession::exec(self, command, stdin)
    }
}

/// Connects without authenticating and returns the host key the server offers (for the
/// explicit `trust` command), within `timeout`.
///
/// The key is not checked against anything: the caller shows its fingerprint and decides. The
/// server is asked for its ed25519 key first, then ECDSA, then RSA.
///
/// # Errors
/// [`SshError::Connect`], [`SshError::Handshake`] or [`SshError::Timeout`] when no key could
/// be read.
pub async fn scan_host_key(
    address: &str,
    port: u16,
    timeout: Duration,
) -> Result<PublicKey, SshError> {
    let peer = Peer {
        host: address.to_string(),
        address: address.to_string(),
        port,
        is_jump: false,
    };
    let scan = async {
        let tcp = tcp_connect(&peer).await?;
        scan_stream(tcp, &peer).await
    };
    tokio::time::timeout(timeout, scan)
        .await
        .unwrap_or_else(|_elapsed| {
            Err(SshError::Timeout {
                host: address.to_string(),
                address: address.to_string(),
                port,
                seconds: timeout.as_secs_f64(),
                via: String::new(),
            })
        })
}

/// Like [`scan_host_key`] for a host behind `opts.jump`: connects to the jump host as
/// [`connect`] does (host key verified, authenticated), then reads the key
/// `opts.address:opts.port` offers through it. Without a jump host it is [`scan_host_key`]
/// with `opts.connect_timeout`.
///
/// # Errors
/// Those of [`connect`] for the jump host, [`SshError::JumpForward`], and those of
/// [`scan_host_key`] for the host.
pub async fn scan_host_key_via_jump(opts: &SshOptions) -> Result<PublicKey, SshError> {
    let Some(jump) = &opts.jump else {
        return scan_host_key(&opts.address, opts.port, opts.connect_timeout).await;
    };
    let passphrase = std::env::var(PASSPHRASE_ENV).ok();
    let (credentials, known_hosts_text) =
        prepare(opts, passphrase.as_deref(), agent_from_env(opts)).await?;
    let connector = Connector {
        opts,
        credentials: &credentials,
        known_hosts_text: &known_hosts_text,
    };
    let jump_handle = with_timeout(opts, connector.jump_login(jump)).await?;
    let result = with_timeout(opts, async {
        let stream = connector.forward(jump, &jump_handle).await?;
        scan_stream(stream, &connector.target()).await
    })
    .await;
    let _ = jump_handle
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    result
}

/// Key exchange up to the host key, which is recorded and then refused.
async fn scan_stream<S>(stream: S, peer: &Peer) -> Result<PublicKey, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let seen = Arc::new(Mutex::new(None));
    let client = Client {
        policy: HostKeyPolicy::Scan(Arc::clone(&seen)),
    };
    let outcome = handshake(client_config(&[]), stream, client, peer).await;
    let key = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (key, outcome) {
        (Some(key), _) => Ok(key),
        (None, Err(error)) => Err(error),
        (None, Ok(_handle)) => Err(SshError::HostCertificate {
            host: peer.host.clone(),
            peer: peer.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    //! These tests run a real OpenSSH server on 127.0.0.1, started for each test with its own
    //! host keys and authorized_keys in a temporary directory, and killed (by its pid) when
    //! the test ends.

    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const SSHD: &str = "/usr/sbin/sshd";
    const INSTALL_HINT: &str = "the SSH transport tests need OpenSSH's server and client: \
                                install them with `apt-get install openssh-server`";

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "foobar-ssh-{tag}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A child process killed by its pid when dropped.
    struct Killed(Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn run(program: &str, args: &[&str]) -> String {
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {INSTALL_HINT}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Makes a key pair with ssh-keygen; returns the private key path.
    fn keygen(dir: &TempDir, name: &str, key_type: &str, passphrase: &str) -> PathBuf {
        let path = dir.join(name);
        let path_text = path.to_string_lossy().into_owned();
        let mut args = vec!["-q", "-t", key_type, "-N", passphrase, "-C", name, "-f"];
        args.push(&path_text);
        if key_type == "rsa" {
            args.extend(["-b", "2048"]);
        }
        if !passphrase.is_empty() {
            // Few KDF rounds keep decryption quick in debug builds.
            args.extend(["-a", "2"]);
        }
        run("ssh-keygen", &args);
        path
    }

    fn public_key(private: &Path) -> PublicKey {
        let text = std::fs::read_to_string(private.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
            .expect("read public key");
        PublicKey::from_openssh(text.trim()).expect("parse public key")
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("find a free port")
    }

    /// A private sshd on 127.0.0.1 with an ed25519 and an RSA host key.
    struct Lab {
        dir: TempDir,
        port: u16,
        user: String,
        host_ed25519: PublicKey,
        host_rsa: PublicKey,
        user_key: PathBuf,
        authorized_keys: PathBuf,
        sshd: Option<Killed>,
    }

    impl Lab {
        fn start(tag: &str) -> Lab {
            assert!(
                Path::new(SSHD).exists(),
                "{SSHD} is missing; {INSTALL_HINT}"
            );
            let dir = TempDir::new(tag);
            let host_ed = keygen(&dir, "host_ed25519", "ed25519", "");
            let host_rsa = keygen(&dir, "host_rsa", "rsa", "");
            let user_key = keygen(&dir, "user_ed25519", "ed25519", "");
            let authorized_keys = dir.join("authorized_keys");
            std::fs::copy(format!("{}.pub", user_key.display()), &authorized_keys)
                .expect("write authorized_keys");
            let user = run("id", &["-un"]);
            if run("id", &["-u"]) == "0" {
                // sshd running as root wants its privilege separation directory.
                let _ = std::fs::create_dir_all("/run/sshd");
            }
            let mut lab = Lab {
                host_ed25519: public_key(&host_ed),
                host_rsa: public_key(&host_rsa),
                port: free_port(),
                dir,
                user,
                user_key,
                authorized_keys,
                sshd: None,
            };
            lab.spawn_sshd(&host_ed, &host_rsa);
            lab
        }

        fn spawn_sshd(&mut self, host_ed: &Path, host_rsa: &Path) {
            let config = self.dir.join("sshd_config");
            std::fs::write(&config, "").expect("write sshd_config");
            let log = std::fs::File::create(self.dir.join("sshd.log")).expect("create sshd log");
            let options = [
                "ListenAddress=127.0.0.1".to_string(),
                format!("HostKey={}", host_ed.display()),
                format!("HostKey={}", host_rsa.display()),
                format!("AuthorizedKeysFile={}", self.authorized_keys.display()),
                "StrictModes=no".to_string(),
                "PidFile=none".to_string(),
                "UsePAM=no".to_string(),
            ];
            let mut command = Command::new(SSHD);
            command
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .args(["-p", &self.port.to_string()]);
            for option in &options {
                command.args(["-o", option]);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}; {INSTALL_HINT}"));
            let mut sshd = Killed(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = sshd.0.try_wait() {
                    panic!("sshd exited ({status}) at start:\n{}", self.sshd_log());
                }
                if let Ok(mut stream) = StdTcpStream::connect(("127.0.0.1", self.port)) {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut banner = [0u8; 7];
                    if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                        let _ = stream.write_all(b"SSH-2.0-probe\r\n");
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not listen on port {} within 10 s:\n{}",
                    self.port,
                    self.sshd_log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            self.sshd = Some(sshd);
        }

        fn sshd_log(&self) -> String {
            std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
        }

        /// Writes a known_hosts file with these lines and returns its path.
        fn known_hosts(&self, name: &str, lines: &[String]) -> PathBuf {
            let path = self.dir.join(name);
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(&path, text).expect("write known_hosts");
            path
        }

        fn trusting_known_hosts(&self) -> PathBuf {
            self.known_hosts(
                "known_hosts",
                &[known_hosts::entry_line(
                    "127.0.0.1",
                    self.port,
                    &self.host_ed25519,
                )],
            )
        }

        fn options(&self, known_hosts: PathBuf) -> SshOptions {
            SshOptions {
                port: self.port,
                identity_file: Some(self.user_key.clone()),
                use_agent: false,
                connect_timeout: Duration::from_secs(10),
                ..SshOptions::new("lab1", "127.0.0.1", self.user.clone(), known_hosts)
            }
        }
    }

    /// Deterministic bytes covering every byte value.
    fn pattern(len: usize) -> Vec<u8> {
        let mut state: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    fn ms(d: Duration) -> String {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }

    async fn run_via_trait<T: Transport>(transport: &T, command: &str) -> ExecOutput {
        transport.exec(command, b"").await.expect("exec via trait")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sshd_connect_exec_stdin_concurrency_and_jump() {
        let lab = Lab::start("exec");
        let opts = lab.options(lab.trusting_known_hosts());

        // Connect + key exchange + auth, a few times.
        let mut connect_times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let session = connect(&opts)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
            connect_times.push(started.elapsed());
            session.close().await;
        }
        connect_times.sort();
        let session = connect(&opts).await.expect("connect");

        // Exit status, stdout and stderr kept apart.
        let started = Instant::now();
        let out = session
            .exec("echo hi; echo err >&2; exit 3", b"")
            .await
            .expect("exec");
        let first_exec = started.elapsed();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.success());

        // Sequential execs on the reused connection.
        let rounds = 20u32;
        let started = Instant::now();
        for _ in 0..rounds {
            let out = session.exec("true", b"").await.expect("exec true");
            assert_eq!(out.status, 0);
        }
        let per_exec = started.elapsed() / rounds;

        // Through the Transport trait.
        assert_eq!(
            run_via_trait(&session, "echo via-trait").await.stdout,
            b"via-trait\n"
        );

        // 5 MB through `cat` and back.
        let input = pattern(5 * 1024 * 1024);
        let started = Instant::now();
        let out = session.exec("cat", &input).await.expect("cat");
        let cat_time = started.elapsed();
        assert_eq!(out.status, 0);
        assert!(out.stdout == input, "stdout differs from stdin");
        assert!(out.stderr.is_empty());

        // A command that ignores a large stdin ends without hanging.
        let out = tokio::time::timeout(Duration::from_secs(20), session.exec("exit 0", &input))
            .await
            .expect("exec with unread stdin must not hang")
            .expect("exec");
        assert_eq!(out.status, 0);

        // Killed by a signal: 128 + 15.
        let out = session.exec("kill -TERM $$", b"").await.expect("exec kill");
        assert_eq!(out.status, 143);

        // 50 at once on one connection (sshd allows 10 sessions per connection).
        let session = Arc::new(session);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let session = Arc::clone(&session);
            tasks.spawn(async move {
                let out = session
                    .exec(&format!("echo {i}; read line; echo \"$line\""), b"in\n")
                    .await;
                (i, out)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, out) = joined.expect("task");
            let out = out.unwrap_or_else(|e| panic!("exec {i}: {e}"));
            assert_eq!(out.status, 0, "exec {i}");
            assert_eq!(out.stdout, format!("{i}\nin\n").as_bytes());
        }
        let concurrent = started.elapsed();
        match Arc::try_unwrap(session) {
            Ok(session) => session.close().await,
            Err(_) => panic!("session still shared"),
        }

        // Through a jump host (the same sshd forwarding to itself).
        let jump_opts = SshOptions {
            jump: Some(JumpHost {
                address: "127.0.0.1".to_string(),
                port: lab.port,
                user: lab.user.clone(),
            }),
            ..opts.clone()
        };
        let started = Instant::now();
        let session = connect(&jump_opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
        let jump_connect = started.elapsed();
        let out = session
            .exec("echo jumped", b"")
            .await
            .expect("exec via jump");
        assert_eq!(out.stdout, b"jumped\n");
        let started = Instant::now();
        for _ in 0..rounds {
            session.exec("true", b"").await.expect("exec via jump");
        }
        let jump_per_exec = started.elapsed() / rounds;
        session.close().await;

        // Scanning through the jump host sees the same key as a direct scan.
        let direct = scan_host_key("127.0.0.1", lab.port, Duration::from_secs(5))
            .await
            .expect("scan");
        let via = scan_host_key_via_jump(&jump_opts)
            .await
            .expect("scan via jump");
        assert_eq!(direct.key_data(), lab.host_ed25519.key_data());
        assert_eq!(via.key_data(), lab.host_ed25519.key_data());

        println!(
            "loopback figures: connect+kex+auth min {} / median {} / max {}; first exec {}; \
             exec on reused connection {} each; 50 concurrent execs {} in all; 5 MB cat round \
             trip {}; connect via jump host {}; exec via jump host {} each",
            ms(connect_times[0]),
            ms(connect_times[2]),
            ms(connect_times[4]),
            ms(first_exec),
            ms(per_exec),
            ms(concurrent),
            ms(cat_time),
            ms(jump_connect),
            ms(jump_per_exec),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sshd_host_key_checks_are_strict() {
        let lab = Lab::start("hostkey");
        let ed_line = known_hosts::entry_line("127.0.0.1", lab.port, &lab.host_ed25519);
        let rsa_line = known_hosts::entry_line("127.0.0.1", lab.port, &lab.host_rsa);
        let pattern = known_hosts::host_pattern("127.0.0.1", lab.port);
        let ed_fp = known_hosts::fingerprint(&lab.host_ed25519);

        // Missing file: unknown.
        let opts = lab.options(lab.dir.join("no_such_known_hosts"));
        let err = connect(&opts)
            .await
            .expect_err("unknown key must be refused");
        assert!(matches!(err, SshError::UnknownHostKey(_)), "{err:?}");
        let text = err.to_string();
        for needle in [
            "lab1",
            "127.0.0.1",
            &ed_fp,
            "foobar-provision trust INVENTORY --limit lab1",
        ] {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }

        // Another host's line only: still unknown.
        let other = known_hosts::entry_line("10.9.9.9", 22, &lab.host_ed25519);
        let opts = lab.options(lab.known_hosts("kh_other", &[other]));
        let err = connect(&opts).await.expect_err("unknown");
        assert!(matches!(err, SshError::UnknownHostKey(_)), "{err:?}");

        // Revoked, even with a line that trusts the key.
        let opts = lab.options(lab.known_hosts(
            "kh_revoked",
            &[ed_line.clone(), format!("@revoked {ed_line}")],
        ));
        let err = connect(&opts)
            .await
            .expect_err("revoked key must be refused");
        assert!(
            matches!(&err, SshError::HostKeyRevoked(r) if r.line == 2),
            "{err:?}"
        );
        assert!(err.to_string().contains("@revoked"), "{err}");

        // Changed: known_hosts holds some other ed25519 key for the host.
        let stranger = public_key(&keygen(&lab.dir, "stranger", "ed25519", ""));
        let opts = lab.options(lab.known_hosts(
            "kh_changed",
            &[
                "# comment".to_string(),
                known_hosts::entry_line("127.0.0.1", lab.port, &stranger),
            ],
        ));
        let err = connect(&opts)
            .await
            .expect_err("changed key must be refused");
        assert!(
            matches!(&err, SshError::HostKeyChanged(r) if r.line == 2),
            "{err:?}"
        );
        let text = err.to_string();
        for needle in [
            "lab1",
            "line 2",
            &ed_fp,
            "man-in-the-middle",
            &format!("ssh-keygen -R '{pattern}' -f"),
            "foobar-provision trust INVENTORY --limit lab1",
        ] {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }

        // Known by its RSA key only: the client asks for RSA and the host is verified.
        let opts = lab.options(lab.known_hosts("kh_rsa", &[rsa_line]));
        let session = connect(&opts)
            .await
            .unwrap_or_else(|e| panic!("host known by RSA key: {e}"));
        assert_eq!(
            session.exec("echo rsa", b"").await.expect("exec").stdout,
            b"rsa\n"
        );
        session.close().await;

        // Hashed entry (as `ssh-keygen -H` writes), tab separated.
        let hashed_file = lab.known_hosts("kh_hashed", std::slice::from_ref(&ed_line));
        run(
            "ssh-keygen",
            &["-q", "-H", "-f", &hashed_file.to_string_lossy()],
        );
        let hashed = std::fs::read_to_string(&hashed_file).expect("read hashed");
        assert!(hashed.starts_with("|1|"), "{hashed}");
        std::fs::write(&hashed_file, hashed.replace(' ', "\t")).expect("write");
        let session = connect(&lab.options(hashed_file))
            .await
            .unwrap_or_else(|e| panic!("hashed entry: {e}"));
        session.close().await;

        // The scan sees the key that connect verifies.
        let scanned = scan_host_key("127.0.0.1", lab.port, Duration::from_secs(5))
            .await
            .expect("scan");
        assert_eq!(known_hosts::fingerprint(&scanned), ed_fp);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sshd_authentication_paths() {
        let lab = Lab::start("auth");
        let known = lab.trusting_known_hosts();

        // A key the server does not know: the message names the user and the key file.
        let stranger = keygen(&lab.dir, "stranger_key", "ed25519", "");
        let opts = SshOptions {
            identity_file: Some(stranger.clone()),
            ..lab.options(known.clone())
        };
        let err = connect(&opts).await.expect_err("unknown user key");
        let text = err.to_string();
        assert!(matches!(err, SshError::AuthFailed { .. }), "{err:?}");
        assert!(text.contains(&format!("as user {}", lab.user)), "{text}");
        assert!(text.contains(&stranger.display().to_string()), "{text}");

        // RSA user key (rsa-sha2 signature).
        let rsa = keygen(&lab.dir, "user_rsa", "rsa", "");
        let encrypted = keygen(&lab.dir, "user_encrypted", "ed25519", "sesame");
        let mut authorized = std::fs::read_to_string(&lab.authorized_keys).expect("read");
        for key in [&rsa, &encrypted] {
            authorized
                .push_str(&std::fs::read_to_string(format!("{}.pub", key.display())).expect("pub"));
        }
        std::fs::write(&lab.authorized_keys, authorized).expect("write authorized_keys");
        let opts = SshOptions {
            identity_file: Some(rsa),
            ..lab.options(known.clone())
        };
        connect(&opts).await.expect("RSA user key").close().await;

        // Encrypted key: needs the passphrase, refuses a wrong one, works with the right one.
        let opts = SshOptions {
            identity_file: Some(encrypted.clone()),
            ..lab.options(known.clone())
        };
        let err = connect_with(&opts, None, None)
            .await
            .expect_err("no passphrase");
        assert!(
            matches!(err, SshError::PassphraseRequired { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(PASSPHRASE_ENV), "{err}");
        let err = connect_with(&opts, Some("wrong"), None)
            .await
            .expect_err("wrong passphrase");
        assert!(matches!(err, SshError::BadPassphrase { .. }), "{err:?}");
        connect_with(&opts, Some("sesame"), None)
            .await
            .expect("encrypted key with passphrase")
            .close()
            .await;

        // Nothing to authenticate with.
        let opts = SshOptions {
            identity_file: None,
            use_agent: false,
            ..lab.options(known.clone())
        };
        let err = connect(&opts).await.expect_err("no method");
        assert!(matches!(err, SshError::NoAuthMethod { .. }), "{err:?}");

        // Agent: only the agent holds the key.
        let socket = lab.dir.join("agent.sock");
        let agent = Killed(
            Command::new("ssh-agent")
                .args(["-D", "-a"])
                .arg(&socket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start ssh-agent: {e}; {INSTALL_HINT}")),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let added = Command::new("ssh-add")
            .arg(&lab.user_key)
            .env("SSH_AUTH_SOCK", &socket)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-add");
        assert!(added.status.success(), "ssh-add: {added:?}");
        let opts = SshOptions {
            identity_file: None,
            use_agent: true,
            ..lab.options(known.clone())
        };
        let session = connect_with(&opts, None, Some(Ok(socket.clone())))
            .await
            .unwrap_or_else(|e| panic!("agent auth: {e}"));
        assert_eq!(
            session.exec("echo agent", b"").await.expect("exec").stdout,
            b"agent\n"
        );
        session.close().await;

        // Agent socket missing: the failure says so.
        let err = connect_with(
            &opts,
            None,
            Some(Err("ssh-agent: SSH_AUTH_SOCK is not set".into())),
        )
        .await
        .expect_err("no agent");
        assert!(err.to_string().contains("SSH_AUTH_SOCK"), "{err}");
        drop(agent);
    }

    #[tokio::test]
    async fn connect_timeout_names_address_and_seconds() {
        // Accepts TCP connections (the kernel does) but never says a word.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let dir = TempDir::new("timeout");
        let key = keygen(&dir, "key", "ed25519", "");
        let opts = SshOptions {
            port,
            identity_file: Some(key),
            use_agent: false,
            connect_timeout: Duration::from_millis(300),
            ..SshOptions::new("web9", "127.0.0.1", "deploy", dir.join("known_hosts"))
        };
        let started = Instant::now();
        let err = connect(&opts).await.expect_err("must time out");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("connect timed out after 0.3 s to 127.0.0.1:") && text.contains("web9"),
            "{text}"
        );
        let err = scan_host_key("127.0.0.1", port, Duration::from_millis(200))
            .await
            .expect_err("scan must time out");
        assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
        drop(silent);

        // Nothing listening: a connect error naming the host.
        let closed = free_port();
        let opts = SshOptions {
            port: closed,
            ..opts
        };
        let err = connect(&opts).await.expect_err("refused");
        assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("web9 (127.0.0.1:{closed})")),
            "{err}"
        );
    }
}
