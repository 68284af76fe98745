//! What to authenticate with, resolved before connecting: the identity file (decrypted with
//! the passphrase from [`PASSPHRASE_ENV`], decoded once per process) and the ssh-agent socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use russh::keys::PrivateKey;

use super::error::SshError;
use super::options::SshOptions;

/// Environment variable holding the passphrase of an encrypted identity file.
pub(super) const PASSPHRASE_ENV: &str = "FOOBAR_SSH_PASSPHRASE";

/// How to authenticate, resolved before connecting.
#[derive(Clone)]
pub(super) struct Credentials {
    /// The identity files' keys, in the order they are offered.
    pub(super) identities: Vec<(PathBuf, Arc<PrivateKey>)>,
    /// The ssh-agent socket, when the agent is to be used; `Err` says why it cannot be.
    pub(super) agent: Option<Result<PathBuf, String>>,
}

impl Credentials {
    /// Loads the identity files of `opts` and pairs them with `agent`.
    ///
    /// # Errors
    /// An identity file's ([`SshError::IdentityFile`], [`SshError::PassphraseRequired`],
    /// [`SshError::BadPassphrase`]), or [`SshError::NoAuthMethod`] when there is neither an
    /// identity file nor an agent.
    pub(super) async fn resolve(
        opts: &SshOptions,
        passphrase: Option<&str>,
        agent: Option<Result<PathBuf, String>>,
    ) -> Result<Credentials, SshError> {
        let identities = load_all(opts, &opts.identity_files, passphrase).await?;
        if identities.is_empty() && agent.is_none() {
            return Err(SshError::NoAuthMethod {
                host: opts.host_name.clone(),
            });
        }
        Ok(Credentials { identities, agent })
    }

    /// The credentials for jump host `jump`: its own identity files with the same agent,
    /// or these when it has none.
    pub(super) async fn for_jump(
        &self,
        opts: &SshOptions,
        jump: &super::options::JumpHost,
        passphrase: Option<&str>,
    ) -> Result<Credentials, SshError> {
        if jump.identity_files.is_empty() {
            return Ok(self.clone());
        }
        Ok(Credentials {
            identities: load_all(opts, &jump.identity_files, passphrase).await?,
            agent: self.agent.clone(),
        })
    }
}

/// Every file of `paths`, loaded (and decrypted) in order.
async fn load_all(
    opts: &SshOptions,
    paths: &[PathBuf],
    passphrase: Option<&str>,
) -> Result<Vec<(PathBuf, Arc<PrivateKey>)>, SshError> {
    let mut out = Vec::new();
    for path in paths {
        out.push((path.clone(), load_off_thread(opts, path, passphrase).await?));
    }
    Ok(out)
}

/// Loads `path` as an identity file (decrypting it with [`PASSPHRASE_ENV`] when needed),
/// before any connection: the error says what is wrong with it, for `host`.
///
/// # Errors
/// [`SshError::IdentityFile`], [`SshError::PassphraseRequired`], [`SshError::BadPassphrase`].
pub fn check_identity_file(host: &str, path: &Path) -> Result<(), SshError> {
    let passphrase = passphrase_from_env();
    load_identity(host, path, passphrase.as_deref()).map(|_| ())
}

/// The passphrase from [`PASSPHRASE_ENV`], if set.
pub(super) fn passphrase_from_env() -> Option<String> {
    std::env::var(PASSPHRASE_ENV).ok()
}

/// The agent socket from `SSH_AUTH_SOCK` if `opts.use_agent`; `Err` says why it is missing.
pub(super) fn agent_from_env(opts: &SshOptions) -> Option<Result<PathBuf, String>> {
    if !opts.use_agent {
        return None;
    }
    match std::env::var_os("SSH_AUTH_SOCK") {
        Some(path) if !path.is_empty() => Some(Ok(PathBuf::from(path))),
        _ => Some(Err("ssh-agent: SSH_AUTH_SOCK is not set".to_string())),
    }
}

/// [`load_identity`] on a blocking thread: decrypting a key is CPU work (bcrypt) that must
/// stay off the async workers.
async fn load_off_thread(
    opts: &SshOptions,
    path: &Path,
    passphrase: Option<&str>,
) -> Result<Arc<PrivateKey>, SshError> {
    let host = opts.host_name.clone();
    let path_owned = path.to_path_buf();
    let passphrase = passphrase.map(str::to_string);
    tokio::task::spawn_blocking(move || load_identity(&host, &path_owned, passphrase.as_deref()))
        .await
        .map_err(|e| SshError::IdentityFile {
            host: opts.host_name.clone(),
            path: path.to_path_buf(),
            reason: format!("loading the key failed: {e}"),
        })?
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
    let key = Arc::new(decode_identity(host, path, &cache_key.1, passphrase)?);
    key_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, Arc::clone(&key));
    Ok(key)
}

/// Decodes the text of a private key file, with `passphrase` if it is encrypted.
fn decode_identity(
    host: &str,
    path: &Path,
    text: &str,
    passphrase: Option<&str>,
) -> Result<PrivateKey, SshError> {
    match russh::keys::decode_secret_key(text, None) {
        Ok(key) => Ok(key),
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
            })
        }
        Err(e) => Err(SshError::IdentityFile {
            host: host.to_string(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}
