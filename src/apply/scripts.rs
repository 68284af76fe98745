//! The shell scripts apply runs on a host, built by pure functions and pinned by
//! exact-string tests (and, where a real filesystem tells more, run locally in a temp
//! folder). Every value in them passes through [`quote`].

use crate::plan::{Action, CertChange, CertWork, FileChange, PathAction, PathChange, PathWant};
use crate::shell::{self, Init, quote};
use std::time::Duration;

/// Where a replaced file's previous version is kept until the role is healthy.
pub(super) fn backup_path(dest: &str) -> String {
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
/// Refused first: a `dest` that exists and is not a regular file (a folder, a link), and,
/// unless the role allows it, a folder that anyone but root can write to (checked up to
/// `/` after resolving links): its users could swap links in while root works there.
pub fn upload_script(c: &FileChange) -> String {
    let (dir, base) = split_path(&c.path);
    let d = quote(&c.path);
    let folder_check = if c.file.shared_dir {
        String::new()
    } else {
        root_folder_check(
            dir,
            &c.path,
            "or set shared_dir: true on this file in role.yml",
        )
    };
    format!(
        "set -e\numask 022\nmkdir -p {dir}\n{folder_check}\
         if [ -L {d} ] || {{ [ -e {d} ] && [ ! -f {d} ]; }}; then echo \"refusing {shown}: it is not a regular file (a folder, a link, ...); move it away\" >&2; exit 1; fi\n\
         umask 077\nt=$(mktemp {tmpl})\n\
         trap 'rm -f \"$t\"' EXIT\ntrap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 141' PIPE\ntrap 'exit 143' TERM\n\
         cat > \"$t\"\nn=$(wc -c < \"$t\")\n\
         if [ \"$n\" -ne {size} ]; then echo \"upload cut short: $n of {size} bytes arrived\" >&2; exit 1; fi\n\
         chown -h {owner}:{group} \"$t\"\n\
         if [ -L \"$t\" ] || [ ! -f \"$t\" ]; then echo \"$t was replaced during the upload\" >&2; exit 1; fi\n\
         chmod {mode} \"$t\"\necho \"$t\"\ntrap - EXIT\n",
        dir = quote(dir),
        tmpl = quote(&format!("{dir}/.{base}.fp-XXXXXX")),
        shown = shown(&c.path),
        size = c.file.content.len(),
        owner = quote(&c.owner),
        group = quote(&c.group),
        mode = c.mode,
    )
}

/// Refuses (exit 1) when `dir` or a folder above it is writable by others than root: they
/// could swap a link in while we write `path`.
fn root_folder_check(dir: &str, path: &str, or: &str) -> String {
    format!(
        "p=$(readlink -f -- {dir})\nwhile :; do\n  \
         s=$(stat -c '%u %g %A' -- \"$p\")\n  u=${{s%% *}}; a=${{s##* }}; g=${{s#* }}; g=${{g%% *}}; ok=1\n  \
         [ \"$u\" = 0 ] || ok=\n  case $a in ????????w*) ok= ;; ?????w*) [ \"$g\" = 0 ] || ok= ;; esac\n  \
         if [ -z \"$ok\" ]; then echo \"refusing {shown}: the folder $p is writable by others than root \
         (uid gid mode: $s); make it root's, {or}\" >&2; exit 1; fi\n  \
         [ \"$p\" = / ] && break\n  p=${{p%/*}}; [ -n \"$p\" ] || p=/\ndone\n",
        dir = quote(dir),
        shown = shown(path),
    )
}

/// A certificate's step on the host: the key's folder must be root's; the key is made
/// when there is none (a temporary file renamed into place, 0600 from the start), its
/// owner and mode set; then, unless only the key's mode was wrong, the CSR is printed.
/// The key itself is never printed.
pub fn csr_script(c: &CertChange) -> String {
    let (dir, base) = split_path(&c.key);
    let k = quote(&c.key);
    let owner = format!("{}:{}", c.desired.owner, c.desired.group);
    let make_key = if c.new_key {
        format!(
            "t={tmp}\nrm -f -- \"$t\"\ntrap 'rm -f \"$t\"' EXIT\n\
             openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$t\" >/dev/null 2>&1 || \
             {{ echo 'openssl genpkey failed (is openssl installed?)' >&2; exit 1; }}\n\
             chown {owner} \"$t\"\nchmod 0600 \"$t\"\nmv -fT -- \"$t\" {k}\ntrap - EXIT\n",
            tmp = quote(&format!("{dir}/.{base}.fp-key")),
            owner = quote(&owner),
        )
    } else {
        format!(
            "[ -f {k} ] || {{ echo \"the key {shown} is gone\" >&2; exit 1; }}\nchown {owner} {k}\nchmod 0600 {k}\n",
            shown = shown(&c.key),
            owner = quote(&owner),
        )
    };
    let csr = if c.action == CertWork::FixKey {
        String::new()
    } else {
        format!(
            "openssl req -new -key {k} -subj {subj} -sha256\n",
            subj = quote(&format!("/CN={}", c.desired.spec.common_name)),
        )
    };
    format!(
        "set -e\numask 022\nmkdir -p {d}\n{check}\
         if [ -L {k} ] || {{ [ -e {k} ] && [ ! -f {k} ]; }}; then echo \"refusing {shown}: it is not a regular file\" >&2; exit 1; fi\n\
         umask 077\n{make_key}{csr}",
        d = quote(dir),
        check = root_folder_check(dir, &c.key, "or keep the key elsewhere"),
        shown = shown(&c.key),
    )
}

/// A path inside a double-quoted `echo` argument: quoted for the shell, with what a
/// double quote would expand (`$`, backquote, backslash, `"`) escaped.
fn shown(path: &str) -> String {
    path.chars()
        .map(|c| {
            if matches!(c, '$' | '`' | '\\' | '"') {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
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
    // The command on lines of its own: a `#` in it cannot comment out the redirection.
    s.push_str(&format!(
        "(\n{}\n) 2>&1\n",
        command.replace("{tree}", "\"$s\"")
    ));
    s
}

/// Swaps every staged file into place. A target that exists is hard-linked to its backup
/// name so a rollback can restore it, unless a backup is there already: an unfinished
/// apply's backup is the last version that passed its health checks, and is kept.
/// All or nothing: each live file is also linked to an undo name (`.NAME.fp-XXXXXX`, so
/// a crash leaves only what facts reports as stale); when a rename fails (its temporary
/// file vanished, the disk is read-only), `undo` puts back exactly what was live, removes
/// the backups this script made, and the script exits 1.
pub fn swap_script(staged: &[(String, String)]) -> String {
    let mut vars = String::from("n=0\n");
    let mut undos: Vec<String> = Vec::new();
    let mut undo = String::from("undo() {\n");
    let mut backups = String::new();
    let mut renames = String::new();
    for (i, (dest, tmp)) in staged.iter().enumerate() {
        let k = i + 1;
        let (dir, base) = split_path(dest);
        let d = quote(dest);
        let b = quote(&backup_path(dest));
        vars.push_str(&format!("u{k}=\nb{k}=\n"));
        undos.push(format!("\"$u{k}\""));
        undo.push_str(&format!(
            "  if [ $n -ge {k} ]; then if [ -n \"$u{k}\" ]; then mv -fT \"$u{k}\" {d}; else rm -f {d}; fi; fi\n  \
             if [ -n \"$b{k}\" ]; then rm -f {b}; fi\n"
        ));
        backups.push_str(&format!(
            "if [ -L {d} ] || {{ [ -e {d} ] && [ ! -f {d} ]; }}; then echo \"refusing {shown}: it is not a regular file \
             (a folder, a link, ...); move it away\" >&2; undo; fi\n\
             if [ -f {d} ]; then u{k}=$(mktemp {tmpl}) && ln -fT {d} \"$u{k}\" || undo; \
             if [ ! -e {b} ] && [ ! -L {b} ]; then ln -T {d} {b} || undo; b{k}=1; fi; else rm -f {b}; fi\n",
            tmpl = quote(&format!("{dir}/.{base}.fp-XXXXXX")),
            shown = shown(dest),
        ));
        renames.push_str(&format!("mv -fT {t} {d} || undo\nn={k}\n", t = quote(tmp)));
    }
    undo.push_str("  exit 1\n}\n");
    let trap = format!(
        "trap 'for u in {}; do [ -z \"$u\" ] || rm -f -- \"$u\"; done' EXIT\n",
        undos.join(" ")
    );
    format!("{vars}{trap}{undo}{backups}{renames}")
}

/// A file whose owner or mode was changed in place, with what they were before.
#[derive(Clone, Copy)]
pub struct MetaBefore<'a> {
    pub path: &'a str,
    /// `owner:group` before, when it changed.
    pub owner: Option<&'a str>,
    /// Octal mode before, when it changed.
    pub mode: Option<&'a str>,
}

/// Puts the previous versions back (a file that did not exist before is removed) and the
/// previous owner and mode of files changed in place, then runs `then` (lines that set
/// `rc=1` on a failure: [`paths_rollback`]). Goes on past a failure; exits 1 if anything
/// could not be restored.
pub fn rollback_script(dests: &[&str], meta: &[MetaBefore], then: &str) -> String {
    let mut s = String::from("rc=0\n");
    for dest in dests {
        let d = quote(dest);
        let b = quote(&backup_path(dest));
        s.push_str(&format!(
            "if [ -f {b} ] && [ ! -L {b} ]; then mv -fT {b} {d} || rc=1; else rm -f {d} || rc=1; fi\n"
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
    s.push_str(then);
    s.push_str("exit $rc\n");
    s
}

// ---- directories, links and absent paths -------------------------------------------

/// Shell tests for "`p` exists (a dangling link too)" and "`p` is a folder, not a link".
fn exists(p: &str) -> String {
    format!("{{ [ -e {p} ] || [ -L {p} ]; }}")
}
fn is_dir(p: &str) -> String {
    format!("{{ [ -d {p} ] && [ ! -L {p} ]; }}")
}

/// Exits 1 when the folder `p` (quoted) holds anything: shell globs, no process.
fn refuse_entries(p: &str, shown_p: &str) -> String {
    format!(
        "for e in {p}/* {p}/.[!.]* {p}/..?*; do if [ -e \"$e\" ] || [ -L \"$e\" ]; then \
         echo \"refusing {shown_p}: it is a directory with entries (never deleted); move them away\" >&2; exit 1; fi; done\n"
    )
}

/// The octal mode for `chmod` on a folder: five digits, so that GNU chmod clears a
/// set-group-ID bit the plan saw (with four or fewer it keeps it on folders).
fn dir_mode(mode: &str) -> String {
    format!("0{mode}")
}

/// A role's folder (before its files): made (root's folders above it made too), its owner
/// and mode set, or something else at its path moved to the backup name first (the
/// backup is deleted once the role is healthy). Refused when the parent folder, or one
/// above it, is writable by others than root. Undoes itself when it fails half-way.
pub fn directory_script(c: &PathChange) -> String {
    let PathWant::Directory { mode, owner, group } = &c.want else {
        return "echo 'not a directory' >&2; exit 1\n".to_string();
    };
    let (dir, _) = split_path(&c.path);
    let p = quote(&c.path);
    let b = quote(&backup_path(&c.path));
    let shown_p = shown(&c.path);
    let owner = quote(&format!("{owner}:{group}"));
    let mode = dir_mode(mode);
    let make = format!(
        "umask 077\n{{ mkdir -- {p} && chown -h {owner} -- {p} && chmod {mode} -- {p}; }} || {{ rmdir -- {p} 2>/dev/null; {undo}exit 1; }}\n",
        undo = if c.action == PathAction::Replace {
            format!("if [ -n \"$moved\" ]; then mv -fT -- {b} {p}; fi; ")
        } else {
            String::new()
        }
    );
    let work = match c.action {
        PathAction::Mkdir => format!(
            "if {}; then echo \"refusing {shown_p}: something is there since the plan; run again\" >&2; exit 1; fi\n{make}",
            exists(&p)
        ),
        PathAction::Replace => format!(
            "if ! {e} || {d}; then echo \"refusing {shown_p}: it changed since the plan; run again\" >&2; exit 1; fi\n\
             moved=\nif {eb}; then rm -f -- {p} || exit 1; else mv -fT -- {p} {b} || exit 1; moved=1; fi\n{make}",
            e = exists(&p),
            d = is_dir(&p),
            eb = exists(&b),
        ),
        PathAction::Metadata => format!(
            "if ! {d}; then echo \"refusing {shown_p}: it is no longer a directory; run again\" >&2; exit 1; fi\n\
             chown -h {owner} -- {p} && chmod {mode} -- {p} || {{ {undo}exit 1; }}\n",
            d = is_dir(&p),
            undo = meta_undo(c),
        ),
        _ => return "exit 0\n".to_string(),
    };
    format!(
        "umask 022\nmkdir -p -- {d} || exit 1\n{check}{work}",
        d = quote(dir),
        check = root_folder_check(dir, &c.path, "or choose a path in root's folders"),
    )
}

/// Puts a folder's owner and mode back as the plan saw them (where they differed).
fn meta_undo(c: &PathChange) -> String {
    let p = quote(&c.path);
    let mut s = String::new();
    if let Some(o) = &c.old_owner {
        s.push_str(&format!("chown -h {} -- {p}; ", quote(o)));
    }
    if let Some(m) = &c.old_mode {
        s.push_str(&format!("chmod {} -- {p}; ", quote(&dir_mode(m))));
    }
    s
}

/// A role's link, renamed into place: `ln -s` makes it under a new name beside the path
/// (`.NAME.fp-XXXXXX`), then `mv -T` renames it over the path (rename(2): atomic). What
/// was there is kept as the backup (a hard link to a file or link; an empty folder, which
/// no rename can replace, is moved there first), unless an unfinished apply's backup is
/// there already: it is the last version that passed its health checks, and is kept.
/// Refused: a folder with entries, a parent writable by others than root. Undoes itself
/// when it fails half-way.
pub fn link_script(c: &PathChange) -> String {
    let PathWant::Link { target } = &c.want else {
        return "echo 'not a link' >&2; exit 1\n".to_string();
    };
    let (dir, base) = split_path(&c.path);
    let p = quote(&c.path);
    let b = quote(&backup_path(&c.path));
    format!(
        "umask 022\nmkdir -p -- {d} || exit 1\n{check}\
         if {isdir}; then\n{entries}fi\n\
         t=$(mktemp -u {tmpl}) && ln -sT -- {target} \"$t\" || exit 1\n\
         trap 'rm -f -- \"$t\"' EXIT\n\
         made=\n\
         if {isdir}; then\n  \
         if {eb}; then rmdir -- {p} || exit 1; else mv -T -- {p} {b} || exit 1; made=dir; fi\n\
         elif {e}; then\n  \
         if ! {eb}; then ln -PT -- {p} {b} || exit 1; made=link; fi\n\
         elif {eb}; then\n  \
         if {isdirb}; then rmdir -- {b}; else rm -f -- {b}; fi || exit 1\n\
         fi\n\
         mv -fT -- \"$t\" {p} || {{ case $made in dir) mv -T -- {b} {p} ;; link) rm -f -- {b} ;; esac; exit 1; }}\n",
        d = quote(dir),
        check = root_folder_check(dir, &c.path, "or choose a path in root's folders"),
        isdir = is_dir(&p),
        isdirb = is_dir(&b),
        e = exists(&p),
        eb = exists(&b),
        entries = refuse_entries(&p, &shown(&c.path)),
        tmpl = quote(&format!("{dir}/.{base}.fp-XXXXXX")),
        target = quote(target),
    )
}

/// A path that must be absent: renamed to its backup name (atomic), deleted once the role
/// is healthy; when an unfinished apply's backup is there already, the path is deleted
/// at once (the backup is the last version that passed its health checks). A folder with
/// entries, or a parent writable by others than root, is refused.
pub fn absent_script(c: &PathChange) -> String {
    let (dir, _) = split_path(&c.path);
    let p = quote(&c.path);
    let b = quote(&backup_path(&c.path));
    format!(
        "if ! {e}; then exit 0; fi\n{check}\
         if {isdir}; then\n{entries}fi\n\
         if {eb}; then\n  \
         if {isdir}; then rmdir -- {p}; else rm -f -- {p}; fi\n\
         else\n  mv -T -- {p} {b}\nfi\n",
        check = root_folder_check(dir, &c.path, "or choose a path in root's folders"),
        e = exists(&p),
        isdir = is_dir(&p),
        eb = exists(&b),
        entries = refuse_entries(&p, &shown(&c.path)),
    )
}

/// Rollback lines (for [`rollback_script`]'s `then`) for the path changes done, last
/// first: a link or removed path gets its backup back (a link that did not exist is
/// removed), a folder made is removed when empty, a replaced one gives way to its backup.
/// A folder's owner and mode go back through [`MetaBefore`].
pub fn paths_rollback(done: &[&PathChange]) -> String {
    let mut s = String::new();
    for c in done.iter().rev() {
        let p = quote(&c.path);
        let b = quote(&backup_path(&c.path));
        let (e, eb, isdir) = (exists(&p), exists(&b), is_dir(&p));
        let line = match (&c.want, c.action) {
            (PathWant::Directory { .. }, PathAction::Mkdir) => {
                // Emptied by the files' rollback before; anything else in it is kept.
                format!("if {isdir}; then rmdir -- {p} 2>/dev/null || true; fi\n")
            }
            (PathWant::Directory { .. }, PathAction::Replace | PathAction::Unfinished) => {
                format!("if {eb}; then {{ rmdir -- {p} && mv -fT -- {b} {p}; }} || rc=1; fi\n")
            }
            (PathWant::Directory { .. }, _) => continue,
            (PathWant::Link { .. }, _) => format!(
                "if {eb}; then if {isdirb} && [ -L {p} ]; then rm -f -- {p}; fi; mv -fT -- {b} {p} || rc=1; \
                 elif [ -L {p} ]; then rm -f -- {p} || rc=1; fi\n",
                isdirb = is_dir(&b),
            ),
            (PathWant::Absent, _) => format!(
                "if {eb}; then if {e}; then echo \"{shown_p} is there again: its backup {shown_b} is kept\" >&2; rc=1; \
                 else mv -T -- {b} {p} || rc=1; fi; fi\n",
                shown_p = shown(&c.path),
                shown_b = shown(&backup_path(&c.path)),
            ),
        };
        s.push_str(&line);
    }
    s
}

/// Deletes the backups beside these paths once the role is healthy: a folder with
/// `rmdir` (it was empty: nothing is ever deleted recursively), anything else with
/// `rm -f`. Exits 1 if one is left.
pub fn path_backups_script(paths: &[&str]) -> String {
    let mut s = String::from("rc=0\n");
    for p in paths {
        let b = quote(&backup_path(p));
        s.push_str(&format!(
            "if {}; then rmdir -- {b} || rc=1; else rm -f -- {b} || rc=1; fi\n",
            is_dir(&b)
        ));
    }
    s.push_str("exit $rc\n");
    s
}

/// The command for one of a role's actions.
pub(super) fn action_command(init: Init, a: &Action) -> String {
    match a {
        Action::DaemonReload => "systemctl daemon-reload".to_string(),
        Action::Reload { service } => shell::service_command(init, "reload", service),
        Action::Restart { service } => shell::service_command(init, "restart", service),
        Action::Start { service } => shell::service_command(init, "start", service),
        Action::Enable { service } => shell::service_command(init, "enable", service),
        Action::Run { command, .. } => command.clone(),
    }
}

/// The first wait after a failed health check try; each next one doubles, up to the
/// check's interval.
pub const FIRST_RETRY_MS: u64 = 50;

/// The waits after a check's first failed tries that are shorter than its interval:
/// 50, 100, 200, ... ms (a service that is up 120 ms after its reload is seen then, not
/// an interval later). Every later wait is the interval.
pub fn quick_retries(interval_ms: u64) -> Vec<u64> {
    std::iter::successors(Some(FIRST_RETRY_MS), |w| w.checked_mul(2))
        .take_while(|w| *w < interval_ms)
        .collect()
}

/// The time a check may spend waiting after failures before it gives up: what `retries`
/// failed tries one interval apart waited (the budget of the rule before quick retries).
pub fn failure_budget_ms(retries: u32, interval_ms: u64) -> u64 {
    u64::from(retries.saturating_sub(1)).saturating_mul(interval_ms)
}

/// `ms` as `sleep`'s seconds (`0.050`).
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A health check loop, run on the host: the command must succeed twice in a row, one
/// interval apart. Once is not enough: `systemctl reload` returns before most daemons
/// serve the new configuration (Nginx's old workers answer for tens of milliseconds
/// more), so a single early success would vouch for the old one. The first try starts at
/// once; after a failed try the next comes after 50, 100, 200, ... ms, then an interval
/// ([`quick_retries`]); the check fails at a failed try once the waits after failures
/// add up to `retries - 1` intervals ([`failure_budget_ms`]: when the rule of a try per
/// interval gave up). Each try is bounded by `try_limit` (a try that overstays is a
/// failure).
pub fn health_script(command: &str, retries: u32, interval_ms: u64, try_limit: Duration) -> String {
    let quick: Vec<String> = quick_retries(interval_ms)
        .into_iter()
        .map(|ms| format!("{ms}:{}", seconds(ms)))
        .collect();
    format!(
        "set -- {quick}\nok=0\nwaited=0\nwhile :; do\n  if out=$(timeout -k 5 {limit} sh -c {command} 2>&1); then\n    ok=$((ok+1))\n    if [ \"$ok\" -ge 2 ]; then exit 0; fi\n    sleep {secs}\n  else\n    ok=0\n    if [ \"$waited\" -ge {budget} ]; then printf '%s\\n' \"$out\"; exit 1; fi\n    if [ $# -gt 0 ]; then w=$1; shift; else w={interval}:{secs}; fi\n    waited=$((waited+${{w%%:*}}))\n    sleep \"${{w#*:}}\"\n  fi\ndone\n",
        quick = quick.join(" "),
        limit = try_limit.as_secs().max(1),
        command = quote(command),
        secs = seconds(interval_ms),
        interval = interval_ms,
        budget = failure_budget_ms(retries, interval_ms),
    )
}

/// Removes files (temporary files, backups), quoted, `--` before them. Missing ones are
/// not an error.
pub(super) fn remove_script<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = paths.into_iter().map(quote).collect();
    format!("rm -f -- {}", quoted.join(" "))
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::plan::FileAction;

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
            "n=0\nu1=\nb1=\n\
             trap 'for u in \"$u1\"; do [ -z \"$u\" ] || rm -f -- \"$u\"; done' EXIT\n\
             undo() {\n  \
             if [ $n -ge 1 ]; then if [ -n \"$u1\" ]; then mv -fT \"$u1\" /etc/x.conf; else rm -f /etc/x.conf; fi; fi\n  \
             if [ -n \"$b1\" ]; then rm -f /etc/.x.conf.fp-prev; fi\n  exit 1\n}\n\
             if [ -L /etc/x.conf ] || { [ -e /etc/x.conf ] && [ ! -f /etc/x.conf ]; }; then \
             echo \"refusing /etc/x.conf: it is not a regular file (a folder, a link, ...); move it away\" >&2; undo; fi\n\
             if [ -f /etc/x.conf ]; then u1=$(mktemp /etc/.x.conf.fp-XXXXXX) && ln -fT /etc/x.conf \"$u1\" || undo; \
             if [ ! -e /etc/.x.conf.fp-prev ] && [ ! -L /etc/.x.conf.fp-prev ]; then ln -T /etc/x.conf /etc/.x.conf.fp-prev || undo; b1=1; fi; \
             else rm -f /etc/.x.conf.fp-prev; fi\n\
             mv -fT /etc/.x.conf.fp-abc /etc/x.conf || undo\nn=1\n"
        );
        assert_eq!(
            rollback_script(&["/etc/x.conf"], &[], ""),
            "rc=0\nif [ -f /etc/.x.conf.fp-prev ] && [ ! -L /etc/.x.conf.fp-prev ]; then mv -fT /etc/.x.conf.fp-prev /etc/x.conf || rc=1; \
             else rm -f /etc/x.conf || rc=1; fi\nexit $rc\n"
        );
        assert_eq!(
            rollback_script(
                &[],
                &[MetaBefore {
                    path: "/etc/a b",
                    owner: Some("root:adm"),
                    mode: Some("0640")
                }],
                ""
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
        let mut left = fp_files(&dir);
        left.sort();
        assert_eq!(left, [".live.conf.fp-prev"], "only the backup remains");
        sh(rollback_script(&[&dest, &created], &[], ""));
        assert_eq!(std::fs::read_to_string(&dest).expect("r"), "old");
        assert!(!std::path::Path::new(&created).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs `script` with `sh` under a 20 s timeout; returns (success, stdout, stderr).
    pub(crate) fn sh(script: &str) -> (bool, String, String) {
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", script])
            .output()
            .expect("timeout sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn read(p: &str) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
    }

    /// Issue 10, finding 3: a role with two files; the first is renamed into place, then
    /// the second `mv` fails (its temporary file was removed meanwhile). Before the fix
    /// `a=new, b=old` stayed live. The swap must put the first file back, leave no backup
    /// (nothing is unfinished) and fail.
    #[test]
    fn a_failed_swap_puts_back_the_files_already_swapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let (a, b, created) = (p("a.conf"), p("b.conf"), p("c.conf"));
        std::fs::write(&a, "old a").expect("w");
        std::fs::write(&b, "old b").expect("w");
        std::fs::write(p(".a.conf.fp-000001"), "new a").expect("w");
        std::fs::write(p(".c.conf.fp-000003"), "new c").expect("w");
        // .b.conf.fp-000002 is missing: its mv fails.
        let (ok, _, err) = sh(&swap_script(&[
            (a.clone(), p(".a.conf.fp-000001")),
            (created.clone(), p(".c.conf.fp-000003")),
            (b.clone(), p(".b.conf.fp-000002")),
        ]));
        assert!(!ok, "the swap must fail");
        assert!(err.contains("b.conf"), "{err}");
        assert_eq!(read(&a), "old a", "the file already swapped is put back");
        assert_eq!(read(&b), "old b");
        assert!(
            !std::path::Path::new(&created).exists(),
            "a created file is removed"
        );
        assert!(
            !std::path::Path::new(&backup_path(&a)).exists(),
            "no backup left: nothing is unfinished"
        );
    }

    /// Issue 10, finding 10: an apply swapped v2 in over v1 and stopped before its health
    /// checks (the backup, v1, is still there); then the template changed to v3. Before the
    /// fix the swap's `ln -f` replaced the backup by v2, so a failed health check
    /// "restored" v2, which never passed one. The oldest backup is kept; and a swap that
    /// fails later puts back exactly what was live (v2), the backup still v1.
    #[test]
    fn a_swap_over_an_unfinished_apply_keeps_the_oldest_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let (a, bak) = (p("a.conf"), p(".a.conf.fp-prev"));
        std::fs::write(&a, "v2").expect("w");
        std::fs::write(&bak, "v1").expect("w");
        std::fs::write(p(".a.conf.fp-000003"), "v3").expect("w");
        let (ok, _, err) = sh(&swap_script(&[
            (a.clone(), p(".a.conf.fp-000003")),
            (p("b.conf"), p(".b.conf.fp-missing")),
        ]));
        assert!(!ok, "the second rename fails");
        assert_eq!((read(&a), read(&bak)), ("v2".into(), "v1".into()), "{err}");
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".fp-") && n != ".a.conf.fp-prev")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        std::fs::write(p(".a.conf.fp-000004"), "v3").expect("w");
        let (ok, _, err) = sh(&swap_script(&[(a.clone(), p(".a.conf.fp-000004"))]));
        assert!(ok, "{err}");
        assert_eq!((read(&a), read(&bak)), ("v3".into(), "v1".into()));
        let (ok, _, err) = sh(&rollback_script(&[&a], &[], ""));
        assert!(ok, "{err}");
        assert_eq!(
            read(&a),
            "v1",
            "the rollback restores the last healthy version"
        );
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
            s.ends_with("(\nnginx -t -q -c \"$s\"/nginx.conf\n) 2>&1\n"),
            "{s}"
        );
    }

    /// A `#` in a validator (review finding 13, the same as for drift checks) commented
    /// out the `2>&1` after it: the validator's complaints on stderr were lost.
    #[test]
    fn a_comment_in_a_tree_validator_keeps_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().to_string_lossy().into_owned();
        let s = tree_validate_script(&tree, "echo refused >&2; false # why", &[]);
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", &s])
            .output()
            .expect("sh");
        assert!(!out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "refused\n");
    }

    #[test]
    fn remove_script_quotes_every_path_after_the_end_of_options() {
        assert_eq!(
            remove_script(["/etc/a b", "/etc/.c.fp-prev"]),
            "rm -f -- '/etc/a b' /etc/.c.fp-prev"
        );
    }

    #[test]
    fn health_loop_retries_then_reports_output() {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(health_script(
                "echo nope; false",
                2,
                10,
                Duration::from_secs(5),
            ))
            .output()
            .expect("sh");
        assert!(!st.status.success());
        assert_eq!(String::from_utf8_lossy(&st.stdout), "nope\n");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(health_script("true", 2, 10, Duration::from_secs(5)))
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
            .arg(health_script(&flaky, 3, 10, Duration::from_secs(5)))
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
            restart_because: None,
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
        // A script that refuses before reading its stdin closes the pipe: a broken pipe is
        // its answer, not the test's failure (seen once in `tests/run --offline`).
        if let Err(e) = child.stdin.take().expect("stdin").write_all(stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write: {e}");
        }
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
        let mut c = change(&dest, b"0123456789");
        c.file.shared_dir = true; // under /tmp, writable by everyone

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

    /// Issue 10, finding 4: in a folder a non-root user can write to (a web root owned by
    /// www-data), that user can swap the temporary file for a link between the upload and
    /// `chown`/`chmod` (root then changes another file's mode) or plant a backup. Before
    /// the fix the upload went ahead; now it is refused with a clear error unless the
    /// role says the folder may be shared.
    #[test]
    fn upload_refuses_a_folder_others_can_write_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("www");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let dest = shared.join("index.html").to_string_lossy().into_owned();
        let (ok, out, err) = upload_locally(&change(&dest, b"hi"), b"hi");
        assert!(!ok, "must be refused: {out}");
        assert!(
            err.contains("is writable by others than root")
                && err.contains(&*shared.to_string_lossy()),
            "{err}"
        );
        assert!(fp_files(&shared).is_empty(), "{:?}", fp_files(&shared));
        assert!(upload_script(&change(&dest, b"hi")).contains("\nchown -h "));
        let mut allowed = change(&dest, b"hi");
        allowed.file.shared_dir = true;
        let (ok, out, err) = upload_locally(&allowed, b"hi");
        assert!(ok, "{err}");
        assert!(out.trim().contains("/.index.html.fp-"), "{out}");
    }

    /// Issue 10, finding 4: a dest that is a folder today was planned "create" forever,
    /// and `mv` moved the temporary file into it. A dest that exists and is not a regular
    /// file (folder, link) is refused by the upload and by the swap (`mv -T`).
    #[test]
    fn a_dest_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::create_dir(p("conf.d")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", p("link.conf")).expect("ln");
        for dest in [p("conf.d"), p("link.conf")] {
            let mut c = change(&dest, b"x");
            c.file.shared_dir = true; // tempdirs live under /tmp
            let (ok, out, err) = upload_locally(&c, b"x");
            assert!(!ok, "{dest}: {out}");
            assert!(err.contains("is not a regular file"), "{err}");
            std::fs::write(p(".t.fp-000001"), "x").expect("w");
            let (ok, _, err) = sh(&swap_script(&[(dest.clone(), p(".t.fp-000001"))]));
            assert!(!ok, "{dest}");
            assert!(err.contains("is not a regular file"), "{err}");
        }
        assert!(std::fs::metadata(p("conf.d")).expect("stat").is_dir());
        assert_eq!(
            std::fs::read_link(p("link.conf")).expect("link"),
            std::path::Path::new("/etc/passwd")
        );
    }

    #[test]
    fn quick_retries_double_from_50_ms_below_the_interval() {
        assert_eq!(quick_retries(500), [50, 100, 200, 400]);
        assert_eq!(quick_retries(1000), [50, 100, 200, 400, 800]);
        assert_eq!(quick_retries(800), [50, 100, 200, 400]);
        assert_eq!(quick_retries(51), [50]);
        assert!(quick_retries(50).is_empty());
        assert!(quick_retries(0).is_empty());
        assert_eq!(quick_retries(60_000).last(), Some(&51_200));
        assert_eq!(failure_budget_ms(10, 500), 4500);
        assert_eq!(
            failure_budget_ms(1, 500),
            0,
            "one try: the first failure fails"
        );
        assert_eq!(failure_budget_ms(0, 500), 0);
    }

    #[test]
    fn health_script_is_the_quick_waits_then_the_interval() {
        let s = health_script("curl -fsS x", 3, 250, Duration::from_secs(30));
        assert_eq!(
            s,
            "set -- 50:0.050 100:0.100 200:0.200\nok=0\nwaited=0\nwhile :; do\n  \
             if out=$(timeout -k 5 30 sh -c 'curl -fsS x' 2>&1); then\n    ok=$((ok+1))\n    \
             if [ \"$ok\" -ge 2 ]; then exit 0; fi\n    sleep 0.250\n  else\n    ok=0\n    \
             if [ \"$waited\" -ge 500 ]; then printf '%s\\n' \"$out\"; exit 1; fi\n    \
             if [ $# -gt 0 ]; then w=$1; shift; else w=250:0.250; fi\n    \
             waited=$((waited+${w%%:*}))\n    sleep \"${w#*:}\"\n  fi\ndone\n"
        );
    }

    /// The times (ms since the epoch) at which a check's tries ran: `check` appends one
    /// line per try to `log` and succeeds from try `up` on.
    fn timed_tries(up: u32, retries: u32, interval_ms: u64) -> (bool, Vec<u128>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("tries");
        let check = format!(
            "date +%s%N >> {log}; [ $(wc -l < {log}) -ge {up} ]",
            log = quote(&log.to_string_lossy())
        );
        let (ok, _, _) = sh(&health_script(
            &check,
            retries,
            interval_ms,
            Duration::from_secs(5),
        ));
        let tries = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u128>().ok().map(|ns| ns / 1_000_000))
            .collect();
        (ok, tries)
    }

    /// Issue 12: a service up 150 ms after its reload is seen then, not an interval
    /// later; the two passes are still one interval apart.
    #[test]
    fn failed_tries_are_retried_quickly_and_passes_stay_an_interval_apart() {
        let (ok, t) = timed_tries(3, 2, 1500);
        assert!(ok, "{t:?}");
        assert_eq!(t.len(), 4, "fail, fail, pass, pass: {t:?}");
        assert!(t[1] - t[0] < 1000, "50 ms, not an interval: {t:?}");
        assert!(t[2] - t[1] < 1000, "100 ms, not an interval: {t:?}");
        assert!(t[3] - t[2] >= 1500, "the passes one interval apart: {t:?}");
    }

    /// Issue 12: quick retries do not give up sooner than a try per interval did.
    #[test]
    fn a_failing_check_waits_its_retries_intervals_before_it_fails() {
        let (ok, t) = timed_tries(100, 3, 300);
        assert!(!ok, "{t:?}");
        // 50 + 100 + 200 + 300 ms of waits (>= 2 intervals), then the fifth try fails it.
        assert_eq!(t.len(), 5, "{t:?}");
        let span = t[4] - t[0];
        assert!(span >= 600, "at least (retries - 1) intervals: {t:?}");
    }

    /// Issue 10, finding 16: a health command that hangs is one failed try, not a hang.
    #[test]
    fn a_hung_health_command_is_a_failed_try() {
        let started = std::time::Instant::now();
        let (ok, _, _) = sh(&health_script("sleep 30", 2, 10, Duration::from_secs(1)));
        assert!(!ok);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn status_script_reads_the_journal_raw() {
        assert_eq!(
            status_script("mariadb"),
            "systemctl status --no-pager -l -n 0 mariadb 2>&1 | head -n 12\n\
             if command -v journalctl >/dev/null; then journalctl -a -q --no-pager -n 15 -u mariadb 2>&1; fi\n"
        );
    }

    // ---- certificates ---------------------------------------------------------------

    fn cert_change(dir: &std::path::Path, work: CertWork, new_key: bool) -> CertChange {
        let key = dir.join("tls/web.key").to_string_lossy().into_owned();
        CertChange {
            cert: dir.join("tls/web.crt").to_string_lossy().into_owned(),
            key: key.clone(),
            action: work,
            reason: "test".into(),
            new_key,
            names: vec!["DNS:web1".into()],
            old_key_meta: None,
            notify: crate::role::Notify::None,
            desired: crate::desired::DesiredCert {
                cert: String::new(),
                key,
                owner: "root".into(),
                group: "root".into(),
                spec: crate::pki::CertSpec {
                    common_name: "web1".into(),
                    sans: vec![crate::pki::San::Dns("web1".into())],
                    validity_days: 90,
                },
                notify: crate::role::Notify::None,
            },
        }
    }

    fn mode_of(p: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    /// On the real filesystem (the folder check wants root's folders: run as root, as
    /// CI does; skipped otherwise): the key is made 0600 and kept, a CSR comes back and
    /// signs, the key never shows in the output, a drifted mode is fixed alone.
    #[test]
    fn the_csr_script_makes_the_key_once_and_prints_only_the_request() {
        if !sh("[ \"$(id -u)\" = 0 ] && command -v openssl >/dev/null").0 {
            eprintln!("skipped: needs root (the key's folder must be root's) and openssl");
            return;
        }
        // Under /run (root's, 0755): every folder above the key must be root's and
        // writable by root only, which a checkout under /tmp (cargo mutants) is not.
        let dir = tempfile::tempdir_in("/run").expect("tempdir");
        sh(&format!(
            "chmod 0755 {}",
            quote(&dir.path().to_string_lossy())
        ));
        let c = cert_change(dir.path(), CertWork::Issue, true);

        let (ok, out, err) = sh(&csr_script(&c));
        assert!(ok, "{out}{err}");
        let key = std::fs::read_to_string(&c.key).expect("the key is made");
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(mode_of(&c.key), 0o600);
        assert!(
            !out.contains("PRIVATE") && !err.contains("PRIVATE"),
            "{out}{err}"
        );
        let (ca_cert, ca_key) = crate::pki::testing::test_ca("CA");
        let ca = crate::pki::Ca::load(&ca_cert, &ca_key).expect("ca");
        ca.sign(&out, &c.desired.spec, std::time::SystemTime::now())
            .expect("the request signs");

        // Renewal: the same key, a new request.
        let again = cert_change(dir.path(), CertWork::Renew, false);
        let (ok, out2, err) = sh(&csr_script(&again));
        assert!(ok, "{out2}{err}");
        assert_eq!(
            std::fs::read_to_string(&c.key).expect("key"),
            key,
            "key kept"
        );
        assert!(out2.contains("BEGIN CERTIFICATE REQUEST"));

        // A drifted mode: fixed, no request.
        sh(&format!("chmod 0644 {}", quote(&c.key)));
        let fix = cert_change(dir.path(), CertWork::FixKey, false);
        let (ok, out3, err) = sh(&csr_script(&fix));
        assert!(ok, "{out3}{err}");
        assert_eq!(mode_of(&c.key), 0o600);
        assert!(!out3.contains("REQUEST"), "{out3}");

        // A link where the key goes is refused, and nothing is made through it.
        std::fs::remove_file(&c.key).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", &c.key).expect("link");
        let (ok, _, err) = sh(&csr_script(&c));
        assert!(!ok && err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn the_csr_script_never_reads_the_key_out_and_quotes_what_it_names() {
        let dir = std::path::Path::new("/etc/it's here");
        let s = csr_script(&cert_change(dir, CertWork::Issue, true));
        assert!(s.contains("openssl genpkey -algorithm EC"), "{s}");
        assert!(s.contains("'/etc/it'\\''s here/tls/web.key'"), "{s}");
        for never in ["cat ", "base64", "-text", "-outform"] {
            assert!(!s.contains(never), "`{never}` in {s}");
        }
        let s = csr_script(&cert_change(dir, CertWork::Renew, false));
        assert!(
            !s.contains("genpkey") && s.contains("openssl req -new -key"),
            "{s}"
        );
    }

    // ---- directories, links and absent paths ------------------------------------------

    fn path_change(path: &str, want: PathWant, action: PathAction) -> PathChange {
        PathChange::new(path, want, action, &crate::role::Notify::None)
    }

    fn dir_want(mode: &str, owner: &str, group: &str) -> PathWant {
        PathWant::Directory {
            mode: mode.into(),
            owner: owner.into(),
            group: group.into(),
        }
    }

    fn link_want(target: &str) -> PathWant {
        PathWant::Link {
            target: target.into(),
        }
    }

    const OR: &str = "or choose a path in root's folders";

    #[test]
    fn directory_scripts_are_exact() {
        let path = "/var/www/foo bar";
        let head = format!(
            "umask 022\nmkdir -p -- /var/www || exit 1\n{}",
            root_folder_check("/var/www", path, OR)
        );
        let make = |undo: &str| {
            format!(
                "umask 077\n{{ mkdir -- '/var/www/foo bar' && chown -h root:root -- '/var/www/foo bar' && chmod 00755 -- '/var/www/foo bar'; }} \
                 || {{ rmdir -- '/var/www/foo bar' 2>/dev/null; {undo}exit 1; }}\n"
            )
        };
        let want = dir_want("0755", "root", "root");
        assert_eq!(
            directory_script(&path_change(path, want.clone(), PathAction::Mkdir)),
            format!(
                "{head}if {{ [ -e '/var/www/foo bar' ] || [ -L '/var/www/foo bar' ]; }}; then \
                 echo \"refusing /var/www/foo bar: something is there since the plan; run again\" >&2; exit 1; fi\n{}",
                make("")
            )
        );
        assert_eq!(
            directory_script(&path_change(path, want.clone(), PathAction::Replace)),
            format!(
                "{head}if ! {{ [ -e '/var/www/foo bar' ] || [ -L '/var/www/foo bar' ]; }} || \
                 {{ [ -d '/var/www/foo bar' ] && [ ! -L '/var/www/foo bar' ]; }}; then \
                 echo \"refusing /var/www/foo bar: it changed since the plan; run again\" >&2; exit 1; fi\n\
                 moved=\nif {{ [ -e '/var/www/.foo bar.fp-prev' ] || [ -L '/var/www/.foo bar.fp-prev' ]; }}; then \
                 rm -f -- '/var/www/foo bar' || exit 1; else mv -fT -- '/var/www/foo bar' '/var/www/.foo bar.fp-prev' || exit 1; \
                 moved=1; fi\n{}",
                make(
                    "if [ -n \"$moved\" ]; then mv -fT -- '/var/www/.foo bar.fp-prev' '/var/www/foo bar'; fi; "
                )
            )
        );
        let mut meta = path_change(path, want, PathAction::Metadata);
        meta.old_mode = Some("2750".into());
        meta.old_owner = Some("www-data:adm".into());
        assert_eq!(
            directory_script(&meta),
            format!(
                "{head}if ! {{ [ -d '/var/www/foo bar' ] && [ ! -L '/var/www/foo bar' ]; }}; then \
                 echo \"refusing /var/www/foo bar: it is no longer a directory; run again\" >&2; exit 1; fi\n\
                 chown -h root:root -- '/var/www/foo bar' && chmod 00755 -- '/var/www/foo bar' || \
                 {{ chown -h www-data:adm -- '/var/www/foo bar'; chmod 02750 -- '/var/www/foo bar'; exit 1; }}\n"
            )
        );
    }

    #[test]
    fn link_and_absent_scripts_are_exact() {
        let p = "/etc/nginx/sites-enabled/x.conf";
        let s = link_script(&path_change(p, link_want("../it's"), PathAction::Relink));
        let (e, eb) = (
            "{ [ -e /etc/nginx/sites-enabled/x.conf ] || [ -L /etc/nginx/sites-enabled/x.conf ]; }",
            "{ [ -e /etc/nginx/sites-enabled/.x.conf.fp-prev ] || [ -L /etc/nginx/sites-enabled/.x.conf.fp-prev ]; }",
        );
        let (d, db) = (
            "{ [ -d /etc/nginx/sites-enabled/x.conf ] && [ ! -L /etc/nginx/sites-enabled/x.conf ]; }",
            "{ [ -d /etc/nginx/sites-enabled/.x.conf.fp-prev ] && [ ! -L /etc/nginx/sites-enabled/.x.conf.fp-prev ]; }",
        );
        let entries = "for e in /etc/nginx/sites-enabled/x.conf/* /etc/nginx/sites-enabled/x.conf/.[!.]* \
                       /etc/nginx/sites-enabled/x.conf/..?*; do if [ -e \"$e\" ] || [ -L \"$e\" ]; then \
                       echo \"refusing /etc/nginx/sites-enabled/x.conf: it is a directory with entries (never deleted); \
                       move them away\" >&2; exit 1; fi; done\n";
        assert_eq!(
            s,
            format!(
                "umask 022\nmkdir -p -- /etc/nginx/sites-enabled || exit 1\n{check}\
                 if {d}; then\n{entries}fi\n\
                 t=$(mktemp -u /etc/nginx/sites-enabled/.x.conf.fp-XXXXXX) && ln -sT -- '../it'\\''s' \"$t\" || exit 1\n\
                 trap 'rm -f -- \"$t\"' EXIT\nmade=\n\
                 if {d}; then\n  if {eb}; then rmdir -- /etc/nginx/sites-enabled/x.conf || exit 1; \
                 else mv -T -- /etc/nginx/sites-enabled/x.conf /etc/nginx/sites-enabled/.x.conf.fp-prev || exit 1; made=dir; fi\n\
                 elif {e}; then\n  if ! {eb}; then ln -PT -- /etc/nginx/sites-enabled/x.conf /etc/nginx/sites-enabled/.x.conf.fp-prev \
                 || exit 1; made=link; fi\n\
                 elif {eb}; then\n  if {db}; then rmdir -- /etc/nginx/sites-enabled/.x.conf.fp-prev; \
                 else rm -f -- /etc/nginx/sites-enabled/.x.conf.fp-prev; fi || exit 1\nfi\n\
                 mv -fT -- \"$t\" /etc/nginx/sites-enabled/x.conf || {{ case $made in \
                 dir) mv -T -- /etc/nginx/sites-enabled/.x.conf.fp-prev /etc/nginx/sites-enabled/x.conf ;; \
                 link) rm -f -- /etc/nginx/sites-enabled/.x.conf.fp-prev ;; esac; exit 1; }}\n",
                check = root_folder_check("/etc/nginx/sites-enabled", p, OR),
            )
        );
        let s = absent_script(&path_change(p, PathWant::Absent, PathAction::Remove));
        assert_eq!(
            s,
            format!(
                "if ! {e}; then exit 0; fi\n{check}if {d}; then\n{entries}fi\n\
                 if {eb}; then\n  if {d}; then rmdir -- /etc/nginx/sites-enabled/x.conf; \
                 else rm -f -- /etc/nginx/sites-enabled/x.conf; fi\n\
                 else\n  mv -T -- /etc/nginx/sites-enabled/x.conf /etc/nginx/sites-enabled/.x.conf.fp-prev\nfi\n",
                check = root_folder_check("/etc/nginx/sites-enabled", p, OR),
            )
        );
    }

    #[test]
    fn path_rollback_and_backup_removal_are_exact() {
        let dir = dir_want("0755", "root", "root");
        let made = path_change("/srv/d", dir.clone(), PathAction::Mkdir);
        let replaced = path_change("/srv/r", dir.clone(), PathAction::Replace);
        let chmodded = path_change("/srv/m", dir, PathAction::Metadata);
        let link = path_change("/srv/l", link_want("t"), PathAction::Link);
        let gone = path_change("/srv/x", PathWant::Absent, PathAction::Remove);
        assert_eq!(
            paths_rollback(&[&made, &replaced, &chmodded, &link, &gone]),
            "if { [ -e /srv/.x.fp-prev ] || [ -L /srv/.x.fp-prev ]; }; then if { [ -e /srv/x ] || [ -L /srv/x ]; }; then \
             echo \"/srv/x is there again: its backup /srv/.x.fp-prev is kept\" >&2; rc=1; \
             else mv -T -- /srv/.x.fp-prev /srv/x || rc=1; fi; fi\n\
             if { [ -e /srv/.l.fp-prev ] || [ -L /srv/.l.fp-prev ]; }; then \
             if { [ -d /srv/.l.fp-prev ] && [ ! -L /srv/.l.fp-prev ]; } && [ -L /srv/l ]; then rm -f -- /srv/l; fi; \
             mv -fT -- /srv/.l.fp-prev /srv/l || rc=1; elif [ -L /srv/l ]; then rm -f -- /srv/l || rc=1; fi\n\
             if { [ -e /srv/.r.fp-prev ] || [ -L /srv/.r.fp-prev ]; }; then \
             { rmdir -- /srv/r && mv -fT -- /srv/.r.fp-prev /srv/r; } || rc=1; fi\n\
             if { [ -d /srv/d ] && [ ! -L /srv/d ]; }; then rmdir -- /srv/d 2>/dev/null || true; fi\n"
        );
        assert_eq!(
            path_backups_script(&["/srv/r", "/srv/a b"]),
            "rc=0\n\
             if { [ -d /srv/.r.fp-prev ] && [ ! -L /srv/.r.fp-prev ]; }; then rmdir -- /srv/.r.fp-prev || rc=1; \
             else rm -f -- /srv/.r.fp-prev || rc=1; fi\n\
             if { [ -d '/srv/.a b.fp-prev' ] && [ ! -L '/srv/.a b.fp-prev' ]; }; then rmdir -- '/srv/.a b.fp-prev' || rc=1; \
             else rm -f -- '/srv/.a b.fp-prev' || rc=1; fi\nexit $rc\n"
        );
    }

    /// A root-owned work folder (the scripts refuse folders others can write to), or
    /// `None` (and a note) when the tests do not run as root.
    fn root_workdir() -> Option<tempfile::TempDir> {
        if !sh("[ \"$(id -u)\" = 0 ]").0 {
            eprintln!("skipped: needs root (the folders must be root's)");
            return None;
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).expect("target");
        // Under /run (root's, 0755) when it can: every folder above must be root's and
        // writable by root only, which a checkout under /tmp is not.
        let d = tempfile::tempdir_in("/run")
            .or_else(|_| tempfile::tempdir_in(&base))
            .expect("tempdir");
        sh(&format!(
            "chmod 0755 {}",
            quote(&d.path().to_string_lossy())
        ));
        Some(d)
    }

    fn kind_of(p: &str) -> String {
        match std::fs::symlink_metadata(p) {
            Err(_) => "missing".into(),
            Ok(m) if m.file_type().is_symlink() => format!(
                "link -> {}",
                std::fs::read_link(p).expect("readlink").to_string_lossy()
            ),
            Ok(m) if m.is_dir() => format!("dir {:o}", mode_of(p) & 0o7777),
            Ok(_) => format!("file {}", read(p)),
        }
    }

    /// The link script on the real filesystem, over each thing that may be there: the
    /// link ends up in place with the previous thing as its backup; a folder with entries
    /// and a folder others can write to are refused, nothing changed.
    #[test]
    fn the_link_script_replaces_what_is_there_and_keeps_a_backup() {
        let Some(d) = root_workdir() else { return };
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        std::fs::write(p("file"), "old").expect("w");
        std::os::unix::fs::symlink("old-target", p("link")).expect("ln");
        std::fs::create_dir(p("empty")).expect("mkdir");
        std::fs::create_dir(p("full")).expect("mkdir");
        std::fs::write(p("full/.hidden"), "data").expect("w");
        std::fs::write(p(".stale.fp-prev"), "stale").expect("w");
        for (name, before) in [
            ("file", "file old"),
            ("link", "link -> old-target"),
            ("empty", "dir 755"),
            ("none", "missing"),
        ] {
            assert_eq!(kind_of(&p(name)), before, "{name}");
            let (ok, out, err) = sh(&link_script(&path_change(
                &p(name),
                link_want("new target"),
                PathAction::Replace,
            )));
            assert!(ok, "{name}: {out}{err}");
            assert_eq!(kind_of(&p(name)), "link -> new target", "{name}");
            assert_eq!(kind_of(&backup_path(&p(name))), before, "{name}");
        }
        // Nothing there but a stale backup: the backup goes (a rollback would restore it).
        let (ok, _, err) = sh(&link_script(&path_change(
            &p("stale"),
            link_want("x"),
            PathAction::Link,
        )));
        assert!(ok, "{err}");
        assert_eq!(kind_of(&p(".stale.fp-prev")), "missing");

        let (ok, _, err) = sh(&link_script(&path_change(
            &p("full"),
            link_want("x"),
            PathAction::Replace,
        )));
        assert!(
            !ok && err.contains("is a directory with entries (never deleted)"),
            "{err}"
        );
        assert_eq!(read(&p("full/.hidden")), "data");

        std::fs::create_dir(p("open")).expect("mkdir");
        sh(&format!("chmod 0777 {}", quote(&p("open"))));
        let (ok, _, err) = sh(&link_script(&path_change(
            &p("open/l"),
            link_want("x"),
            PathAction::Link,
        )));
        assert!(
            !ok && err.contains("is writable by others than root"),
            "{err}"
        );
        assert_eq!(kind_of(&p("open/l")), "missing");
        let left: Vec<String> = fp_files(d.path())
            .into_iter()
            .filter(|n| !n.ends_with(".fp-prev"))
            .collect();
        assert!(left.is_empty(), "no temporary link left: {left:?}");
    }

    /// The absent script moves a file, a link or an empty folder to its backup (a folder
    /// with entries is refused); the rollback lines put each back; the backups' removal
    /// deletes them, a folder only when empty.
    #[test]
    fn absent_then_rollback_then_backup_removal_on_a_real_filesystem() {
        let Some(d) = root_workdir() else { return };
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        std::fs::write(p("file"), "old").expect("w");
        std::os::unix::fs::symlink("/nowhere", p("link")).expect("ln");
        std::fs::create_dir(p("empty")).expect("mkdir");
        let names = ["file", "link", "empty"];
        let before: Vec<String> = names.iter().map(|n| kind_of(&p(n))).collect();
        let changes: Vec<PathChange> = names
            .iter()
            .map(|n| path_change(&p(n), PathWant::Absent, PathAction::Remove))
            .collect();
        for c in &changes {
            let (ok, _, err) = sh(&absent_script(c));
            assert!(ok, "{}: {err}", c.path);
            assert_eq!(kind_of(&c.path), "missing");
        }
        let done: Vec<&PathChange> = changes.iter().collect();
        let (ok, _, err) = sh(&rollback_script(&[], &[], &paths_rollback(&done)));
        assert!(ok, "{err}");
        let after: Vec<String> = names.iter().map(|n| kind_of(&p(n))).collect();
        assert_eq!(after, before);
        assert!(fp_files(d.path()).is_empty(), "{:?}", fp_files(d.path()));

        for c in &changes {
            assert!(sh(&absent_script(c)).0);
        }
        let full: Vec<String> = names.iter().map(|n| p(n)).collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let (ok, _, err) = sh(&path_backups_script(&full));
        assert!(ok, "{err}");
        assert!(fp_files(d.path()).is_empty(), "{:?}", fp_files(d.path()));

        std::fs::create_dir(p("full")).expect("mkdir");
        std::fs::write(p("full/x"), "data").expect("w");
        let (ok, _, err) = sh(&absent_script(&path_change(
            &p("full"),
            PathWant::Absent,
            PathAction::Remove,
        )));
        assert!(!ok && err.contains("directory with entries"), "{err}");
        assert_eq!(read(&p("full/x")), "data");
    }

    /// The directory script makes root's parents and the folder with its owner and mode,
    /// clears a set-group-ID bit the mode does not have, and replaces a file, keeping it
    /// as the backup; each undone by the rollback lines.
    #[test]
    fn the_directory_script_on_a_real_filesystem() {
        let Some(d) = root_workdir() else { return };
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        let want = dir_want("0750", "root", "root");
        let made = path_change(&p("a/b/c"), want.clone(), PathAction::Mkdir);
        let (ok, _, err) = sh(&directory_script(&made));
        assert!(ok, "{err}");
        assert_eq!(
            (kind_of(&p("a/b")), kind_of(&p("a/b/c"))),
            ("dir 755".into(), "dir 750".into())
        );
        let (ok, _, err) = sh(&directory_script(&made));
        assert!(
            !ok && err.contains("something is there since the plan"),
            "{err}"
        );

        sh(&format!("chmod 2777 {}", quote(&p("a/b/c"))));
        let mut meta = path_change(&p("a/b/c"), want.clone(), PathAction::Metadata);
        meta.old_mode = Some("2777".into());
        let (ok, _, err) = sh(&directory_script(&meta));
        assert!(ok, "{err}");
        assert_eq!(kind_of(&p("a/b/c")), "dir 750", "setgid cleared");
        let m = MetaBefore {
            path: &meta.path,
            owner: None,
            mode: meta.old_mode.as_deref(),
        };
        let (ok, _, err) = sh(&rollback_script(&[], &[m], ""));
        assert!(ok, "{err}");
        assert_eq!(kind_of(&p("a/b/c")), "dir 2777");

        std::fs::write(p("f"), "a file").expect("w");
        let replace = path_change(&p("f"), want, PathAction::Replace);
        let (ok, _, err) = sh(&directory_script(&replace));
        assert!(ok, "{err}");
        assert_eq!(kind_of(&p("f")), "dir 750");
        assert_eq!(kind_of(&p(".f.fp-prev")), "file a file");
        let (ok, _, err) = sh(&rollback_script(
            &[],
            &[],
            &paths_rollback(&[&replace, &made]),
        ));
        assert!(ok, "{err}");
        assert_eq!(kind_of(&p("f")), "file a file");
        assert_eq!(kind_of(&p("a/b/c")), "missing");
        assert_eq!(kind_of(&p("a/b")), "dir 755", "root's parents stay");
    }
}
