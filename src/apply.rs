//! Apply: execute a host's plan. For each role: upload changed files to temporary files
//! beside their targets (final owner and mode set), validate, swap by rename, run the
//! handlers once, run health checks, roll back if they fail.
//!
//! Ctrl-C (the `interrupted` flag) is honoured between steps: a role whose files are not
//! swapped in yet is abandoned (its temporary files removed); a role whose files are in
//! place is finished (handlers, health checks, rollback) so no host is left half-changed.

use crate::output::Reporter;
use crate::plan::{Action, FileAction, FileChange, HostPlan, RolePlan};
use crate::secrets::Secrets;
use crate::shell::{self, Init, quote};
use crate::transport::{ExecOutput, Transport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// While a command runs longer than this, the connection is probed with a second,
/// trivial command on the same connection.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe not answered within this long means the connection is lost. It must cover a
/// probe queued behind an upload's in-flight data on a slow link.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing needed changing.
    Ok,
    /// Changes were made: their count.
    Changed(usize),
    /// The run failed on this host (message already masked).
    Failed(String),
    /// No connection, or it broke.
    Unreachable(String),
    /// Stopped by Ctrl-C before everything was applied.
    Interrupted(Interruption),
}

/// What an interrupted host got and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// Roles applied completely (files in place, handlers run, healthy).
    pub applied: Vec<String>,
    /// Roles with changes that were not applied (nothing of them was swapped in).
    pub not_applied: Vec<String>,
    /// Where it stopped.
    pub note: String,
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::Unreachable(_) | Outcome::Interrupted(_)
        )
    }
}

/// What apply needs to run commands on one host.
pub struct Remote<'a, T: Transport> {
    pub transport: &'a T,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    pub reporter: &'a Reporter,
    pub host: &'a str,
    /// Set by Ctrl-C: stop at the next step boundary.
    pub interrupted: &'a AtomicBool,
}

#[derive(Debug)]
enum StepError {
    /// The command ran and failed: message for the user.
    Failed(String),
    /// The transport broke.
    Transport(String),
    /// Ctrl-C: stopped at a step boundary; where, for the user.
    Interrupted(String),
}

/// Runs one command; while it runs longer than [`PROBE_EVERY`], checks that the host
/// still answers on the same connection. A probe left unanswered for [`PROBE_TIMEOUT`]
/// ends the wait with an error (the command's end would never be reported). SSH
/// keepalives alone take about a minute to give up on a cut connection.
pub async fn exec_watched<T: Transport>(
    t: &T,
    host: &str,
    command: &str,
    stdin: &[u8],
) -> Result<ExecOutput, String> {
    exec_watched_with(t, host, command, stdin, PROBE_EVERY, PROBE_TIMEOUT).await
}

