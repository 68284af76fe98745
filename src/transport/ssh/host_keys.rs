//! Host key checking: the russh [`client::Handler`] ([`Client`]) that checks the key a server
//! offers against the `known_hosts` module (or records it, for scanning), and the
//! [`HostKeyReport`] that a refused key's error carries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use super::error::SshError;
use super::peer::Peer;
use crate::transport::known_hosts::{self, HostKeyStatus};

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

/// Error type of the russh handler: a host key verdict, or whatever russh reports.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientError {
    /// The host key was refused; the error says why.
    #[error(transparent)]
    HostKey(Box<SshError>),
    /// The protocol failed.
    #[error(transparent)]
    Russh(#[from] russh::Error),
}

/// What the handler does with the server's host key.
pub(super) enum HostKeyPolicy {
    /// Check it against the known_hosts text.
    Verify {
        peer: Peer,
        known_hosts_text: Arc<str>,
        known_hosts: PathBuf,
    },
    /// Record it and stop the handshake (for `trust`).
    Scan(Arc<Mutex<Option<PublicKey>>>),
}

/// The russh client handler: it only decides about the host key.
pub(super) struct Client {
    pub(super) policy: HostKeyPolicy,
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

/// Reads the known_hosts file; a missing file is empty.
pub(super) async fn read_known_hosts(host: &str, path: &Path) -> Result<String, SshError> {
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
