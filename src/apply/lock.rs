//! One apply per host at a time, and an audit trail on the host.
//!
//! The lock is a file (`DIR/holder`) naming its holder, written under `flock` on
//! `DIR/guard`. It is tied to the holder's SSH connection: it records the nearest `sshd`
//! process above the locking command (the process that lives exactly as long as that
//! connection) with its start time. A lock whose process is gone (the tool crashed, the
//! connection dropped) is stale and is taken over by the next apply; a live one refuses
//! with who holds it. Ending that `sshd` process on the host is the documented way to take
//! it over by force. `plan` never locks; facts say when the lock is held so the holder's
//! in-flight temporary files are not reported as stale.
//!
//! Each apply that acquired the lock appends one line to the audit log when it releases
//! it: when, who, from where, what changed, the result. Paths, roles and actions only:
//! never contents.

use super::Remote;
use crate::plan::{FileAction, HostPlan, PathAction};
use crate::report::{ErrorKind, Outcome, Status};
use crate::shell::printable;
use crate::shell::quote;
use crate::transport::Transport;

/// Where the lock lives on a host, who this run is, and where the audit log goes.
#[derive(Debug, Clone)]
pub struct HostLock {
    /// Folder of the lock (`/run/foobar-provision`: gone at reboot, like every holder).
    pub dir: String,
    /// The audit log, one line per apply.
    pub log: String,
    /// Names of the process whose life is the lock's: `sshd`, `sshd-session` (OpenSSH
    /// 9.8 and later name the per-connection process so).
    pub holder_comms: Vec<String>,
    /// This run, unique: the lock is released only by the run that holds it.
    pub token: String,
    /// This run for people: `user@machine pid N`.
    pub who: String,
    /// How many times (a second apart) a lock held by a live apply is looked at before
    /// the host is refused.
    pub tries: u32,
}

impl HostLock {
    /// The lock of this run of the tool, on every host.
    pub fn for_this_run() -> HostLock {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        HostLock {
            dir: "/run/foobar-provision".into(),
            log: "/var/log/foobar-provision.log".into(),
            holder_comms: vec!["sshd".into(), "sshd-session".into()],
            token: format!("{pid}-{nanos}"),
            who: one_word_per_field(&format!("{user}@{machine} pid {pid}")),
            tries: 10,
        }
    }
}

/// Exit status of [`acquire_script`] when another live apply holds the lock.
pub const HELD: u32 = 3;

/// Shell functions: `st PID` prints /proc/PID/stat from its third field on (state, ppid,
/// ...; field 20 of that is the start time); `holder PID` is true when that process is of
/// the holder kind; `alive PID START` when it still runs, started at START.
fn prelude(comms: &[String]) -> String {
    let kinds: Vec<String> = comms.iter().map(|c| quote(c)).collect();
    format!(
        "st() {{ sed 's/.*) //' /proc/\"$1\"/stat 2>/dev/null; }}\n\
         holder() {{ case \"$(cat /proc/\"$1\"/comm 2>/dev/null)\" in {}) return 0;; esac; return 1; }}\n\
         alive() {{ [ -n \"$1\" ] && [ \"$(st \"$1\" | cut -d' ' -f20)\" = \"$2\" ] && holder \"$1\"; }}\n",
        kinds.join("|")
    )
}

