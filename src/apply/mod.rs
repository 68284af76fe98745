//! Apply: execute a host's plan. For each role: upload changed files to temporary files
//! beside their targets (final owner and mode set), validate, swap by rename, run the
//! handlers once, run health checks, roll back if they fail.
//!
//! Ctrl-C (the `interrupted` flag) is honoured between steps: a role whose files are not
//! swapped in yet is abandoned (its temporary files removed); a role whose files are in
//! place is finished (handlers, health checks, rollback) so no host is left half-changed.
//!
//! A host's apply runs under its lock and ends with an audit line on the host; every
//! remote step is bounded in time ([`Limits`]).
//!
//! - `remote.rs`: [`Remote`], the stall watchdog, time limits, how a step fails.
//! - `lock.rs`: [`HostLock`], one apply per host at a time, and the audit trail.
//! - `scripts.rs`: the shell scripts, pure builders with exact-string tests.
//! - `paths.rs`: a role's directories (before its files), links and absent paths (swapped
//!   with its files).
//! - this file: the order of the steps, and the rollback.

mod certs;
mod lock;
mod paths;
mod release;
mod remote;
mod scripts;

pub use lock::{HostLock, status_script as lock_status_script};
pub use remote::{Limits, Remote, exec_bounded, timed_out};

use remote::{StepError, indent};
use scripts::{
    MetaBefore, action_command, backup_path, health_script, remove_script, rollback_script,
    status_script, swap_script, tree_validate_script, upload_script,
};

use crate::plan::{
    Action, FileAction, FileChange, HostPlan, PathAction, PathChange, ReleaseChange, RolePlan,
};
use crate::report::{ErrorKind, Failure, Interruption, Outcome};
use crate::role::HealthCheck;
use crate::shell::{self, Init, printable, quote};
use crate::transport::Transport;
use futures::StreamExt;
use std::time::Duration;

/// Reading a failed service's status and log lines (best effort).
const STATUS_LIMIT: Duration = Duration::from_secs(30);
/// Removing temporary files after a failure, releasing the lock (best effort).
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

/// Applies one host's plan under the host's lock (when `r.lock` is set), then leaves
/// the audit line. Never panics; every failure is an [`Outcome`].
pub async fn apply_host<T: Transport>(r: &Remote<'_, T>, plan: &HostPlan) -> Outcome {
    if plan.is_empty() {
        return Outcome::Ok;
    }
    let refused = plan.refusals();
    if !refused.is_empty() {
        return Outcome::failed(
            ErrorKind::Facts,
            format!(
                "the plan cannot be applied without deleting data (nothing was changed on this host):\n  {}",
                refused.join("\n  ")
            ),
        );
    }
    let Some(lock) = &r.lock else {
        return apply_unlocked(r, plan).await;
    };
    if let Err(o) = lock::acquire(r, lock).await {
        return o;
    }
    let outcome = apply_unlocked(r, plan).await;
    // A lost connection takes no release: waiting on it would double the time to report
    // the host, and the lock dies with the connection's sshd (stale, taken over by the
    // next apply).
    if !matches!(outcome, Outcome::Unreachable(_)) {
        lock::release(r, lock, plan, &outcome).await;
    }
    outcome
}

/// The first phase of an apply: the host's packages, installed before any tier rolls
/// (installing changes no file the roles manage and nothing a service serves), so every
/// host's installation runs at once instead of tier after tier. Not under the host's
/// lock: apt's lock serialises installations, and an apply holding the host's lock still
/// keeps this one from changing anything else. On success the host's own apply skips
/// them.
pub async fn install_first<T: Transport>(
    r: &Remote<'_, T>,
    plan: &HostPlan,
) -> Result<(), Outcome> {
    if plan.packages_to_install.is_empty() || plan.packages_ready || !plan.refusals().is_empty() {
        return Ok(());
    }
    match install_packages(r, plan).await {
        Ok(()) => Ok(()),
        Err(StepError::Failed(f)) => Err(Outcome::Failed(f)),
        Err(StepError::Transport(m)) => Err(Outcome::Unreachable(Failure::new(
            ErrorKind::ConnectionLost,
            m,
        ))),
        Err(StepError::Interrupted(note)) => Err(Outcome::Interrupted(Interruption {
            not_applied: plan
                .roles
                .iter()
                .filter(|role| !role.is_empty())
                .map(|role| role.role.clone())
                .collect(),
            applied: Vec::new(),
            note,
        })),
    }
}

/// Applies one host's plan (the lock, if any, is held).
async fn apply_unlocked<T: Transport>(r: &Remote<'_, T>, plan: &HostPlan) -> Outcome {
    let pending: Vec<&RolePlan> = plan.roles.iter().filter(|role| !role.is_empty()).collect();
    let mut applied: Vec<String> = Vec::new();
    let mut in_flight: Option<&str> = None;
    let result = apply_roles(r, plan, &pending, &mut applied, &mut in_flight).await;
    match result {
        Ok(()) => Outcome::Changed(plan.change_count()),
        Err(StepError::Failed(f)) => Outcome::Failed(f.in_role(in_flight)),
        Err(StepError::Transport(m)) => {
            Outcome::Unreachable(Failure::new(ErrorKind::ConnectionLost, m).in_role(in_flight))
        }
        Err(StepError::Interrupted(note)) => Outcome::Interrupted(Interruption {
            not_applied: pending
                .iter()
                .map(|role| role.role.clone())
                .filter(|name| !applied.contains(name))
                .collect(),
            applied,
            note,
        }),
    }
}

