//! Running apply's commands on one host: [`Remote`] (the transport, sudo, masking,
//! progress and the Ctrl-C flag together), the stall watchdog ([`exec_watched`]) and
//! [`StepError`], how a step failed.

use crate::progress::Reporter;
use crate::report::{ErrorKind, Failure};
use crate::secrets::Secrets;
use crate::shell::{self, printable};
use crate::transport::{ExecOutput, Transport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// While a command runs longer than this, the connection is probed with a second,
/// trivial command on the same connection.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe not answered within this long means the connection is lost. It must cover a
/// probe queued behind an upload's in-flight data on a slow link.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long each kind of remote step may run. The host kills a step that overstays
/// (`timeout`, TERM then KILL 10 s later) and the step fails, naming itself; a host that
/// does not even answer then is given up on [`BACKSTOP`] later.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The facts script (with the roles' drift checks) and the old contents.
    pub facts: Duration,
    /// Installing packages, removing stale temporary files.
    pub prepare: Duration,
    pub upload: Duration,
    /// One file's validator, or the whole-tree validator.
    pub validation: Duration,
    /// Renames, owners and modes, removing backups.
    pub swap: Duration,
    /// One service action or handler.
    pub handler: Duration,
    /// One try of a health check command (the whole check: its tries and intervals).
    pub health_try: Duration,
    pub rollback: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            facts: Duration::from_secs(120),
            prepare: Duration::from_secs(900),
            upload: Duration::from_secs(300),
            validation: Duration::from_secs(120),
            swap: Duration::from_secs(60),
            handler: Duration::from_secs(300),
            health_try: Duration::from_secs(30),
            rollback: Duration::from_secs(120),
        }
    }
}

impl Limits {
    /// The limit of a step of this kind (health checks: see [`Limits::health`]).
    pub(super) fn of(&self, kind: ErrorKind) -> Duration {
        match kind {
            ErrorKind::Prepare => self.prepare,
            ErrorKind::Upload => self.upload,
            ErrorKind::Validation => self.validation,
            ErrorKind::Handler => self.handler,
            ErrorKind::Rollback => self.rollback,
            ErrorKind::HealthCheck => self.health_try,
            ErrorKind::Facts => self.facts,
            _ => self.swap,
        }
    }

    /// A whole health check: at most `2 * (retries + quick) + 1` tries (two successes in a
    /// row are needed; `quick`: the retries sooner than an interval,
    /// [`super::scripts::quick_retries`]), each bounded, at most one interval apart.
    pub(super) fn health(&self, retries: u32, interval_ms: u64) -> Duration {
        let quick = u32::try_from(super::scripts::quick_retries(interval_ms).len()).unwrap_or(64);
        (self.health_try + Duration::from_millis(interval_ms)) * (2 * (retries + quick) + 2)
    }
}

/// How long after a step's limit the host is given to report that it killed it.
pub const BACKSTOP: Duration = Duration::from_secs(30);

/// The exit status of `timeout` when it had to stop the command.
const TIMED_OUT: u32 = 124;

/// The command that runs `script` by `sh` under `timeout`: the host kills it (TERM, then
/// KILL 10 s later) when it runs longer than `limit`. A command, not a script: sudo (or
/// the login shell) starts `timeout` itself, no shell in between.
pub fn bounded(script: &str, limit: Duration) -> String {
    format!(
        "timeout -k 10 {} sh -c {}",
        limit.as_secs().max(1),
        shell::quote(script)
    )
}

/// Runs `script` (as root when `sudo`) with `stdin` fed to it, bounded by `limit` on the
/// host, under the stall watchdog, and by `limit` + [`BACKSTOP`] here.
pub async fn exec_bounded<T: Transport>(
    t: &T,
    host: &str,
    script: &str,
    stdin: &[u8],
    sudo: bool,
    limit: Duration,
) -> Result<ExecOutput, String> {
    let command = shell::as_root(&bounded(script, limit), sudo);
    tokio::time::timeout(limit + BACKSTOP, exec_watched(t, host, &command, stdin))
        .await
        .unwrap_or_else(|_| Err(overstayed(host, limit)))
}

