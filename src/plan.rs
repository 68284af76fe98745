//! Planning: desired state vs facts -> the changes to make. Pure; an empty plan means
//! the host is converged. `plan` prints this value and `apply` executes the same value.

use crate::apply::printable;
use crate::desired::{DesiredFile, DesiredHost, DesiredRole};
use crate::facts::Facts;
use crate::role::{HealthCheck, Notify, NotifyKind, TreeValidate};
use crate::secrets::Secrets;
use crate::shell::Init;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub tier: String,
    pub address: String,
    #[serde(skip)]
    pub init: Init,
    pub packages_to_install: Vec<String>,
    /// Temporary files an interrupted apply left behind: removed first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_temps: Vec<String>,
    pub roles: Vec<RolePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolePlan {
    pub role: String,
    /// The role's drift check failed: the live state differs from the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    pub files: Vec<FileChange>,
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
    #[serde(skip)]
    pub file: DesiredFile,
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
            && self
                .roles
                .iter()
                .all(|r| r.files.is_empty() && r.actions.is_empty())
    }

    /// Number of changes (packages, files, actions).
    pub fn change_count(&self) -> usize {
        self.packages_to_install.len()
            + self.stale_temps.len()
            + self
                .roles
                .iter()
                .map(|r| r.files.len() + r.actions.len())
                .sum::<usize>()
    }
}

/// Paths whose content differs (their current content is fetched to show a diff) and
/// paths reported missing (to tell a folder or a link from a missing file).
pub fn content_changed<'a>(desired: &'a DesiredHost, facts: &Facts) -> Vec<&'a str> {
    desired
        .roles
        .iter()
        .flat_map(|r| r.files.iter())
        .filter(|f| match facts.files.get(&f.dest) {
            Some(Some(old)) => !f.sensitive && old.sha256 != f.sha256,
            // Facts report a folder or a link as missing: the contents round trip tells
            // them apart (and fails the host for them).
            _ => true,
        })
        .map(|f| f.dest.as_str())
        .collect()
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Plans one host. `old` holds current contents of changed files (for diffs).
pub fn plan_host(
    desired: &DesiredHost,
    facts: &Facts,
    old: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
) -> HostPlan {
    let packages_to_install: Vec<String> = desired
        .packages()
        .into_iter()
        .filter(|p| !facts.packages.get(*p).copied().unwrap_or(false))
        .map(str::to_string)
        .collect();
    let roles = desired
        .roles
        .iter()
        .map(|role| plan_role(role, facts, old, secrets, &packages_to_install))
        .collect();
    HostPlan {
        host: desired.host.name.clone(),
        tier: desired.host.tier.clone(),
        address: desired.host.address.to_string(),
        init: facts.init,
        packages_to_install,
        stale_temps: facts.stale_temps.iter().cloned().collect(),
        roles,
    }
}

/// One role: its file changes, the actions they call for, and a reload if it drifted.
fn plan_role(
    role: &DesiredRole,
    facts: &Facts,
    old: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
    installing: &[String],
) -> RolePlan {
    let files: Vec<FileChange> = role
        .files
        .iter()
        .filter_map(|f| file_change(f, facts, old, secrets))
        .collect();
    let mut actions = role_actions(role, &files, facts, installing);
    let drift = role
        .drift_check
        .clone()
        .filter(|_| facts.drifted.contains(&role.name));
    if drift.is_some()
        && let Some(action) = drift_action(role, &actions)
    {
        actions.push(action);
    }
    RolePlan {
        drift,
        role: role.name.clone(),
        files,
        actions,
        validate: role.validate.clone(),
        health: role.health.clone(),
    }
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
    Some(FileChange {
        path: f.dest.clone(),
        action,
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

/// Handlers once per service, restart winning over reload; a service that is not
/// running (or whose package is being installed, so it runs Debian's default config)
/// is restarted if its files changed, else started.
fn role_actions(
    role: &DesiredRole,
    files: &[FileChange],
    facts: &Facts,
    installing: &[String],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let content_changed: Vec<&FileChange> = files
        .iter()
        .filter(|f| f.action != FileAction::Metadata)
        .collect();
    if facts.init == Init::Systemd
        && content_changed.iter().any(|f| {
            f.path.starts_with("/etc/systemd/")
                || f.path.starts_with("/lib/systemd/")
                || f.path.starts_with("/usr/lib/systemd/")
        })
    {
        actions.push(Action::DaemonReload);
    }
    if let Some(svc) = &role.service {
        let name = svc.name.clone();
        let state = facts.services.get(&name);
        let running = state.is_some_and(|s| s.active == "active");
        let fresh = role.packages.iter().any(|p| installing.contains(p));
        let wants_restart = content_changed
            .iter()
            .any(|f| f.notify == Notify::Service(NotifyKind::Restart));
        let wants_reload = content_changed
            .iter()
            .any(|f| f.notify == Notify::Service(NotifyKind::Reload));
        if (!running || fresh) && svc.enabled {
            if wants_restart || wants_reload {
                actions.push(Action::Restart {
                    service: name.clone(),
                });
            } else if !running || fresh {
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
        if content_changed
            .iter()
            .any(|f| f.notify == Notify::Handler(handler.clone()))
        {
            actions.push(Action::Run {
                handler: handler.clone(),
                command: command.clone(),
            });
        }
    }
    actions
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
    use crate::facts::{FileFact, ServiceFact};
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
            },
            roles: vec![DesiredRole {
                name: "nginx".into(),
                packages: vec!["nginx".into()],
                service: Some(Service {
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
            init: Init::Systemd,
            files,
            packages: [("nginx".to_string(), installed)].into_iter().collect(),
            services,
            holds_vip: None,
            unfinished: Default::default(),
            drifted: Default::default(),
            stale_temps: Default::default(),
            locked_by: None,
        }
    }

    fn reload() -> Notify {
        Notify::Service(NotifyKind::Reload)
    }

    #[test]
    fn converged_host_has_an_empty_plan() {
        let p = plan_host(
            &desired("a\n", reload(), false),
            &facts(Some("a\n"), 0o644, true, "active"),
            &BTreeMap::new(),
            &Secrets::default(),
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
        );
        assert!(p.roles[0].files[0].diff.is_none());
        let old: BTreeMap<String, Vec<u8>> =
            [("/etc/nginx/nginx.conf".to_string(), b"x\n".to_vec())].into();
        let p = plan_host(
            &desired("s3cr3t-value\n", reload(), false),
            &facts(Some("x\n"), 0o644, true, "active"),
            &old,
            &secrets,
        );
        let d = p.roles[0].files[0].diff.clone().unwrap_or_default();
        assert!(!d.contains("s3cr3t") && d.contains("********"), "{d}");
    }
}
