//! Progress while a run works, and every line printed during it: spinners per host on a
//! terminal (indicatif), plain `[host] step` lines in a CI log, or nothing under
//! `--format json` (one JSON document is printed at the end; `--format markdown`
//! likewise, with plain progress lines on stderr). What is printed is made by
//! [`crate::report`].

use crate::report::{Outcome, outcome_word};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// `plan` only: one Markdown document (a pull-request comment) at the end.
    Markdown,
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
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    pub fn new(format: Format) -> Reporter {
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Markdown => Mode::Markdown,
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

    /// Stdout is one document printed at the end (JSON or Markdown): no plan text, no
    /// text recap.
    pub fn is_document(&self) -> bool {
        matches!(self.mode, Mode::Json | Mode::Markdown)
    }

    /// A step in progress on a host.
    pub fn step(&self, host: &str, msg: &str) {
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
