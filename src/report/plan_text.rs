//! The text form of a host's plan: what `plan` shows and `apply` prints before acting.

use crate::plan::{CertChange, CertWork, FileAction, FileChange, HostPlan, ReleaseChange};
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
        for f in &r.files {
            out.push_str(&file_text(&r.role, f, colors));
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
fn file_text(role: &str, f: &FileChange, colors: bool) -> String {
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
            out.push_str(&format!("      {}\n", diff_line(line, colors)));
        }
    } else if f.action != FileAction::Metadata {
        out.push_str("      (binary content differs)\n");
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