/// Prepares the host, then applies its roles in order; `applied` collects the roles
/// that were applied completely, `in_flight` names the role being applied (for the
/// failure's report).
async fn apply_roles<'p, T: Transport>(
    r: &Remote<'_, T>,
    plan: &HostPlan,
    pending: &[&'p RolePlan],
    applied: &mut Vec<String>,
    in_flight: &mut Option<&'p str>,
) -> Result<(), StepError> {
    prepare(r, plan).await?;
    for role in pending {
        if r.is_interrupted() {
            return Err(StepError::Interrupted(format!(
                "stopped before role {} (nothing of it was changed)",
                role.role
            )));
        }
        *in_flight = Some(role.role.as_str());
        r.reporter.role(r.host, Some(&role.role));
        let done = apply_role(r, plan.init, role).await;
        r.reporter.role(r.host, None);
        done?;
        applied.push(role.role.clone());
    }
    *in_flight = None;
    Ok(())
}

/// Before any role: remove temporary files an interrupted apply left, install packages.
async fn prepare<T: Transport>(r: &Remote<'_, T>, plan: &HostPlan) -> Result<(), StepError> {
    if !plan.stale_temps.is_empty() {
        r.step("removing temporary files an interrupted apply left");
        let files = plan.stale_temps.iter().map(String::as_str);
        r.must(
            ErrorKind::Prepare,
            "removing stale temporary files",
            &remove_script(files),
            b"",
        )
        .await?;
    }
    if plan.packages_to_install.is_empty() || plan.packages_ready {
        return Ok(());
    }
    install_packages(r, plan).await
}

/// Installs the plan's packages (apt's own lock serialises it with any other apt).
async fn install_packages<T: Transport>(
    r: &Remote<'_, T>,
    plan: &HostPlan,
) -> Result<(), StepError> {
    if r.is_interrupted() {
        return Err(StepError::Interrupted(
            "stopped before installing packages: nothing was changed on this host".into(),
        ));
    }
    r.step(&format!(
        "installing {}",
        plan.packages_to_install.join(" ")
    ));
    let pkgs: Vec<&str> = plan
        .packages_to_install
        .iter()
        .map(String::as_str)
        .collect();
    r.must(
        ErrorKind::Prepare,
        "apt-get install",
        &shell::apt_install(&pkgs),
        b"",
    )
    .await?;
    Ok(())
}

/// A file uploaded to its temporary path.
struct Staged<'a> {
    change: &'a FileChange,
    tmp: String,
}

/// One role: its directories (0, `paths.rs`: folders its certificates and files go
/// into), its certificates (0b, see `certs.rs`), upload (1), validate (2), swap, links and
/// absent paths, owners/modes in place (3), handlers (4), health checks (5), then the
/// backups go. A failure before the swap puts the directories back (a folder holding a
/// new certificate stays); a failure after it rolls back (the role's files, directories,
/// links and absent paths; a new certificate stays: it is valid on its own).
async fn apply_role<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
) -> Result<(), StepError> {
    let dirs = paths::make_directories(r, role).await?;
    let before_swap = async {
        certs::issue(r, role).await?;
        stage(r, role).await
    };
    let staged = match before_swap.await {
        Ok(staged) => staged,
        Err(e) => return Err(paths::undo_directories(r, &dirs, e).await),
    };
    let dests = swapped_paths(role, &staged);
    let mut done: Vec<&PathChange> = dirs;
    done.extend(
        role.paths
            .iter()
            .filter(|c| c.action == PathAction::Unfinished),
    );
    let mut meta: Vec<MetaBefore> = Vec::new();
    let mut result = paths::swap(r, role, &mut done).await;
    if result.is_ok() {
        result = set_metadata(r, role, &mut meta).await;
    }
    // The release: migrated (on the host the rollout chose), then switched in.
    let mut switched: Option<&ReleaseChange> = None;
    if let Some(rel) = role.release.as_ref().filter(|rel| rel.switch) {
        if result.is_ok() {
            result = release::migrate(r, init, rel).await;
        }
        if result.is_ok() {
            result = release::switch(r, rel, &rel.to).await;
            switched = result.is_ok().then_some(rel);
        }
    }
    if result.is_ok() {
        result = run_actions(r, init, &role.actions).await;
    }
    if result.is_ok() {
        result = health(r, role, switched.map(|rel| rel.to.as_str())).await;
    }
    if let Err(e) = result {
        let undo = Done {
            dests: &dests,
            meta: &meta,
            paths: &done,
            switched,
        };
        return Err(rollback(r, init, role, &undo, e).await);
    }
    remove_backups(r, &dests).await?;
    paths::remove_backups(r, &done).await?;
    match &role.release {
        Some(rel) => release::prune(r, rel).await,
        None => Ok(()),
    }
}

