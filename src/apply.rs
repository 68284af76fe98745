//! Apply: execute a host's plan. For each role: upload changed files to temporary files
//! beside their targets (final owner and mode set), validate, swap by rename, run the
//! handlers once, run health checks, roll back if they fail.

use crate::output::Reporter;
use crate::plan::{Action, FileAction, FileChange, HostPlan, RolePlan};
use crate::secrets::Secrets;
use crate::shell::{self, Init, quote};
use crate::transport::{ExecOutput, Transport};
use std::time::Duration;

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
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::Unreachable(_))
    }
}

/// What apply needs to run commands on one host.
pub struct Remote<'a, T: Transport> {
    pub transport: &'a T,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    pub reporter: &'a Reporter,
    pub host: &'a str,
}

#[derive(Debug)]
enum StepError {
    /// The command ran and failed: message for the user.
    Failed(String),
    /// The transport broke.
    Transport(String),
}

impl<T: Transport> Remote<'_, T> {
    async fn run(&self, script: &str, stdin: &[u8]) -> Result<ExecOutput, StepError> {
        self.transport
            .exec(&shell::wrap(script, self.sudo), stdin)
            .await
            .map_err(|e| StepError::Transport(self.secrets.mask(&e.to_string())))
    }

    /// Runs `script`; a non-zero exit is an error carrying `what` and the output.
    async fn must(&self, what: &str, script: &str, stdin: &[u8]) -> Result<String, StepError> {
        let out = self.run(script, stdin).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status != 0 {
            return Err(StepError::Failed(format!(
                "{what} failed (exit {}):\n{}",
                out.status,
                indent(&self.secrets.mask(text.trim_end()))
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn step(&self, msg: &str) {
        self.reporter.step(self.host, msg);
    }
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
    match apply_inner(r, plan).await {
        Ok(()) => Outcome::Changed(plan.change_count()),
        Err(StepError::Failed(m)) => Outcome::Failed(m),
        Err(StepError::Transport(m)) => Outcome::Unreachable(m),
    }
}

async fn apply_inner<T: Transport>(r: &Remote<'_, T>, plan: &HostPlan) -> Result<(), StepError> {
    if !plan.packages_to_install.is_empty() {
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
    for role in &plan.roles {
        if role.files.is_empty() && role.actions.is_empty() {
            continue;
        }
        apply_role(r, plan.init, role).await?;
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
pub fn upload_script(c: &FileChange) -> String {
    let (dir, base) = split_path(&c.path);
    format!(
        "set -e\numask 022\nmkdir -p {dir}\numask 077\nt=$(mktemp {tmpl})\ncat > \"$t\"\nchown {owner}:{group} \"$t\"\nchmod {mode} \"$t\"\necho \"$t\"\n",
        dir = quote(dir),
        tmpl = quote(&format!("{dir}/.{base}.fp-XXXXXX")),
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

/// Puts the previous versions back (a file that did not exist before is removed).
pub fn rollback_script(dests: &[&str]) -> String {
    let mut s = String::new();
    for dest in dests {
        let d = quote(dest);
        let b = quote(&backup_path(dest));
        s.push_str(&format!(
            "if [ -f {b} ]; then mv -f {b} {d}; else rm -f {d}; fi\n"
        ));
    }
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

/// A health check loop, run on the host: retries the command until it succeeds.
pub fn health_script(command: &str, retries: u32, interval_ms: u64) -> String {
    format!(
        "i=0\nwhile :; do\n  out=$( ( {command} ) 2>&1 ) && exit 0\n  i=$((i+1))\n  if [ \"$i\" -ge {retries} ]; then printf '%s\\n' \"$out\"; exit 1; fi\n  sleep {secs}\ndone\n",
        secs = format_args!("{}.{:03}", interval_ms / 1000, interval_ms % 1000)
    )
}

async fn apply_role<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
) -> Result<(), StepError> {
    // 1. Upload.
    let mut staged: Vec<Staged> = Vec::new();
    for c in role
        .files
        .iter()
        .filter(|c| c.action != FileAction::Metadata)
    {
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
                cleanup(r, &staged).await;
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

    // 3. Swap by rename; metadata-only changes in place.
    if !pairs.is_empty() {
        r.step(&format!("swapping {} file(s) into place", pairs.len()));
        if let Err(e) = r.must("rename into place", &swap_script(&pairs), b"").await {
            cleanup(r, &staged).await;
            return Err(e);
        }
    }
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
        r.must(&format!("chown/chmod of {}", c.path), &script, b"")
            .await?;
    }

    // 4. Handlers, once each, after every file of the role is in place.
    let dests: Vec<&str> = pairs.iter().map(|(d, _)| d.as_str()).collect();
    if let Err(e) = run_actions(r, init, &role.actions).await {
        return Err(rollback(r, init, role, &dests, e).await);
    }

    // 5. Health checks.
    if let Err(e) = health(r, role).await {
        return Err(rollback(r, init, role, &dests, e).await);
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
                    let q = quote(service);
                    r.run(
                        &format!("systemctl status --no-pager -l -n 15 {q} 2>&1 | tail -n 20"),
                        b"",
                    )
                    .await
                    .map(|o| r.secrets.mask(&String::from_utf8_lossy(&o.stdout)))
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

/// Restores the previous files, re-runs the service handling and checks again.
/// Returns the error to report, with both results.
async fn rollback<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    role: &RolePlan,
    dests: &[&str],
    cause: StepError,
) -> StepError {
    let StepError::Failed(first) = cause else {
        return cause;
    };
    if dests.is_empty() {
        return StepError::Failed(first);
    }
    r.step("rolling back to the previous files");
    if let Err(e) = r.must("rollback", &rollback_script(dests), b"").await {
        return StepError::Failed(format!("{first}\n  rollback FAILED: {}", msg(&e)));
    }
    let again: Vec<Action> = role
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::DaemonReload | Action::Reload { .. } | Action::Restart { .. }
            )
        })
        .cloned()
        .collect();
    let second = match run_actions(r, init, &again).await {
        Ok(()) => health(r, role).await,
        Err(e) => Err(e),
    };
    match second {
        Ok(()) => StepError::Failed(format!(
            "{first}\n  rolled back: previous files restored, service healthy again"
        )),
        Err(e) => StepError::Failed(format!(
            "{first}\n  rolled back: previous files restored, but the service is still unhealthy:\n{}",
            indent(&msg(&e))
        )),
    }
}

fn msg(e: &StepError) -> String {
    match e {
        StepError::Failed(m) | StepError::Transport(m) => m.clone(),
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
            rollback_script(&["/etc/x.conf"]),
            "if [ -f /etc/.x.conf.fp-prev ]; then mv -f /etc/.x.conf.fp-prev /etc/x.conf; else rm -f /etc/x.conf; fi\n"
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
        sh(rollback_script(&[&dest, &created]));
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
    }
}