/// Takes the lock, or exits [`HELD`] printing the holder (`who since DATE (host process
/// PID)`) after [`HostLock::tries`] looks a second apart (a run that just ended may take
/// a moment to close its connection). Prints `LOCKED` when taken.
pub fn acquire_script(l: &HostLock) -> String {
    let dir = quote(&l.dir);
    format!(
        "set -e\numask 077\nmkdir -p {dir}\n{prelude}\
         p=$$\nwhile [ \"$p\" -gt 1 ] && ! holder \"$p\"; do p=$(st \"$p\" | cut -d' ' -f2); [ -n \"$p\" ] || p=1; done\n\
         if [ \"$p\" -le 1 ]; then echo 'no sshd process above this command: cannot tie the lock to the connection' >&2; exit 1; fi\n\
         n=0\nwhile :; do\n  exec 9>{dir}/guard\n  \
         flock -w 10 9 || {{ echo 'the lock guard stayed busy for 10s' >&2; exit 1; }}\n  held=\n  \
         if [ -f {dir}/holder ]; then read -r hp hs ht rest < {dir}/holder || true; \
         if [ \"$ht\" != {token} ] && alive \"$hp\" \"$hs\"; then held=1; fi; fi\n  \
         if [ -z \"$held\" ]; then\n    \
         printf '%s %s %s %s since %s\\n' \"$p\" \"$(st \"$p\" | cut -d' ' -f20)\" {token} {who} \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" > {dir}/holder.new\n    \
         mv -f {dir}/holder.new {dir}/holder\n    echo LOCKED\n    exit 0\n  fi\n  exec 9>&-\n  \
         n=$((n+1))\n  if [ \"$n\" -ge {tries} ]; then echo \"$rest (host process $hp)\"; exit {HELD}; fi\n  sleep 1\ndone\n",
        prelude = prelude(&l.holder_comms),
        token = quote(&l.token),
        who = quote(&l.who),
        tries = l.tries.max(1),
    )
}

/// Appends `line` to the audit log (prefixed with the time and who) and releases the
/// lock if this run holds it.
pub fn release_script(l: &HostLock, line: &str) -> String {
    let dir = quote(&l.dir);
    format!(
        "umask 077\nprintf '%s %s %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {who} {line} >> {log}\n\
         exec 9>{dir}/guard\nflock -w 10 9 || exit 1\n\
         if [ -f {dir}/holder ]; then read -r hp hs ht rest < {dir}/holder || true; \
         if [ \"$ht\" = {token} ]; then rm -f {dir}/holder; fi; fi\n",
        who = quote(&l.who),
        line = quote(&one_word_per_field(line)),
        log = quote(&l.log),
        token = quote(&l.token),
    )
}

/// For the facts: prints `LOCK <who since DATE>` when a live apply holds the lock.
pub fn status_script(l: &HostLock) -> String {
    let dir = quote(&l.dir);
    format!(
        "{prelude}if [ -f {dir}/holder ] && read -r hp hs ht rest < {dir}/holder && alive \"$hp\" \"$hs\"; then echo \"LOCK $rest\"; fi\n",
        prelude = prelude(&l.holder_comms),
    )
}

/// Takes the host's apply lock; a live holder fails the host, naming it.
pub(super) async fn acquire<T: Transport>(
    r: &Remote<'_, T>,
    lock: &HostLock,
) -> Result<(), Outcome> {
    r.step("taking the apply lock");
    let out = match r.run(&acquire_script(lock), b"", r.limits.swap).await {
        Ok(out) => out,
        Err(e) => return Err(Outcome::unreachable(ErrorKind::ConnectionLost, e.message())),
    };
    let said = printable(String::from_utf8_lossy(&out.stdout).trim());
    match out.status {
        0 if said == "LOCKED" => Ok(()),
        HELD => Err(Outcome::failed(
            ErrorKind::Prepare,
            r.secrets.mask(&format!(
                "another apply holds the lock on {}: {said}; nothing was changed. It is \
                 released when that apply ends or its connection closes: wait and run again \
                 (to take it over, end that host process)",
                r.host
            )),
        )),
        status => Err(Outcome::failed(
            ErrorKind::Prepare,
            r.secrets.mask(&format!(
                "taking the apply lock failed (exit {status}): {said} {}",
                printable(String::from_utf8_lossy(&out.stderr).trim())
            )),
        )),
    }
}

/// Appends the audit line (what changed, the result) and releases the lock; best
/// effort (a lock left by a broken connection is stale already).
pub(super) async fn release<T: Transport>(
    r: &Remote<'_, T>,
    lock: &HostLock,
    plan: &HostPlan,
    outcome: &Outcome,
) {
    let result = Status::of(outcome).word();
    let mut line = format!("{result} changes={}", plan.change_count());
    if !plan.packages_to_install.is_empty() {
        line.push_str(&format!(
            " packages: {}",
            plan.packages_to_install.join(" ")
        ));
    }
    for role in &plan.roles {
        let files = role
            .files
            .iter()
            .map(|f| format!("{} {}", action_word(f.action), f.path));
        let paths = role
            .paths
            .iter()
            .map(|c| format!("{} {}", path_word(c.action), c.path));
        let actions = role.actions.iter().map(ToString::to_string);
        let all: Vec<String> = files.chain(paths).chain(actions).collect();
        if !all.is_empty() {
            line.push_str(&format!(" {}: {}", role.role, all.join(", ")));
        }
    }
    let script = release_script(lock, &r.secrets.mask(&line));
    let _ = r.run(&script, b"", super::CLEANUP_LIMIT).await;
}

/// A file action in the audit line.
fn action_word(a: FileAction) -> &'static str {
    match a {
        FileAction::Create => "create",
        FileAction::Update => "update",
        FileAction::Metadata => "owner/mode",
        FileAction::Unfinished => "finish",
    }
}

