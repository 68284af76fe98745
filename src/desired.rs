//! The desired state of a host: what its files, packages and services must be.

use crate::inventory::Host;
use crate::pki::CertSpec;
use crate::release::{Bundle, Target};
use crate::role::{HealthCheck, Notify, RoleRelease, Service, TreeValidate};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct DesiredHost {
    pub host: Host,
    pub roles: Vec<DesiredRole>,
}

#[derive(Debug, Clone)]
pub struct DesiredRole {
    pub name: String,
    pub packages: Vec<String>,
    pub service: Option<Service>,
    pub files: Vec<DesiredFile>,
    pub validate: Option<TreeValidate>,
    pub handlers: Vec<(String, String)>,
    pub health: Vec<HealthCheck>,
    pub drift_check: Option<String>,
    /// Certificates of the internal CA this role's service uses.
    pub certificates: Vec<DesiredCert>,
    /// Folders, links and paths that must be absent (role.yml's `directories:`,
    /// `links:`, `absent:`).
    pub directories: Vec<DesiredDir>,
    pub links: Vec<DesiredLink>,
    pub absent: Vec<DesiredAbsent>,
    /// The operator's application, when the role deploys releases.
    pub release: Option<DesiredRelease>,
}

/// A folder a host must have, with this owner, group and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDir {
    pub path: String,
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

/// A symbolic link a host must have at `path`, pointing to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    pub path: String,
    pub target: String,
    pub notify: Notify,
}

/// A path that must not exist on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAbsent {
    pub path: String,
    pub notify: Notify,
}

/// The release a role deploys on a host: the role's `release:` and the tier's.
#[derive(Debug, Clone)]
pub struct DesiredRelease {
    pub spec: RoleRelease,
    /// Health check of the new release (rendered; `{release}` is replaced at apply).
    pub health: Option<HealthCheck>,
    pub keep: usize,
    pub migrate: Option<String>,
    /// Which release the host should run.
    pub target: Target,
    /// The source's code (loaded once per run, shared by the tier's hosts); `None` for
    /// commands that never plan (`render`).
    pub bundle: Option<Arc<Bundle>>,
}

/// A certificate a host must hold: its key made on the host, signed by the internal CA
/// for exactly these names.
#[derive(Debug, Clone)]
pub struct DesiredCert {
    pub cert: String,
    pub key: String,
    /// The key's owner and group (the certificate is root's, 0644).
    pub owner: String,
    pub group: String,
    pub spec: CertSpec,
    pub notify: Notify,
}

#[derive(Clone)]
pub struct DesiredFile {
    pub dest: String,
    pub content: Vec<u8>,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
    pub owner: String,
    pub group: String,
    pub mode: u32,
    pub notify: Notify,
    pub validate: Option<String>,
    /// Holds a secret: content never shown, diff never printed.
    pub sensitive: bool,
    /// The role allows a destination folder that others than root can write to (apply
    /// refuses such a folder otherwise: its users could swap links in during the apply).
    pub shared_dir: bool,
    /// A reload becomes a restart when a changed line starts with one of these words.
    pub restart_if_changed: Vec<String>,
}

impl std::fmt::Debug for DesiredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredFile")
            .field("dest", &self.dest)
            .field("sha256", &self.sha256)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl DesiredFile {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dest: String,
        content: Vec<u8>,
        owner: String,
        group: String,
        mode: u32,
        notify: Notify,
        validate: Option<String>,
        sensitive: bool,
    ) -> Self {
        let sha256 = sha256_hex(&content);
        DesiredFile {
            dest,
            content,
            sha256,
            owner,
            group,
            mode,
            notify,
            validate,
            sensitive,
            shared_dir: false,
            restart_if_changed: Vec::new(),
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl DesiredHost {
    /// Every managed path, in role then file order.
    pub fn paths(&self) -> Vec<&str> {
        self.roles
            .iter()
            .flat_map(|r| r.files.iter().map(|f| f.dest.as_str()))
            .collect()
    }
    pub fn packages(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self.roles.iter().flat_map(|r| r.packages.iter()) {
            if !out.contains(&p.as_str()) {
                out.push(p);
            }
        }
        out
    }
    /// The folders of every role, in role order.
    pub fn directories(&self) -> Vec<&str> {
        self.roles
            .iter()
            .flat_map(|r| r.directories.iter().map(|d| d.path.as_str()))
            .collect()
    }
    /// The links and absent paths of every role, in role order: what is found there
    /// (a folder with entries in it is never deleted) decides the plan.
    pub fn links_and_absent(&self) -> Vec<&str> {
        self.roles
            .iter()
            .flat_map(|r| {
                let links = r.links.iter().map(|l| l.path.as_str());
                links.chain(r.absent.iter().map(|a| a.path.as_str()))
            })
            .collect()
    }
    /// (certificate, key) paths of every certificate.
    pub fn certificates(&self) -> Vec<(&str, &str)> {
        self.roles
            .iter()
            .flat_map(|r| r.certificates.iter())
            .map(|c| (c.cert.as_str(), c.key.as_str()))
            .collect()
    }
    /// (role, command) of every drift check.
    pub fn drift_checks(&self) -> Vec<(&str, &str)> {
        self.roles
            .iter()
            .filter_map(|r| r.drift_check.as_deref().map(|c| (r.name.as_str(), c)))
            .collect()
    }
    pub fn services(&self) -> Vec<&str> {
        self.roles
            .iter()
            .filter_map(|r| r.service.as_ref().map(|s| s.name.as_str()))
            .collect()
    }
}

impl DesiredHost {
    /// Roots of the roles' releases, in role order (the facts ask about each).
    pub fn release_roots(&self) -> Vec<&str> {
        self.roles
            .iter()
            .filter_map(|r| r.release.as_ref().map(|d| d.spec.root.as_str()))
            .collect()
    }
}