/// Steps 1 to 3: upload, validate and swap the role's files. Until the swap, a failure or
/// Ctrl-C leaves the live files as they were.
async fn stage<'a, T: Transport>(
    r: &Remote<'_, T>,
    role: &'a RolePlan,
) -> Result<Vec<Staged<'a>>, StepError> {
    let staged = upload(r, role).await?;
    match release::stage(r, role).await {
        Ok(()) => {}
        Err(e @ StepError::Transport(_)) => return Err(e),
        Err(e) => {
            cleanup(r, &staged).await;
            return Err(e);
        }
    }
    validate(r, role, &staged).await?;
    // The last point where Ctrl-C abandons the role: from here on it is finished (or
    // rolled back).
    if r.is_interrupted() {
        return Err(abandon(r, role, &staged).await);
    }
    swap(r, &staged).await?;
    Ok(staged)
}

/// Step 1: Uploads every changed file of the role to its temporary path. Until the swap,
/// Ctrl-C abandons the role cleanly.
async fn upload<'a, T: Transport>(
    r: &Remote<'_, T>,
    role: &'a RolePlan,
) -> Result<Vec<Staged<'a>>, StepError> {
    let mut staged: Vec<Staged> = Vec::new();
    for c in role
        .files
        .iter()
        .filter(|c| !matches!(c.action, FileAction::Metadata | FileAction::Unfinished))
    {
        if r.is_interrupted() {
            return Err(abandon(r, role, &staged).await);
        }
        r.step(&format!("uploading {}", c.path));
        let what = format!("upload of {}", c.path);
        let tmp = match r
            .must(ErrorKind::Upload, &what, &upload_script(c), &c.file.content)
            .await
        {
            Ok(out) => out.trim().to_string(),
            // A broken connection cannot clean up; the upload script removes its own
            // temporary file when it ends early.
            Err(e @ StepError::Transport(_)) => return Err(e),
            Err(e) => {
                cleanup(r, &staged).await;
                return Err(e);
            }
        };
        if !tmp.contains(".fp-") {
            cleanup(r, &staged).await;
            return Err(StepError::failed(
                ErrorKind::Upload,
                format!("{what}: unexpected reply `{}`", printable(&tmp)),
            ));
        }
        staged.push(Staged { change: c, tmp });
    }
    Ok(staged)
}

/// (destination, temporary file) of each staged file.
fn pairs(staged: &[Staged]) -> Vec<(String, String)> {
    staged
        .iter()
        .map(|s| (s.change.path.clone(), s.tmp.clone()))
        .collect()
}

/// Step 2: Validates the staged files: each file's own validator, then the role's whole-tree
/// validator on a scratch copy. A refusal removes the temporary files and leaves the
/// live files and the service as they were.
async fn validate<T: Transport>(
    r: &Remote<'_, T>,
    role: &RolePlan,
    staged: &[Staged<'_>],
) -> Result<(), StepError> {
    for s in staged {
        let Some(v) = &s.change.file.validate else {
            continue;
        };
        if r.is_interrupted() {
            return Err(abandon(r, role, staged).await);
        }
        r.step(&format!("validating {}", s.change.path));
        let cmd = format!(
            "if [ ! -s {t} ]; then echo 'staged file is missing or empty'; exit 1; fi\n(\n{}\n) 2>&1",
            v.replace("{tmp}", &quote(&s.tmp)),
            t = quote(&s.tmp)
        );
        let what = format!("validation of {} (`{v}`)", s.change.path);
        if let Err(e) = r.must(ErrorKind::Validation, &what, &cmd, b"").await {
            cleanup(r, staged).await;
            return Err(e.with_note("the live file and the running service were left as they were"));
        }
    }
    let Some(v) = &role.validate else {
        return Ok(());
    };
    if staged.is_empty() {
        return Ok(());
    }
    if r.is_interrupted() {
        return Err(abandon(r, role, staged).await);
    }
    r.step(&format!("validating {} as a whole", v.tree));
    let script = tree_validate_script(&v.tree, &v.command, &pairs(staged));
    let what = format!("validation of {} (`{}`)", v.tree, v.command);
    if let Err(e) = r.must(ErrorKind::Validation, &what, &script, b"").await {
        cleanup(r, staged).await;
        return Err(e.with_note("the live files and the running service were left as they were"));
    }
    Ok(())
}

/// Step 3: Renames every staged file into place (the previous version kept as a backup),
/// all or nothing: a failed rename puts back the ones already done.
async fn swap<T: Transport>(r: &Remote<'_, T>, staged: &[Staged<'_>]) -> Result<(), StepError> {
    if staged.is_empty() {
        return Ok(());
    }
    r.step(&format!("swapping {} file(s) into place", staged.len()));
    let script = swap_script(&pairs(staged));
    if let Err(e) = r
        .must(ErrorKind::Swap, "rename into place", &script, b"")
        .await
    {
        cleanup(r, staged).await;
        return Err(e.with_note(
            "the files already renamed into place were put back: the live files and the running service were left as they were",
        ));
    }
    Ok(())
}