/// A directory's, link's or absent path's action in the audit line.
fn path_word(a: PathAction) -> &'static str {
    match a {
        PathAction::Mkdir => "mkdir",
        PathAction::Metadata => "owner/mode",
        PathAction::Link => "link",
        PathAction::Relink => "relink",
        PathAction::Replace => "replace",
        PathAction::Remove => "remove",
        PathAction::Unfinished => "finish",
        PathAction::Refuse => "refused",
    }
}

/// One line, printable: control characters (newlines too) become spaces.
fn one_word_per_field(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::apply::scripts::tests::sh;

    /// A lock in `dir` tied to this test process (it lives as long as the test).
    pub(in crate::apply) fn test_lock(dir: &std::path::Path, token: &str) -> HostLock {
        HostLock {
            dir: dir.join("lock").to_string_lossy().into_owned(),
            log: dir.join("audit.log").to_string_lossy().into_owned(),
            holder_comms: vec![
                std::fs::read_to_string("/proc/self/comm")
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default(),
            ],
            token: token.into(),
            who: format!("tester@ci pid {token}"),
            tries: 1,
        }
    }

    /// A holder that ends while the next run looks (a run that has just finished) is
    /// waited for, not refused.
    #[test]
    fn a_holder_that_ends_soon_is_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = test_lock(dir.path(), "B");
        l.holder_comms.push("sleep".into());
        l.tries = 8;
        let mut child = std::process::Command::new("sleep")
            .arg("2")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let start = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(19))
            .unwrap_or_default()
            .to_string();
        std::fs::create_dir_all(&l.dir).expect("mkdir");
        std::fs::write(
            format!("{}/holder", l.dir),
            format!("{pid} {start} A ci@x pid 1 since then\n"),
        )
        .expect("w");
        let reaper = std::thread::spawn(move || child.wait());
        let started = std::time::Instant::now();
        let (ok, out, err) = sh(&acquire_script(&l));
        assert!(ok && out == "LOCKED\n", "{out}{err}");
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        let _ = reaper.join();
    }

    /// Two runs: the first takes the lock, the second is refused with who holds it; once
    /// released (with its audit line) the second takes it. A holder whose process is gone
    /// (a crashed tool) is taken over.
    #[test]
    fn the_lock_refuses_a_second_apply_and_is_taken_over_when_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (test_lock(dir.path(), "A"), test_lock(dir.path(), "B"));
        let (ok, out, err) = sh(&acquire_script(&a));
        assert!(ok && out == "LOCKED\n", "{out}{err}");
        let (ok, out, _) = sh(&acquire_script(&b));
        assert!(!ok, "the second apply must be refused");
        assert!(out.starts_with("tester@ci pid A since "), "{out}");
        let (ok, _, err) = sh(&release_script(&b, "changed\nfiles=x"));
        assert!(ok, "{err}");
        let (ok, _, _) = sh(&acquire_script(&b));
        assert!(!ok, "B cannot release A's lock");
        let (ok, _, err) = sh(&release_script(&a, "changed\nfiles=/etc/x"));
        assert!(ok, "{err}");
        let log = std::fs::read_to_string(&a.log).expect("audit log");
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(
            log.ends_with(" tester@ci pid A changed files=/etc/x\n"),
            "{log}"
        );
        let (ok, out, err) = sh(&acquire_script(&b));
        assert!(ok && out == "LOCKED\n", "{out}{err}");
        assert_eq!(
            prelude(&["sshd".into(), "sshd-session".into()])
                .lines()
                .nth(1),
            Some(
                "holder() { case \"$(cat /proc/\"$1\"/comm 2>/dev/null)\" in sshd|sshd-session) return 0;; esac; return 1; }"
            )
        );
        // A holder whose process is gone: stale, taken over.
        std::fs::write(
            format!("{}/holder", a.dir),
            "999999999 1 Z ghost@gone pid 1 since then\n",
        )
        .expect("w");
        let (ok, out, err) = sh(&acquire_script(&a));
        assert!(ok && out == "LOCKED\n", "{out}{err}");
    }
}
