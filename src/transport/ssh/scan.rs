//! Host key scanning for the explicit `trust` command: read the key a server offers, without
//! checking or trusting it, directly or through the jump host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Disconnect;
use russh::keys::{Algorithm, PublicKey};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::{Connector, client_config, handshake, prepare, tcp_connect, with_timeout};
use super::error::SshError;
use super::host_keys::{Client, HostKeyPolicy, read_known_hosts};
use super::identity::{agent_from_env, passphrase_from_env};
use super::options::SshOptions;
use super::peer::Peer;
use crate::transport::known_hosts;

/// Connects without authenticating and returns the host key the server offers (for the
/// explicit `trust` command), within `timeout`.
///
/// The key is not checked against anything: the caller shows its fingerprint and decides. The
/// server is asked for its ed25519 key first, then ECDSA, then RSA. (`trust` uses
/// [`scan_host_key_via_jump`], which asks first for the key types known_hosts holds.)
///
/// # Errors
/// [`SshError::Connect`], [`SshError::Handshake`] or [`SshError::Timeout`] when no key could
/// be read.
#[cfg(test)]
pub async fn scan_host_key(
    address: &str,
    port: u16,
    timeout: Duration,
) -> Result<PublicKey, SshError> {
    scan_direct(address, port, timeout, &[]).await
}

/// [`scan_host_key`], asking first for the key types in `known`.
#[cfg(test)]
async fn scan_direct(
    address: &str,
    port: u16,
    timeout: Duration,
    known: &[Algorithm],
) -> Result<PublicKey, SshError> {
    scan_peer(&Peer::address_only(address, port), timeout, known).await
}

/// The key `peer` offers, read within `timeout`.
async fn scan_peer(
    peer: &Peer,
    timeout: Duration,
    known: &[Algorithm],
) -> Result<PublicKey, SshError> {
    let scan = async {
        let tcp = tcp_connect(peer).await?;
        scan_stream(tcp, peer, known).await
    };
    tokio::time::timeout(timeout, scan)
        .await
        .unwrap_or_else(|_elapsed| {
            Err(SshError::Timeout {
                host: peer.host.clone(),
                address: peer.address.clone(),
                port: peer.port,
                seconds: timeout.as_secs_f64(),
                via: String::new(),
            })
        })
}

/// The host key `opts.address:opts.port` offers, for `trust`: like [`scan_host_key`], but the
/// server is asked first for the key types `opts.known_hosts` already holds for the host (a
/// host known by its RSA key is scanned for that key, not reported as changed because it
/// also has an ed25519 one). With `opts.jump`, connects to the jump host as
/// [`connect`](super::connect()) does (host key verified, authenticated) and reads the key
/// through it; without, connects directly within `opts.connect_timeout`.
///
/// # Errors
/// [`SshError::KnownHostsUnreadable`]; those of [`connect`](super::connect()) for the jump
/// host, [`SshError::JumpForward`], and those of [`scan_host_key`] for the host.
pub async fn scan_host_key_via_jump(opts: &SshOptions) -> Result<PublicKey, SshError> {
    if opts.jumps.is_empty() {
        let text = read_known_hosts(&opts.host_name, &opts.known_hosts).await?;
        let known = known_hosts::known_key_algorithms(&text, &opts.address, opts.port);
        let peer = Peer::target(opts);
        return scan_peer(&peer, opts.connect_timeout, &known).await;
    }
    let passphrase = passphrase_from_env();
    let prepared = prepare(opts, passphrase.as_deref(), agent_from_env(opts)).await?;
    let connector = Connector {
        opts,
        prepared: &prepared,
    };
    let known =
        known_hosts::known_key_algorithms(&prepared.known_hosts_text, &opts.address, opts.port);
    let jumps = with_timeout(opts, connector.through_jumps()).await?;
    let result = with_timeout(opts, async {
        let stream = connector.forward_to_target(&jumps).await?;
        scan_stream(stream, &Peer::target(opts), &known).await
    })
    .await;
    for jump in jumps.iter().rev() {
        let _ = jump.disconnect(Disconnect::ByApplication, "", "en").await;
    }
    result
}

/// Key exchange up to the host key, which is recorded and then refused. The server is asked
/// first for the key types in `known`.
async fn scan_stream<S>(stream: S, peer: &Peer, known: &[Algorithm]) -> Result<PublicKey, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let seen = Arc::new(Mutex::new(None));
    let client = Client {
        policy: HostKeyPolicy::Scan(Arc::clone(&seen)),
    };
    let outcome = handshake(client_config(known), stream, client, peer).await;
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
    use super::super::test_sshd::Lab;
    use super::*;
    use crate::transport::known_hosts::{self, HostKeyStatus};

    /// Review finding 7, reproduction: a host known only by its RSA key (a private sshd
    /// offering ed25519 and RSA) was scanned for its ed25519 key, so `trust` reported the
    /// host as "changed". The key types known for the host are asked for first.
    /// Skipped (passes) when /usr/sbin/sshd is absent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sshd_scan_asks_first_for_the_key_types_known_for_the_host() {
        let Some(lab) = Lab::start("scan-known") else {
            return;
        };
        let rsa_line = known_hosts::entry_line("127.0.0.1", lab.port, &lab.host_rsa);
        let rsa_only = lab.known_hosts("rsa_only", std::slice::from_ref(&rsa_line));
        let key = scan_host_key_via_jump(&lab.options(rsa_only))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
        assert_eq!(
            known_hosts::fingerprint(&key),
            known_hosts::fingerprint(&lab.host_rsa),
            "the RSA key known for the host is scanned"
        );
        assert_eq!(
            known_hosts::check(&rsa_line, "127.0.0.1", lab.port, &key),
            HostKeyStatus::Trusted
        );
        // Nothing known: ed25519 first, as before.
        let key = scan_host_key_via_jump(&lab.options(lab.dir.join("missing_known_hosts")))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
        assert_eq!(
            known_hosts::fingerprint(&key),
            known_hosts::fingerprint(&lab.host_ed25519)
        );
    }
}
