//! A role's directories, links and absent paths on the host, one script each (pure
//! builders in `scripts.rs`). Folders come first in the role, before its certificates
//! and files (they go into them); links and absent paths are swapped right after the
//! role's files. Each script undoes itself when it fails half-way; what was done is
//! recorded, so that the role's rollback puts it back (backups restored, folders made
//! removed when empty, owners and modes restored) and its success deletes the backups.

use super::remote::{Remote, StepError};
use super::scripts::{
    MetaBefore, absent_script, directory_script, link_script, path_backups_script, paths_rollback,
    rollback_script,
};
use crate::plan::{PathAction, PathChange, PathWant, RolePlan};
use crate::report::ErrorKind;
use crate::transport::Transport;

/// What is said about a path change while it runs (and in its error).
fn what(c: &PathChange) -> String {
    match (&c.want, c.action) {
        (PathWant::Directory { .. }, PathAction::Metadata) => {
            format!("setting owner and mode of the directory {}", c.path)
        }
        (PathWant::Directory { .. }, _) => format!("making the directory {}", c.path),
        (PathWant::Link { target }, _) => format!("linking {} -> {target}", c.path),
        (PathWant::Absent, _) => format!("removing {}", c.path),
    }
}

/// Step 0: the role's folders, in role.yml's order, before its certificates and files. A
/// failure (or Ctrl-C) puts back the folders already done, so that the role is left as it
/// was.
pub(super) async fn make_directories<'a, T: Transport>(
    r: &Remote<'_, T>,
    role: &'a RolePlan,
) -> Result<Vec<&'a PathChange>, StepError> {
    let mut done: Vec<&PathChange> = Vec::new();
    for c in role.paths.iter().filter(|c| {
        c.is_directory()
            && matches!(
                c.action,
                PathAction::Mkdir | PathAction::Metadata | PathAction::Replace
            )
    }) {
        if r.is_interrupted() {
            let stop = StepError::Interrupted(format!(
                "stopped in role {} before its files were swapped in: nothing of it was changed",
                role.role
            ));
            return Err(undo_directories(r, &done, stop).await);
        }
        let what = what(c);
        r.step(&what);
        if let Err(e) = r
            .must(ErrorKind::Swap, &what, &directory_script(c), b"")
            .await
        {
            return Err(undo_directories(r, &done, e).await);
        }
        done.push(c);
    }
    Ok(done)
}

/// Puts back the folders made or changed before a later step of the role failed (before
/// its files were swapped in): the role is left as it was. A broken connection cannot;
/// a failed undo is added to the error.
pub(super) async fn undo_directories<T: Transport>(
    r: &Remote<'_, T>,
    done: &[&PathChange],
    cause: StepError,
) -> StepError {
    if done.is_empty() || matches!(cause, StepError::Transport(_)) {
        return cause;
    }
    let meta = metadata_before(done);
    let script = rollback_script(&[], &meta, &paths_rollback(done));
    match r
        .must(
            ErrorKind::Rollback,
            "putting the directories back",
            &script,
            b"",
        )
        .await
    {
        Ok(_) => cause,
        Err(e) => match cause {
            StepError::Interrupted(note) => StepError::failed(
                ErrorKind::Rollback,
                format!("{note}\n  but {}", e.message()),
            ),
            other => other.with_note(&format!("but {}", e.message())),
        },
    }
}

/// Step 3c, right after the files' swap: the role's links and absent paths, each renamed
/// into place (or to its backup name) by its own script. `done` gets each one that is
/// done, for the rollback and the backups' removal.
pub(super) async fn swap<'a, T: Transport>(
    r: &Remote<'_, T>,
    role: &'a RolePlan,
    done: &mut Vec<&'a PathChange>,
) -> Result<(), StepError> {
    for c in role.paths.iter().filter(|c| {
        !c.is_directory()
            && matches!(
                c.action,
                PathAction::Link | PathAction::Relink | PathAction::Replace | PathAction::Remove
            )
    }) {
        let what = what(c);
        r.step(&what);
        let script = match c.want {
            PathWant::Absent => absent_script(c),
            _ => link_script(c),
        };
        r.must(ErrorKind::Swap, &what, &script, b"").await?;
        done.push(c);
    }
    Ok(())
}

/// The owners and modes of the folders `done` changed in place, as they were.
pub(super) fn metadata_before<'a>(done: &[&'a PathChange]) -> Vec<MetaBefore<'a>> {
    done.iter()
        .filter(|c| c.is_directory() && c.action == PathAction::Metadata)
        .map(|c| MetaBefore {
            path: &c.path,
            owner: c.old_owner.as_deref(),
            mode: c.old_mode.as_deref(),
        })
        .collect()
}

