//! Public key authentication: the identity files first (in order), then the ssh-agent's keys, until the
//! server accepts one; a refusal lists every key tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::AuthResult;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::net::UnixStream;

use super::SessionHandle;
use super::error::SshError;
use super::identity::Credentials;
use super::peer::Peer;
use crate::transport::known_hosts;

/// Tries the identity files in order, then the agent's keys, until the server accepts one.
///
/// # Errors
/// [`SshError::AuthFailed`], naming every key tried and why the agent could not be used.
pub(super) async fn authenticate(
    handle: &mut SessionHandle,
    peer: &Peer,
    user: &str,
    credentials: &Credentials,
) -> Result<(), SshError> {
    let mut attempt = Attempt {
        handle,
        user,
        rsa_hash: None,
        tried: Vec::new(),
    };
    for (path, key) in &credentials.identities {
        if attempt.handle.is_closed() {
            break;
        }
        if attempt.identity_file(path, key).await {
            return Ok(());
        }
    }
    if let Some(agent) = &credentials.agent
        && !attempt.handle.is_closed()
    {
        let file_keys: Vec<&KeyData> = credentials
            .identities
            .iter()
            .map(|(_, key)| key.public_key().key_data())
            .collect();
        if attempt.agent(agent, &file_keys).await {
            return Ok(());
        }
    }
    Err(attempt.failed(peer))
}

/// One authentication attempt: the keys offered so far and what became of each.
struct Attempt<'a> {
    handle: &'a mut SessionHandle,
    user: &'a str,
    /// The RSA signature hash the server accepts, once asked.
    rsa_hash: Option<Option<HashAlg>>,
    /// One line per key tried (or per reason the agent could not be used).
    tried: Vec<String>,
}

impl Attempt<'_> {
    /// Offers the identity file's key; true when the server accepted it.
    async fn identity_file(&mut self, path: &Path, key: &Arc<PrivateKey>) -> bool {
        let hash = self.hash_for(key.algorithm()).await;
        let label = format!(
            "identity file {} ({})",
            path.display(),
            describe_key(key.public_key())
        );
        match self
            .handle
            .authenticate_publickey(self.user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
            .await
        {
            Ok(result) if result.success() => return true,
            Ok(_) => self.tried.push(label),
            Err(e) => self
                .tried
                .push(format!("{label}: the server closed the connection ({e})")),
        }
        false
    }

    /// Offers the agent's keys, except `skip` (the identity files', already refused); true
    /// when the server accepted one. `agent` is the socket, or why there is none.
    async fn agent(&mut self, agent: &Result<PathBuf, String>, skip: &[&KeyData]) -> bool {
        let socket = match agent {
            Ok(socket) => socket,
            Err(why) => {
                self.tried.push(why.clone());
                return false;
            }
        };
        let mut client = match AgentClient::connect_uds(socket).await {
            Ok(client) => client,
            Err(e) => {
                self.tried
                    .push(format!("ssh-agent at {}: {e}", socket.display()));
                return false;
            }
        };
        for identity in self.agent_identities(&mut client, socket).await {
            let AgentIdentity::PublicKey { key, comment } = identity else {
                continue;
            };
            if skip.contains(&key.key_data()) {
                continue;
            }
            if self.agent_key(&mut client, key, &comment).await {
                return true;
            }
            if self.handle.is_closed() {
                break;
            }
        }
        false
    }

    /// The agent's keys, bound to this session where the agent supports it.
    async fn agent_identities(
        &mut self,
        client: &mut AgentClient<UnixStream>,
        socket: &Path,
    ) -> Vec<AgentIdentity> {
        if let Some(binding) = self.handle.agent_session_binding() {
            // Agents that predate session binding refuse it; they still sign.
            let _ = client.bind_session(binding, false).await;
        }
        let identities = match client.request_identities().await {
            Ok(identities) => identities,
            Err(e) => {
                self.tried
                    .push(format!("ssh-agent at {}: {e}", socket.display()));
                Vec::new()
            }
        };
        if identities.is_empty() {
            self.tried
                .push(format!("ssh-agent at {} (no keys)", socket.display()));
        }
        identities
    }

    /// Offers one agent key, the agent signing; true when the server accepted it.
    async fn agent_key(
        &mut self,
        client: &mut AgentClient<UnixStream>,
        key: PublicKey,
        comment: &str,
    ) -> bool {
        let hash = self.hash_for(key.algorithm()).await;
        let label = if comment.is_empty() {
            format!("agent key {}", describe_key(&key))
        } else {
            format!("agent key {} ({comment})", describe_key(&key))
        };
        match self
            .handle
            .authenticate_publickey_with(self.user, key, hash, client)
            .await
        {
            Ok(AuthResult::Success) => return true,
            Ok(AuthResult::Failure { .. }) => self.tried.push(label),
            Err(e) => self
                .tried
                .push(format!("{label}: agent could not sign: {e}")),
        }
        false
    }

    /// The signature hash for a key of `algorithm`: the server's best RSA hash for RSA keys
    /// (asked once per attempt; `None` then means ssh-rsa), none for the others.
    async fn hash_for(&mut self, algorithm: Algorithm) -> Option<HashAlg> {
        if !algorithm.is_rsa() {
            return None;
        }
        if let Some(hash) = self.rsa_hash {
            return hash;
        }
        let hash = best_rsa_hash(self.handle).await;
        self.rsa_hash = Some(hash);
        hash
    }

    /// The error for a server that accepted none of the keys.
    fn failed(self, peer: &Peer) -> SshError {
        SshError::AuthFailed {
            peer: peer.to_string(),
            user: self.user.to_string(),
            tried: if self.tried.is_empty() {
                "no keys".to_string()
            } else {
                self.tried.join("; ")
            },
        }
    }
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

/// `ALGORITHM SHA256:...`, for the list of keys tried.
fn describe_key(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        known_hosts::fingerprint(key)
    )
}
