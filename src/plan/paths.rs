//! Planning the paths a role manages besides files: its directories, links and absent
//! paths, against what the facts found there. Pure; nothing to do = no [`PathChange`].
//!
//! A folder with entries is never deleted: where the role wants a link or nothing, such a
//! folder is a refused change ([`PathAction::Refuse`]): the host fails its planning,
//! naming the path, and apply refuses a plan holding one.

use super::mode_str;
use crate::desired::{DesiredAbsent, DesiredDir, DesiredLink, DesiredRole};
use crate::facts::{Facts, NodeFact};
use crate::role::Notify;
use crate::shell::printable;
use serde::Serialize;

/// What the role wants at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PathWant {
    /// A folder with this mode (octal, 4 digits), owner and group.
    Directory {
        mode: String,
        owner: String,
        group: String,
    },
    /// A symbolic link pointing to `target`.
    Link { target: String },
    /// Nothing.
    Absent,
}

/// What happens to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathAction {
    /// Make the folder (and root's folders above it, if missing).
    Mkdir,
    /// The folder is there; only its mode or owner differ.
    Metadata,
    /// Make the link (nothing is there).
    Link,
    /// The link is there, pointing elsewhere: a new link is renamed over it.
    Relink,
    /// Something else is where the folder or link must be (`found` says what): it is
    /// moved to its backup name, deleted once the role is healthy.
    Replace,
    /// A file, link or empty folder where nothing must be: moved to its backup name,
    /// deleted once the role is healthy.
    Remove,
    /// In place already, but the apply that put it there did not finish (its backup is
    /// still beside it): run what it notifies and the health checks now.
    Unfinished,
    /// Cannot be done without deleting data (`reason` says why): the host fails.
    Refuse,
}

/// One path's change, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    pub path: String,
    #[serde(flatten)]
    pub want: PathWant,
    pub action: PathAction,
    /// What is there now, when it is replaced, removed or refused: `file`, `link`,
    /// `empty directory`, `directory with entries`, `fifo`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<String>,
    /// `owner:group` now, where it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_owner: Option<String>,
    /// Where the link there points now (made printable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_target: Option<String>,
    /// Why the change is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub notify: Notify,
}

impl PathChange {
    pub(crate) fn new(
        path: &str,
        want: PathWant,
        action: PathAction,
        notify: &Notify,
    ) -> PathChange {
        PathChange {
            path: path.to_string(),
            want,
            action,
            found: None,
            old_mode: None,
            old_owner: None,
            old_target: None,
            reason: None,
            notify: notify.clone(),
        }
    }

    /// What is there now, for the plan: its kind, and a link's target.
    fn found(mut self, fact: &NodeFact) -> PathChange {
        self.found = Some(fact.kind().to_string());
        if let NodeFact::Link(t) = fact {
            self.old_target = Some(printable(&String::from_utf8_lossy(t)));
        }
        self
    }

    pub fn is_directory(&self) -> bool {
        matches!(self.want, PathWant::Directory { .. })
    }

    /// A change the role's service (or handler) must hear about, as a file's new content:
    /// a link made, changed or replaced, a path removed, or an unfinished one of those.
    /// A folder's changes notify nothing.
    pub fn notifies(&self) -> bool {
        !self.is_directory() && !matches!(self.action, PathAction::Refuse)
    }
}

/// The changes of `role`'s directories, then links, then absent paths, in role.yml's
/// order; none for a path in place. `installing`: the role's packages are installed by
/// this apply, and may make a path that must be absent (Debian's nginx makes
/// sites-enabled/default): it is removed after them if they did.
pub(super) fn path_changes(role: &DesiredRole, facts: &Facts, installing: bool) -> Vec<PathChange> {
    let dirs = role.directories.iter().filter_map(|d| dir_change(d, facts));
    let links = role.links.iter().filter_map(|l| link_change(l, facts));
    let absent = role
        .absent
        .iter()
        .filter_map(|a| absent_change(a, facts, installing));
    dirs.chain(links).chain(absent).collect()
}

