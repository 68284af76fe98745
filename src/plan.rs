//! Planning: desired state vs facts -> the changes to make. Pure; an empty plan means
//! the host is converged. `plan` prints this value and `apply` executes the same value.

use crate::desired::{DesiredCert, DesiredFile, DesiredHost, DesiredRelease, DesiredRole};
use crate::facts::{CertFact, Facts};
use crate::pki::{self, Ca, CertAction};
use crate::release::{self, Current, ReleaseFact, Summary, Why};
use crate::role::{HealthCheck, Notify, NotifyKind, TreeValidate};
use crate::secrets::Secrets;
use crate::shell::Init;
use crate::shell::printable;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

mod paths;
pub use paths::{PathAction, PathChange, PathWant};

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub tier: String,
    pub address: String,
    #[serde(skip)]
    pub init: Init,
    pub packages_to_install: Vec<String>,
    /// Installed already by this apply's first phase (every host's packages at once,
    /// before the tiers roll): the host's own apply skips them.
    #[serde(skip)]
    pub packages_ready: bool,
    /// Temporary files an interrupted apply left behind: removed first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_temps: Vec<String>,
    pub roles: Vec<RolePlan>,
    /// Taken out of its load balancers before the restart, back in after (set from the
    /// tier's `drain:` once the plan is made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStep>,
}

/// The drain around a host's restart, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainStep {
    /// HAProxy backend.
    pub backend: String,
    /// The balancers (hosts of the tier's `via`).
    pub via: Vec<String>,
    /// Longest wait for the host's sessions to end, in seconds.
    pub timeout_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolePlan {
    pub role: String,
    /// The role's service is serving now (running, its package not being installed): a
    /// reload or restart of it is felt by clients, so the tier rolls such hosts in batches.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub serving: bool,
    /// What restarting the serving service interrupts (the role's `interrupts:`), when
    /// this plan restarts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<String>,
    /// The role's drift check failed: the live state differs from the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    pub files: Vec<FileChange>,
    /// Certificates to issue, renew or reissue (before the files), or whose key's mode
    /// or owner drifted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertChange>,
    /// The role's directories (made before its files), links and absent paths (swapped
    /// with its files) that differ from role.yml.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
    /// The role's release: uploaded, migrated, switched in (after the files), old ones
    /// removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseChange>,
    /// Why the release cannot be planned (a pin the host lacks, no release to roll back
    /// to): the host fails before anything is changed.
    #[serde(skip)]
    pub release_error: Option<String>,
    /// What runs after the files are in place, in order.
    pub actions: Vec<Action>,
    #[serde(skip)]
    pub validate: Option<TreeValidate>,
    #[serde(skip)]
    pub health: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    Create,
    Update,
    /// Same content; only mode or owner differ.
    Metadata,
    /// In place already, but the apply that put it there did not finish (its backup is
    /// still beside it): run its handlers and health checks now.
    Unfinished,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: String,
    pub action: FileAction,
    pub mode: String,
    pub owner: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_owner: Option<String>,
    /// Unified diff (secrets masked); `None` for sensitive or binary files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Holds a secret: content is never shown.
    pub sensitive: bool,
    pub notify: Notify,
    /// The file notifies reload, but a changed line starts with this word (one of its
    /// `restart_if_changed`): the service is restarted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_because: Option<String>,
    #[serde(skip)]
    pub file: DesiredFile,
}

/// What a certificate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertWork {
    /// None yet (or no key): the host makes a key (if it has none) and a CSR; we sign.
    Issue,
    /// It expires within the renewal window: a new certificate for the same key.
    Renew,
    /// Its names, its CA or its key changed: a new certificate for the same key.
    Reissue,
    /// The certificate is right; only the key's mode or owner drifted.
    FixKey,
}

/// One certificate's change, as the plan shows it. Nothing private is in it: the key
/// stays on the host.
#[derive(Debug, Clone, Serialize)]
pub struct CertChange {
    pub cert: String,
    pub key: String,
    pub action: CertWork,
    /// Why, e.g. "expires 2027-01-02 10:00 UTC, within the 30-day renewal window".
    pub reason: String,
    /// A private key is made on the host first (there is none).
    pub new_key: bool,
    /// The names the new certificate carries (the first is its common name).
    pub names: Vec<String>,
    /// The key's mode and `owner:group` now, where they differ from 0600 and the role's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_key_meta: Option<String>,
    pub notify: Notify,
    #[serde(skip)]
    pub desired: DesiredCert,
}

/// A release change, as the plan shows it: "release A -> B".
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseChange {
    pub root: String,
    /// The release serving now (none before the first deploy).
    pub from: Option<String>,
    pub to: String,
    pub why: Why,
    /// `current` is switched (else only old releases are removed).
    pub switch: bool,
    /// The release is sent (one archive); else it is on the host already.
    pub upload: bool,
    /// Files of the new release (its size in the plan).
    pub files: usize,
    pub bytes: u64,
    /// What the source is (a folder, an archive, a git ref).
    pub source: String,
    /// File by file, against the release serving now (when the host's manifest of it
    /// could be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The migration, run before the switch: set on one host of the tier per deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate: Option<String>,
    /// Release folders removed after the switch succeeded (beyond `keep`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<String>,
    pub notify: Notify,
    #[serde(skip)]
    pub desired: DesiredRelease,
}

/// What certificates are checked against: the internal CA, now, the renewal window.
pub struct CertCheck<'a> {
    pub ca: &'a Ca,
    pub now: SystemTime,
    pub renew_within: Duration,
}

/// An action after the files: service handling or a named handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// `systemctl daemon-reload`, when a unit file changed.
    DaemonReload,
    Reload {
        service: String,
    },
    Restart {
        service: String,
    },
    Start {
        service: String,
    },
    Enable {
        service: String,
    },
    Run {
        handler: String,
        command: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::DaemonReload => write!(f, "daemon-reload (a unit file changed)"),
            Action::Reload { service } => write!(f, "reload {service}"),
            Action::Restart { service } => write!(f, "restart {service}"),
            Action::Start { service } => write!(f, "start {service}"),
            Action::Enable { service } => write!(f, "enable {service}"),
            Action::Run { handler, .. } => write!(f, "run handler {handler}"),
        }
    }
}

impl HostPlan {
    pub fn is_empty(&self) -> bool {
        self.packages_to_install.is_empty()
            && self.stale_temps.is_empty()
            && self.roles.iter().all(RolePlan::is_empty)
    }

    /// Reloads or restarts a service that is serving: clients feel it, so the host's tier
    /// rolls such hosts a batch at a time.
    pub fn interrupts_serving(&self) -> bool {
        self.roles.iter().any(|r| {
            r.serving
                && r.actions
                    .iter()
                    .any(|a| matches!(a, Action::Reload { .. } | Action::Restart { .. }))
        })
    }

    /// Switches a release in: its tier rolls such hosts in batches (one at a time by
    /// default), each health-checked before the next.
    pub fn switches_release(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.release.as_ref().is_some_and(|rel| rel.switch))
    }

    /// Restarts a service that is serving: the host is drained first where its tier says.
    pub fn restarts_serving(&self) -> bool {
        self.roles.iter().any(|r| {
            r.serving
                && r.actions
                    .iter()
                    .any(|a| matches!(a, Action::Restart { .. }))
        })
    }

    /// Number of changes (packages, files, certificates, paths, actions).
    pub fn change_count(&self) -> usize {
        self.packages_to_install.len()
            + self.stale_temps.len()
            + self.roles.iter().map(RolePlan::change_count).sum::<usize>()
    }

    /// Why this plan cannot be applied (a path change that would delete data), one line
    /// per refused path; empty when it can.
    pub fn refusals(&self) -> Vec<String> {
        self.roles
            .iter()
            .flat_map(|r| {
                r.paths
                    .iter()
                    .filter_map(move |c| c.reason.as_ref().map(|why| format!("[{}] {why}", r.role)))
            })
            .collect()
    }
}

impl FileChange {
    /// A new content for `file`, as the plan would show it without a diff (the
    /// certificates a role signs at apply time; tests).
    pub fn new_content(file: DesiredFile, action: FileAction) -> FileChange {
        FileChange {
            path: file.dest.clone(),
            action,
            mode: mode_str(file.mode),
            owner: file.owner.clone(),
            group: file.group.clone(),
            old_mode: None,
            old_owner: None,
            diff: None,
            sensitive: file.sensitive,
            notify: file.notify.clone(),
            restart_because: None,
            file,
        }
    }
}

impl RolePlan {
    /// Number of this role's changes (files, certificates, paths, actions, release).
    pub fn change_count(&self) -> usize {
        self.files.len()
            + self.certificates.len()
            + self.paths.len()
            + self.actions.len()
            + usize::from(self.release.is_some())
    }