async fn exec_watched_with<T: Transport>(
    t: &T,
    host: &str,
    command: &str,
    stdin: &[u8],
    every: Duration,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    let main = t.exec(command, stdin);
    tokio::pin!(main);
    loop {
        tokio::select! {
            r = &mut main => return r.map_err(|e| e.to_string()),
            () = tokio::time::sleep(every) => {}
        }
        let probe = t.exec("true", b"");
        tokio::pin!(probe);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        tokio::select! {
            r = &mut main => return r.map_err(|e| e.to_string()),
            // Answered (even a refused channel is an answer): the connection is alive.
            _ = &mut probe => {}
            () = &mut deadline => {
                return Err(format!(
                    "{host} stopped answering: a command was running and a probe on the same \
                     connection got no reply within {:.0}s (connection lost, or the link is \
                     badly congested); whether the command took effect is unknown: check the \
                     host and run again",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
}

impl<T: Transport> Remote<'_, T> {
    async fn run(&self, script: &str, stdin: &[u8]) -> Result<ExecOutput, StepError> {
        exec_watched(
            self.transport,
            self.host,
            &shell::wrap(script, self.sudo),
            stdin,
        )
        .await
        .map_err(|e| StepError::Transport(self.secrets.mask(&e)))
    }

    /// Runs `script`; a non-zero exit is an error carrying `what` and the output. The
    /// whole message is masked: `what` may quote a rendered command.
    async fn must(&self, what: &str, script: &str, stdin: &[u8]) -> Result<String, StepError> {
        let out = self.run(script, stdin).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status != 0 {
            return Err(StepError::Failed(self.secrets.mask(&format!(
                "{what} failed (exit {}):\n{}",
                out.status,
                indent(printable(&text).trim_end())
            ))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn step(&self, msg: &str) {
        self.reporter.step(self.host, msg);
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// The service's state and its last log lines. The log comes from `journalctl -a`:
/// `systemctl status` shows a line holding a control character (mariadbd starts its
/// fatal messages with a BEL) as "[N blob data]", hiding the one line that matters.
pub fn status_script(service: &str) -> String {
    let q = quote(service);
    format!(
        "systemctl status --no-pager -l -n 0 {q} 2>&1 | head -n 12\n\
         if command -v journalctl >/dev/null; then journalctl -a -q --no-pager -n 15 -u {q} 2>&1; fi\n"
    )
}

/// Remote output made safe for a terminal: control characters other than newline and
/// tab are shown in caret notation (`^G`), so no host can ring bells or send escape
/// sequences to the operator's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Applies one host's plan. Never panics; every failure is an [`Outcome`].
pub async fn apply_host<T: Transport>(r: &Remote<'_, T>, plan: &HostPlan) -> Outcome {
    if plan.is_empty() {
        return Outcome::Ok;
    }
    let pending: Vec<&RolePlan> = plan
        .roles
        .iter()
        .filter(|role| !role.files.is_empty() || !role.actions.is_empty())
        .collect();
    let mut applied: Vec<String> = Vec::new();
    match apply_inner(r, plan, &pending, &mut applied).await {
        Ok(()) => Outcome::Changed(plan.change_count()),
        Err(StepError::Failed(m)) => Outcome::Failed(m),
        Err(StepError::Transport(m)) => Outcome::Unreachable(m),
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

async fn apply_inner<T: Transport>(
    r: &Remote<'_, T>,
    plan: &HostPlan,
    pending: &[&RolePlan],
    applied: &mut Vec<String>,
) -> Result<(), StepError> {
    if !plan.stale_temps.is_empty() {
        r.step("removing temporary files an interrupted apply left");
        let files: Vec<String> = plan.stale_temps.iter().map(|t| quote(t)).collect();
        r.must(
            "removing stale temporary files",
            &format!("rm -f -- {}", files.join(" ")),
            b"",
        )
        .await?;
    }
    if !plan.packages_to_install.is_empty() {
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
        r.must("apt-get install", &shell::apt_install(&pkgs), b"")
            .await?;
    }
    for role in pending {
        if r.is_interrupted() {
            return Err(StepError::Interrupted(format!(
                "stopped before role {} (nothing of it was changed)",
                role.role
            )));
        }
        apply_role(r, plan.init, role).await?;
        applied.push(role.role.clone());
    }
    Ok(())
}

/// A file uploaded to its temporary path.
struct Staged<'a> {
    change: &'a FileChange,
    tmp: String,
}

/// Where a replaced file's previous version is kept until the role is healthy.
fn backup_path(dest: &str) -> String {
    let (dir, base) = split_path(dest);
    format!("{dir}/.{base}.fp-prev")
}

fn split_path(p: &str) -> (&str, &str) {
    match p.rsplit_once('/') {
        Some(("", b)) => ("/", b),
        Some((d, b)) => (d, b),
        None => (".", p),
    }
}

/// Uploads `content` into a new temporary file beside `dest`, owner and mode already set.
/// The file is checked to hold all of the content (a cut connection ends `cat` early), and
/// removed again when the script does not get to report it (error, hangup, broken pipe).
pub fn upload_script(c: &FileChange) -> String {
    let (dir, base) = split_path(&c.path);
    format!(
        "set -e\numask 022\nmkdir -p {dir}\numask 077\nt=$(mktemp {tmpl})\n\
         trap 'rm -f \"$t\"' EXIT\ntrap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 141' PIPE\ntrap 'exit 143' TERM\n\
         cat > \"$t\"\nn=$(wc -c < \"$t\")\n\
         if [ \"$n\" -ne {size} ]; then echo \"upload cut short: $n of {size} bytes arrived\" >&2; exit 1; fi\n\
         chown {owner}:{group} \"$t\"\nchmod {mode} \"$t\"\necho \"$t\"\ntrap - EXIT\n",
        dir = quote(dir),
        tmpl = quote(&format!("{dir}/.{base}.fp-XXXXXX")),
        size = c.file.content.len(),
        owner = quote(&c.owner),
        group = quote(&c.group),
        mode = c.mode,
    )
}

/// Builds the whole-tree validation: copy `tree`, lay the staged files over it, run.
pub fn tree_validate_script(tree: &str, command: &str, staged: &[(String, String)]) -> String {
    let mut s = format!(
        "s=$(mktemp -d /tmp/fp-validate.XXXXXX) || exit 1\ntrap 'rm -rf \"$s\"' EXIT\ncp -a {}/. \"$s/\" || exit 1\n",
        quote(tree.trim_end_matches('/'))
    );
    let prefix = format!("{}/", tree.trim_end_matches('/'));
    for (dest, tmp) in staged {
        if let Some(rel) = dest.strip_prefix(&prefix) {
            s.push_str(&format!(
                "mkdir -p \"$s\"/{d} && cp -p {tmp} \"$s\"/{rel} || exit 1\n",
                d = quote(split_path(rel).0),
                tmp = quote(tmp),
                rel = quote(rel)
            ));
        }
    }
    s.push_str(&format!("{} 2>&1\n", command.replace("{tree}", "\"$s\"")));
    s
}

/// Swaps every staged file into place; a target that exists is first hard-linked to
/// its backup name so a rollback can restore it.
pub fn swap_script(staged: &[(String, String)]) -> String {
    let mut s = String::from("set -e\n");
    for (dest, tmp) in staged {
        let d = quote(dest);
        let b = quote(&backup_path(dest));
        s.push_str(&format!(
            "if [ -f {d} ]; then ln -f {d} {b}; else rm -f {b}; fi\nmv -f {t} {d}\n",
            t = quote(tmp)
        ));
    }
    s
}

/// A file whose owner or mode was changed in place, with what they were before.
pub struct MetaBefore<'a> {
    pub path: &'a str,
    /// `owner:group` before, when it changed.
    pub owner: Option<&'a str>,
    /// Octal mode before, when it changed.
    pub mode: Option<&'a str>,
}

/// Puts the previous versions back (a file that did not exist before is removed) and the
/// previous owner and mode of files changed in place. Goes on past a failure; exits 1 if
/// anything could not be restored.
pub fn rollback_script(dests: &[&str], meta: &[MetaBefore]) -> String {
    let mut s = String::from("rc=0\n");
    for dest in dests {
        let d = quote(dest);
        let b = quote(&backup_path(dest));
        s.push_str(&format!(
            "if [ -f {b} ]; then mv -f {b} {d} || rc=1; else rm -f {d} || rc=1; fi\n"
        ));
    }
    for m in meta {
        let p = quote(m.path);
        if let Some(o) = m.owner {
            s.push_str(&format!("chown {} {p} || rc=1\n", quote(o)));
        }
        if let Some(mode) = m.mode {
            s.push_str(&format!("chmod {} {p} || rc=1\n", quote(mode)));
        }
    }
    s.push_str("exit $rc\n");
    s
}

fn action_command(init: Init, a: &Action) -> String {
    match a {
        Action::DaemonReload => "systemctl daemon-reload".to_string(),
        Action::Reload { service } => shell::service_command(init, "reload", service),
        Action::Restart { service } => shell::service_command(init, "restart", service),
        Action::Start { service } => shell::service_command(init, "start", service),
        Action::Enable { service } => shell::service_command(init, "enable", service),
        Action::Run { command, .. } => command.clone(),
    }
}

/// A health check loop, run on the host: the command must succeed twice in a row, one
/// interval apart, within `retries` failures. Once is not enough: `systemctl reload`
/// returns before most daemons serve the new configuration (Nginx's old workers answer
/// for tens of milliseconds more), so a single early success would vouch for the old one.
pub fn health_script(command: &str, retries: u32, interval_ms: u64) -> String {
    format!(
        "i=0\nok=0\nwhile :; do\n  if out=$( ( {command} ) 2>&1 ); then\n    ok=$((ok+1))\n    if [ \"$ok\" -ge 2 ]; then exit 0; fi\n  else\n    ok=0\n    i=$((i+1))\n    if [ \"$i\" -ge {retries} ]; then printf '%s\\n' \"$out\"; exit 1; fi\n  fi\n  sleep {secs}\ndone\n",
        secs = format_args!("{}.{:03}", interval_ms / 1000, interval_ms % 1000)
    )
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

async fn apply_role<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
) -> Result<(), StepError> {
    // 1. Upload. Until the swap, Ctrl-C abandons the role cleanly.
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
        match r
            .must(
                &format!("upload of {}", c.path),
                &upload_script(c),
                &c.file.content,
            )
            .await
        {
            Ok(out) => {
                let tmp = out.trim().to_string();
                if !tmp.contains(".fp-") {
                    cleanup(r, &staged).await;
                    return Err(StepError::Failed(format!(
                        "upload of {}: unexpected reply `{tmp}`",
                        c.path
                    )));
                }
                staged.push(Staged { change: c, tmp });
            }
            Err(e) => {
                // A broken connection cannot clean up; the upload script removes its own
                // temporary file when it ends early.
                if !matches!(e, StepError::Transport(_)) {
                    cleanup(r, &staged).await;
                }
                return Err(e);
            }
        }
    }
    let pairs: Vec<(String, String)> = staged
        .iter()
        .map(|s| (s.change.path.clone(), s.tmp.clone()))
        .collect();

    // 2. Validate: per file, then the whole tree.
    for s in &staged {
        if let Some(v) = &s.change.file.validate {
            if r.is_interrupted() {
                return Err(abandon(r, role, &staged).await);
            }
            r.step(&format!("validating {}", s.change.path));
            let cmd = format!(
                "if [ ! -s {t} ]; then echo 'staged file is missing or empty'; exit 1; fi\n{} 2>&1",
                v.replace("{tmp}", &quote(&s.tmp)),
                t = quote(&s.tmp)
            );
            if let Err(e) = r
                .must(
                    &format!("validation of {} (`{v}`)", s.change.path),
                    &cmd,
                    b"",
                )
                .await
            {
                cleanup(r, &staged).await;
                return Err(with_note(
                    e,
                    "the live file and the running service were left as they were",
                ));
            }
        }
    }
    if let Some(v) = &role.validate
        && !staged.is_empty()
    {
        if r.is_interrupted() {
            return Err(abandon(r, role, &staged).await);
        }
        r.step(&format!("validating {} as a whole", v.tree));
        let script = tree_validate_script(&v.tree, &v.command, &pairs);
        if let Err(e) = r
            .must(
                &format!("validation of {} (`{}`)", v.tree, v.command),
                &script,
                b"",
            )
            .await
        {
            cleanup(r, &staged).await;
            return Err(with_note(
                e,
                "the live files and the running service were left as they were",
            ));
        }
    }

    // 3. Swap by rename; metadata-only changes in place. The last point where Ctrl-C
    //    abandons the role: from here on it is finished (or rolled back).
    if r.is_interrupted() {
        return Err(abandon(r, role, &staged).await);
    }
    if !pairs.is_empty() {
        r.step(&format!("swapping {} file(s) into place", pairs.len()));
        if let Err(e) = r.must("rename into place", &swap_script(&pairs), b"").await {
            cleanup(r, &staged).await;
            return Err(e);
        }
    }
    // Files an earlier, unfinished apply put in place count as swapped by this one:
    // their backups are restored on rollback and removed on success.
    let dests: Vec<&str> = pairs
        .iter()
        .map(|(d, _)| d.as_str())
        .chain(
            role.files
                .iter()
                .filter(|c| c.action == FileAction::Unfinished)
                .map(|c| c.path.as_str()),
        )
        .collect();
    let mut meta: Vec<MetaBefore> = Vec::new();
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
        if let Err(e) = r
            .must(&format!("chown/chmod of {}", c.path), &script, b"")
            .await
        {
            return Err(rollback(r, init, role, &dests, &meta, e).await);
        }
    }

    // 4. Handlers, once each, after every file of the role is in place.
    if let Err(e) = run_actions(r, init, &role.actions).await {
        return Err(rollback(r, init, role, &dests, &meta, e).await);
    }

    // 5. Health checks.
    if let Err(e) = health(r, role).await {
        return Err(rollback(r, init, role, &dests, &meta, e).await);
    }
    if !dests.is_empty() {
        let backups: Vec<String> = dests.iter().map(|d| quote(&backup_path(d))).collect();
        r.must(
            "removing backups",
            &format!("rm -f {}", backups.join(" ")),
            b"",
        )
        .await?;
    }
    Ok(())
}

async fn run_actions<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    actions: &[Action],
) -> Result<(), StepError> {
    for a in actions {
        r.step(&a.to_string());
        let cmd = action_command(init, a);
        if let Err(e) = r.must(&a.to_string(), &format!("{cmd} 2>&1"), b"").await {
            // The service's own words: its status and last log lines.
            let detail = match a {
                Action::Reload { service }
                | Action::Restart { service }
                | Action::Start { service }
                    if init == Init::Systemd =>
                {
                    r.run(&status_script(service), b"")
                        .await
                        .map(|o| {
                            r.secrets
                                .mask(&printable(&String::from_utf8_lossy(&o.stdout)))
                        })
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            return Err(match e {
                StepError::Failed(m) if !detail.trim().is_empty() => StepError::Failed(format!(
                    "{m}\n  service status:\n{}",
                    indent(detail.trim_end())
                )),
                other => other,
            });
        }
    }
    Ok(())
}

async fn health<T: Transport>(r: &Remote<'_, T>, role: &RolePlan) -> Result<(), StepError> {
    for h in &role.health {
        r.step(&format!("health check: {}", h.name));
        r.must(
            &format!("health check `{}` ({})", h.name, h.command),
            &health_script(&h.command, h.retries, h.interval_ms),
            b"",
        )
        .await?;
    }
    Ok(())
}

/// Restores the previous files (and owners and modes), re-runs the service handling and
/// the handlers that read them, and checks again. Returns the error to report, with both
/// results: the first failure and what the host looks like after the rollback.
async fn rollback<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
    dests: &[&str],
    meta: &[MetaBefore<'_>],
    cause: StepError,
) -> StepError {
    let StepError::Failed(first) = cause else {
        return cause;
    };
    if dests.is_empty() && meta.is_empty() {
        return StepError::Failed(first);
    }
    r.step("rolling back to the previous files");
    if let Err(e) = r.must("rollback", &rollback_script(dests, meta), b"").await {
        return StepError::Failed(format!("{first}\n  rollback FAILED: {}", msg(&e)));
    }
    let mut restored: Vec<&str> = dests.to_vec();
    restored.extend(meta.iter().map(|m| m.path));
    // What read the files before must read them again: the service (reload or restart)
    // and the role's handlers (e.g. SQL re-applied from the restored file). Starting or
    // enabling a service is not undone.
    let again: Vec<Action> = role
        .actions
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
        .collect();
    let rerun = if again.is_empty() {
        "nothing to re-run".to_string()
    } else {
        format!(
            "re-ran {}",
            again
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let second = match run_actions(r, init, &again).await {
        Ok(()) => health(r, role).await,
        Err(e) => Err(e),
    };
    let checks: Vec<&str> = role.health.iter().map(|h| h.name.as_str()).collect();
    match second {
        Ok(()) => StepError::Failed(format!(
            "{first}\n  rolled back: previous files restored ({}); {rerun}; {}",
            restored.join(", "),
            if checks.is_empty() {
                "no health checks to run".to_string()
            } else {
                format!("healthy again: {}", checks.join(", "))
            }
        )),
        Err(e) => StepError::Failed(format!(
            "{first}\n  rolled back: previous files restored ({}); {rerun}; but the service is still unhealthy:\n{}",
            restored.join(", "),
            indent(&msg(&e))
        )),
    }
}

fn msg(e: &StepError) -> String {
    match e {
        StepError::Failed(m) | StepError::Transport(m) | StepError::Interrupted(m) => m.clone(),
    }
}

fn with_note(e: StepError, note: &str) -> StepError {
    match e {
        StepError::Failed(m) => StepError::Failed(format!("{m}\n  {note}")),
        other => other,
    }
}

async fn cleanup<T: Transport>(r: &Remote<'_, T>, staged: &[Staged<'_>]) {
    if staged.is_empty() {
        return;
    }
    let tmps: Vec<String> = staged.iter().map(|s| quote(&s.tmp)).collect();
    // Best effort: if the connection is gone there is nothing more we can do here;
    // the temporary files are dot-files no service reads.
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        r.run(&format!("rm -f {}", tmps.join(" ")), b""),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_output_is_made_printable() {
        assert_eq!(
            printable("\u{7}mariadbd: Can't\tx\r\n\u{1b}[31mred\u{9b}"),
            "^Gmariadbd: Can't\tx^M\n^[[31mred\u{fffd}"
        );
        assert_eq!(
            status_script("mariadb"),
            "systemctl status --no-pager -l -n 0 mariadb 2>&1 | head -n 12\n\
             if command -v journalctl >/dev/null; then journalctl -a -q --no-pager -n 15 -u mariadb 2>&1; fi\n"
        );
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            split_path("/etc/nginx/nginx.conf"),
            ("/etc/nginx", "nginx.conf")
        );
        assert_eq!(split_path("/x"), ("/", "x"));
        assert_eq!(backup_path("/etc/a b/c"), "/etc/a b/.c.fp-prev");
    }

    #[test]
    fn swap_and_rollback_scripts_are_exact() {
        let staged = vec![("/etc/x.conf".to_string(), "/etc/.x.conf.fp-abc".to_string())];
        assert_eq!(
            swap_script(&staged),
            "set -e\nif [ -f /etc/x.conf ]; then ln -f /etc/x.conf /etc/.x.conf.fp-prev; else rm -f /etc/.x.conf.fp-prev; fi\nmv -f /etc/.x.conf.fp-abc /etc/x.conf\n"
        );
        assert_eq!(
            rollback_script(&["/etc/x.conf"], &[]),
            "rc=0\nif [ -f /etc/.x.conf.fp-prev ]; then mv -f /etc/.x.conf.fp-prev /etc/x.conf || rc=1; else rm -f /etc/x.conf || rc=1; fi\nexit $rc\n"
        );
        assert_eq!(
            rollback_script(
                &[],
                &[MetaBefore {
                    path: "/etc/a b",
                    owner: Some("root:adm"),
                    mode: Some("0640")
                }]
            ),
            "rc=0\nchown root:adm '/etc/a b' || rc=1\nchmod 0640 '/etc/a b' || rc=1\nexit $rc\n"
        );
    }

    /// Runs the real scripts with a local shell: swap keeps a backup, rollback restores.
    #[test]
    fn swap_then_rollback_on_a_real_filesystem() {
        let dir = std::env::temp_dir().join(format!("fp-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let dest = dir.join("live.conf").to_string_lossy().to_string();
        let tmp = dir.join(".live.conf.fp-1").to_string_lossy().to_string();
        let created = dir.join("new.conf").to_string_lossy().to_string();
        let tmp2 = dir.join(".new.conf.fp-2").to_string_lossy().to_string();
        std::fs::write(&dest, "old").expect("w");
        std::fs::write(&tmp, "new").expect("w");
        std::fs::write(&tmp2, "created").expect("w");
        let sh = |s: String| {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(s)
                .status()
                .expect("sh");
            assert!(st.success());
        };
        sh(swap_script(&[
            (dest.clone(), tmp.clone()),
            (created.clone(), tmp2.clone()),
        ]));
        assert_eq!(std::fs::read_to_string(&dest).expect("r"), "new");
        assert!(!std::path::Path::new(&tmp).exists());
        sh(rollback_script(&[&dest, &created], &[]));
        assert_eq!(std::fs::read_to_string(&dest).expect("r"), "old");
        assert!(!std::path::Path::new(&created).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tree_validation_overlays_only_files_under_the_tree() {
        let s = tree_validate_script(
            "/etc/nginx",
            "nginx -t -q -c {tree}/nginx.conf",
            &[
                (
                    "/etc/nginx/sites-enabled/foobar.conf".into(),
                    "/etc/nginx/sites-enabled/.foobar.conf.fp-1".into(),
                ),
                (
                    "/var/www/index.html".into(),
                    "/var/www/.index.html.fp-2".into(),
                ),
            ],
        );
        assert!(s.contains("cp -a /etc/nginx/. \"$s/\""), "{s}");
        assert!(
            s.contains(
                "cp -p /etc/nginx/sites-enabled/.foobar.conf.fp-1 \"$s\"/sites-enabled/foobar.conf"
            ),
            "{s}"
        );
        assert!(!s.contains("index.html"), "{s}");
        assert!(
            s.ends_with("nginx -t -q -c \"$s\"/nginx.conf 2>&1\n"),
            "{s}"
        );
    }

    #[test]
    fn health_loop_retries_then_reports_output() {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(health_script("echo nope; false", 2, 10))
            .output()
            .expect("sh");
        assert!(!st.status.success());
        assert_eq!(String::from_utf8_lossy(&st.stdout), "nope\n");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(health_script("true", 2, 10))
            .status()
            .expect("sh");
        assert!(ok.success());
        // Success, then failure: not healthy (the first success was the old config).
        let dir = std::env::temp_dir().join(format!("fp-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let n = dir.join("n");
        let flaky = format!(
            "c=$(cat {n} 2>/dev/null || echo 0); echo $((c+1)) > {n}; [ $c -eq 0 ]",
            n = n.display()
        );
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(health_script(&flaky, 3, 10))
            .status()
            .expect("sh");
        assert!(!st.success(), "one success then failures is not healthy");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn change(path: &str, content: &[u8]) -> FileChange {
        let id = |flag: &str| {
            let out = std::process::Command::new("id")
                .arg(flag)
                .output()
                .expect("id");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let (owner, group) = (id("-un"), id("-gn"));
        FileChange {
            path: path.to_string(),
            action: FileAction::Create,
            mode: "0640".into(),
            owner: owner.clone(),
            group: group.clone(),
            old_mode: None,
            old_owner: None,
            diff: None,
            sensitive: false,
            notify: crate::role::Notify::None,
            file: crate::desired::DesiredFile::new(
                path.to_string(),
                content.to_vec(),
                owner,
                group,
                0o640,
                crate::role::Notify::None,
                None,
                false,
            ),
        }
    }

    /// Runs the upload script locally with `stdin`; returns (success, stdout, stderr).
    fn upload_locally(c: &FileChange, stdin: &[u8]) -> (bool, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(upload_script(c))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn fp_files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".fp-"))
            .collect()
    }

    /// The whole content arrives: a temporary file with the final mode; a short upload
    /// (the connection was cut) fails and leaves no temporary file behind.
    #[test]
    fn upload_script_checks_the_size_and_cleans_up_after_itself() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fp-upload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let dest = dir.join("live.conf").to_string_lossy().to_string();
        let c = change(&dest, b"0123456789");

        let (ok, out, err) = upload_locally(&c, b"0123456789");
        assert!(ok, "{err}");
        let tmp = out.trim();
        assert!(tmp.contains("/.live.conf.fp-"), "{tmp}");
        assert_eq!(std::fs::read(tmp).expect("read"), b"0123456789");
        let mode = std::fs::metadata(tmp).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::remove_file(tmp).expect("rm");

        let (ok, out, err) = upload_locally(&c, b"01234");
        assert!(!ok, "a short upload must fail: {out}");
        assert!(err.contains("upload cut short: 5 of 10 bytes"), "{err}");
        assert!(fp_files(&dir).is_empty(), "{:?}", fp_files(&dir));
        assert!(!std::path::Path::new(&dest).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A transport whose commands take `main` to finish and whose probe (`true`) takes
    /// `probe`; `None` never finishes (a cut connection).
    struct Slow {
        main: Option<Duration>,
        probe: Option<Duration>,
    }

    impl Transport for Slow {
        fn exec(
            &self,
            command: &str,
            _stdin: &[u8],
        ) -> impl std::future::Future<Output = Result<ExecOutput, crate::transport::SshError>> + Send
        {
            let wait = if command == "true" {
                self.probe
            } else {
                self.main
            };
            async move {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                Ok(ExecOutput::default())
            }
        }
    }

    #[tokio::test]
    async fn a_long_command_on_a_live_connection_is_waited_for() {
        let t = Slow {
            main: Some(Duration::from_millis(300)),
            probe: Some(Duration::from_millis(5)),
        };
        let r = exec_watched_with(
            &t,
            "h",
            "sleep",
            b"",
            Duration::from_millis(20),
            Duration::from_millis(50),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn a_silent_connection_is_given_up_after_the_probe_timeout() {
        let t = Slow {
            main: None,
            probe: None,
        };
        let started = std::time::Instant::now();
        let r = exec_watched_with(
            &t,
            "web1",
            "cat",
            b"",
            Duration::from_millis(20),
            Duration::from_millis(50),
        )
        .await;
        let e = r.expect_err("must give up");
        assert!(e.contains("web1 stopped answering"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
