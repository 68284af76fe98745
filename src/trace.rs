//! `--trace FILE`: every command the tool runs on a host, what it sent on stdin and what
//! came back, one JSON object per line, appended to FILE (mode 0600). For debugging and
//! audits: e.g. the end-to-end tests read it to show that no host's private key ever
//! crossed the connection. The inventory's secrets are masked in it like everywhere else;
//! each stream is cut at [`MAX_STREAM`] bytes (its full length is recorded).

use crate::secrets::Secrets;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Bytes of each stream kept per record.
const MAX_STREAM: usize = 64 * 1024;

struct Tracer {
    file: Mutex<std::fs::File>,
    secrets: Secrets,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Starts tracing to `path` (created 0600, or appended to) for the rest of the process.
pub fn start(path: &Path, secrets: &Secrets) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A second start in one process keeps the first file.
    let _ = TRACER.set(Tracer {
        file: Mutex::new(file),
        secrets: secrets.clone(),
    });
    Ok(())
}

#[derive(Serialize)]
struct Record<'a> {
    host: &'a str,
    command: String,
    stdin_bytes: usize,
    stdin: String,
    /// `None`: the command did not end (transport error).
    exit: Option<u32>,
    stdout_bytes: usize,
    stdout: String,
    stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What one exec sent and received.
pub struct Exchange<'a> {
    pub host: &'a str,
    pub command: &'a str,
    pub stdin: &'a [u8],
    pub exit: Option<u32>,
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    pub error: Option<String>,
}

/// Records one exec, when tracing is on. Never fails the run: a trace that cannot be
/// written is given up silently (the run's own output says what happened).
pub fn record(x: Exchange<'_>) {
    let Some(t) = TRACER.get() else {
        return;
    };
    let text = |b: &[u8]| {
        t.secrets
            .mask(&String::from_utf8_lossy(&b[..b.len().min(MAX_STREAM)]))
    };
    let rec = Record {
        host: x.host,
        command: t.secrets.mask(x.command),
        stdin_bytes: x.stdin.len(),
        stdin: text(x.stdin),
        exit: x.exit,
        stdout_bytes: x.stdout.len(),
        stdout: text(x.stdout),
        stderr: text(x.stderr),
        error: x.error.map(|e| t.secrets.mask(&e)),
    };
    let Ok(mut line) = serde_json::to_string(&rec) else {
        return;
    };
    line.push('\n');
    if let Ok(mut f) = t.file.lock() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Whether tracing is on (callers skip building records otherwise).
pub fn on() -> bool {
    TRACER.get().is_some()
}