fn overstayed(host: &str, limit: Duration) -> String {
    format!(
        "{host}: a step ran past its time limit ({}s) and the host did not report stopping it; \
         whether it took effect is unknown: check the host and run again",
        limit.as_secs()
    )
}

/// Whether a bounded command was stopped by its time limit.
pub fn timed_out(out: &ExecOutput) -> bool {
    out.status == TIMED_OUT
}

/// What apply needs to run commands on one host.
pub struct Remote<'a, T: Transport> {
    pub transport: &'a T,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    pub reporter: &'a Reporter,
    pub host: &'a str,
    /// Set by Ctrl-C: stop at the next step boundary.
    pub interrupted: &'a AtomicBool,
    pub limits: Limits,
    /// The host's apply lock and audit log (`None`: no lock, as in most tests).
    pub lock: Option<super::HostLock>,
    /// The internal CA that signs the host's certificate requests.
    pub ca: Option<&'a crate::pki::Ca>,
}

/// How a step of apply failed.
#[derive(Debug)]
pub(super) enum StepError {
    /// The command ran and failed: what kind of step, and the message for the user.
    Failed(Failure),
    /// The transport broke.
    Transport(String),
    /// Ctrl-C: stopped at a step boundary; where, for the user.
    Interrupted(String),
}

impl StepError {
    pub(super) fn failed(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError::Failed(Failure::new(kind, message))
    }

    /// The message, whatever the kind of error.
    pub(super) fn message(&self) -> &str {
        match self {
            StepError::Failed(f) => &f.message,
            StepError::Transport(m) | StepError::Interrupted(m) => m,
        }
    }

    /// A failure with `note` added on a line of its own; other errors unchanged.
    pub(super) fn with_note(self, note: &str) -> StepError {
        match self {
            StepError::Failed(f) => StepError::failed(f.kind, format!("{}\n  {note}", f.message)),
            other => other,
        }
    }
}

/// Runs one command; while it runs longer than [`PROBE_EVERY`], checks that the host
/// still answers on the same connection. A probe left unanswered for [`PROBE_TIMEOUT`]
/// ends the wait with an error (the command's end would never be reported). SSH
/// keepalives alone take about a minute to give up on a cut connection.
pub async fn exec_watched<T: Transport>(
    t: &T,
    host: &str,
    command: &str,
    stdin: &[u8],
) -> Result<ExecOutput, String> {
    exec_watched_with(t, host, command, stdin, PROBE_EVERY, PROBE_TIMEOUT).await
}

