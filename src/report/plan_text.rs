//! The text form of a host's plan: what `plan` shows and `apply` prints before acting.

use crate::plan::{
    CertChange, CertWork, FileAction, FileChange, HostPlan, PathAction, PathChange, PathWant,
    ReleaseChange,
};
use crate::release::Why;

fn paint(colors: bool, code: &str, s: &str) -> String {
    if colors {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// The text form of a host's plan.
/// One certificate's line: what happens, why, and for which names. Nothing of the key.
fn cert_text(role: &str, c: &CertChange) -> String {
    let what = match c.action {
        CertWork::Issue if c.new_key => "issue (a new key is made on the host)",
        CertWork::Issue => "issue",
        CertWork::Renew => "renew",
        CertWork::Reissue => "reissue",
        CertWork::FixKey => "fix the key's mode and owner",
    };
    let mut line = format!("  ~ [{role}] certificate {}: {what}: {}", c.cert, c.reason);
    if c.action != CertWork::FixKey {
        line.push_str(&format!(" (names: {})", c.names.join(", ")));
    }
    if let Some(old) = &c.old_key_meta {
        line.push_str(&format!("; key {} is {old}, becomes 0600", c.key));
    }
    line.push('\n');
    line
}

pub fn plan_text(p: &HostPlan, colors: bool) -> String {
    plan_text_with(p, colors, DIFF_INDENT)
}

/// How far a diff's lines are indented in the text plan.
const DIFF_INDENT: &str = "      ";

/// The text form of a host's plan with its diffs' lines flush left (no colours): in a
/// Markdown ```diff block, `+` and `-` lines are then shown as added and removed.
pub fn plan_text_flush(p: &HostPlan) -> String {
    plan_text_with(p, false, "")
}

fn plan_text_with(p: &HostPlan, colors: bool, diff_indent: &str) -> String {
    let mut out = String::new();
    let title = format!("{} ({}, {})", p.host, p.tier, p.address);
    if p.is_empty() {
        out.push_str(&format!(
            "{} {}: no changes\n",
            paint(colors, "32", "="),
            title
        ));
        return out;
    }
    out.push_str(&format!(
        "{} {}: {} change(s)\n",
        paint(colors, "33", "~"),
        paint(colors, "1", &title),
        p.change_count()
    ));
    if !p.packages_to_install.is_empty() {
        out.push_str(&format!(
            "  + install packages: {}\n",
            p.packages_to_install.join(" ")
        ));
    }
    for t in &p.stale_temps {
        out.push_str(&format!("  - remove {t} (left by an interrupted apply)\n"));
    }
    if let Some(d) = &p.drain {
        let via = if d.via.is_empty() {
            "no balancer in the inventory".to_string()
        } else {
            d.via.join(", ")
        };
        out.push_str(&format!(
            "  drain: out of HAProxy backend {} on {via} before the restart (sessions end, at most {}s); ready again once its health checks pass and HAProxy sees it up\n",
            d.backend, d.timeout_s
        ));
    }
    for r in &p.roles {
        for c in &r.certificates {
            out.push_str(&cert_text(&r.role, c));
        }
        // In the order apply works: folders, files, then links and absent paths.
        let (dirs, others): (Vec<&PathChange>, Vec<&PathChange>) =
            r.paths.iter().partition(|c| c.is_directory());
        for c in dirs {
            out.push_str(&path_text(&r.role, c, colors));
        }
        for f in &r.files {
            out.push_str(&file_text(&r.role, f, colors, diff_indent));
        }
        for c in others {
            out.push_str(&path_text(&r.role, c, colors));
        }
        if let Some(rel) = &r.release {
            out.push_str(&release_text(&r.role, rel));
        }
        if let Some(check) = &r.drift {
            out.push_str(&format!(
                "  [{}] live state differs from the files (drift check failed: {check})\n",
                r.role
            ));
        }
        for a in &r.actions {
            out.push_str(&format!("  [{}] {a}\n", r.role));
        }
        if let Some(what) = &r.interrupts {
            out.push_str(&format!(
                "  {} [{}] this restart interrupts {what}\n",
                paint(colors, "33", "warning:"),
                r.role
            ));
        }
    }
    out
}

/// Most file names listed per kind of change in a release's summary.
const SUMMARY_NAMES: usize = 10;

/// A release's lines: "release A -> B", why, what is sent, the files that differ (a
/// summary, not a diff), the migration, the old releases removed.
fn release_text(role: &str, rel: &ReleaseChange) -> String {
    let mut out = String::new();
    if rel.switch {
        let from = rel.from.as_deref().unwrap_or("(none)");
        let why = match rel.why {
            Why::Deploy => format!("source {}", rel.source),
            Why::Pin => "pinned in the inventory".to_string(),
            Why::Rollback => "rollback to the previous release".to_string(),
        };
        out.push_str(&format!(
            "  [{role}] release {from} -> {} ({why}) in {}\n",
            rel.to, rel.root
        ));
        if rel.upload {
            out.push_str(&format!(
                "      upload: {} files, {} bytes, one archive\n",
                rel.files, rel.bytes
            ));
        } else {
            out.push_str("      already on the host: nothing uploaded\n");
        }
        if let Some(s) = &rel.summary {
            for (sign, what, names) in [
                ("+", "added", &s.added),
                ("~", "changed", &s.changed),
                ("-", "removed", &s.removed),
            ] {
                if names.is_empty() {
                    continue;
                }
                let mut shown: Vec<&str> = names
                    .iter()
                    .take(SUMMARY_NAMES)
                    .map(String::as_str)
                    .collect();
                let more = names.len().saturating_sub(SUMMARY_NAMES);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                shown.sort_unstable();
                out.push_str(&format!(
                    "      {sign} {} file(s) {what}: {}{tail}\n",
                    names.len(),
                    shown.join(", ")
                ));
            }
        }
        if let Some(m) = &rel.migrate {
            out.push_str(&format!(
                "      migration on this host before the switch: {m}\n"
            ));
        }
    }
    if !rel.prune.is_empty() {
        out.push_str(&format!(
            "  [{role}] remove old release(s) {} (keep {})\n",
            rel.prune.join(", "),
            rel.desired.keep
        ));
    }
    out
}

/// One file's lines of the plan: what happens to it, mode and owner changes, its diff.
fn file_text(role: &str, f: &FileChange, colors: bool, diff_indent: &str) -> String {
    let verb = match f.action {
        FileAction::Create => "create",
        FileAction::Update => "update",
        FileAction::Metadata => "set owner/mode of",
        FileAction::Unfinished => "finish the interrupted apply of",
    };
    let mut out = format!(
        "  [{role}] {verb} {} ({} {}:{})\n",
        f.path, f.mode, f.owner, f.group
    );
    if let Some(m) = &f.old_mode {
        out.push_str(&format!("      mode {m} -> {}\n", f.mode));
    }
    if let Some(o) = &f.old_owner {
        out.push_str(&format!("      owner {o} -> {}:{}\n", f.owner, f.group));
    }
    if let Some(word) = &f.restart_because {
        out.push_str(&format!(
            "      (a changed `{word}` line: a reload cannot apply it, the service restarts)\n"
        ));
    }
    if f.action == FileAction::Unfinished {
        out.push_str("      (already in place; an earlier apply stopped before its handlers and health checks)\n");
    } else if f.sensitive && f.action != FileAction::Metadata {
        out.push_str("      (content not shown: the file holds a secret)\n");
    } else if let Some(d) = &f.diff {
        for line in d.lines() {
            out.push_str(&format!("{diff_indent}{}\n", diff_line(line, colors)));
        }
    } else if f.action != FileAction::Metadata {
        out.push_str("      (binary content differs)\n");
    }
    out
}

/// One directory's, link's or absent path's lines: `+` made, `~` changed, `-` removed,
/// `!` refused; old values on lines of their own, as for files.
fn path_text(role: &str, c: &PathChange, colors: bool) -> String {
    let (sign, code) = match c.action {
        PathAction::Mkdir | PathAction::Link => ("+", "32"),
        PathAction::Remove => ("-", "31"),
        PathAction::Refuse => ("!", "31"),
        _ => ("~", "33"),
    };
    let what = match &c.want {
        PathWant::Directory { mode, owner, group } => {
            format!("dir {} {mode} {owner}:{group}", c.path)
        }
        PathWant::Link { target } => format!("link {} -> {target}", c.path),
        PathWant::Absent => format!("remove {}", c.path),
    };
    let found = c.found.as_deref().unwrap_or("");
    let was = match (&c.old_target, c.action) {
        (Some(t), PathAction::Relink) => format!(" (was -> {t})"),
        (Some(t), _) => format!(" ({found} -> {t})"),
        (None, _) if !found.is_empty() => format!(" ({found})"),
        (None, _) => String::new(),
    };
    let mut out = match c.action {
        PathAction::Replace => format!("  {sign} [{role}] {what}, replacing{was}\n"),
        PathAction::Refuse => format!(
            "  {sign} [{role}] {what}: refused{was}\n      {}\n",
            c.reason.as_deref().unwrap_or("")
        ),
        _ => format!("  {sign} [{role}] {what}{was}\n"),
    };
    if colors {
        out = out.replacen(sign, &paint(true, code, sign), 1);
    }
    if let Some(m) = &c.old_mode
        && let PathWant::Directory { mode, .. } = &c.want
    {
        out.push_str(&format!("      mode {m} -> {mode}\n"));
    }
    if let Some(o) = &c.old_owner
        && let PathWant::Directory { owner, group, .. } = &c.want
    {
        out.push_str(&format!("      owner {o} -> {owner}:{group}\n"));
    }
    if c.action == PathAction::Unfinished {
        out.push_str("      (already in place; an earlier apply stopped before its handlers and health checks)\n");
    }
    out
}

/// A unified diff line, coloured on a terminal: headers bold, additions green, removals
/// red, hunk headers cyan.
fn diff_line(line: &str, colors: bool) -> String {
    if line.starts_with("+++") || line.starts_with("---") {
        paint(colors, "1", line)
    } else if line.starts_with('+') {
        paint(colors, "32", line)
    } else if line.starts_with('-') {
        paint(colors, "31", line)
    } else if line.starts_with("@@") {
        paint(colors, "36", line)
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RolePlan;
    use crate::role::{Notify, NotifyKind};
    use crate::shell::Init;

    fn change(path: &str, want: PathWant, action: PathAction) -> PathChange {
        PathChange::new(path, want, action, &Notify::Service(NotifyKind::Reload))
    }

    fn dir() -> PathWant {
        PathWant::Directory {
            mode: "0755".into(),
            owner: "root".into(),
            group: "root".into(),
        }
    }

    fn link(t: &str) -> PathWant {
        PathWant::Link { target: t.into() }
    }

    /// The whole text of a plan with one role holding `paths`.
    fn plan_of(paths: Vec<PathChange>) -> String {
        let p = HostPlan {
            host: "web1".into(),
            tier: "web".into(),
            address: "172.30.77.21".into(),
            init: Init::Systemd,
            packages_to_install: vec![],
            packages_ready: false,
            stale_temps: vec![],
            drain: None,
            roles: vec![RolePlan {
                role: "nginx".into(),
                serving: true,
                interrupts: None,
                drift: None,
                files: vec![],
                certificates: vec![],
                paths,
                release: None,
                release_error: None,
                actions: vec![],
                validate: None,
                health: vec![],
            }],
        };
        plan_text(&p, false)
    }

    #[test]
    fn paths_show_what_happens_and_what_was_there() {
        let with = |mut c: PathChange, f: &dyn Fn(&mut PathChange)| {
            f(&mut c);
            c
        };
        let text = plan_of(vec![
            change("/var/www/foobar", dir(), PathAction::Mkdir),
            with(change("/srv/a", dir(), PathAction::Metadata), &|c| {
                c.old_mode = Some("0700".into());
                c.old_owner = Some("www-data:root".into());
            }),
            with(change("/srv/b", dir(), PathAction::Replace), &|c| {
                c.found = Some("link".into());
                c.old_target = Some("/data/b".into());
            }),
            change("/etc/a", link("../b"), PathAction::Link),
            with(change("/etc/x", link("a"), PathAction::Relink), &|c| {
                c.old_target = Some("b".into());
            }),
            with(change("/etc/y", link("a"), PathAction::Replace), &|c| {
                c.found = Some("file".into());
            }),
            with(
                change(
                    "/etc/nginx/sites-enabled/default",
                    PathWant::Absent,
                    PathAction::Remove,
                ),
                &|c| c.found = Some("file".into()),
            ),
            change("/etc/z", link("a"), PathAction::Unfinished),
            with(
                change("/etc/w", PathWant::Absent, PathAction::Refuse),
                &|c| {
                    c.found = Some("directory with entries".into());
                    c.reason = Some("/etc/w is a directory with entries".into());
                },
            ),
        ]);
        assert_eq!(
            text,
            "~ web1 (web, 172.30.77.21): 9 change(s)\n\
             \x20 + [nginx] dir /var/www/foobar 0755 root:root\n\
             \x20 ~ [nginx] dir /srv/a 0755 root:root\n\
             \x20     mode 0700 -> 0755\n\
             \x20     owner www-data:root -> root:root\n\
             \x20 ~ [nginx] dir /srv/b 0755 root:root, replacing (link -> /data/b)\n\
             \x20 + [nginx] link /etc/a -> ../b\n\
             \x20 ~ [nginx] link /etc/x -> a (was -> b)\n\
             \x20 ~ [nginx] link /etc/y -> a, replacing (file)\n\
             \x20 - [nginx] remove /etc/nginx/sites-enabled/default (file)\n\
             \x20 ~ [nginx] link /etc/z -> a\n\
             \x20     (already in place; an earlier apply stopped before its handlers and health checks)\n\
             \x20 ! [nginx] remove /etc/w: refused (directory with entries)\n\
             \x20     /etc/w is a directory with entries\n"
        );
        let coloured = {
            let mut p = change("/etc/a", link("b"), PathAction::Link);
            p.notify = Notify::None;
            path_text("r", &p, true)
        };
        assert_eq!(coloured, "  \x1b[32m+\x1b[0m [r] link /etc/a -> b\n");
    }

    #[test]
    fn diff_lines_are_coloured_only_when_asked() {
        assert_eq!(diff_line("+new", false), "+new");
        assert_eq!(diff_line("+new", true), "\x1b[32m+new\x1b[0m");
        assert_eq!(diff_line("-old", true), "\x1b[31m-old\x1b[0m");
        assert_eq!(diff_line("--- a", true), "\x1b[1m--- a\x1b[0m");
        assert_eq!(diff_line("@@ -1 +1 @@", true), "\x1b[36m@@ -1 +1 @@\x1b[0m");
        assert_eq!(diff_line(" same", true), " same");
    }
}