/// The files this role put in place: the ones just swapped, and those an earlier,
/// unfinished apply put in place (their backups are restored on rollback and removed on
/// success, as if this apply had swapped them).
fn swapped_paths<'a>(role: &'a RolePlan, staged: &'a [Staged<'a>]) -> Vec<&'a str> {
    staged
        .iter()
        .map(|s| s.change.path.as_str())
        .chain(
            role.files
                .iter()
                .filter(|c| c.action == FileAction::Unfinished)
                .map(|c| c.path.as_str()),
        )
        .collect()
}

/// Step 3b: Sets owner and mode in place where only those differ; `meta` records what they
/// were, for a rollback (an entry is recorded before its change is tried).
async fn set_metadata<'a, T: Transport>(
    r: &Remote<'_, T>,
    role: &'a RolePlan,
    meta: &mut Vec<MetaBefore<'a>>,
) -> Result<(), StepError> {
    for c in role
        .files
        .iter()
        .filter(|c| c.action == FileAction::Metadata)
    {
        r.step(&format!("setting owner and mode of {}", c.path));
        let script = format!(
            "chown {}:{} {p} && chmod {:o} {p}",
            quote(&c.owner),
            quote(&c.group),
            c.file.mode,
            p = quote(&c.path)
        );
        meta.push(MetaBefore {
            path: &c.path,
            owner: c.old_owner.as_deref(),
            mode: c.old_mode.as_deref(),
        });
        let what = format!("chown/chmod of {}", c.path);
        r.must(ErrorKind::Swap, &what, &script, b"").await?;
    }
    Ok(())
}

/// Step 4: Runs the role's actions in order, each once. A failed service action carries the
/// service's own words: its status and last log lines.
async fn run_actions<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    actions: &[Action],
) -> Result<(), StepError> {
    for a in actions {
        r.step(&a.to_string());
        let cmd = action_command(init, a);
        let Err(e) = r
            .must(
                ErrorKind::Handler,
                &a.to_string(),
                &format!("{cmd} 2>&1"),
                b"",
            )
            .await
        else {
            continue;
        };
        let detail = service_status(r, init, a).await;
        return Err(match e {
            StepError::Failed(f) if !detail.trim().is_empty() => StepError::failed(
                f.kind,
                format!(
                    "{}\n  service status:\n{}",
                    f.message,
                    indent(detail.trim_end())
                ),
            ),
            other => other,
        });
    }
    Ok(())
}

/// The status and last log lines of the service an action is about (systemd only;
/// empty otherwise, or when they cannot be read).
async fn service_status<T: Transport>(r: &Remote<'_, T>, init: Init, a: &Action) -> String {
    let (Action::Reload { service } | Action::Restart { service } | Action::Start { service }) = a
    else {
        return String::new();
    };
    if init != Init::Systemd {
        return String::new();
    }
    r.run(&status_script(service), b"", STATUS_LIMIT)
        .await
        .map(|o| {
            r.secrets
                .mask(&printable(&String::from_utf8_lossy(&o.stdout)))
        })
        .unwrap_or_default()
}

/// Step 5: The role's health checks, each of which must pass twice in a row; with
/// `release`, the release's own check for that release id last.
async fn health<T: Transport>(
    r: &Remote<'_, T>,
    role: &RolePlan,
    release: Option<&str>,
) -> Result<(), StepError> {
    let release_check = role
        .release
        .as_ref()
        .and_then(|rel| rel.desired.health.as_ref())
        .zip(release)
        .map(|(h, id)| {
            let mut h = h.clone();
            h.command = release::health_command(&h.command, id);
            h.name = format!("{} (release {id})", h.name);
            h
        });
    let checks: Vec<&HealthCheck> = role.health.iter().chain(release_check.as_ref()).collect();
    if checks.is_empty() {
        return Ok(());
    }
    r.step(&health_step(&checks));
    let runs = checks.iter().map(|h| async move {
        r.must_within(
            ErrorKind::HealthCheck,
            &format!("health check `{}` ({})", h.name, h.command),
            &health_script(&h.command, h.retries, h.interval_ms, r.limits.health_try),
            b"",
            r.limits.health(h.retries, h.interval_ms),
        )
        .await
    });
    // All of them are waited for (none is left running on the host); the first failure
    // in the role's order is the one reported.
    let results: Vec<Result<String, StepError>> = futures::stream::iter(runs)
        .buffered(HEALTH_AT_ONCE)
        .collect()
        .await;
    for done in results {
        done?;
    }
    Ok(())
}

/// A role's health checks running at once on one connection, at most. Each one is a
/// channel, and its stall watchdog opens a probe channel beside it every few seconds:
/// 4 checks and their probes stay under the 10 channels OpenSSH allows per connection
/// (the transport's slots), so a probe never waits behind checks and never takes a slow
/// check for a dead host.
const HEALTH_AT_ONCE: usize = 4;

