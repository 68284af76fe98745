//! Running apply's commands on one host: [`Remote`] (the transport, sudo, masking,
//! progress and the Ctrl-C flag together), the stall watchdog ([`exec_watched`]) and
//! [`StepError`], how a step failed.

use crate::progress::Reporter;
use crate::report::{ErrorKind, Failure};
use crate::secrets::Secrets;
use crate::shell;
use crate::transport::{ExecOutput, Transport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// While a command runs longer than this, the connection is probed with a second,
/// trivial command on the same connection.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe not answered within this long means the connection is lost. It must cover a
/// probe queued behind an upload's in-flight data on a slow link.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What apply needs to run commands on one host.
pub struct Remote<'a, T: Transport> {
    pub transport: &'a T,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    pub reporter: &'a Reporter,
    pub host: &'a str,
    /// Set by Ctrl-C: stop at the next step boundary.
    pub interrupted: &'a AtomicBool,
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
    pub(super) async fn run(&self, script: &str, stdin: &[u8]) -> Result<ExecOutput, StepError> {
        exec_watched(
            self.transport,
            self.host,
            &shell::wrap(script, self.sudo),
            stdin,
        )
        .await
        .map_err(|e| StepError::Transport(self.secrets.mask(&printable(&e))))
    }

    /// Runs `script`; a non-zero exit is an error carrying `what` and the output. The
    /// whole message is masked: `what` may quote a rendered command.
    pub(super) async fn must(
        &self,
        kind: ErrorKind,
        what: &str,
        script: &str,
        stdin: &[u8],
    ) -> Result<String, StepError> {
        let out = self.run(script, stdin).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status != 0 {
            return Err(StepError::failed(
                kind,
                self.secrets.mask(&format!(
                    "{what} failed (exit {}):\n{}",
                    out.status,
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

/// Remote output made safe for a terminal: control characters other than newline and
/// tab are shown in caret notation (`^G`), so no host can ring bells or send escape
/// sequences to the operator's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn remote_output_is_made_printable() {
        assert_eq!(
            printable("\u{7}mariadbd: Can't\tx\r\n\u{1b}[31mred\u{9b}"),
            "^Gmariadbd: Can't\tx^M\n^[[31mred\u{fffd}"
        );
    }

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
}
