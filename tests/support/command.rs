//! External commands under a time limit. Every docker, docker exec, ssh, curl, lab script
//! and tool run of the tests goes through [`run_within`]: a command that does not end in
//! time is killed (with its process group: a lab script's docker children too) and the
//! test fails naming the command and what it had printed so far.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The default limit of a docker, docker exec or curl call.
pub const LIMIT: Duration = Duration::from_secs(60);
/// The limit of one run of the tool (its own steps are bounded; this catches a hang).
pub const TOOL_LIMIT: Duration = Duration::from_secs(300);
/// How long the output pipes may stay open after the command ended (a grandchild that
/// inherited them): then the output so far is taken and the test goes on.
const DRAIN: Duration = Duration::from_secs(5);

/// What a finished command said. `code` is 128 + N when signal N ended it.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The command line as a person would type it (for messages), shortened when long.
pub fn shown(cmd: &Command) -> String {
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$;|&<>*".contains(c)) {
                format!("'{}'", s.replace('\'', "'\\''"))
            } else {
                s.into_owned()
            }
        })
        .collect();
    let line = words.join(" ");
    match line.char_indices().nth(400) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

/// Collects a pipe on a thread; the output so far stays readable if it never closes.
struct Pipe {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Pipe {
    fn start(from: Option<impl Read + Send + 'static>) -> Pipe {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let keep = buf.clone();
        std::thread::spawn(move || {
            if let Some(mut from) = from {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = keep.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            let _ = tx.send(());
        });
        Pipe { buf, done }
    }

    fn text(&self) -> String {
        let b = self.buf.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// The whole output, waiting at most [`DRAIN`] for the pipe to close.
    fn finish(self) -> String {
        let _ = self.done.recv_timeout(DRAIN);
        self.text()
    }
}

/// Kills process group `pgid` (a command started by [`run_within`] leads its own group).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of `text` (a timed-out command's output can be long).
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` (stdin closed) for at most `limit`. Err names the command, the limit and
/// the output so far when it did not end in time (it is killed), or why it did not start.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Result<Out, String> {
    let what = shown(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("`{what}` could not start: {e}"))?;
    let pid = child.id();
    let stdout = Pipe::start(child.stdout.take());
    let stderr = Pipe::start(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(status) => status.map_err(|e| format!("`{what}`: waiting for it failed: {e}"))?,
        Err(_) => {
            kill_group(pid);
            let _ = rx.recv_timeout(DRAIN);
            return Err(format!(
                "`{what}` did not end within {} s (killed). Its output so far:\n\
                 --- stdout (last lines)\n{}\n--- stderr (last lines)\n{}",
                limit.as_secs(),
                tail(&stdout.text(), 40),
                tail(&stderr.text(), 40)
            ));
        }
    };
    Ok(Out {
        code: status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1),
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
}

/// [`run_within`] that fails the test when the command does not end in time.
pub fn sh_within(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    match run_within(cmd, limit) {
        Ok(o) => (o.code, o.stdout, o.stderr),
        Err(e) => panic!("{e}"),
    }
}

/// A command under the default limit ([`LIMIT`]): (exit code, stdout, stderr).
pub fn sh(cmd: &mut Command) -> (i32, String, String) {
    sh_within(cmd, LIMIT)
}

/// `docker ARGS...` under the default limit.
pub fn docker(args: &[&str]) -> (i32, String, String) {
    sh(Command::new("docker").args(args))
}

/// `docker ARGS...` under the default limit, for guards: never panics.
pub fn try_docker(args: &[&str]) -> Result<Out, String> {
    run_within(Command::new("docker").args(args), LIMIT)
}

/// `sh -c SCRIPT` inside a lab host, under the default limit.
pub fn docker_exec(host: &str, script: &str) -> (i32, String, String) {
    docker(&["exec", host, "sh", "-c", script])
}

/// Stdout of a command inside a lab host; fails the test with its output when it fails.
pub fn inside(host: &str, script: &str) -> String {
    let (code, out, err) = docker_exec(host, script);
    assert_eq!(code, 0, "in {host}: `{script}` failed:\n{out}{err}");
    out
}

/// A run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The tool (this build's binary) run from the repository's root, at most [`TOOL_LIMIT`].
pub fn try_tool(args: &[&str]) -> Result<Run, String> {
    let out = run_within(
        Command::new(env!("CARGO_BIN_EXE_foobar-provision"))
            .args(args)
            .current_dir(super::root()),
        TOOL_LIMIT,
    )?;
    Ok(Run {
        code: out.code,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// [`try_tool`] that fails the test when the tool hangs.
pub fn tool(args: &[&str]) -> Run {
    try_tool(args).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_hangs_is_killed_and_named_with_its_output() {
        let started = std::time::Instant::now();
        let err = run_within(
            Command::new("sh").args(["-c", "echo before-the-hang; sleep 30 & wait"]),
            Duration::from_millis(500),
        )
        .expect_err("must time out");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(err.contains("did not end within"), "{err}");
        assert!(err.contains("sleep 30"), "names the command: {err}");
        assert!(err.contains("before-the-hang"), "shows the output: {err}");
    }

    #[test]
    fn a_command_that_ends_gives_its_code_and_output() {
        let out = run_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            LIMIT,
        )
        .expect("runs");
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }
}