/// The paths whose backups the role's success deletes: those it replaced or removed, and
/// those an earlier unfinished apply left a backup beside.
fn with_backups<'a>(done: &[&'a PathChange]) -> Vec<&'a str> {
    done.iter()
        .filter(|c| {
            matches!(
                c.action,
                PathAction::Replace
                    | PathAction::Relink
                    | PathAction::Remove
                    | PathAction::Unfinished
            )
        })
        .map(|c| c.path.as_str())
        .collect()
}

/// The role is healthy: the backups beside its paths are deleted (a folder only when
/// empty: nothing is ever deleted recursively).
pub(super) async fn remove_backups<T: Transport>(
    r: &Remote<'_, T>,
    done: &[&PathChange],
) -> Result<(), StepError> {
    let paths = with_backups(done);
    if paths.is_empty() {
        return Ok(());
    }
    r.must(
        ErrorKind::Swap,
        "removing backups",
        &path_backups_script(&paths),
        b"",
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::scripts::tests::sh;
    use super::super::tests::Quiet;
    use super::super::{Limits, apply_host};
    use super::*;
    use crate::plan::{HostPlan, RolePlan};
    use crate::report::Outcome;
    use crate::role::Notify;
    use crate::shell::Init;
    use crate::transport::local::Local;

    fn whoami(flag: &str) -> String {
        let out = std::process::Command::new("id")
            .arg(flag)
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn change(path: &str, want: PathWant, action: PathAction) -> PathChange {
        PathChange::new(path, want, action, &Notify::None)
    }

    fn plan(paths: Vec<PathChange>, health: &str) -> HostPlan {
        HostPlan {
            drain: None,
            host: "h".into(),
            tier: "web".into(),
            address: "127.0.0.1".into(),
            init: Init::Other,
            packages_to_install: vec![],
            packages_ready: false,
            stale_temps: vec![],
            roles: vec![RolePlan {
                serving: false,
                interrupts: None,
                role: "site".into(),
                drift: None,
                files: vec![],
                certificates: vec![],
                paths,
                release: None,
                release_error: None,
                actions: vec![],
                validate: None,
                health: vec![crate::role::HealthCheck {
                    name: "probe".into(),
                    command: health.into(),
                    retries: 1,
                    interval_ms: 10,
                }],
            }],
        }
    }

    /// Root's folders only: these tests need root (as CI runs them); skipped otherwise.
    fn root_only() -> bool {
        if sh("[ \"$(id -u)\" = 0 ]").0 {
            return true;
        }
        eprintln!("skipped: needs root (the folders must be root's)");
        false
    }

    /// A folder under target/ (root's, 0755: the folder check passes when run as root).
    fn workdir() -> tempfile::TempDir {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).expect("target");
        // Under /run (root's, 0755) when it can: every folder above must be root's and
        // writable by root only, which a checkout under /tmp is not.
        let d = tempfile::tempdir_in("/run")
            .or_else(|_| tempfile::tempdir_in(&base))
            .expect("tempdir");
        sh(&format!(
            "chmod 0755 {}",
            crate::shell::quote(&d.path().to_string_lossy())
        ));
        d
    }

    fn fp_left(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".fp-"))
            .collect();
        v.sort();
        v
    }

    /// One apply of a role holding a new folder, a link replacing a file and an absent
    /// path, on the real filesystem: all in place, no backup left; then the same with a
    /// health check that fails: everything is put back as it was.
    #[tokio::test]
    async fn paths_are_applied_and_rolled_back_on_a_real_filesystem() {
        if !root_only() {
            return;
        }
        let d = workdir();
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        let (user, group) = (whoami("-un"), whoami("-gn"));
        let dir_want = PathWant::Directory {
            mode: "0750".into(),
            owner: user.clone(),
            group: group.clone(),
        };
        let setup = || {
            let _ = std::fs::remove_dir_all(p("www"));
            std::fs::write(p("site.conf"), "a file").expect("w");
            std::fs::write(p("default"), "debian's").expect("w");
        };
        let changes = || {
            vec![
                change(&p("www/sub"), dir_want.clone(), PathAction::Mkdir),
                change(
                    &p("site.conf"),
                    PathWant::Link {
                        target: "../elsewhere".into(),
                    },
                    PathAction::Replace,
                ),
                change(&p("default"), PathWant::Absent, PathAction::Remove),
            ]
        };
        let (quiet, local) = (Quiet::new(), Local::default());
        let r = quiet.remote(&local, Limits::default(), None);

        setup();
        let o = apply_host(&r, &plan(changes(), "true")).await;
        assert_eq!(o, Outcome::Changed(3), "{o:?}");
        let meta = std::fs::symlink_metadata(p("www/sub")).expect("made");
        assert!(meta.is_dir());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            0o750
        );
        assert_eq!(
            std::fs::read_link(p("site.conf")).expect("link"),
            std::path::Path::new("../elsewhere")
        );
        assert!(std::fs::symlink_metadata(p("default")).is_err());
        assert!(fp_left(d.path()).is_empty(), "{:?}", fp_left(d.path()));

        setup();
        let o = apply_host(&r, &plan(changes(), "echo unwell; false")).await;
        let Outcome::Failed(f) = &o else {
            panic!("{o:?}")
        };
        assert!(f.message.contains("rolled back"), "{}", f.message);
        assert!(
            std::fs::symlink_metadata(p("www/sub")).is_err(),
            "the folder made is removed"
        );
        assert!(
            std::fs::symlink_metadata(p("www")).is_ok(),
            "its parent stays"
        );
        assert_eq!(
            std::fs::read_to_string(p("site.conf")).expect("r"),
            "a file"
        );
        assert_eq!(
            std::fs::read_to_string(p("default")).expect("r"),
            "debian's"
        );
        assert!(fp_left(d.path()).is_empty(), "{:?}", fp_left(d.path()));
    }

    /// A relink whose target changes, then a failed swap of the second path: the first
    /// is put back by the rollback, the second undoes itself.
    #[tokio::test]
    async fn a_failed_path_swap_rolls_back_the_ones_done() {
        if !root_only() {
            return;
        }
        let d = workdir();
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        std::os::unix::fs::symlink("old", p("a")).expect("ln");
        std::fs::create_dir(p("full")).expect("mkdir");
        std::fs::write(p("full/keep"), "data").expect("w");
        let changes = vec![
            change(
                &p("a"),
                PathWant::Link {
                    target: "new".into(),
                },
                PathAction::Relink,
            ),
            // Emptiness changed since the plan: the script refuses it.
            change(&p("full"), PathWant::Absent, PathAction::Remove),
        ];
        let (quiet, local) = (Quiet::new(), Local::default());
        let r = quiet.remote(&local, Limits::default(), None);
        let o = apply_host(&r, &plan(changes, "true")).await;
        let Outcome::Failed(f) = &o else {
            panic!("{o:?}")
        };
        assert!(
            f.message
                .contains("it is a directory with entries (never deleted)"),
            "{}",
            f.message
        );
        assert_eq!(
            std::fs::read_link(p("a")).expect("link"),
            std::path::Path::new("old")
        );
        assert_eq!(std::fs::read_to_string(p("full/keep")).expect("r"), "data");
        assert!(fp_left(d.path()).is_empty(), "{:?}", fp_left(d.path()));
    }

    /// The whole pipeline on this machine (facts, plan, apply over the local transport), as
    /// `tests/e2e/paths.rs` does on the lab: converge, then a plan that is empty, drift by
    /// hand planned and fixed, the handler run once per apply that changed a link or
    /// removed the file.
    #[tokio::test]
    async fn facts_plan_apply_converge_and_fix_drift_locally() {
        use crate::desired::{DesiredAbsent, DesiredDir, DesiredHost, DesiredLink, DesiredRole};
        if !root_only() {
            return;
        }
        let d = workdir();
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        let log = p("handler.log");
        let desired = DesiredHost {
            host: crate::inventory::Host {
                name: "h".into(),
                address: "127.0.0.1".parse().expect("ip"),
                tier: "web".into(),
                port: 22,
                user: "u".into(),
                vars: Default::default(),
                hostname: None,
                address_at: (0, 0),
                port_set: false,
                user_set: false,
                identity_file: None,
            },
            roles: vec![DesiredRole {
                name: "site".into(),
                packages: vec![],
                service: None,
                files: vec![],
                validate: None,
                handlers: vec![(
                    "count".into(),
                    format!("echo run >> {}", crate::shell::quote(&log)),
                )],
                health: vec![],
                drift_check: None,
                certificates: vec![],
                release: None,
                directories: vec![DesiredDir {
                    path: p("www"),
                    owner: "root".into(),
                    group: "adm".into(),
                    mode: 0o750,
                }],
                links: vec![DesiredLink {
                    path: p("current"),
                    target: "www".into(),
                    notify: Notify::Handler("count".into()),
                }],
                absent: vec![DesiredAbsent {
                    path: p("old.conf"),
                    notify: Notify::Handler("count".into()),
                }],
            }],
        };
        let secrets = crate::secrets::Secrets::default();
        let local = Local::default();
        let reader = crate::gather::Reader {
            transport: &local,
            host: "h",
            sudo: false,
            secrets: &secrets,
            vips: vec![],
            lock: None,
            certs: None,
        };
        let (quiet, remote_t) = (Quiet::new(), Local::default());
        let r = quiet.remote(&remote_t, Limits::default(), None);
        let state = || {
            sh(&format!(
                "printf '%s | %s | %s | %s' \"$(stat -c '%a %G' {w})\" \"$(readlink {c})\" \
                 \"$(if [ -e {o} ]; then echo present; else echo absent; fi)\" \"$(wc -l < {l} 2>/dev/null || echo 0)\"",
                w = p("www"),
                c = p("current"),
                o = p("old.conf"),
                l = log
            ))
            .1
        };
        let actions = |plan: &HostPlan| -> Vec<(String, PathAction)> {
            plan.roles[0]
                .paths
                .iter()
                .map(|c| {
                    (
                        c.path.rsplit('/').next().unwrap_or("").to_string(),
                        c.action,
                    )
                })
                .collect()
        };

        std::fs::write(p("old.conf"), "old").expect("w");
        let planned = reader.plan(&desired).await.expect("planned");
        assert_eq!(
            actions(&planned.plan),
            [
                ("www".to_string(), PathAction::Mkdir),
                ("current".to_string(), PathAction::Link),
                ("old.conf".to_string(), PathAction::Remove)
            ]
        );
        assert_eq!(planned.round_trips, 1);
        assert_eq!(apply_host(&r, &planned.plan).await, Outcome::Changed(4));
        assert_eq!(state(), "750 adm | www | absent | 1");
        let again = reader.plan(&desired).await.expect("planned");
        assert!(again.plan.is_empty(), "{:?}", again.plan);
        assert!(fp_left(d.path()).is_empty(), "{:?}", fp_left(d.path()));

        sh(&format!(
            "chmod 2775 {w} && chgrp root {w} && ln -sfn /tmp {c} && echo back > {o}",
            w = p("www"),
            c = p("current"),
            o = p("old.conf")
        ));
        let drift = reader.plan(&desired).await.expect("planned");
        assert_eq!(
            actions(&drift.plan),
            [
                ("www".to_string(), PathAction::Metadata),
                ("current".to_string(), PathAction::Relink),
                ("old.conf".to_string(), PathAction::Remove)
            ]
        );
        assert_eq!(apply_host(&r, &drift.plan).await, Outcome::Changed(4));
        assert_eq!(state(), "750 adm | www | absent | 2");
        assert!(
            reader
                .plan(&desired)
                .await
                .expect("planned")
                .plan
                .is_empty()
        );
        assert!(fp_left(d.path()).is_empty(), "{:?}", fp_left(d.path()));

        std::fs::create_dir(p("old.conf")).expect("mkdir");
        std::fs::write(p("old.conf/keep"), "data").expect("w");
        let refused = reader.plan(&desired).await.expect_err("refused");
        assert!(
            matches!(&refused, Outcome::Failed(f) if f.message.contains("is a directory with entries")),
            "{refused:?}"
        );
        assert_eq!(
            std::fs::read_to_string(p("old.conf/keep")).expect("r"),
            "data"
        );
    }

    /// A plan holding a refused path change is refused as a whole before the host is
    /// touched.
    #[tokio::test]
    async fn a_plan_with_a_refused_path_is_not_applied() {
        let d = tempfile::tempdir().expect("tempdir");
        let made = d.path().join("made").to_string_lossy().into_owned();
        let mut refused = change("/etc/x", PathWant::Absent, PathAction::Refuse);
        refused.reason = Some("/etc/x is a directory with entries".into());
        let dir_want = PathWant::Directory {
            mode: "0755".into(),
            owner: whoami("-un"),
            group: whoami("-gn"),
        };
        let plan = plan(
            vec![change(&made, dir_want, PathAction::Mkdir), refused],
            "true",
        );
        let (quiet, local) = (Quiet::new(), Local::default());
        let r = quiet.remote(&local, Limits::default(), None);
        let o = apply_host(&r, &plan).await;
        let Outcome::Failed(f) = &o else {
            panic!("{o:?}")
        };
        assert!(
            f.message
                .contains("[site] /etc/x is a directory with entries"),
            "{}",
            f.message
        );
        assert!(!std::path::Path::new(&made).exists());
    }
}
