//! A saved plan, as Terraform users know it: `plan --out FILE` writes one, `apply FILE`
//! reads it back, plans again and applies only when nothing the saved plan rests on
//! changed ([`stale`]).
//!
//! The file holds the tool's version, a hash of every input (the inventory, each role.yml,
//! template and static file, each tier's release id), and per host the facts the plan rests
//! on (each managed file's live hash, mode and owner, or absent; the hash of its rendered
//! content; packages; units; each release's `current`; failed drift checks) with the
//! planned changes (the `--format json` plan, secrets masked). Never a file's content, never
//! a secret: hashes of files that hold a secret (and the digest of the secrets themselves)
//! are HMAC-SHA-256 under a key derived from every secret value and a random salt, so the
//! file is no oracle for guessing a secret unless every secret is guessed at once.
//!
//! Pure, but for [`read`] and [`write`].

mod staleness;

pub use staleness::{Staleness, stale_hosts, stale_inputs};

use crate::desired::DesiredHost;
use crate::facts::Facts;
use crate::release::Current;
use crate::secrets::Secrets;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What the `kind` field of a saved plan says.
pub const KIND: &str = "foobar-provision plan";
/// Version of the file's shape; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// The tool's version: a plan made by another one is refused.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest file read as a saved plan.
const MAX_BYTES: u64 = 256 << 20;
/// Prefix of a keyed hash (a file that holds a secret, the secrets' digest).
const KEYED: &str = "hmac-sha256:";

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Always [`KIND`]: how `apply` tells a saved plan from an inventory.
    pub kind: String,
    pub format_version: u32,
    pub tool_version: String,
    /// When it was made (UTC, for people).
    pub created: String,
    /// What was planned: the inventory and options `apply FILE` plans again with.
    pub selection: Selection,
    /// Hex; the keyed hashes' salt.
    pub salt: String,
    /// Keyed digest of every secret value.
    pub secrets: String,
    /// Every input, sorted by kind and path.
    pub inputs: Vec<Input>,
    /// Every selected host, in rollout order.
    pub hosts: Vec<HostBasis>,
}

/// The command line the plan was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// The inventory, as given (relative to the folder `plan` ran in).
    pub inventory: String,
    /// `--root`, as given.
    pub root: Option<String>,
    pub limit: Vec<String>,
    pub tier: Vec<String>,
    /// `--role`, `--skip-role` and `--var`, as given.
    pub roles: Vec<String>,
    pub skip_roles: Vec<String>,
    pub vars: Vec<String>,
}

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Inventory,
    Role,
    Template,
    Static,
    /// A tier's release: `path` is the tier, `hash` the release id.
    Release,
}

impl InputKind {
    /// How a message names it.
    pub fn word(self) -> &'static str {
        match self {
            InputKind::Inventory => "the inventory",
            InputKind::Role => "role file",
            InputKind::Template => "template",
            InputKind::Static => "static file",
            InputKind::Release => "the release of tier",
        }
    }
}

/// One input the plan rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub kind: InputKind,
    /// The file (project files relative to the project folder), or the tier.
    pub path: String,
    /// Hex SHA-256 of the file, or the release id.
    pub hash: String,
}

/// One host as the plan saw it, and what it planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBasis {
    pub host: String,
    pub tier: String,
    pub address: String,
    /// Every managed file, by path.
    pub files: BTreeMap<String, FileBasis>,
    /// Every package asked about: installed or not.
    pub packages: BTreeMap<String, bool>,
    /// Every unit asked about.
    pub units: BTreeMap<String, UnitState>,
    /// Each release root: what `current` was (an id, `none`, or `other: ...`).
    pub releases: BTreeMap<String, String>,
    /// Roles whose drift check failed.
    pub drifted: Vec<String>,
    /// The host's plan, as `--format json` shows it (secrets masked).
    pub plan: serde_json::Value,
}

/// A managed file: what is on the host, and what the inventory renders for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBasis {
    /// `None`: no file there.
    pub live: Option<LiveFile>,
    /// Hash of the rendered content (keyed when the file holds a secret).
    pub rendered: String,
}

/// A file found on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveFile {
    /// Hex SHA-256 of its content (keyed when the file holds a secret).
    pub hash: String,
    pub mode: String,
    pub owner: String,
    pub group: String,
}

/// A unit's state, as `systemctl show` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitState {
    pub active: String,
    pub enabled: String,
}

/// The key of the keyed hashes: from the salt and every secret value.
pub struct Key([u8; 32]);