    /// Nothing to do for this role.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.certificates.is_empty()
            && self.paths.is_empty()
            && self.actions.is_empty()
            && self.release.is_none()
    }
}

/// Paths whose content differs: their current content is fetched to show a diff.
pub fn content_changed<'a>(desired: &'a DesiredHost, facts: &Facts) -> Vec<&'a str> {
    desired
        .roles
        .iter()
        .flat_map(|r| r.files.iter())
        .filter(|f| !f.sensitive)
        .filter(|f| matches!(facts.files.get(&f.dest), Some(Some(old)) if old.sha256 != f.sha256))
        .map(|f| f.dest.as_str())
        .collect()
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Plans one host. `old` holds current contents of changed files (for diffs); `certs`
/// is what the host's certificates are checked against (there are none without it).
pub fn plan_host(
    desired: &DesiredHost,
    facts: &Facts,
    old: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
    certs: Option<&CertCheck>,
) -> HostPlan {
    let packages_to_install: Vec<String> = desired
        .packages()
        .into_iter()
        .filter(|p| !facts.packages.get(*p).copied().unwrap_or(false))
        .map(str::to_string)
        .collect();
    // Certificate facts come in the order of `desired.certificates()`, release facts in
    // the order of `desired.release_roots()`.
    let mut cert_facts = facts.certs.iter();
    let mut release_facts = facts.releases.iter();
    let roles = desired
        .roles
        .iter()
        .map(|role| {
            let certificates = role
                .certificates
                .iter()
                .filter_map(|c| cert_change(c, cert_facts.next(), certs))
                .collect();
            let release = role
                .release
                .as_ref()
                .map(|d| release_change(d, release_facts.next(), old));
            plan_role(
                role,
                facts,
                old,
                secrets,
                &packages_to_install,
                certificates,
                release,
            )
        })
        .collect();
    HostPlan {
        host: desired.host.name.clone(),
        tier: desired.host.tier.clone(),
        address: desired.host.address.to_string(),
        init: facts.init,
        packages_to_install,
        packages_ready: false,
        stale_temps: facts.stale_temps.iter().cloned().collect(),
        roles,
        drain: None,
    }
}

