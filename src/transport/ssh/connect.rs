//! Connecting: TCP (or a tunnel through the jump host), the SSH handshake with host key
//! checking, then authentication, all within the connect timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::Algorithm;
use russh::{ChannelMsg, Preferred};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::auth::authenticate;
use super::error::{SshError, open_failure_text};
use super::host_keys::{Client, ClientError, HostKeyPolicy, read_known_hosts};
use super::identity::{Credentials, agent_from_env, passphrase_from_env};
use super::options::{JumpHost, SshOptions};
use super::peer::Peer;
use super::{SessionHandle, SshSession};
use crate::transport::known_hosts;

/// Keepalive period: when nothing came from the server for this long, ask it for a reply.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalives before the connection is declared dead (about a minute in all).
const KEEPALIVE_MAX: usize = 3;
/// Backstop for a connection on which nothing at all happens, keepalive replies included.
/// Keepalive replies count as activity, so a long silent command does not trip it.
const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the warm-up command on a jump host may take before it is given up (see
/// [`warm_up`]).
const JUMP_WARM_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `opts.address:opts.port` (at `opts.ip` when set; through `opts.jumps` in
/// order if any), verifies each host key strictly against `opts.known_hosts`, and
/// authenticates as `opts.user` with the identity files and then the agent's keys. The
/// whole of it is limited by `opts.connect_timeout`.
///
/// # Errors
/// Host key refused ([`SshError::UnknownHostKey`], [`SshError::HostKeyChanged`],
/// [`SshError::HostKeyRevoked`]), no key accepted ([`SshError::AuthFailed`]), identity file
/// problems, [`SshError::Timeout`], and network or protocol failures; each names the host.
pub async fn connect(opts: &SshOptions) -> Result<SshSession, SshError> {
    let passphrase = passphrase_from_env();
    connect_with(opts, passphrase.as_deref(), agent_from_env(opts)).await
}

/// [`connect`] with the environment already read (tests call this directly).
pub(super) async fn connect_with(
    opts: &SshOptions,
    passphrase: Option<&str>,
    agent: Option<Result<PathBuf, String>>,
) -> Result<SshSession, SshError> {
    let prepared = prepare(opts, passphrase, agent).await?;
    with_timeout(opts, establish(opts, &prepared)).await
}

/// What connecting needs, read before the clock starts: the credentials of the host and
/// of each jump host, and the known_hosts text.
pub(super) struct Prepared {
    pub(super) credentials: Credentials,
    pub(super) jump_credentials: Vec<Credentials>,
    pub(super) known_hosts_text: Arc<str>,
}

/// Loads the identities and the known_hosts text: local work, done before the clock starts.
pub(super) async fn prepare(
    opts: &SshOptions,
    passphrase: Option<&str>,
    agent: Option<Result<PathBuf, String>>,
) -> Result<Prepared, SshError> {
    let credentials = Credentials::resolve(opts, passphrase, agent).await?;
    let mut jump_credentials = Vec::new();
    for jump in &opts.jumps {
        jump_credentials.push(credentials.for_jump(opts, jump, passphrase).await?);
    }
    let known_hosts_text = read_known_hosts(&opts.host_name, &opts.known_hosts).await?;
    Ok(Prepared {
        credentials,
        jump_credentials,
        known_hosts_text: known_hosts_text.into(),
    })
}

/// Runs `work` within `opts.connect_timeout`, turning the timeout into [`SshError::Timeout`].
pub(super) async fn with_timeout<T>(
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
            via: opts.via(),
        }),
    }
}

/// TCP connect (or the jump hosts' tunnel), handshake and authentication, without a time
/// limit.
async fn establish(opts: &SshOptions, prepared: &Prepared) -> Result<SshSession, SshError> {
    let connector = Connector { opts, prepared };
    let target = Peer::target(opts);
    if opts.jumps.is_empty() {
        let tcp = tcp_connect(&target).await?;
        let handle = connector
            .login(tcp, &target, &opts.user, &prepared.credentials)
            .await?;
        return Ok(SshSession::new(handle, Vec::new(), &opts.host_name));
    }
    let jumps = connector.through_jumps().await?;
    let through = async {
        let stream = connector.forward_to_target(&jumps).await?;
        connector
            .login(stream, &target, &opts.user, &prepared.credentials)
            .await
    };
    let warm = futures::future::join_all(jumps.iter().map(warm_up));
    let (handle, _) = tokio::join!(through, warm);
    Ok(SshSession::new(handle?, jumps, &opts.host_name))
}

/// Builds handlers and client configurations for the peers of one connection attempt.
pub(super) struct Connector<'a> {
    pub(super) opts: &'a SshOptions,
    pub(super) prepared: &'a Prepared,
}