/// The progress step of a role's health checks, which run at the same time: each one
/// passes twice one interval apart on its own, so together they take as long as the
/// slowest, not the sum (a role of three checks at 500 ms waited 1.5 s or more).
fn health_step(checks: &[&HealthCheck]) -> String {
    let names = || {
        checks
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match checks {
        [one] => format!("health check: {}", one.name),
        all if all.len() <= HEALTH_AT_ONCE => {
            format!("{} health checks at once: {}", all.len(), names())
        }
        all => format!(
            "{} health checks, {HEALTH_AT_ONCE} at a time: {}",
            all.len(),
            names()
        ),
    }
}

/// The role is healthy: the previous versions kept for a rollback are removed.
async fn remove_backups<T: Transport>(r: &Remote<'_, T>, dests: &[&str]) -> Result<(), StepError> {
    if dests.is_empty() {
        return Ok(());
    }
    let backups: Vec<String> = dests.iter().map(|d| backup_path(d)).collect();
    r.must(
        ErrorKind::Swap,
        "removing backups",
        &remove_script(backups.iter().map(String::as_str)),
        b"",
    )
    .await?;
    Ok(())
}

/// Abandons a role before anything of it was swapped in: its temporary files are removed.
async fn abandon<T: Transport>(
    r: &Remote<'_, T>,
    role: &RolePlan,
    staged: &[Staged<'_>],
) -> StepError {
    cleanup(r, staged).await;
    StepError::Interrupted(format!(
        "stopped in role {} before its files were swapped in: nothing of it was changed{}",
        role.role,
        if staged.is_empty() {
            String::new()
        } else {
            format!(" ({} uploaded temporary file(s) removed)", staged.len())
        }
    ))
}

/// What a role changed by the time it failed: what its rollback puts back.
#[derive(Clone, Copy)]
struct Done<'a> {
    /// Files swapped in (or put in place by an unfinished apply).
    dests: &'a [&'a str],
    /// Files whose owner or mode was set in place, as they were.
    meta: &'a [MetaBefore<'a>],
    /// Directories, links and absent paths done.
    paths: &'a [&'a PathChange],
    /// The release switched in.
    switched: Option<&'a ReleaseChange>,
}

/// Restores the previous files (and owners and modes) and the role's directories, links
/// and absent paths done (`paths`), re-runs the service handling and the handlers that
/// read them, and checks again. Returns the error to report, with both results: the first
/// failure and what the host looks like after the rollback.
async fn rollback<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
    done: &Done<'_>,
    cause: StepError,
) -> StepError {
    let StepError::Failed(first) = cause else {
        return cause;
    };
    let Done {
        dests,
        meta,
        paths,
        switched,
    } = *done;
    // The release switched back to the one it replaced (there is none on a first deploy).
    let back_to = switched.and_then(|rel| rel.from.as_deref().map(|from| (rel, from)));
    if dests.is_empty() && meta.is_empty() && paths.is_empty() && back_to.is_none() {
        return StepError::Failed(first);
    }
    let mut meta = meta.to_vec();
    meta.extend(paths::metadata_before(paths));
    if !dests.is_empty() || !meta.is_empty() || !paths.is_empty() {
        r.step("rolling back to the previous files");
        let script = rollback_script(dests, &meta, &scripts::paths_rollback(paths));
        if let Err(e) = r.must(ErrorKind::Rollback, "rollback", &script, b"").await {
            return StepError::failed(
                ErrorKind::Rollback,
                format!("{first}\n  rollback FAILED: {}", e.message()),
            );
        }
    }
    let mut restored: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
    restored.extend(meta.iter().map(|m| m.path.to_string()));
    restored.extend(
        paths
            .iter()
            .filter(|c| !(c.is_directory() && c.action == PathAction::Metadata))
            .map(|c| c.path.clone()),
    );
    if let Some((rel, from)) = back_to {
        if let Err(e) = release::switch(r, rel, from).await {
            return StepError::failed(
                ErrorKind::Rollback,
                format!(
                    "{first}\n  rollback FAILED: switching back to release {from}: {}",
                    e.message()
                ),
            );
        }
        restored.push(format!("{}/current -> release {from}", rel.root));
    }
    let again = actions_to_rerun(role);
    let rerun = if again.is_empty() {
        "nothing to re-run".to_string()
    } else {
        let names: Vec<String> = again.iter().map(ToString::to_string).collect();
        format!("re-ran {}", names.join(", "))
    };
    let second = match run_actions(r, init, &again).await {
        Ok(()) => health(r, role, back_to.map(|(_, from)| from)).await,
        Err(e) => Err(e),
    };
    let checks: Vec<&str> = role.health.iter().map(|h| h.name.as_str()).collect();
    let restored = restored.join(", ");
    match second {
        Ok(()) => StepError::failed(
            first.kind,
            format!(
                "{first}\n  rolled back: previous files restored ({restored}); {rerun}; {}",
                if checks.is_empty() {
                    "no health checks to run".to_string()
                } else {
                    format!("healthy again: {}", checks.join(", "))
                }
            ),
        ),
        Err(e) => StepError::failed(
            ErrorKind::Rollback,
            format!(
                "{first}\n  rolled back: previous files restored ({restored}); {rerun}; but the service is still unhealthy:\n{}",
                indent(e.message())
            ),
        ),
    }
}

/// What read the files before must read them again after a rollback: the service
/// (reload or restart) and the role's handlers (e.g. SQL re-applied from the restored
/// file). Starting or enabling a service is not undone.
fn actions_to_rerun(role: &RolePlan) -> Vec<Action> {
    role.actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::DaemonReload
                    | Action::Reload { .. }
                    | Action::Restart { .. }
                    | Action::Run { .. }
            )
        })
        .cloned()
        .collect()
}