/// One role: its file changes, the actions they call for, and a reload if it drifted.
fn plan_role(
    role: &DesiredRole,
    facts: &Facts,
    old: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
    installing: &[String],
    certificates: Vec<CertChange>,
    release: Option<Result<Option<ReleaseChange>, String>>,
) -> RolePlan {
    let (release, release_error) = match release {
        Some(Ok(r)) => (r, None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let files: Vec<FileChange> = role
        .files
        .iter()
        .filter_map(|f| file_change(f, facts, old, secrets))
        .collect();
    // Its package installed by this apply: Debian's default config runs, nothing is
    // served yet.
    let fresh = role.packages.iter().any(|p| installing.contains(p));
    let serving = !fresh
        && role.service.as_ref().is_some_and(|svc| {
            facts
                .services
                .get(&svc.name)
                .is_some_and(|s| s.active == "active")
        });
    let paths = paths::path_changes(role, facts, fresh);
    let changed = Changed {
        files: &files,
        certs: &certificates,
        paths: &paths,
        release: release.as_ref(),
    };
    let mut actions = role_actions(role, &changed, facts, serving, fresh);
    let drift = role
        .drift_check
        .clone()
        .filter(|_| facts.drifted.contains(&role.name));
    if drift.is_some()
        && let Some(action) = drift_action(role, &actions)
    {
        actions.push(action);
    }
    let interrupts = role
        .service
        .as_ref()
        .and_then(|svc| svc.interrupts.clone())
        .filter(|_| serving && actions.iter().any(|a| matches!(a, Action::Restart { .. })));
    RolePlan {
        drift,
        role: role.name.clone(),
        serving,
        interrupts,
        files,
        certificates,
        paths,
        release,
        release_error,
        actions,
        validate: role.validate.clone(),
        health: role.health.clone(),
    }
}

/// The manifest file of a host's release `id` under `root`.
pub fn manifest_path(root: &str, id: &str) -> String {
    format!("{root}/releases/{id}/{}", release::MANIFEST)
}

/// Manifests of the releases serving now where another one is switched in: read in the
/// contents round trip, for the plan's file summary.
pub fn release_manifests(desired: &DesiredHost, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    let roles = desired.roles.iter().filter_map(|r| r.release.as_ref());
    for (d, f) in roles.zip(facts.releases.iter()) {
        if let (Some(b), Current::Release(cur)) = (&d.bundle, &f.current)
            && *cur != b.id
        {
            out.push(manifest_path(&d.spec.root, cur));
        }
    }
    out
}

/// What a role's release needs on a host (`Ok(None)`: nothing). The migration is
/// planned on every host that deploys the source; the rollout keeps it on one.
fn release_change(
    d: &DesiredRelease,
    fact: Option<&ReleaseFact>,
    old: &BTreeMap<String, Vec<u8>>,
) -> Result<Option<ReleaseChange>, String> {
    let Some(bundle) = &d.bundle else {
        return Ok(None);
    };
    let empty = ReleaseFact::default();
    let fact = fact.unwrap_or(&empty);
    let Some(dec) = release::decide(&bundle.id, &d.target, d.keep, fact)? else {
        return Ok(None);
    };
    let summary = dec.from.as_ref().and_then(|from| {
        old.get(&manifest_path(&d.spec.root, from))
            .filter(|_| dec.to == bundle.id)
            .map(|m| release::compare(&String::from_utf8_lossy(m), &bundle.manifest))
    });
    let (files, bytes) = if dec.to == bundle.id {
        (
            bundle.files.len(),
            bundle.files.iter().map(|f| f.content.len() as u64).sum(),
        )
    } else {
        (0, 0)
    };
    Ok(Some(ReleaseChange {
        root: d.spec.root.clone(),
        migrate: d
            .migrate
            .clone()
            .filter(|_| dec.switch && dec.to == bundle.id && dec.why != Why::Rollback),
        from: dec.from,
        to: dec.to,
        why: dec.why,
        switch: dec.switch,
        upload: dec.upload,
        files,
        bytes,
        source: bundle.label.clone(),
        summary,
        prune: dec.prune,
        notify: d.spec.notify.clone(),
        desired: d.clone(),
    }))
}

/// What one certificate needs (`None`: in place). The host's data is untrusted: a
/// certificate that does not parse is issued again, a key whose public half cannot be
/// read is made again.
fn cert_change(
    want: &DesiredCert,
    fact: Option<&CertFact>,
    check: Option<&CertCheck>,
) -> Option<CertChange> {
    let check = check?;
    let key = fact.and_then(|f| f.key.as_ref());
    let key_spki = key
        .and_then(|k| k.public_pem.as_deref())
        .and_then(|p| pki::parse_public_key(p).ok());
    let seen = fact
        .and_then(|f| f.cert_pem.as_deref())
        .and_then(|p| pki::parse_cert(p).ok());
    // A key whose public half could not be read (openssl missing, a damaged file) is not
    // replaced behind the operator's back: the CSR is made from it as it is, and a damaged
    // key fails that step, saying so.
    let decision = if key.is_some() && key_spki.is_none() {
        Some(pki::CertDecision {
            action: CertAction::Issue,
            reason: "the key's public half could not be read (is openssl installed? is the key damaged?)".into(),
            new_key: false,
        })
    } else {
        pki::decide(
            seen.as_ref(),
            key_spki.as_deref(),
            &want.spec,
            check.ca,
            check.now,
            check.renew_within,
        )
    };
    let old_key_meta = key
        .filter(|k| k.mode != 0o600 || k.owner != want.owner || k.group != want.group)
        .map(|k| printable(&format!("{} {}:{}", mode_str(k.mode), k.owner, k.group)));
    let (action, reason, new_key) = match decision {
        Some(d) => {
            let work = match d.action {
                CertAction::Issue => CertWork::Issue,
                CertAction::Renew => CertWork::Renew,
                CertAction::Reissue => CertWork::Reissue,
            };
            (work, d.reason, d.new_key)
        }
        None if old_key_meta.is_some() => (
            CertWork::FixKey,
            format!("the key must be 0600 {}:{}", want.owner, want.group),
            false,
        ),
        None => return None,
    };
    Some(CertChange {
        cert: want.cert.clone(),
        key: want.key.clone(),
        action,
        reason: printable(&reason),
        new_key,
        names: want.spec.sans.iter().map(ToString::to_string).collect(),
        old_key_meta,
        notify: want.notify.clone(),
        desired: want.clone(),
    })
}

/// The change one file needs, with its diff; `None` when it is in place.
fn file_change(
    f: &DesiredFile,
    facts: &Facts,
    old: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
) -> Option<FileChange> {
    let (action, old_mode, old_owner) = file_action(f, facts)?;
    let diff = match action {
        FileAction::Metadata | FileAction::Unfinished => None,
        _ if f.sensitive => None,
        _ => {
            let before = old.get(&f.dest).map(Vec::as_slice).unwrap_or(b"");
            // The old content comes from the host: untrusted, made printable.
            unified_diff(&f.dest, before, &f.content).map(|d| printable(&secrets.mask(&d)))
        }
    };
    let restart_because = match action {
        FileAction::Create | FileAction::Update => {
            let before = old.get(&f.dest).map(Vec::as_slice).unwrap_or(b"");
            changed_line_word(before, &f.content, &f.restart_if_changed)
        }
        _ => None,
    };
    Some(FileChange {
        path: f.dest.clone(),
        action,
        restart_because,
        mode: mode_str(f.mode),
        owner: f.owner.clone(),
        group: f.group.clone(),
        old_mode,
        old_owner,
        diff,
        sensitive: f.sensitive,
        notify: f.notify.clone(),
        file: f.clone(),
    })
}

/// What a file needs, with its old mode and old `owner:group` where they differ:
/// content first, then metadata, then an unfinished apply's backup; `None` when in place.
fn file_action(
    f: &DesiredFile,
    facts: &Facts,
) -> Option<(FileAction, Option<String>, Option<String>)> {
    let Some(c) = facts.files.get(&f.dest).cloned().flatten() else {
        return Some((FileAction::Create, None, None));
    };
    let meta = c.mode != f.mode || c.owner != f.owner || c.group != f.group;
    let old_mode = (c.mode != f.mode).then(|| mode_str(c.mode));
    let old_owner = (c.owner != f.owner || c.group != f.group)
        .then(|| printable(&format!("{}:{}", c.owner, c.group)));
    if c.sha256 != f.sha256 {
        Some((FileAction::Update, old_mode, old_owner))
    } else if meta {
        Some((FileAction::Metadata, old_mode, old_owner))
    } else if facts.unfinished.contains(&f.dest) {
        Some((FileAction::Unfinished, None, None))
    } else {
        None
    }
}

/// A drifted role's service is reloaded (restarted if it cannot reload), unless an
/// action already reloads, restarts or starts it.
fn drift_action(role: &DesiredRole, actions: &[Action]) -> Option<Action> {
    let svc = role.service.as_ref()?;
    let handled = actions.iter().any(|a| {
        matches!(a, Action::Reload { service } | Action::Restart { service } | Action::Start { service } if *service == svc.name)
    });
    if handled {
        return None;
    }
    Some(if svc.reload {
        Action::Reload {
            service: svc.name.clone(),
        }
    } else {
        Action::Restart {
            service: svc.name.clone(),
        }
    })
}

/// What changes in a role, for [`role_actions`].
#[derive(Clone, Copy)]
struct Changed<'a> {
    files: &'a [FileChange],
    certs: &'a [CertChange],
    paths: &'a [PathChange],
    release: Option<&'a ReleaseChange>,
}

/// Handlers once per service, restart winning over reload; a service that is not
/// `serving` (not running, or its package is being installed, so it runs Debian's default
/// config) is restarted if its files changed, else started.
fn role_actions(
    role: &DesiredRole,
    changed: &Changed,
    facts: &Facts,
    serving: bool,
    fresh: bool,
) -> Vec<Action> {
    let Changed {
        files,
        certs,
        paths,
        release,
    } = *changed;
    let mut actions = Vec::new();
    let content_changed: Vec<&FileChange> = files
        .iter()
        .filter(|f| f.action != FileAction::Metadata)
        .collect();
    // Links made, changed or removed, and paths removed, notify as new content does.
    let paths_changed: Vec<&PathChange> = paths.iter().filter(|c| c.notifies()).collect();
    // (what it notifies, whether a changed line asks for a restart) of every new content:
    // files, certificates (a fixed key mode is no new content), links and absent paths.
    let notified: Vec<(&Notify, bool)> = content_changed
        .iter()
        .map(|f| (&f.notify, f.restart_because.is_some()))
        .chain(
            certs
                .iter()
                .filter(|c| c.action != CertWork::FixKey)
                .map(|c| (&c.notify, false)),
        )
        .chain(paths_changed.iter().map(|c| (&c.notify, false)))
        .chain(release.filter(|r| r.switch).map(|r| (&r.notify, false)))
        .collect();
    let unit_path = |p: &str| {
        p.starts_with("/etc/systemd/")
            || p.starts_with("/lib/systemd/")
            || p.starts_with("/usr/lib/systemd/")
    };
    if facts.init == Init::Systemd
        && (content_changed.iter().any(|f| unit_path(&f.path))
            || paths_changed.iter().any(|c| unit_path(&c.path)))
    {
        actions.push(Action::DaemonReload);
    }
    if let Some(svc) = &role.service {
        let name = svc.name.clone();
        let state = facts.services.get(&name);
        let wants_restart = notified
            .iter()
            .any(|(n, because)| **n == Notify::Service(NotifyKind::Restart) || *because);
        let wants_reload = notified
            .iter()
            .any(|(n, _)| **n == Notify::Service(NotifyKind::Reload));
        if !serving && svc.enabled {
            if wants_restart || wants_reload {
                actions.push(Action::Restart {
                    service: name.clone(),
                });
            } else {
                actions.push(Action::Start {
                    service: name.clone(),
                });
            }
        } else if wants_restart || (wants_reload && !svc.reload) {
            actions.push(Action::Restart {
                service: name.clone(),
            });
        } else if wants_reload {
            actions.push(Action::Reload {
                service: name.clone(),
            });
        }
        if svc.enabled && (fresh || state.is_none_or(|s| s.enabled != "enabled")) {
            actions.push(Action::Enable {
                service: name.clone(),
            });
        }
    }
    for (handler, command) in &role.handlers {
        if notified
            .iter()
            .any(|(n, _)| **n == Notify::Handler(handler.clone()))
        {
            actions.push(Action::Run {
                handler: handler.clone(),
                command: command.clone(),
            });
        }
    }
    actions
}

/// The first of `words` that starts a line added or removed between `before` and
/// `after` (leading blanks ignored), if any. Not UTF-8: the first word, to be safe.
fn changed_line_word(before: &[u8], after: &[u8], words: &[String]) -> Option<String> {
    if words.is_empty() {
        return None;
    }
    let (Ok(a), Ok(b)) = (std::str::from_utf8(before), std::str::from_utf8(after)) else {
        return words.first().cloned();
    };
    let diff = similar::TextDiff::from_lines(a, b);
    diff.iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .find_map(|c| {
            let first = c.value().split_whitespace().next()?;
            let first = first.trim_end_matches(';');
            words.iter().find(|w| w.as_str() == first).cloned()
        })
}

/// A unified diff with 3 lines of context, or `None` when either side is not UTF-8.
fn unified_diff(path: &str, before: &[u8], after: &[u8]) -> Option<String> {
    let (Ok(a), Ok(b)) = (std::str::from_utf8(before), std::str::from_utf8(after)) else {
        return None;
    };
    let diff = similar::TextDiff::from_lines(a, b);
    let mut out = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string();
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::sha256_hex;
    use crate::facts::{FileFact, KeyFact, ServiceFact};
    use crate::inventory::Host;
    use crate::role::Service;

    fn desired(content: &str, notify: Notify, sensitive: bool) -> DesiredHost {
        DesiredHost {
            host: Host {
                name: "web1".into(),
                address: "172.30.77.21".parse().expect("ip"),
                tier: "web".into(),
                port: 22,
                user: "deploy".into(),
                vars: Default::default(),
                hostname: None,
                address_at: (0, 0),
                port_set: false,
                user_set: false,
                identity_file: None,
            },
            roles: vec![DesiredRole {
                release: None,
                certificates: vec![],
                directories: vec![],
                links: vec![],
                absent: vec![],
                name: "nginx".into(),
                packages: vec!["nginx".into()],
                service: Some(Service {
                    interrupts: None,
                    name: "nginx".into(),
                    enabled: true,
                    reload: true,
                }),
                files: vec![DesiredFile::new(
                    "/etc/nginx/nginx.conf".into(),
                    content.as_bytes().to_vec(),
                    "root".into(),
                    "root".into(),
                    0o644,
                    notify,
                    None,
                    sensitive,
                )],
                validate: None,
                handlers: vec![],
                health: vec![],
                drift_check: Some("nft list table inet foobar".into()),
            }],
        }
    }

    fn facts(content: Option<&str>, mode: u32, installed: bool, active: &str) -> Facts {
        let mut files = BTreeMap::new();
        files.insert(
            "/etc/nginx/nginx.conf".to_string(),
            content.map(|c| FileFact {
                sha256: sha256_hex(c.as_bytes()),
                mode,
                owner: "root".into(),
                group: "root".into(),
            }),
        );
        let mut services = BTreeMap::new();
        services.insert(
            "nginx".into(),
            ServiceFact {
                active: active.into(),
                enabled: "enabled".into(),
            },
        );
        Facts {
            releases: vec![],
            init: Init::Systemd,
            files,
            packages: [("nginx".to_string(), installed)].into_iter().collect(),
            services,
            vips_held: None,
            unfinished: Default::default(),
            drifted: Default::default(),
            stale_temps: Default::default(),
            locked_by: None,
            certs: vec![],
            nodes: BTreeMap::new(),
        }
    }

    fn reload() -> Notify {
        Notify::Service(NotifyKind::Reload)
    }

    /// The nginx fixture, its file notifying reload but restarting when a `listen`
    /// line changes, the old content on the host.
    fn listen_plan(old: &str, new: &str, installed: bool, active: &str) -> HostPlan {
        let mut d = desired(new, reload(), false);
        d.roles[0].files[0].restart_if_changed = vec!["listen".into()];
        let f = facts(Some(old), 0o644, installed, active);
        let before = [("/etc/nginx/nginx.conf".to_string(), old.as_bytes().to_vec())]
            .into_iter()
            .collect();
        plan_host(&d, &f, &before, &Secrets::default(), None)
    }

    #[test]
    fn a_changed_listen_line_turns_the_reload_into_a_restart_and_says_why() {
        let p = listen_plan(
            "listen 80;\nworkers 1;\n",
            "  listen 81;\nworkers 1;\n",
            true,
            "active",
        );
        assert_eq!(
            p.roles[0].files[0].restart_because.as_deref(),
            Some("listen")
        );
        assert_eq!(
            p.roles[0].actions,
            [Action::Restart {
                service: "nginx".into()
            }]
        );
        assert!(p.restarts_serving() && p.interrupts_serving());
        // Another line: a reload, no reason.
        let p = listen_plan(
            "listen 80;\nworkers 1;\n",
            "listen 80;\nworkers 2;\n",
            true,
            "active",
        );
        assert_eq!(p.roles[0].files[0].restart_because, None);
        assert_eq!(
            p.roles[0].actions,
            [Action::Reload {
                service: "nginx".into()
            }]
        );
        assert!(p.interrupts_serving() && !p.restarts_serving());
        // A line only mentioning the word elsewhere, or a removed listen line.
        let p = listen_plan("a 1;\n", "a 1;\n# listen later\n", true, "active");
        assert_eq!(p.roles[0].files[0].restart_because, None);
        let p = listen_plan("listen 80;\nlisten 81;\n", "listen 80;\n", true, "active");
        assert_eq!(
            p.roles[0].files[0].restart_because.as_deref(),
            Some("listen")
        );
        // `listen` ending in `;` counts.
        let p = listen_plan("", "listen;\n", true, "active");
        assert_eq!(
            p.roles[0].files[0].restart_because.as_deref(),
            Some("listen")
        );
    }

    #[test]
    fn changed_line_word_reads_added_and_removed_lines_only() {
        let w = |a: &str, b: &str| {
            changed_line_word(
                a.as_bytes(),
                b.as_bytes(),
                &["listen".into(), "user".into()],
            )
        };
        assert_eq!(w("x\n", "x\n  user www;\n").as_deref(), Some("user"));
        assert_eq!(w("listen 1;\nx\n", "listen 1;\ny\n"), None);
        assert_eq!(w("", ""), None);
        assert_eq!(
            changed_line_word(b"listen 1;\n", b"listen 2;\n", &[]),
            None,
            "no words: never"
        );
        // Not UTF-8: cannot tell, so the first word (a restart, to be safe).
        assert_eq!(
            changed_line_word(&[0xff, 0xfe], b"x\n", &["listen".into()]).as_deref(),
            Some("listen")
        );
    }

    #[test]
    fn serving_means_running_and_not_being_installed() {
        // Running, installed: serving.
        let p = listen_plan("a\n", "b\n", true, "active");
        assert!(p.roles[0].serving);
        // Not running: a start or restart interrupts nothing.
        let p = listen_plan("a\n", "b\n", true, "inactive");
        assert!(!p.roles[0].serving);
        assert!(!p.interrupts_serving() && !p.restarts_serving());
        // Its package installed by this apply: Debian's default config, nothing served yet.
        let p = listen_plan("a\n", "b\n", false, "active");
        assert!(!p.roles[0].serving);
        assert!(!p.interrupts_serving());
        // A change that notifies nothing, on a serving host, interrupts nothing.
        let mut d = desired("a\n", Notify::None, false);
        d.roles[0].files[0].restart_if_changed = vec![];
        let p = plan_host(
            &d,
            &facts(Some("b\n"), 0o644, true, "active"),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert!(p.roles[0].serving && !p.interrupts_serving());
    }

    #[test]
    fn the_role_says_what_a_restart_interrupts_only_when_it_restarts_a_serving_service() {
        let with = |notify: Notify, active: &str| {
            let mut d = desired("new\n", notify, false);
            if let Some(s) = d.roles[0].service.as_mut() {
                s.interrupts = Some("the database".into());
            }
            plan_host(
                &d,
                &facts(Some("old\n"), 0o644, true, active),
                &BTreeMap::new(),
                &Secrets::default(),
                None,
            )
        };
        let restart = Notify::Service(NotifyKind::Restart);
        assert_eq!(
            with(restart.clone(), "active").roles[0]
                .interrupts
                .as_deref(),
            Some("the database")
        );
        assert_eq!(with(reload(), "active").roles[0].interrupts, None);
        assert_eq!(with(restart, "inactive").roles[0].interrupts, None);
    }

    #[test]
    fn converged_host_has_an_empty_plan() {
        let p = plan_host(
            &desired("a\n", reload(), false),
            &facts(Some("a\n"), 0o644, true, "active"),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.change_count(), 0);
    }

    #[test]
    fn changed_content_gives_diff_and_one_reload() {
        let old: BTreeMap<String, Vec<u8>> =
            [("/etc/nginx/nginx.conf".to_string(), b"a\nb\n".to_vec())].into();
        let p = plan_host(
            &desired("a\nc\n", reload(), false),
            &facts(Some("a\nb\n"), 0o644, true, "active"),
            &old,
            &Secrets::default(),
            None,
        );
        let f = &p.roles[0].files[0];
        assert_eq!(f.action, FileAction::Update);
        assert_eq!(
            f.diff.as_deref(),
            Some(
                "--- a/etc/nginx/nginx.conf\n+++ b/etc/nginx/nginx.conf\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
            )
        );
        assert_eq!(
            p.roles[0].actions,
            vec![Action::Reload {
                service: "nginx".into()
            }]
        );
    }

    #[test]
    fn mode_only_change_is_metadata_and_restarts_nothing() {
        let p = plan_host(
            &desired("a\n", reload(), false),
            &facts(Some("a\n"), 0o600, true, "active"),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        let f = &p.roles[0].files[0];
        assert_eq!(f.action, FileAction::Metadata);
        assert_eq!(f.old_mode.as_deref(), Some("0600"));
        assert!(p.roles[0].actions.is_empty());
    }

    #[test]
    fn fresh_install_restarts_and_enables() {
        let p = plan_host(
            &desired("a\n", reload(), false),
            &facts(None, 0, false, "inactive"),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert_eq!(p.packages_to_install, vec!["nginx"]);
        assert_eq!(p.roles[0].files[0].action, FileAction::Create);
        assert_eq!(
            p.roles[0].actions,
            vec![
                Action::Restart {
                    service: "nginx".into()
                },
                Action::Enable {
                    service: "nginx".into()
                }
            ]
        );
    }

    #[test]
    fn unfinished_apply_runs_its_handlers_again() {
        let mut f = facts(Some("a\n"), 0o644, true, "active");
        f.unfinished.insert("/etc/nginx/nginx.conf".into());
        let p = plan_host(
            &desired("a\n", reload(), false),
            &f,
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert_eq!(p.roles[0].files[0].action, FileAction::Unfinished);
        assert!(p.roles[0].files[0].diff.is_none());
        assert_eq!(
            p.roles[0].actions,
            vec![Action::Reload {
                service: "nginx".into()
            }]
        );
    }

    #[test]
    fn drifted_live_state_is_reloaded_once() {
        let mut f = facts(Some("a\n"), 0o644, true, "active");
        f.drifted.insert("nginx".into());
        let p = plan_host(
            &desired("a\n", reload(), false),
            &f,
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert!(p.roles[0].files.is_empty());
        assert_eq!(
            p.roles[0].drift.as_deref(),
            Some("nft list table inet foobar")
        );
        assert_eq!(
            p.roles[0].actions,
            vec![Action::Reload {
                service: "nginx".into()
            }]
        );
        // with a file change too, still one reload
        let old: BTreeMap<String, Vec<u8>> =
            [("/etc/nginx/nginx.conf".to_string(), b"b\n".to_vec())].into();
        let p = plan_host(
            &desired("a\n", reload(), false),
            &{
                let mut g = facts(Some("b\n"), 0o644, true, "active");
                g.drifted.insert("nginx".into());
                g
            },
            &old,
            &Secrets::default(),
            None,
        );
        assert_eq!(
            p.roles[0].actions,
            vec![Action::Reload {
                service: "nginx".into()
            }]
        );
    }

    #[test]
    fn stopped_service_is_started_even_without_file_changes() {
        let p = plan_host(
            &desired("a\n", reload(), false),
            &facts(Some("a\n"), 0o644, true, "failed"),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert_eq!(
            p.roles[0].actions,
            vec![Action::Start {
                service: "nginx".into()
            }]
        );
    }

    /// Issue 10, finding 9: a remote file holding `ESC ]52;c;...BEL` (sets the operator's
    /// clipboard) or `CR ESC [2K` (erases the line shown) was printed raw in the plan's
    /// diff. Every byte from the host is made printable, in the text and the JSON plan.
    #[test]
    fn escapes_in_remote_content_and_owners_are_made_printable() {
        let old: BTreeMap<String, Vec<u8>> = [(
            "/etc/nginx/nginx.conf".to_string(),
            b"a\n\x1b]52;c;cm0gLXJmIH4=\x07\r\x1b[2Kevil\n".to_vec(),
        )]
        .into();
        let mut f = facts(Some("x\n"), 0o644, true, "active");
        if let Some(Some(file)) = f.files.get_mut("/etc/nginx/nginx.conf") {
            file.owner = "r\x1b[8moot".into();
        }
        let p = plan_host(
            &desired("a\n", reload(), false),
            &f,
            &old,
            &Secrets::default(),
            None,
        );
        let text = crate::report::plan_text(&p, false);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("-^[]52;c;cm0gLXJmIH4=^G^M-^[[2Kevil"),
            "{text}"
        );
        assert!(text.contains("owner r^[[8moot:root -> root:root"), "{text}");
    }

    #[test]
    fn sensitive_files_never_show_a_diff_and_diffs_are_masked() {
        let secrets = Secrets::from_pairs(&[("pw", "s3cr3t-value")]);
        let p = plan_host(
            &desired("pw=s3cr3t-value\n", reload(), true),
            &facts(Some("pw=old-secret\n"), 0o644, true, "active"),
            &BTreeMap::new(),
            &secrets,
            None,
        );
        assert!(p.roles[0].files[0].diff.is_none());
        let old: BTreeMap<String, Vec<u8>> =
            [("/etc/nginx/nginx.conf".to_string(), b"x\n".to_vec())].into();
        let p = plan_host(
            &desired("s3cr3t-value\n", reload(), false),
            &facts(Some("x\n"), 0o644, true, "active"),
            &old,
            &secrets,
            None,
        );
        let d = p.roles[0].files[0].diff.clone().unwrap_or_default();
        assert!(!d.contains("s3cr3t") && d.contains("********"), "{d}");
    }

    // ---- Rule tables: one decision of the planner each (issue 16). ----

    const CONF: &str = "/etc/app/app.conf";

    fn file(dest: &str, content: &str, notify: Notify) -> DesiredFile {
        DesiredFile::new(
            dest.into(),
            content.as_bytes().to_vec(),
            "root".into(),
            "root".into(),
            0o644,
            notify,
            None,
            false,
        )
    }

    fn service(reload: bool, enabled: bool) -> Option<Service> {
        Some(Service {
            interrupts: None,
            name: "app".into(),
            enabled,
            reload,
        })
    }

    fn role(files: Vec<DesiredFile>, service: Option<Service>) -> DesiredRole {
        DesiredRole {
            release: None,
            certificates: vec![],
            directories: vec![],
            links: vec![],
            absent: vec![],
            name: "app".into(),
            packages: vec!["app".into()],
            service,
            files,
            validate: None,
            handlers: vec![],
            health: vec![],
            drift_check: None,
        }
    }

    fn host(roles: Vec<DesiredRole>) -> DesiredHost {
        let mut h = desired("", Notify::None, false);
        h.roles = roles;
        h
    }

    fn on_disk(content: &str, mode: u32, owner: &str, group: &str) -> Option<FileFact> {
        Some(FileFact {
            sha256: sha256_hex(content.as_bytes()),
            mode,
            owner: owner.into(),
            group: group.into(),
        })
    }

    /// Facts of a systemd host with package `app` installed and service `app` in `active`
    /// state, enabled, and `files` on disk.
    fn host_facts(files: &[(&str, Option<FileFact>)], active: &str) -> Facts {
        let mut f = facts(None, 0, true, active);
        f.files = files
            .iter()
            .map(|(p, ff)| (p.to_string(), ff.clone()))
            .collect();
        f.packages = [("app".to_string(), true)].into();
        f.services = [(
            "app".to_string(),
            ServiceFact {
                active: active.into(),
                enabled: "enabled".into(),
            },
        )]
        .into();
        f
    }

    fn plan_of(h: &DesiredHost, f: &Facts) -> HostPlan {
        plan_host(h, f, &BTreeMap::new(), &Secrets::default(), None)
    }

    fn restart() -> Action {
        Action::Restart {
            service: "app".into(),
        }
    }
    fn reload_app() -> Action {
        Action::Reload {
            service: "app".into(),
        }
    }
    fn start() -> Action {
        Action::Start {
            service: "app".into(),
        }
    }
    fn enable() -> Action {
        Action::Enable {
            service: "app".into(),
        }
    }

    #[test]
    fn file_action_create_update_metadata_or_nothing() {
        // (case, fact on disk, action, old_mode, old_owner)
        type Row = (
            &'static str,
            Option<Option<FileFact>>,
            Option<FileAction>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let rows: Vec<Row> = vec![
            ("never asked", None, Some(FileAction::Create), None, None),
            ("missing", Some(None), Some(FileAction::Create), None, None),
            (
                "in place",
                Some(on_disk("a\n", 0o644, "root", "root")),
                None,
                None,
                None,
            ),
            (
                "content",
                Some(on_disk("b\n", 0o644, "root", "root")),
                Some(FileAction::Update),
                None,
                None,
            ),
            (
                "content and mode",
                Some(on_disk("b\n", 0o600, "root", "root")),
                Some(FileAction::Update),
                Some("0600"),
                None,
            ),
            (
                "mode alone",
                Some(on_disk("a\n", 0o600, "root", "root")),
                Some(FileAction::Metadata),
                Some("0600"),
                None,
            ),
            (
                "owner alone",
                Some(on_disk("a\n", 0o644, "www", "root")),
                Some(FileAction::Metadata),
                None,
                Some("www:root"),
            ),
            (
                "group alone",
                Some(on_disk("a\n", 0o644, "root", "adm")),
                Some(FileAction::Metadata),
                None,
                Some("root:adm"),
            ),
        ];
        for (case, fact, action, old_mode, old_owner) in rows {
            let h = host(vec![role(vec![file(CONF, "a\n", Notify::None)], None)]);
            let f = host_facts(
                &fact.map(|ff| vec![(CONF, ff)]).unwrap_or_default(),
                "active",
            );
            let p = plan_of(&h, &f);
            let change = p.roles[0].files.first();
            assert_eq!(change.map(|c| c.action), action, "{case}");
            assert_eq!(
                change.and_then(|c| c.old_mode.as_deref()),
                old_mode,
                "{case}"
            );
            assert_eq!(
                change.and_then(|c| c.old_owner.as_deref()),
                old_owner,
                "{case}"
            );
            if let Some(c) = change {
                assert_eq!(
                    (c.mode.as_str(), c.owner.as_str(), c.group.as_str()),
                    ("0644", "root", "root"),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn unfinished_only_when_content_and_metadata_are_in_place() {
        let h = host(vec![role(vec![file(CONF, "a\n", Notify::None)], None)]);
        for (case, fact, action) in [
            (
                "in place",
                on_disk("a\n", 0o644, "root", "root"),
                FileAction::Unfinished,
            ),
            (
                "content differs",
                on_disk("b\n", 0o644, "root", "root"),
                FileAction::Update,
            ),
            (
                "mode differs",
                on_disk("a\n", 0o600, "root", "root"),
                FileAction::Metadata,
            ),
        ] {
            let mut f = host_facts(&[(CONF, fact)], "active");
            f.unfinished.insert(CONF.into());
            let p = plan_of(&h, &f);
            assert_eq!(p.roles[0].files[0].action, action, "{case}");
        }
    }

    #[test]
    fn diff_only_for_content_changes_of_non_sensitive_text() {
        let old: BTreeMap<String, Vec<u8>> = [(CONF.to_string(), b"b\n".to_vec())].into();
        let mut secret = file(CONF, "a\n", Notify::None);
        secret.sensitive = true;
        let binary = DesiredFile::new(
            CONF.into(),
            vec![0xff, 0xfe],
            "root".into(),
            "root".into(),
            0o644,
            Notify::None,
            None,
            false,
        );
        let rows: Vec<(&str, DesiredFile, Option<FileFact>, Option<&str>)> = vec![
            (
                "update",
                file(CONF, "a\n", Notify::None),
                on_disk("b\n", 0o644, "root", "root"),
                Some("--- a/etc/app/app.conf\n+++ b/etc/app/app.conf\n@@ -1 +1 @@\n-b\n+a\n"),
            ),
            (
                "create diffs against nothing",
                file(CONF, "a\n", Notify::None),
                None,
                Some("--- a/etc/app/app.conf\n+++ b/etc/app/app.conf\n@@ -0,0 +1 @@\n+a\n"),
            ),
            (
                "an empty new file has an empty diff",
                file(CONF, "", Notify::None),
                None,
                Some(""),
            ),
            (
                "metadata",
                file(CONF, "a\n", Notify::None),
                on_disk("a\n", 0o600, "root", "root"),
                None,
            ),
            (
                "sensitive",
                secret,
                on_disk("b\n", 0o644, "root", "root"),
                None,
            ),
            (
                "binary",
                binary,
                on_disk("b\n", 0o644, "root", "root"),
                None,
            ),
        ];
        for (case, df, fact, diff) in rows {
            let h = host(vec![role(vec![df], None)]);
            // The old content is fetched only for files that exist.
            let old = if fact.is_some() {
                old.clone()
            } else {
                BTreeMap::new()
            };
            let f = host_facts(&[(CONF, fact)], "active");
            let p = plan_host(&h, &f, &old, &Secrets::default(), None);
            assert_eq!(p.roles[0].files[0].diff.as_deref(), diff, "{case}");
        }
    }

    #[test]
    fn diff_of_text_without_final_newline_ends_with_one() {
        let old: BTreeMap<String, Vec<u8>> = [(CONF.to_string(), b"b".to_vec())].into();
        let h = host(vec![role(vec![file(CONF, "a", Notify::None)], None)]);
        let f = host_facts(&[(CONF, on_disk("b", 0o644, "root", "root"))], "active");
        let p = plan_host(&h, &f, &old, &Secrets::default(), None);
        let d = p.roles[0].files[0].diff.clone().unwrap_or_default();
        assert!(d.contains("-b") && d.contains("+a"), "{d:?}");
        assert!(d.ends_with('\n') && !d.ends_with("\n\n"), "{d:?}");
    }

    #[test]
    fn content_changed_lists_existing_non_sensitive_files_whose_content_differs() {
        let mut secret = file("/etc/app/secret", "s\n", Notify::None);
        secret.sensitive = true;
        let h = host(vec![role(
            vec![
                file("/etc/app/changed", "a\n", Notify::None),
                file("/etc/app/same", "a\n", Notify::None),
                file("/etc/app/new", "a\n", Notify::None),
                file("/etc/app/mode", "a\n", Notify::None),
                secret,
            ],
            None,
        )]);
        let f = host_facts(
            &[
                ("/etc/app/changed", on_disk("b\n", 0o644, "root", "root")),
                ("/etc/app/same", on_disk("a\n", 0o644, "root", "root")),
                ("/etc/app/new", None),
                ("/etc/app/mode", on_disk("a\n", 0o600, "root", "root")),
                ("/etc/app/secret", on_disk("t\n", 0o644, "root", "root")),
            ],
            "active",
        );
        assert_eq!(content_changed(&h, &f), vec!["/etc/app/changed"]);
    }

    #[test]
    fn daemon_reload_exactly_when_a_unit_file_content_changed_under_systemd() {
        // (case, path, on disk, init, daemon-reload?)
        let changed = || on_disk("old\n", 0o644, "root", "root");
        let rows = [
            (
                "etc unit",
                "/etc/systemd/system/app.service",
                changed(),
                Init::Systemd,
                true,
            ),
            (
                "lib unit",
                "/lib/systemd/system/app.service",
                changed(),
                Init::Systemd,
                true,
            ),
            (
                "usr lib unit",
                "/usr/lib/systemd/system/app.service",
                changed(),
                Init::Systemd,
                true,
            ),
            (
                "new unit",
                "/etc/systemd/system/app.service",
                None,
                Init::Systemd,
                true,
            ),
            (
                "not a unit",
                "/etc/app/app.conf",
                changed(),
                Init::Systemd,
                false,
            ),
            (
                "sysv host",
                "/etc/systemd/system/app.service",
                changed(),
                Init::Other,
                false,
            ),
            (
                "mode only",
                "/etc/systemd/system/app.service",
                on_disk("a\n", 0o600, "root", "root"),
                Init::Systemd,
                false,
            ),
        ];
        for (case, path, fact, init, want) in rows {
            let h = host(vec![role(vec![file(path, "a\n", Notify::None)], None)]);
            let mut f = host_facts(&[(path, fact)], "active");
            f.init = init;
            let p = plan_of(&h, &f);
            let want = if want {
                vec![Action::DaemonReload]
            } else {
                vec![]
            };
            assert_eq!(p.roles[0].actions, want, "{case}");
        }
    }

    #[test]
    fn reload_or_restart_of_the_role_service() {
        let changed = |p: &'static str| (p, on_disk("old\n", 0o644, "root", "root"));
        let same = |p: &'static str| (p, on_disk("a\n", 0o644, "root", "root"));
        let mode = |p: &'static str| (p, on_disk("a\n", 0o600, "root", "root"));
        let rel = || Notify::Service(NotifyKind::Reload);
        let res = || Notify::Service(NotifyKind::Restart);
        type Row = (
            &'static str,
            Option<Service>,
            &'static str,
            bool,
            Vec<Notify>,
            Vec<(&'static str, Option<FileFact>)>,
            Vec<Action>,
        );
        // (case, service, active state, package being installed, notify of /a, /b, facts, actions)
        let rows: Vec<Row> = vec![
            (
                "reload",
                service(true, true),
                "active",
                false,
                vec![rel()],
                vec![changed("/a")],
                vec![reload_app()],
            ),
            (
                "reload: false restarts",
                service(false, true),
                "active",
                false,
                vec![rel()],
                vec![changed("/a")],
                vec![restart()],
            ),
            (
                "restart",
                service(true, true),
                "active",
                false,
                vec![res()],
                vec![changed("/a")],
                vec![restart()],
            ),
            (
                "restart wins over reload",
                service(true, true),
                "active",
                false,
                vec![rel(), res()],
                vec![changed("/a"), changed("/b")],
                vec![restart()],
            ),
            (
                "reload then restart: still restart",
                service(true, true),
                "active",
                false,
                vec![res(), rel()],
                vec![changed("/a"), changed("/b")],
                vec![restart()],
            ),
            (
                "nothing changed",
                service(true, true),
                "active",
                false,
                vec![rel()],
                vec![same("/a")],
                vec![],
            ),
            (
                "metadata only",
                service(true, true),
                "active",
                false,
                vec![res()],
                vec![mode("/a")],
                vec![],
            ),
            (
                "notify none",
                service(true, true),
                "active",
                false,
                vec![Notify::None],
                vec![changed("/a")],
                vec![],
            ),
            (
                "not running: started",
                service(true, true),
                "inactive",
                false,
                vec![rel()],
                vec![same("/a")],
                vec![start()],
            ),
            (
                "not running and changed: restarted",
                service(true, true),
                "failed",
                false,
                vec![rel()],
                vec![changed("/a")],
                vec![restart()],
            ),
            (
                "not running, restart notify",
                service(true, true),
                "inactive",
                false,
                vec![res()],
                vec![changed("/a")],
                vec![restart()],
            ),
            (
                "being installed: started and enabled",
                service(true, true),
                "active",
                true,
                vec![rel()],
                vec![same("/a")],
                vec![start(), enable()],
            ),
            (
                "being installed and changed: restarted",
                service(true, true),
                "active",
                true,
                vec![rel()],
                vec![changed("/a")],
                vec![restart(), enable()],
            ),
            (
                "disabled service not running is left alone",
                service(true, false),
                "inactive",
                false,
                vec![rel()],
                vec![same("/a")],
                vec![],
            ),
            (
                "disabled service still reloads on change",
                service(true, false),
                "inactive",
                false,
                vec![rel()],
                vec![changed("/a")],
                vec![reload_app()],
            ),
            (
                "disabled service being installed",
                service(true, false),
                "active",
                true,
                vec![res()],
                vec![changed("/a")],
                vec![restart()],
            ),
            (
                "no service",
                None,
                "active",
                false,
                vec![res()],
                vec![changed("/a")],
                vec![],
            ),
        ];
        for (case, svc, active, fresh, notify, on, want) in rows {
            let files = ["/a", "/b"]
                .iter()
                .zip(notify)
                .map(|(p, n)| file(p, "a\n", n))
                .collect();
            let h = host(vec![role(files, svc)]);
            let mut f = host_facts(&on, active);
            f.packages.insert("app".into(), !fresh);
            let p = plan_of(&h, &f);
            assert_eq!(p.roles[0].actions, want, "{case}");
        }
    }

    #[test]
    fn enable_when_not_enabled_unknown_or_being_installed() {
        // (case, service state, package installed, enabled in role, actions)
        type Row = (&'static str, Option<&'static str>, bool, bool, Vec<Action>);
        let rows: Vec<Row> = vec![
            ("enabled", Some("enabled"), true, true, vec![]),
            ("disabled", Some("disabled"), true, true, vec![enable()]),
            ("unknown service", None, true, true, vec![start(), enable()]),
            (
                "being installed",
                Some("enabled"),
                false,
                true,
                vec![start(), enable()],
            ),
            ("role says disabled", Some("disabled"), true, false, vec![]),
        ];
        for (case, state, installed, enabled, want) in rows {
            let h = host(vec![role(vec![], service(true, enabled))]);
            let mut f = host_facts(&[], "active");
            f.packages.insert("app".into(), installed);
            match state {
                Some(s) => {
                    f.services.insert(
                        "app".into(),
                        ServiceFact {
                            active: "active".into(),
                            enabled: s.into(),
                        },
                    );
                }
                None => {
                    f.services.clear();
                }
            }
            let p = plan_of(&h, &f);
            assert_eq!(p.roles[0].actions, want, "{case}");
        }
    }

    #[test]
    fn named_handlers_run_once_in_role_order_when_notified_by_a_content_change() {
        let mut r = role(
            vec![
                file("/a", "a\n", Notify::Handler("second".into())),
                file("/b", "a\n", Notify::Handler("second".into())),
                file("/c", "a\n", Notify::Handler("first".into())),
                file("/d", "a\n", Notify::Handler("unused".into())),
            ],
            None,
        );
        r.handlers = vec![
            ("first".into(), "echo 1".into()),
            ("second".into(), "echo 2".into()),
            ("unused".into(), "echo 3".into()),
            ("never".into(), "echo 4".into()),
        ];
        let changed = || on_disk("old\n", 0o644, "root", "root");
        let f = host_facts(
            &[
                ("/a", changed()),
                ("/b", changed()),
                ("/c", changed()),
                ("/d", on_disk("a\n", 0o600, "root", "root")),
            ],
            "active",
        );
        let p = plan_of(&host(vec![r]), &f);
        assert_eq!(
            p.roles[0].actions,
            vec![
                Action::Run {
                    handler: "first".into(),
                    command: "echo 1".into()
                },
                Action::Run {
                    handler: "second".into(),
                    command: "echo 2".into()
                },
            ]
        );
    }

    #[test]
    fn drift_reloads_or_restarts_unless_the_service_is_already_handled() {
        let rel = || Notify::Service(NotifyKind::Reload);
        let res = || Notify::Service(NotifyKind::Restart);
        // (case, service, active, drifted, drift check, file on disk, notify, drift shown, actions)
        type Row = (
            &'static str,
            Option<Service>,
            &'static str,
            bool,
            bool,
            Option<FileFact>,
            Notify,
            bool,
            Vec<Action>,
        );
        let same = || on_disk("a\n", 0o644, "root", "root");
        let changed = || on_disk("b\n", 0o644, "root", "root");
        let rows: Vec<Row> = vec![
            (
                "drift reloads",
                service(true, true),
                "active",
                true,
                true,
                same(),
                rel(),
                true,
                vec![reload_app()],
            ),
            (
                "drift restarts without reload",
                service(false, true),
                "active",
                true,
                true,
                same(),
                rel(),
                true,
                vec![restart()],
            ),
            (
                "not drifted",
                service(true, true),
                "active",
                false,
                true,
                same(),
                rel(),
                false,
                vec![],
            ),
            (
                "no drift check",
                service(true, true),
                "active",
                true,
                false,
                same(),
                rel(),
                false,
                vec![],
            ),
            (
                "no service: shown, nothing to do",
                None,
                "active",
                true,
                true,
                same(),
                rel(),
                true,
                vec![],
            ),
            (
                "start already",
                service(true, true),
                "inactive",
                true,
                true,
                same(),
                rel(),
                true,
                vec![start()],
            ),
            (
                "restart already",
                service(true, true),
                "active",
                true,
                true,
                changed(),
                res(),
                true,
                vec![restart()],
            ),
            (
                "reload already",
                service(true, true),
                "active",
                true,
                true,
                changed(),
                rel(),
                true,
                vec![reload_app()],
            ),
        ];
        for (case, svc, active, drifted, check, fact, notify, shown, want) in rows {
            let mut r = role(vec![file(CONF, "a\n", notify)], svc);
            r.drift_check = check.then(|| "test -f /x".to_string());
            let mut f = host_facts(&[(CONF, fact)], active);
            if drifted {
                f.drifted.insert("app".into());
            }
            let p = plan_of(&host(vec![r]), &f);
            assert_eq!(p.roles[0].drift.is_some(), shown, "{case}");
            assert_eq!(p.roles[0].actions, want, "{case}");
        }
    }

    #[test]
    fn packages_to_install_are_the_missing_ones_once() {
        let mut a = role(vec![], None);
        a.packages = vec!["app".into(), "curl".into(), "unasked".into()];
        let mut b = role(vec![], None);
        b.packages = vec!["curl".into(), "app".into()];
        let mut f = host_facts(&[], "active");
        f.packages = [("app".to_string(), true), ("curl".to_string(), false)].into();
        let p = plan_of(&host(vec![a, b]), &f);
        assert_eq!(p.packages_to_install, vec!["curl", "unasked"]);
    }

    #[test]
    fn host_plan_carries_host_identity_init_and_stale_temps() {
        let mut f = host_facts(&[], "active");
        f.init = Init::Other;
        f.stale_temps.insert("/etc/app/.app.conf.foobar-tmp".into());
        let p = plan_of(&host(vec![]), &f);
        assert_eq!(
            (p.host.as_str(), p.tier.as_str(), p.address.as_str()),
            ("web1", "web", "172.30.77.21")
        );
        assert_eq!(p.init, Init::Other);
        assert_eq!(p.stale_temps, vec!["/etc/app/.app.conf.foobar-tmp"]);
    }

    fn change_stub(path: &str) -> FileChange {
        FileChange::new_content(file(path, "", Notify::None), FileAction::Create)
    }

    fn plan_with(packages: usize, temps: usize, files: &[usize], actions: &[usize]) -> HostPlan {
        HostPlan {
            drain: None,
            host: "web1".into(),
            tier: "web".into(),
            address: "172.30.77.21".into(),
            init: Init::Systemd,
            packages_to_install: (0..packages).map(|i| format!("p{i}")).collect(),
            packages_ready: false,
            stale_temps: (0..temps).map(|i| format!("/t{i}")).collect(),
            roles: files
                .iter()
                .zip(actions)
                .map(|(&nf, &na)| RolePlan {
                    release: None,
                    release_error: None,
                    serving: false,
                    interrupts: None,
                    role: "r".into(),
                    drift: None,
                    files: (0..nf).map(|i| change_stub(&format!("/f{i}"))).collect(),
                    certificates: Vec::new(),
                    paths: Vec::new(),
                    actions: vec![Action::DaemonReload; na],
                    validate: None,
                    health: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn is_empty_and_change_count_for_each_kind_of_plan() {
        // (case, packages, stale temps, files per role, actions per role, empty, count)
        type Row = (
            &'static str,
            usize,
            usize,
            Vec<usize>,
            Vec<usize>,
            bool,
            usize,
        );
        let rows: Vec<Row> = vec![
            ("nothing", 0, 0, vec![], vec![], true, 0),
            ("roles with nothing", 0, 0, vec![0, 0], vec![0, 0], true, 0),
            ("a package", 1, 0, vec![0], vec![0], false, 1),
            ("a stale temp", 0, 1, vec![0], vec![0], false, 1),
            ("a file", 0, 0, vec![1], vec![0], false, 1),
            ("an action", 0, 0, vec![0], vec![1], false, 1),
            (
                "second role has a file",
                0,
                0,
                vec![0, 1],
                vec![0, 0],
                false,
                1,
            ),
            (
                "second role has an action",
                0,
                0,
                vec![0, 0],
                vec![0, 1],
                false,
                1,
            ),
            ("everything", 2, 3, vec![5, 7], vec![11, 13], false, 41),
        ];
        for (case, packages, temps, files, actions, empty, count) in rows {
            let p = plan_with(packages, temps, &files, &actions);
            assert_eq!(p.is_empty(), empty, "{case}");
            assert_eq!(p.change_count(), count, "{case}");
        }
    }

    #[test]
    fn actions_display_what_they_do() {
        let rows = [
            (Action::DaemonReload, "daemon-reload (a unit file changed)"),
            (reload_app(), "reload app"),
            (restart(), "restart app"),
            (start(), "start app"),
            (enable(), "enable app"),
            (
                Action::Run {
                    handler: "h".into(),
                    command: "c".into(),
                },
                "run handler h",
            ),
        ];
        for (action, text) in rows {
            assert_eq!(action.to_string(), text);
        }
    }

    // ---- certificates ---------------------------------------------------------------

    /// A CA, and a host key's CSR and public half.
    struct Pki {
        ca: Ca,
        csr: String,
        public: String,
    }

    fn pki() -> Pki {
        let (cert, key) = crate::pki::testing::test_ca("test internal CA");
        let (csr, public) = crate::pki::testing::test_csr("web1");
        Pki {
            ca: Ca::load(&cert, &key).expect("test CA"),
            csr,
            public,
        }
    }

    fn spec(names: &[&str]) -> crate::pki::CertSpec {
        crate::pki::CertSpec {
            common_name: names[0].to_string(),
            sans: names
                .iter()
                .map(|n| crate::pki::San::parse(n).expect("name"))
                .collect(),
            validity_days: 90,
        }
    }

    /// web1 with its nginx config in place and one certificate (notify reload).
    fn with_cert(names: &[&str]) -> DesiredHost {
        let mut d = desired("same\n", reload(), false);
        d.roles[0].certificates = vec![DesiredCert {
            cert: "/etc/nginx/internal/web.crt".into(),
            key: "/etc/nginx/internal/web.key".into(),
            owner: "root".into(),
            group: "root".into(),
            spec: spec(names),
            notify: reload(),
        }];
        d
    }

    fn key(mode: u32, owner: &str, public: Option<&str>) -> KeyFact {
        KeyFact {
            mode,
            owner: owner.into(),
            group: "root".into(),
            public_pem: public.map(str::to_string),
        }
    }

    /// The facts of [`with_cert`]'s host, with this key and certificate.
    fn cert_facts(key: Option<KeyFact>, cert: Option<String>) -> Facts {
        let mut f = facts(Some("same\n"), 0o644, true, "active");
        f.certs = vec![CertFact {
            key,
            cert_pem: cert,
        }];
        f
    }

    fn plan_at(d: &DesiredHost, f: &Facts, ca: &Ca, now: SystemTime, days: u64) -> HostPlan {
        let check = CertCheck {
            ca,
            now,
            renew_within: Duration::from_secs(days * 86_400),
        };
        plan_host(d, f, &BTreeMap::new(), &Secrets::default(), Some(&check))
    }

    #[test]
    fn a_host_without_key_gets_one_made_and_a_certificate_then_a_reload() {
        let p = pki();
        let d = with_cert(&["web1", "web", "172.30.77.21"]);
        let plan = plan_at(&d, &cert_facts(None, None), &p.ca, SystemTime::now(), 30);
        let c = &plan.roles[0].certificates;
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].action, c[0].new_key), (CertWork::Issue, true));
        assert_eq!(c[0].names, ["DNS:web1", "DNS:web", "IP:172.30.77.21"]);
        assert_eq!(
            plan.roles[0].actions,
            [Action::Reload {
                service: "nginx".into()
            }]
        );
        assert_eq!(plan.change_count(), 2);
        assert!(!plan.is_empty());
    }

    #[test]
    fn a_key_without_certificate_is_kept_and_a_certificate_issued() {
        let p = pki();
        let d = with_cert(&["web1"]);
        let f = cert_facts(Some(key(0o600, "root", Some(&p.public))), None);
        let plan = plan_at(&d, &f, &p.ca, SystemTime::now(), 30);
        let c = &plan.roles[0].certificates[0];
        assert_eq!((c.action, c.new_key), (CertWork::Issue, false));
        assert_eq!(c.old_key_meta, None);
    }

    #[test]
    fn a_converged_certificate_is_never_signed_again_and_a_drifted_key_mode_is_fixed_alone() {
        let p = pki();
        let d = with_cert(&["web1", "172.30.77.21"]);
        let now = SystemTime::now();
        let cert =
            p.ca.sign(&p.csr, &d.roles[0].certificates[0].spec, now)
                .expect("sign");
        let f = cert_facts(
            Some(key(0o600, "root", Some(&p.public))),
            Some(cert.clone()),
        );
        let plan = plan_at(&d, &f, &p.ca, now, 30);
        assert!(plan.is_empty(), "{plan:?}");

        let f = cert_facts(Some(key(0o644, "www-data", Some(&p.public))), Some(cert));
        let plan = plan_at(&d, &f, &p.ca, now, 30);
        let c = &plan.roles[0].certificates;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].action, CertWork::FixKey);
        assert_eq!(c[0].old_key_meta.as_deref(), Some("0644 www-data:root"));
        assert!(
            plan.roles[0].actions.is_empty(),
            "a key's mode needs no reload: {:?}",
            plan.roles[0].actions
        );
    }

    #[test]
    fn renewal_follows_the_window_and_names_changes_reissue() {
        let p = pki();
        let d = with_cert(&["web1"]);
        let issued = SystemTime::now();
        let cert =
            p.ca.sign(&p.csr, &d.roles[0].certificates[0].spec, issued)
                .expect("sign");
        let f = cert_facts(Some(key(0o600, "root", Some(&p.public))), Some(cert));
        // 90 days of validity: a 100-day window renews it, a 30-day one does not.
        let plan = plan_at(&d, &f, &p.ca, issued, 100);
        assert_eq!(plan.roles[0].certificates[0].action, CertWork::Renew);
        assert!(plan.interrupts_serving(), "a reload of a serving nginx");
        assert!(plan_at(&d, &f, &p.ca, issued, 30).is_empty());
        // 61 days later the 30-day window has come.
        let later = issued + Duration::from_secs(61 * 86_400);
        assert_eq!(
            plan_at(&d, &f, &p.ca, later, 30).roles[0].certificates[0].action,
            CertWork::Renew
        );
        let more_names = with_cert(&["web1", "web"]);
        let plan = plan_at(&more_names, &f, &p.ca, issued, 30);
        let c = &plan.roles[0].certificates[0];
        assert_eq!((c.action, c.new_key), (CertWork::Reissue, false));
        assert!(c.reason.contains("DNS:web"), "{}", c.reason);
    }

    #[test]
    fn what_a_host_sends_that_does_not_parse_is_issued_again() {
        let p = pki();
        let d = with_cert(&["web1"]);
        let garbage = Some("-----BEGIN CERTIFICATE-----\n\u{1b}[31m\n".to_string());
        let f = cert_facts(Some(key(0o600, "root", Some("not a key"))), garbage);
        let c = &plan_at(&d, &f, &p.ca, SystemTime::now(), 30).roles[0].certificates[0];
        // The key is kept (its CSR step says whether it is damaged).
        assert_eq!((c.action, c.new_key), (CertWork::Issue, false));
        assert!(c.reason.contains("could not be read"), "{}", c.reason);
        // A good key, a certificate that does not parse: issued again, same key.
        let garbage = Some("-----BEGIN CERTIFICATE-----\n\u{1b}[31m\n".to_string());
        let f = cert_facts(Some(key(0o600, "root", Some(&p.public))), garbage);
        let c = &plan_at(&d, &f, &p.ca, SystemTime::now(), 30).roles[0].certificates[0];
        assert_eq!((c.action, c.new_key), (CertWork::Issue, false));
        assert!(!c.reason.contains('\u{1b}'));
    }

    #[test]
    fn without_a_ca_to_check_against_certificates_are_not_planned() {
        let d = with_cert(&["web1"]);
        let p = plan_host(
            &d,
            &cert_facts(None, None),
            &BTreeMap::new(),
            &Secrets::default(),
            None,
        );
        assert!(p.is_empty());
    }
}