impl Connector<'_> {
    fn verifier(&self, peer: &Peer) -> Client {
        Client {
            policy: HostKeyPolicy::Verify {
                peer: peer.clone(),
                known_hosts_text: Arc::clone(&self.prepared.known_hosts_text),
                known_hosts: self.opts.known_hosts.clone(),
            },
        }
    }

    fn config(&self, peer: &Peer) -> Arc<client::Config> {
        client_config(&known_hosts::known_key_algorithms(
            &self.prepared.known_hosts_text,
            &peer.address,
            peer.port,
        ))
    }

    /// Handshake and authentication as `user` over `stream`.
    async fn login<S>(
        &self,
        stream: S,
        peer: &Peer,
        user: &str,
        credentials: &Credentials,
    ) -> Result<SessionHandle, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut handle = handshake(self.config(peer), stream, self.verifier(peer), peer).await?;
        authenticate(&mut handle, peer, user, credentials).await?;
        Ok(handle)
    }

    /// Authenticated connections to every jump host, in order: the first over TCP, each
    /// next one forwarded by the one before it.
    pub(super) async fn through_jumps(&self) -> Result<Vec<SessionHandle>, SshError> {
        let mut handles: Vec<SessionHandle> = Vec::new();
        for (i, jump) in self.opts.jumps.iter().enumerate() {
            let peer = Peer::jump(self.opts, jump);
            let credentials = self
                .prepared
                .jump_credentials
                .get(i)
                .unwrap_or(&self.prepared.credentials);
            let handle = match handles.last() {
                None => {
                    let tcp = tcp_connect(&peer).await?;
                    self.login(tcp, &peer, &jump.user, credentials).await?
                }
                Some(previous) => {
                    let before = &self.opts.jumps[i - 1];
                    let stream = self
                        .forward(before, previous, &jump.address, jump.port)
                        .await?;
                    self.login(stream, &peer, &jump.user, credentials).await?
                }
            };
            handles.push(handle);
        }
        Ok(handles)
    }

    /// A forwarded connection from the last jump host to the target (its IP when resolved).
    pub(super) async fn forward_to_target(
        &self,
        jumps: &[SessionHandle],
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let (Some(last), Some(jump)) = (jumps.last(), self.opts.jumps.last()) else {
            return Err(SshError::Channel {
                host: self.opts.host_name.clone(),
                reason: "no jump host to forward through".into(),
            });
        };
        self.forward(jump, last, &self.opts.target(), self.opts.port)
            .await
    }

    /// A forwarded connection from jump host `jump` to `address:port`.
    async fn forward(
        &self,
        jump: &JumpHost,
        jump_handle: &SessionHandle,
        address: &str,
        port: u16,
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let channel = jump_handle
            .channel_open_direct_tcpip(address.to_string(), u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| SshError::JumpForward {
                host: self.opts.host_name.clone(),
                jump: jump.shown(),
                address: address.to_string(),
                port,
                reason: match e {
                    russh::Error::ChannelOpenFailure(f) => open_failure_text(&f),
                    other => other.to_string(),
                },
            })?;
        Ok(channel.into_stream())
    }
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

/// Opens the TCP connection to `peer` (its IP when resolved), with TCP_NODELAY.
pub(super) async fn tcp_connect(peer: &Peer) -> Result<TcpStream, SshError> {
    let connecting = match peer.ip {
        Some(ip) => TcpStream::connect((ip, peer.port)).await,
        None => TcpStream::connect((peer.address.as_str(), peer.port)).await,
    };
    let tcp = connecting.map_err(|source| SshError::Connect {
        peer: peer.to_string(),
        source,
    })?;
    // Best effort: a socket that refuses it still works, only slower.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Version and key exchange over `stream`; `client` decides about the host key.
pub(super) async fn handshake<S>(
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

/// Client configuration: TCP_NODELAY (without it every exec costs ~40 ms of Nagle and delayed
/// ACK), keepalives, and host key algorithms reordered so the ones known_hosts holds for this
/// peer come first (a host known by its RSA key is then verified by that key).
pub(super) fn client_config(known: &[Algorithm]) -> Arc<client::Config> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::HashAlg;

    #[test]
    fn host_key_algorithms_known_for_the_peer_come_first() {
        let config = client_config(&[Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        }]);
        let keys = &config.preferred.key;
        assert!(keys[0].clone().is_rsa(), "{keys:?}");
        assert_eq!(keys.len(), Preferred::DEFAULT.key.len());
        assert!(keys.contains(&Algorithm::Ed25519));
    }

    #[test]
    fn nothing_known_keeps_the_default_order_and_sets_nodelay() {
        let config = client_config(&[]);
        assert_eq!(config.preferred.key, Preferred::DEFAULT.key);
        assert!(config.nodelay);
        assert_eq!(config.keepalive_interval, Some(KEEPALIVE_INTERVAL));
    }
}