/// Removes staged temporary files, best effort: if the connection is gone there is
/// nothing more to do here (they are dot-files no service reads, and the next plan lists
/// them for removal).
async fn cleanup<T: Transport>(r: &Remote<'_, T>, staged: &[Staged<'_>]) {
    if staged.is_empty() {
        return;
    }
    let tmps = staged.iter().map(|s| s.tmp.as_str());
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        r.run(&remove_script(tmps), b"", CLEANUP_LIMIT),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DesiredFile;
    use crate::progress::{Format, Reporter};
    use crate::role::Notify;
    use crate::secrets::Secrets;
    use crate::transport::local::Local;
    use std::sync::atomic::AtomicBool;

    fn whoami(flag: &str) -> String {
        std::process::Command::new("id")
            .arg(flag)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// A plan with one role that creates `dest` (owned by this user), checked by
    /// `validate`.
    pub(super) fn plan_creating(dest: &str, validate: &str) -> HostPlan {
        let (owner, group) = (whoami("-un"), whoami("-gn"));
        let mut file = DesiredFile::new(
            dest.into(),
            b"x\n".to_vec(),
            owner.clone(),
            group.clone(),
            0o644,
            Notify::None,
            Some(validate.into()),
            false,
        );
        file.shared_dir = true; // tempdirs live under /tmp
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
                release: None,
                release_error: None,
                serving: false,
                interrupts: None,
                role: "site".into(),
                drift: None,
                certificates: vec![],
                paths: Vec::new(),
                files: vec![FileChange {
                    restart_because: None,
                    path: dest.into(),
                    action: FileAction::Create,
                    mode: "0644".into(),
                    owner,
                    group,
                    old_mode: None,
                    old_owner: None,
                    diff: None,
                    sensitive: false,
                    notify: Notify::None,
                    file,
                }],
                actions: vec![],
                validate: None,
                health: vec![],
            }],
        }
    }

    /// What a test's [`Remote`] borrows besides its transport: no secrets, a silent
    /// reporter, no Ctrl-C.
    pub(super) struct Quiet {
        secrets: Secrets,
        reporter: Reporter,
        interrupted: AtomicBool,
    }

    impl Quiet {
        pub(super) fn new() -> Quiet {
            Quiet {
                secrets: Secrets::default(),
                reporter: Reporter::new(Format::Json),
                interrupted: AtomicBool::new(false),
            }
        }

        /// A remote on `transport`, host `h`, without sudo, with these limits and lock.
        pub(super) fn remote<'a, T: Transport>(
            &'a self,
            transport: &'a T,
            limits: Limits,
            lock: Option<HostLock>,
        ) -> Remote<'a, T> {
            Remote {
                transport,
                sudo: false,
                secrets: &self.secrets,
                reporter: &self.reporter,
                host: "h",
                interrupted: &self.interrupted,
                limits,
                lock,
                ca: None,
            }
        }
    }

    /// A role whose checks are `(name, command)`, each up to 20 tries 100 ms apart.
    fn role_checked(checks: &[(&str, &str)]) -> RolePlan {
        let mut role = plan_creating("/nonexistent/unused", "true").roles.remove(0);
        role.files.clear();
        role.health = checks
            .iter()
            .map(|(name, command)| HealthCheck {
                name: (*name).into(),
                command: (*command).into(),
                retries: 20,
                interval_ms: 100,
            })
            .collect();
        role
    }

    /// Runs `role`'s health checks on this machine, bounded (they never hang a test).
    async fn run_health(role: &RolePlan) -> Result<(), StepError> {
        let (quiet, local) = (Quiet::new(), Local::default());
        let r = quiet.remote(&local, Limits::default(), None);
        tokio::time::timeout(Duration::from_secs(20), health(&r, role, None))
            .await
            .expect("the checks are bounded (20 s)")
    }

    /// A role's health checks run at the same time: the first check passes only once the
    /// second one has run, which one after the other it never would (it would give up
    /// after its 20 tries, the second not started yet).
    #[tokio::test]
    async fn a_roles_health_checks_run_at_the_same_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mark = dir.path().join("second-ran").to_string_lossy().into_owned();
        let role = role_checked(&[
            ("waits for the second", &format!("test -e {}", quote(&mark))),
            ("second", &format!("touch {}", quote(&mark))),
        ]);
        let done = run_health(&role).await;
        assert!(done.is_ok(), "{:?}", done.err());
        assert_eq!(
            health_step(&role.health.iter().collect::<Vec<_>>()),
            "2 health checks at once: waits for the second; second"
        );
        assert_eq!(
            health_step(&[&role.health[1]]),
            "health check: second",
            "one check keeps the step's old wording"
        );
    }

    /// At most [`HEALTH_AT_ONCE`] checks of a role run at once (each check and its stall
    /// probe hold a channel of the connection): six checks that each count the checks in
    /// their try at the same moment never see more than four.
    #[tokio::test]
    async fn at_most_four_checks_run_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = quote(&dir.path().to_string_lossy());
        let names: Vec<String> = (1..=6).map(|i| format!("c{i}")).collect();
        let commands: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "touch {d}/{n}; sleep 0.3; c=$(ls {d} | wc -l); rm -f {d}/{n}; echo \"$c at once\"; [ \"$c\" -le 4 ]"
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = names
            .iter()
            .map(String::as_str)
            .zip(commands.iter().map(String::as_str))
            .collect();
        let mut role = role_checked(&pairs);
        for h in &mut role.health {
            h.retries = 1;
        }
        let done = run_health(&role).await;
        assert!(done.is_ok(), "{done:?}");
        assert!(
            health_step(&role.health.iter().collect::<Vec<_>>())
                .starts_with("6 health checks, 4 at a time: c1; c2;"),
        );
    }

    /// When several checks fail, the first in the role's order is the one reported, and
    /// every check is waited for: none is still running on the host when `health` returns.
    #[tokio::test]
    async fn the_first_failing_check_in_order_is_reported_after_all_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mark = dir.path().join("slow-ended").to_string_lossy().into_owned();
        let mut role = role_checked(&[
            ("passes", "true"),
            ("fails late", "sleep 0.3; echo late-failure; false"),
            ("fails early", "echo early-failure; false"),
            ("slow", &format!("sleep 0.5 && touch {}", quote(&mark))),
        ]);
        for h in &mut role.health {
            h.retries = 1;
        }
        let done = run_health(&role).await;
        let Err(StepError::Failed(f)) = done else {
            panic!("two checks failed: {done:?}")
        };
        assert_eq!(f.kind, ErrorKind::HealthCheck);
        assert!(
            f.message.contains("health check `fails late`") && f.message.contains("late-failure"),
            "{}",
            f.message
        );
        assert!(!f.message.contains("early-failure"), "{}", f.message);
        assert!(
            std::path::Path::new(&mark).exists(),
            "the slow check ran to its end before health returned"
        );
    }

    /// Issue 10, finding 16: a validator that hangs blocked the apply forever (the stall
    /// watchdog's probe keeps succeeding). Every step is bounded: the host fails, naming
    /// the step, and the live file is untouched.
    #[tokio::test]
    async fn a_hung_validator_fails_the_host_after_its_time_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("site.conf").to_string_lossy().into_owned();
        let (quiet, local) = (Quiet::new(), Local::default());
        let limits = Limits {
            validation: Duration::from_secs(2),
            ..Limits::default()
        };
        let r = quiet.remote(&local, limits, None);
        let o = tokio::time::timeout(
            Duration::from_secs(8),
            apply_host(&r, &plan_creating(&dest, "sleep 30")),
        )
        .await
        .expect("a hung validator must not block the apply");
        let Outcome::Failed(f) = o else {
            panic!("{o:?}")
        };
        assert_eq!(f.kind, ErrorKind::Validation);
        assert!(
            f.message.contains("validation of") && f.message.contains("timed out after 2s"),
            "{}",
            f.message
        );
        assert!(!std::path::Path::new(&dest).exists());
        // The failed step is timed, in its role.
        let t = quiet.reporter.timings("h");
        let validating = t.steps.iter().find(|s| s.step.starts_with("validating"));
        assert_eq!(
            validating.and_then(|s| s.role.as_deref()),
            Some("site"),
            "{t:?}"
        );
        assert!(validating.is_some_and(|s| s.seconds >= 1.5), "{t:?}");
    }

    /// `--timings`: an apply's steps are recorded in their role, in order; the role's time
    /// is the sum of its steps.
    #[tokio::test]
    async fn an_applys_steps_are_timed_in_their_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("site.conf").to_string_lossy().into_owned();
        let (quiet, local) = (Quiet::new(), Local::default());
        let r = quiet.remote(&local, Limits::default(), None);
        let o = apply_host(&r, &plan_creating(&dest, "true")).await;
        assert!(matches!(o, Outcome::Changed(_)), "{o:?}");
        let t = quiet.reporter.timings("h");
        let steps: Vec<(Option<&str>, &str)> = t
            .steps
            .iter()
            .map(|s| {
                (
                    s.role.as_deref(),
                    s.step.split(' ').next().unwrap_or_default(),
                )
            })
            .collect();
        assert!(steps.contains(&(Some("site"), "uploading")), "{steps:?}");
        assert!(steps.contains(&(Some("site"), "validating")), "{steps:?}");
        assert!(steps.contains(&(Some("site"), "swapping")), "{steps:?}");
        assert_eq!(t.roles.len(), 1, "{t:?}");
        assert_eq!(t.roles[0].role, "site");
        let sum: f64 = t
            .steps
            .iter()
            .filter(|s| s.role.is_some())
            .map(|s| s.seconds)
            .sum();
        assert!((t.roles[0].seconds - sum).abs() < 1e-9, "{t:?}");
    }
}

