//! Host key scanning for the explicit `trust` command: read the key a server offers, without
//! checking or trusting it, directly or through the jump host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Disconnect;
use russh::keys::PublicKey;
use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::{Connector, client_config, handshake, prepare, tcp_connect, with_timeout};
use super::error::SshError;
use super::host_keys::{Client, HostKeyPolicy};
use super::identity::{agent_from_env, passphrase_from_env};
use super::options::SshOptions;
use super::peer::Peer;

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
    let peer = Peer::address_only(address, port);
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
/// [`connect`](super::connect()) does (host key verified, authenticated), then reads the key
/// `opts.address:opts.port` offers through it. Without a jump host it is [`scan_host_key`]
/// with `opts.connect_timeout`.
///
/// # Errors
/// Those of [`connect`](super::connect()) for the jump host, [`SshError::JumpForward`], and
/// those of [`scan_host_key`] for the host.
pub async fn scan_host_key_via_jump(opts: &SshOptions) -> Result<PublicKey, SshError> {
    let Some(jump) = &opts.jump else {
        return scan_host_key(&opts.address, opts.port, opts.connect_timeout).await;
    };
    let passphrase = passphrase_from_env();
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
        scan_stream(stream, &Peer::target(opts)).await
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
