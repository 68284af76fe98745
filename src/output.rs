//! Everything the tool prints goes through here: progress per host on a terminal
//! (indicatif), plain lines in a CI log, or nothing but one JSON document at the end.

use crate::apply::Outcome;
use crate::plan::{FileAction, HostPlan};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Spinners and colours.
    Tty,
    /// Plain lines, no escape codes.
    Plain,
    /// JSON at the end only; progress goes nowhere.
    Json,
}

pub struct Reporter {
    mode: Mode,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    pub fn new(format: Format) -> Reporter {
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Text
                if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() =>
            {
                Mode::Tty
            }
            Format::Text => Mode::Plain,
        };
        Reporter {
            mode,
            multi: (mode == Mode::Tty).then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn colors(&self) -> bool {
        self.mode == Mode::Tty
    }

    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// A step in progress on a host.
    pub fn step(&self, host: &str, msg: &str) {
        match self.mode {
            Mode::Json => {}
            Mode::Plain => eprintln!("[{host}] {msg}"),
            Mode::Tty => {
                let Some(multi) = &self.multi else { return };
                let Ok(mut bars) = self.bars.lock() else {
                    return;
                };
                let bar = bars.entry(host.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    let style =
                        ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner());
                    b.set_style(style);
                    b.set_prefix(format!("{host:<8}"));
                    b.enable_steady_tick(Duration::from_millis(100));
                    b
                });
                bar.set_message(msg.to_string());
            }
        }
    }

    /// A host is finished: its spinner stops with the outcome.
    pub fn done(&self, host: &str, outcome: &Outcome) {
        let word = outcome_word(outcome);
        match self.mode {
            Mode::Json => {}
            Mode::Plain => eprintln!("[{host}] {word}"),
            Mode::Tty => {
                if let Ok(mut bars) = self.bars.lock()
                    && let Some(b) = bars.remove(host)
                {
                    b.finish_with_message(word.to_string());
                }
            }
        }
    }

    /// A line for the user (stdout), outside any spinner.
    pub fn line(&self, text: &str) {
        if self.mode == Mode::Json {
            return;
        }
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        };
        match &self.multi {
            Some(m) => m.suspend(write),
            None => write(),
        }
    }

    /// A warning or error line (stderr).
    pub fn warn(&self, text: &str) {
        let write = || eprintln!("{text}");
        match &self.multi {
            Some(m) => m.suspend(write),
            None => write(),
        }
    }

    /// Stops and removes every spinner (before printing a plan or the recap).
    pub fn clear(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain() {
                b.finish_and_clear();
            }
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

pub fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Changed(n) => format!("changed ({n})"),
        Outcome::Failed(_) => "FAILED".into(),
        Outcome::Unreachable(_) => "UNREACHABLE".into(),
        Outcome::Interrupted(_) => "INTERRUPTED".into(),
    }
}

fn paint(colors: bool, code: &str, s: &str) -> String {
    if colors {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// The text form of a host's plan.
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
    for r in &p.roles {
        for f in &r.files {
            let verb = match f.action {
                FileAction::Create => "create",
                FileAction::Update => "update",
                FileAction::Metadata => "set owner/mode of",
                FileAction::Unfinished => "finish the interrupted apply of",
            };
            out.push_str(&format!(
                "  [{}] {verb} {} ({} {}:{})\n",
                r.role, f.path, f.mode, f.owner, f.group
            ));
            if let Some(m) = &f.old_mode {
                out.push_str(&format!("      mode {m} -> {}\n", f.mode));
            }
            if let Some(o) = &f.old_owner {
                out.push_str(&format!("      owner {o} -> {}:{}\n", f.owner, f.group));
            }
            if f.action == FileAction::Unfinished {
                out.push_str("      (already in place; an earlier apply stopped before its handlers and health checks)\n");
            } else if f.sensitive && f.action != FileAction::Metadata {
                out.push_str("      (content not shown: the file holds a secret)\n");
            } else if let Some(d) = &f.diff {
                for line in d.lines() {
                    let colored = if line.starts_with("+++") || line.starts_with("---") {
                        paint(colors, "1", line)
                    } else if line.starts_with('+') {
                        paint(colors, "32", line)
                    } else if line.starts_with('-') {
                        paint(colors, "31", line)
                    } else if line.starts_with("@@") {
                        paint(colors, "36", line)
                    } else {
                        line.to_string()
                    };
                    out.push_str(&format!("      {colored}\n"));
                }
            } else if f.action != FileAction::Metadata {
                out.push_str("      (binary content differs)\n");
            }
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
    }
    out
}