#[cfg(test)]
mod lock_tests {
    use super::lock::{acquire_script, release_script, tests::test_lock};
    use super::scripts::tests::sh;
    use super::*;
    use crate::secrets::Secrets;
    use crate::transport::SshError;
    use crate::transport::local::Local;
    use std::sync::atomic::AtomicBool;

    /// Issue 10, finding 5: facts read while another apply holds the lock (a live
    /// holder, read for real by the status script) do not plan the removal of its
    /// temporary files; once it released the lock, the same leftover is stale.
    #[tokio::test]
    async fn facts_leave_the_lock_holders_temporary_files_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("site.conf").to_string_lossy().into_owned();
        std::fs::write(dir.path().join(".site.conf.fp-Ab12Cd"), "half").expect("w");
        let holder = test_lock(dir.path(), "CI");
        let (ok, out, err) = sh(&acquire_script(&holder));
        assert!(ok, "{out}{err}");
        let secrets = Secrets::default();
        let local = Local::default();
        let reader = crate::gather::Reader {
            transport: &local,
            host: "h",
            sudo: false,
            secrets: &secrets,
            vips: Vec::new(),
            lock: Some(test_lock(dir.path(), "planner")),
            certs: None,
        };
        let desired = crate::desired::DesiredHost {
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
            roles: vec![crate::desired::DesiredRole {
                release: None,
                name: "site".into(),
                packages: vec![],
                service: None,
                files: vec![
                    tests::plan_creating(&dest, "true").roles[0].files[0]
                        .file
                        .clone(),
                ],
                validate: None,
                handlers: vec![],
                health: vec![],
                drift_check: None,
                certificates: vec![],
                directories: vec![],
                links: vec![],
                absent: vec![],
            }],
        };
        let p = reader.plan(&desired).await.expect("planned");
        assert!(p.plan.stale_temps.is_empty(), "{:?}", p.plan.stale_temps);
        let (ok, _, err) = sh(&release_script(&holder, "ok"));
        assert!(ok, "{err}");
        let p = reader.plan(&desired).await.expect("planned");
        assert_eq!(p.plan.stale_temps.len(), 1, "{:?}", p.plan.stale_temps);
    }

    /// Issue 10, finding 5: nothing stopped a second apply (a CI job and an operator) on
    /// the same host: each removed the other's in-flight temporary files as stale and the
    /// backups overwrote each other. With the lock held by a live apply, a second apply
    /// is refused before touching anything, naming who holds it; the holder's apply then
    /// runs, and leaves one audit line.
    #[tokio::test]
    async fn a_second_apply_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("site.conf").to_string_lossy().into_owned();
        let other = test_lock(dir.path(), "CI");
        let (ok, out, err) = sh(&acquire_script(&other));
        assert!(ok, "{out}{err}");
        let (quiet, local) = (tests::Quiet::new(), Local::default());
        let mut r = quiet.remote(
            &local,
            Limits::default(),
            Some(test_lock(dir.path(), "operator")),
        );
        let plan = tests::plan_creating(&dest, "true");
        let o = apply_host(&r, &plan).await;
        let Outcome::Failed(f) = &o else {
            panic!("the second apply must be refused: {o:?}")
        };
        assert!(
            f.message
                .contains("another apply holds the lock on h: tester@ci pid CI since "),
            "{}",
            f.message
        );
        assert!(!std::path::Path::new(&dest).exists());

        let (ok, _, err) = sh(&release_script(&other, "ok"));
        assert!(ok, "{err}");
        r.lock = Some(test_lock(dir.path(), "operator"));
        let o = apply_host(&r, &plan).await;
        assert_eq!(o, Outcome::Changed(1));
        let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.ends_with(&format!(
                "tester@ci pid operator changed changes=1 site: create {dest}"
            )),
            "{log}"
        );
    }

    /// A connection that breaks mid-upload: every command fails at the transport from
    /// the upload on, as a cut link does (each would wait for the stall watchdog).
    struct CutAtUpload {
        local: Local,
        cut: AtomicBool,
        after_cut: std::sync::atomic::AtomicU32,
    }

    impl Transport for CutAtUpload {
        fn exec(
            &self,
            command: &str,
            stdin: &[u8],
        ) -> impl std::future::Future<Output = Result<crate::transport::ExecOutput, SshError>> + Send
        {
            use std::sync::atomic::Ordering;
            if command.contains("mktemp") {
                self.cut.store(true, Ordering::SeqCst);
            }
            let cut = self.cut.load(Ordering::SeqCst);
            if cut {
                self.after_cut.fetch_add(1, Ordering::SeqCst);
            }
            let run = self.local.exec(command, stdin);
            async move {
                if cut {
                    return Err(SshError::Channel {
                        host: "h".into(),
                        reason: "connection lost".into(),
                    });
                }
                run.await
            }
        }
    }

    /// The e2e cut test saw the tool give up 40 s after the cut instead of 20: after the
    /// upload failed on the lost connection, releasing the lock waited on it again. A host
    /// whose connection is lost is reported at once: nothing more is sent to it.
    #[tokio::test]
    async fn a_lost_connection_is_not_used_again_to_release_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("site.conf").to_string_lossy().into_owned();
        let quiet = tests::Quiet::new();
        let t = CutAtUpload {
            local: Local::default(),
            cut: AtomicBool::new(false),
            after_cut: Default::default(),
        };
        let r = quiet.remote(&t, Limits::default(), Some(test_lock(dir.path(), "cut")));
        let o = apply_host(&r, &tests::plan_creating(&dest, "true")).await;
        assert!(
            matches!(&o, Outcome::Unreachable(f) if f.kind == ErrorKind::ConnectionLost),
            "{o:?}"
        );
        assert_eq!(
            t.after_cut.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "only the upload went to the lost connection"
        );
    }
}