/// What the facts say is at `path` (a path they do not tell about is missing).
fn fact_of<'a>(facts: &'a Facts, path: &str) -> &'a NodeFact {
    facts.nodes.get(path).unwrap_or(&NodeFact::Missing)
}

/// In place: nothing to do, or finishing an unfinished apply (its backup is there).
fn in_place(path: &str, want: PathWant, notify: &Notify, facts: &Facts) -> Option<PathChange> {
    facts
        .unfinished
        .contains(path)
        .then(|| PathChange::new(path, want, PathAction::Unfinished, notify))
}

fn dir_change(d: &DesiredDir, facts: &Facts) -> Option<PathChange> {
    let want = PathWant::Directory {
        mode: mode_str(d.mode),
        owner: d.owner.clone(),
        group: d.group.clone(),
    };
    let change = |action| PathChange::new(&d.path, want.clone(), action, &Notify::None);
    match fact_of(facts, &d.path) {
        NodeFact::Missing => Some(change(PathAction::Mkdir)),
        NodeFact::Dir {
            mode, owner, group, ..
        } => {
            let mode_differs = *mode != d.mode;
            let owner_differs = *owner != d.owner || *group != d.group;
            if !mode_differs && !owner_differs {
                return in_place(&d.path, want, &Notify::None, facts);
            }
            let mut c = change(PathAction::Metadata);
            c.old_mode = mode_differs.then(|| mode_str(*mode));
            c.old_owner = owner_differs.then(|| printable(&format!("{owner}:{group}")));
            Some(c)
        }
        other => Some(change(PathAction::Replace).found(other)),
    }
}

/// A folder with entries (`full`) where a link or nothing must be: refused, never deleted.
fn refuse_full(
    path: &str,
    want: PathWant,
    notify: &Notify,
    full: &NodeFact,
    wanted: &str,
) -> PathChange {
    let mut c = PathChange::new(path, want, PathAction::Refuse, notify).found(full);
    c.reason = Some(format!(
        "{path} is a directory with entries where the role wants {wanted}: a folder's \
         contents are never deleted; move them away on the host, then run again"
    ));
    c
}

fn link_change(l: &DesiredLink, facts: &Facts) -> Option<PathChange> {
    let want = PathWant::Link {
        target: l.target.clone(),
    };
    let change = |action| PathChange::new(&l.path, want.clone(), action, &l.notify);
    match fact_of(facts, &l.path) {
        NodeFact::Missing => Some(change(PathAction::Link)),
        NodeFact::Link(t) if t.as_slice() == l.target.as_bytes() => {
            in_place(&l.path, want, &l.notify, facts)
        }
        NodeFact::Link(old) => {
            let mut c = change(PathAction::Relink);
            c.old_target = Some(printable(&String::from_utf8_lossy(old)));
            Some(c)
        }
        full @ NodeFact::Dir { entries: true, .. } => {
            Some(refuse_full(&l.path, want, &l.notify, full, "a link"))
        }
        other => Some(change(PathAction::Replace).found(other)),
    }
}

