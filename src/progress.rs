//! Progress while a run works, and every line printed during it: spinners per host on a
//! terminal (indicatif), plain `[host] step` lines in a CI log, or nothing under
//! `--format json` (one JSON document is printed at the end; `--format markdown`
//! likewise, with plain progress lines on stderr). What is printed is made by
//! [`crate::report`].

use crate::report::{Outcome, outcome_word};
use crate::timings::{HostTimings, Timings};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// `plan` only: one Markdown document (a pull-request comment) at the end.
    Markdown,
}

/// `--color`: colours and spinners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Color {
    /// On a terminal (stderr), unless `NO_COLOR` is set (to anything but empty).
    #[default]
    Auto,
    /// Coloured diffs even in a file or pipe (spinners still only on a terminal).
    Always,
    /// Never: plain lines, no escape codes.
    Never,
}

/// The `--color` of this run (set once by `cmd::run`; `auto` until then).
static COLOR: std::sync::OnceLock<Color> = std::sync::OnceLock::new();

/// Sets `--color` for every [`Reporter`] of the run.
pub fn set_color(c: Color) {
    let _ = COLOR.set(c);
}

impl Color {
    /// Whether to colour, given whether stderr is a terminal and `NO_COLOR`'s value.
    pub fn colors(self, terminal: bool, no_color: Option<&str>) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => terminal && no_color.is_none_or(str::is_empty),
        }
    }
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
    /// A Markdown document at the end on stdout; progress as plain lines on stderr.
    Markdown,
}

pub struct Reporter {
    mode: Mode,
    colors: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Every step's duration, per host and role (`--timings`, the JSON recap).
    timings: Timings,
}

impl Reporter {
    /// With the run's `--color` (`auto` when none was set).
    pub fn new(format: Format) -> Reporter {
        Reporter::with_color(format, COLOR.get().copied().unwrap_or_default())
    }

    /// Spinners on a terminal when colours are on; plain lines otherwise; nothing for JSON.
    pub fn with_color(format: Format, color: Color) -> Reporter {
        let terminal = std::io::stderr().is_terminal();
        let no_color = std::env::var("NO_COLOR").ok();
        let colors = format == Format::Text && color.colors(terminal, no_color.as_deref());
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Markdown => Mode::Markdown,
            Format::Text if colors && terminal => Mode::Tty,
            Format::Text => Mode::Plain,
        };
        Reporter {
            mode,
            colors,
            multi: (mode == Mode::Tty).then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            timings: Timings::default(),
        }
    }

    pub fn colors(&self) -> bool {
        self.colors
    }

    /// From now on `host`'s steps belong to `role` (`None`: to no role).
    pub fn role(&self, host: &str, role: Option<&str>) {
        self.timings.role_at(host, role, Instant::now());
    }

    /// `host`'s step in progress ends; nothing runs on it until its next step.
    pub fn idle(&self, host: &str) {
        self.timings.finish_at(host, Instant::now());
    }

    /// How long `host`'s roles and steps took so far.
    pub fn timings(&self, host: &str) -> HostTimings {
        self.timings.of(host)
    }

    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// Stdout is one document printed at the end (JSON or Markdown): no plan text, no
    /// text recap.
    pub fn is_document(&self) -> bool {
        matches!(self.mode, Mode::Json | Mode::Markdown)
    }

    /// A step in progress on a host.
    pub fn step(&self, host: &str, msg: &str) {
        self.timings.step_at(host, msg, Instant::now());
        match self.mode {
            Mode::Json => {}
            Mode::Plain | Mode::Markdown => eprintln!("[{host}] {msg}"),
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
        self.timings.finish_at(host, Instant::now());
        let word = outcome_word(outcome);
        match self.mode {
            Mode::Json => {}
            Mode::Plain | Mode::Markdown => eprintln!("[{host}] {word}"),
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
        if self.is_document() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_auto_follows_the_terminal_and_no_color() {
        let rows = [
            (Color::Auto, true, None, true),
            (Color::Auto, true, Some("1"), false),
            (Color::Auto, true, Some(""), true),
            (Color::Auto, false, None, false),
            (Color::Always, false, Some("1"), true),
            (Color::Never, true, None, false),
        ];
        for (c, terminal, no_color, want) in rows {
            assert_eq!(
                c.colors(terminal, no_color),
                want,
                "{c:?} {terminal} {no_color:?}"
            );
        }
    }
}