impl Key {
    /// The key for `salt` (hex) and these secrets; `None` when the salt is no hex.
    pub fn new(salt: &str, secrets: &Secrets) -> Option<Key> {
        let salt = hex::decode(salt).ok()?;
        let mut h = Sha256::new();
        h.update(b"foobar-provision saved plan\0");
        h.update((salt.len() as u64).to_le_bytes());
        h.update(&salt);
        for (name, value) in secrets.values() {
            for part in [name.as_bytes(), value.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        Some(Key(h.finalize().into()))
    }

    /// `hmac-sha256:HEX` of `data`.
    fn keyed(&self, data: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(data.as_bytes());
        format!("{KEYED}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The digest of the secrets (changes when any secret value does).
    pub fn secrets_digest(&self) -> String {
        self.keyed("the inventory's secrets")
    }
}

/// A fresh random salt, hex.
pub fn new_salt() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("no random numbers for the plan's salt: {e}"))?;
    Ok(hex::encode(bytes))
}

/// What the host was, as far as its plan rests on it: the facts of `desired`'s files,
/// packages, units, releases and drift checks. `plan` is left null (filled once the
/// rollout has placed the host: drains and migrations are part of the plan).
pub fn host_basis(desired: &DesiredHost, facts: &Facts, key: &Key) -> HostBasis {
    let mut files = BTreeMap::new();
    for f in desired.roles.iter().flat_map(|r| r.files.iter()) {
        let hash = |h: &str| {
            if f.sensitive {
                key.keyed(h)
            } else {
                h.to_string()
            }
        };
        let live = facts
            .files
            .get(&f.dest)
            .cloned()
            .flatten()
            .map(|l| LiveFile {
                hash: hash(&l.sha256),
                mode: format!("{:04o}", l.mode),
                owner: l.owner,
                group: l.group,
            });
        files.insert(
            f.dest.clone(),
            FileBasis {
                live,
                rendered: hash(&f.sha256),
            },
        );
    }
    let packages = desired
        .packages()
        .into_iter()
        .map(|p| {
            (
                p.to_string(),
                facts.packages.get(p).copied().unwrap_or(false),
            )
        })
        .collect();
    let units = facts
        .services
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                UnitState {
                    active: s.active.clone(),
                    enabled: s.enabled.clone(),
                },
            )
        })
        .collect();
    let releases = desired
        .release_roots()
        .into_iter()
        .zip(facts.releases.iter())
        .map(|(root, f)| {
            let current = match &f.current {
                Current::Missing => "none".to_string(),
                Current::Release(id) => id.clone(),
                Current::Other(what) => format!("other: {what}"),
            };
            (root.to_string(), current)
        })
        .collect();
    HostBasis {
        host: desired.host.name.clone(),
        tier: desired.host.tier.clone(),
        address: desired.host.address.to_string(),
        files,
        packages,
        units,
        releases,
        drifted: facts.drifted.iter().cloned().collect(),
        plan: serde_json::Value::Null,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of now.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} seconds since 1970"),
    }
}

/// Why a file given to `apply` cannot be used as a saved plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("{path}: cannot read: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: a saved plan must be readable by its owner only (mode 0600), this one is {mode:04o}: \
         it may have been read or changed by others; `chmod 600 {path}` if you trust it, or plan again"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "{path}: not a plan saved by foobar-provision ({why}): give an inventory, or a file \
         written by `foobar-provision plan INVENTORY --out FILE`"
    )]
    NotOurs { path: PathBuf, why: String },
    #[error(
        "{path}: a saved plan of format version {found}, this tool reads version {FORMAT_VERSION}: \
         run plan again with this version"
    )]
    FormatVersion { path: PathBuf, found: String },
    #[error(
        "{path}: the plan was made by foobar-provision {found}, this is {TOOL_VERSION}: \
         run plan again with this version (or apply it with the version that made it)"
    )]
    ToolVersion { path: PathBuf, found: String },
}

/// Reads `path` if it is a saved plan: `Ok(None)` when it is something else (an inventory:
/// no JSON object with `kind` or `format_version`), an error when it is meant as a plan but
/// cannot be used (another kind; then, ours: its mode lets others read it, another format
/// or tool version, a broken file). Decided by content, never by the file's name.
pub fn read(path: &Path) -> Result<Option<PlanFile>, PlanFileError> {
    let unreadable = |error| PlanFileError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        // Missing: the inventory loader says so, with its hint.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(&bytes)
    else {
        return Ok(None);
    };
    if !doc.contains_key("kind") && !doc.contains_key("format_version") {
        return Ok(None);
    }
    let not_ours = |why: String| PlanFileError::NotOurs {
        path: path.to_path_buf(),
        why,
    };
    match doc.get("kind").and_then(|k| k.as_str()) {
        Some(KIND) => {}
        Some(other) => return Err(not_ours(format!("its kind is `{}`", shown(other)))),
        None => return Err(not_ours("it has no `kind`".into())),
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PlanFileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    match doc.get("format_version") {
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
        other => {
            return Err(PlanFileError::FormatVersion {
                path: path.to_path_buf(),
                found: other.map_or_else(|| "(none)".into(), |v| shown(&v.to_string())),
            });
        }
    }
    match doc.get("tool_version").and_then(|v| v.as_str()) {
        Some(TOOL_VERSION) => {}
        other => {
            return Err(PlanFileError::ToolVersion {
                path: path.to_path_buf(),
                found: other.map_or_else(|| "(unknown)".into(), shown),
            });
        }
    }
    let plan: PlanFile = serde_json::from_value(serde_json::Value::Object(doc))
        .map_err(|e| not_ours(format!("it does not read as one: {e}")))?;
    if hex::decode(&plan.salt).is_err() {
        return Err(not_ours("its salt is not hex".into()));
    }
    Ok(Some(plan))
}

/// A value from the file, for a message: printable, at most 80 characters.
fn shown(s: &str) -> String {
    let p = crate::shell::printable(s);
    match p.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &p[..at]),
        None => p,
    }
}

/// Writes `plan` to `path` atomically: a new file (mode 0600) beside it, written and
/// synced, then renamed over `path` (a link at `path` is replaced, never followed).
pub fn write(path: &Path, plan: &PlanFile) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown_path = path.display();
    if path.is_dir() {
        return Err(format!(
            "--out {shown_path}: a folder; give the path of a file"
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(format!("--out {shown_path}: give the path of a file"));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let text = serde_json::to_string_pretty(plan)
        .map_err(|e| format!("--out {shown_path}: cannot serialise the plan: {e}"))?;
    let tmp = dir.join(format!(
        ".{}.fp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        new_salt().unwrap_or_default()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "--out {shown_path}: cannot write the plan: {e} (is {} writable?)",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests;