fn absent_change(a: &DesiredAbsent, facts: &Facts, installing: bool) -> Option<PathChange> {
    let change = |action| PathChange::new(&a.path, PathWant::Absent, action, &a.notify);
    match fact_of(facts, &a.path) {
        NodeFact::Missing if installing => {
            let mut c = change(PathAction::Remove);
            c.found = Some("nothing yet: the role's packages, installed first, may make it".into());
            Some(c)
        }
        NodeFact::Missing => in_place(&a.path, PathWant::Absent, &a.notify, facts),
        full @ NodeFact::Dir { entries: true, .. } => Some(refuse_full(
            &a.path,
            PathWant::Absent,
            &a.notify,
            full,
            "nothing",
        )),
        other => Some(change(PathAction::Remove).found(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::NotifyKind;

    fn reload() -> Notify {
        Notify::Service(NotifyKind::Reload)
    }

    fn role() -> DesiredRole {
        DesiredRole {
            name: "nginx".into(),
            packages: vec![],
            service: None,
            files: vec![],
            validate: None,
            handlers: vec![],
            health: vec![],
            drift_check: None,
            certificates: vec![],
            release: None,
            directories: vec![DesiredDir {
                path: "/var/www/foobar".into(),
                owner: "root".into(),
                group: "www-data".into(),
                mode: 0o750,
            }],
            links: vec![DesiredLink {
                path: "/etc/nginx/sites-enabled/foobar.conf".into(),
                target: "../sites-available/foobar.conf".into(),
                notify: reload(),
            }],
            absent: vec![DesiredAbsent {
                path: "/etc/nginx/sites-enabled/default".into(),
                notify: reload(),
            }],
        }
    }

    const DIR: &str = "/var/www/foobar";
    const LINK: &str = "/etc/nginx/sites-enabled/foobar.conf";
    const GONE: &str = "/etc/nginx/sites-enabled/default";

    fn dir(mode: u32, owner: &str, group: &str, entries: bool) -> NodeFact {
        NodeFact::Dir {
            mode,
            owner: owner.into(),
            group: group.into(),
            entries,
        }
    }

    fn link(t: &str) -> NodeFact {
        NodeFact::Link(t.as_bytes().to_vec())
    }

    /// Facts with the role's three paths converged, then `at` put at `path`.
    fn facts_with(path: &str, at: NodeFact) -> Facts {
        let mut f =
            crate::facts::parse("INIT systemd\nEND\n", &Default::default()).expect("empty facts");
        f.nodes = [
            (DIR.to_string(), dir(0o750, "root", "www-data", true)),
            (LINK.to_string(), link("../sites-available/foobar.conf")),
            (GONE.to_string(), NodeFact::Missing),
        ]
        .into();
        f.nodes.insert(path.to_string(), at);
        f
    }

    fn only(path: &str, at: NodeFact) -> PathChange {
        let changes = path_changes(&role(), &facts_with(path, at), false);
        assert_eq!(changes.len(), 1, "{changes:?}");
        changes.into_iter().next().expect("one change")
    }

    #[test]
    fn converged_paths_plan_nothing() {
        let f = facts_with(GONE, NodeFact::Missing);
        assert_eq!(path_changes(&role(), &f, false), []);
        // A path the facts do not tell about counts as missing.
        let mut f = facts_with(GONE, NodeFact::Missing);
        f.nodes.remove(GONE);
        assert_eq!(path_changes(&role(), &f, false), []);
    }

    #[test]
    fn directory_mkdir_metadata_or_replace() {
        let c = only(DIR, NodeFact::Missing);
        assert_eq!((c.action, c.found.as_deref()), (PathAction::Mkdir, None));
        assert_eq!(
            c.want,
            PathWant::Directory {
                mode: "0750".into(),
                owner: "root".into(),
                group: "www-data".into()
            }
        );
        assert!(!c.notifies());

        let c = only(DIR, dir(0o2750, "root", "www-data", false));
        assert_eq!(c.action, PathAction::Metadata);
        assert_eq!(
            (c.old_mode.as_deref(), c.old_owner.as_deref()),
            (Some("2750"), None)
        );
        let c = only(DIR, dir(0o750, "r\x1b[8moot", "root", false));
        assert_eq!(
            (c.old_mode.as_deref(), c.old_owner.as_deref()),
            (None, Some("r^[[8moot:root"))
        );

        for (fact, found, old_target) in [
            (NodeFact::File, "file", None),
            (link("/data/www"), "link", Some("/data/www")),
            (NodeFact::Other("fifo"), "fifo", None),
        ] {
            let c = only(DIR, fact);
            assert_eq!(c.action, PathAction::Replace);
            assert_eq!(
                (c.found.as_deref(), c.old_target.as_deref()),
                (Some(found), old_target)
            );
        }
    }

    #[test]
    fn link_create_relink_replace_or_refuse() {
        let c = only(LINK, NodeFact::Missing);
        assert_eq!(c.action, PathAction::Link);
        assert_eq!(
            c.want,
            PathWant::Link {
                target: "../sites-available/foobar.conf".into()
            }
        );
        assert!(c.notifies());

        let c = only(LINK, link("/etc/nginx/sites-available/\x07old"));
        assert_eq!(c.action, PathAction::Relink);
        assert_eq!(
            (c.found.as_deref(), c.old_target.as_deref()),
            (None, Some("/etc/nginx/sites-available/^Gold"))
        );

        for (fact, found) in [
            (NodeFact::File, "file"),
            (dir(0o755, "root", "root", false), "empty directory"),
            (NodeFact::Other("socket"), "socket"),
        ] {
            let c = only(LINK, fact);
            assert_eq!(
                (c.action, c.found.as_deref()),
                (PathAction::Replace, Some(found))
            );
        }

        let c = only(LINK, dir(0o755, "root", "root", true));
        assert_eq!(c.action, PathAction::Refuse);
        assert!(!c.notifies());
        assert_eq!(
            c.reason.as_deref(),
            Some(
                "/etc/nginx/sites-enabled/foobar.conf is a directory with entries where the role \
                 wants a link: a folder's contents are never deleted; move them away on the host, \
                 then run again"
            )
        );
    }

    #[test]
    fn absent_removes_what_is_there_but_never_a_folder_with_entries() {
        for (fact, found, old_target) in [
            (NodeFact::File, "file", None),
            (link("/x"), "link", Some("/x")),
            (dir(0o755, "root", "root", false), "empty directory", None),
            (NodeFact::Other("fifo"), "fifo", None),
        ] {
            let c = only(GONE, fact);
            assert_eq!(c.action, PathAction::Remove);
            assert_eq!(c.want, PathWant::Absent);
            assert_eq!(
                (c.found.as_deref(), c.old_target.as_deref()),
                (Some(found), old_target)
            );
            assert!(c.notifies());
        }
        let c = only(GONE, dir(0o755, "root", "root", true));
        assert_eq!(c.action, PathAction::Refuse);
        assert!(c.reason.is_some_and(|r| r.contains("wants nothing")));
    }

    #[test]
    fn an_absent_path_is_removed_after_the_packages_that_may_make_it() {
        let gone = "/etc/nginx/sites-enabled/default";
        let f = facts_with(gone, NodeFact::Missing);
        let plain = path_changes(&role(), &f, false);
        assert!(plain.iter().all(|c| c.path != gone), "{plain:?}");
        let installing = path_changes(&role(), &f, true);
        let c = installing
            .iter()
            .find(|c| c.path == gone)
            .expect("planned while installing");
        assert_eq!(c.action, PathAction::Remove);
        assert!(
            c.found.as_deref().unwrap_or("").contains("packages"),
            "{c:?}"
        );
    }

    #[test]
    fn an_unfinished_apply_is_finished_only_where_the_path_is_in_place() {
        for path in [DIR, LINK, GONE] {
            let mut f = facts_with(GONE, NodeFact::Missing);
            f.unfinished.insert(path.to_string());
            let c = path_changes(&role(), &f, false);
            assert_eq!(c.len(), 1, "{path}: {c:?}");
            assert_eq!(
                (c[0].path.as_str(), c[0].action),
                (path, PathAction::Unfinished)
            );
        }
        // Not in place: the change itself (its swap keeps the older backup).
        let mut f = facts_with(GONE, NodeFact::File);
        f.unfinished.insert(GONE.to_string());
        assert_eq!(
            path_changes(&role(), &f, false)[0].action,
            PathAction::Remove
        );
    }

    /// The role with a service `nginx` (reload), on a host where it runs and is enabled,
    /// planned against `facts`.
    fn host_plan(mut role: DesiredRole, mut facts: Facts) -> super::super::HostPlan {
        role.service = Some(crate::role::Service {
            name: "nginx".into(),
            enabled: true,
            reload: true,
            interrupts: None,
        });
        facts.services.insert(
            "nginx".into(),
            crate::facts::ServiceFact {
                active: "active".into(),
                enabled: "enabled".into(),
            },
        );
        let desired = crate::desired::DesiredHost {
            host: crate::inventory::Host {
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
            roles: vec![role],
        };
        super::super::plan_host(
            &desired,
            &facts,
            &Default::default(),
            &crate::secrets::Secrets::default(),
            None,
        )
    }

    #[test]
    fn links_and_absent_paths_notify_as_files_do_and_folders_notify_nothing() {
        use super::super::Action;
        let reload = vec![Action::Reload {
            service: "nginx".into(),
        }];
        let converged = host_plan(role(), facts_with(GONE, NodeFact::Missing));
        assert!(converged.is_empty(), "{converged:?}");
        assert_eq!(converged.change_count(), 0);

        // A new folder: one change, no action.
        let p = host_plan(role(), facts_with(DIR, NodeFact::Missing));
        assert_eq!((p.change_count(), p.roles[0].actions.len()), (1, 0));
        assert!(!p.is_empty());
        let p = host_plan(
            role(),
            facts_with(DIR, dir(0o700, "root", "www-data", false)),
        );
        assert_eq!(p.roles[0].actions, []);

        // A relinked site, a removed default: one reload each, once for both.
        let p = host_plan(role(), facts_with(LINK, link("/old")));
        assert_eq!(p.roles[0].actions, reload);
        assert_eq!(p.change_count(), 2, "the link and the reload");
        let mut f = facts_with(LINK, link("/old"));
        f.nodes.insert(GONE.into(), NodeFact::File);
        let p = host_plan(role(), f);
        assert_eq!(p.roles[0].actions, reload);
        assert_eq!(p.change_count(), 3);
        assert!(p.interrupts_serving());

        // `restart` on the absent path wins; `none` notifies nothing.
        let mut r = role();
        r.absent[0].notify = Notify::Service(NotifyKind::Restart);
        let p = host_plan(r, facts_with(GONE, NodeFact::File));
        assert_eq!(
            p.roles[0].actions,
            [Action::Restart {
                service: "nginx".into()
            }]
        );
        let mut r = role();
        r.links[0].notify = Notify::None;
        let p = host_plan(r, facts_with(LINK, NodeFact::Missing));
        assert_eq!(p.roles[0].actions, []);

        // An unfinished link runs its reload again.
        let mut f = facts_with(GONE, NodeFact::Missing);
        f.unfinished.insert(LINK.into());
        assert_eq!(host_plan(role(), f).roles[0].actions, reload);
    }

    #[test]
    fn a_unit_link_changed_under_systemd_reloads_the_daemon() {
        use super::super::Action;
        let mut r = role();
        r.links[0].path = "/etc/systemd/system/multi-user.target.wants/app.service".into();
        r.links[0].notify = Notify::None;
        let p = host_plan(r, facts_with(GONE, NodeFact::Missing));
        assert_eq!(p.roles[0].actions, [Action::DaemonReload]);
    }

    #[test]
    fn refusals_name_the_role_and_the_path() {
        let p = host_plan(role(), facts_with(GONE, dir(0o755, "root", "root", true)));
        assert_eq!(
            p.refusals(),
            [
                "[nginx] /etc/nginx/sites-enabled/default is a directory with entries where the \
              role wants nothing: a folder's contents are never deleted; move them away on the \
              host, then run again"
            ]
        );
        assert_eq!(p.roles[0].actions, [], "a refused change notifies nothing");
    }

    #[test]
    fn json_says_kind_action_and_what_was_there() {
        let c = only(LINK, link("/old"));
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "path": LINK,
                "kind": "link",
                "target": "../sites-available/foobar.conf",
                "action": "relink",
                "old_target": "/old",
                "notify": {"service": "reload"}
            })
        );
        let c = only(DIR, NodeFact::Missing);
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "path": DIR,
                "kind": "directory",
                "mode": "0750",
                "owner": "root",
                "group": "www-data",
                "action": "mkdir",
                "notify": "none"
            })
        );
        let c = only(GONE, NodeFact::File);
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["kind"], "absent");
        assert_eq!(v["found"], "file");
    }
}