async fn exec_watched_with<T: Transport>(
    t: &T,
    host: &str,
    command: &str,
    stdin: &[u8],
    every: Duration,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    let main = t.exec(command, stdin);
    tokio::pin!(main);
    loop {
        tokio::select! {
            r = &mut main => return r.map_err(|e| e.to_string()),
            () = tokio::time::sleep(every) => {}
        }
        let probe = t.exec("true", b"");
        tokio::pin!(probe);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        tokio::select! {
            r = &mut main => return r.map_err(|e| e.to_string()),
            // Answered (even a refused channel is an answer): the connection is alive.
            _ = &mut probe => {}
            () = &mut deadline => {
                return Err(format!(
                    "{host} stopped answering: a command was running and a probe on the same \
                     connection got no reply within {:.0}s (connection lost, or the link is \
                     badly congested); whether the command took effect is unknown: check the \
                     host and run again",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
}

impl<T: Transport> Remote<'_, T> {
    /// Runs `script` bounded by `limit` (see [`exec_bounded`]).
    pub(super) async fn run(
        &self,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, StepError> {
        exec_bounded(self.transport, self.host, script, stdin, self.sudo, limit)
            .await
            .map_err(|e| StepError::Transport(self.secrets.mask(&printable(&e))))
    }

    /// Runs `script` within the limit of its kind; a non-zero exit is an error carrying
    /// `what` and the output. The whole message is masked: `what` may quote a rendered
    /// command.
    pub(super) async fn must(
        &self,
        kind: ErrorKind,
        what: &str,
        script: &str,
        stdin: &[u8],
    ) -> Result<String, StepError> {
        self.must_within(kind, what, script, stdin, self.limits.of(kind))
            .await
    }

    /// [`Remote::must`] with an explicit limit; a step stopped by it says so.
    pub(super) async fn must_within(
        &self,
        kind: ErrorKind,
        what: &str,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<String, StepError> {
        let out = self.run(script, stdin, limit).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status != 0 {
            let how = if timed_out(&out) {
                format!(
                    "timed out after {}s (stopped on the host)",
                    limit.as_secs().max(1)
                )
            } else {
                format!("failed (exit {})", out.status)
            };
            return Err(StepError::failed(
                kind,
                self.secrets.mask(&format!(
                    "{what} {how}:\n{}",
                    indent(printable(&text).trim_end())
                )),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(super) fn step(&self, msg: &str) {
        self.reporter.step(self.host, msg);
    }

    pub(super) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// Every line indented by four spaces (output quoted under a message).
pub(super) fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport whose commands take `main` to finish and whose probe (`true`) takes
    /// `probe`; `None` never finishes (a cut connection).
    struct Slow {
        main: Option<Duration>,
        probe: Option<Duration>,
    }

    impl Transport for Slow {
        fn exec(
            &self,
            command: &str,
            _stdin: &[u8],
        ) -> impl std::future::Future<Output = Result<ExecOutput, crate::transport::SshError>> + Send
        {
            let wait = if command == "true" {
                self.probe
            } else {
                self.main
            };
            async move {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                Ok(ExecOutput::default())
            }
        }
    }

    #[tokio::test]
    async fn a_long_command_on_a_live_connection_is_waited_for() {
        let t = Slow {
            main: Some(Duration::from_millis(300)),
            probe: Some(Duration::from_millis(5)),
        };
        let r = exec_watched_with(
            &t,
            "h",
            "sleep",
            b"",
            Duration::from_millis(20),
            Duration::from_millis(50),
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn a_silent_connection_is_given_up_after_the_probe_timeout() {
        let t = Slow {
            main: None,
            probe: None,
        };
        let started = std::time::Instant::now();
        let r = exec_watched_with(
            &t,
            "web1",
            "cat",
            b"",
            Duration::from_millis(20),
            Duration::from_millis(50),
        )
        .await;
        let e = r.expect_err("must give up");
        assert!(e.contains("web1 stopped answering"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// sudo (or the login shell) starts `timeout` itself: no `sh -c` in between.
    #[test]
    fn a_bounded_command_is_timeout_then_the_script() {
        let c = shell::as_root(&bounded("echo 'a b'", Duration::from_secs(120)), true);
        assert_eq!(c, r"sudo -n -- timeout -k 10 120 sh -c 'echo '\''a b'\'''");
    }

    /// Run by a real shell: stdin reaches the script, its output and status come back,
    /// and a script that overstays is stopped by the host's `timeout`.
    #[tokio::test]
    async fn a_bounded_command_runs_and_is_stopped_when_it_overstays() {
        let t = crate::transport::local::Local::default();
        let script = "cat; echo 'q'\"'\"; exit 3";
        let out = exec_bounded(&t, "h", script, b"in\n", false, Duration::from_secs(5))
            .await
            .expect("runs");
        assert_eq!((out.status, out.stdout), (3, b"in\nq'\n".to_vec()));
        let started = std::time::Instant::now();
        let out = exec_bounded(&t, "h", "sleep 30", b"", false, Duration::from_secs(1))
            .await
            .expect("runs");
        assert!(timed_out(&out), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
