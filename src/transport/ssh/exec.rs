//! Running commands: one session channel per command, at most [`MAX_CONCURRENT_EXECS`] at
//! once per connection, stdin written while output is read, and the exit status (128 + the
//! signal number for a command killed by a signal).

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf, Sig};

use super::SshSession;
use super::error::{SshError, open_failure_text};
use crate::transport::{ExecOutput, Transport};

/// Commands run at the same time on one connection; more wait for a free slot. OpenSSH's sshd
/// refuses more than `MaxSessions` (default 10) open channels per connection.
pub(super) const MAX_CONCURRENT_EXECS: usize = 10;

/// How long a refused session channel is retried before the refusal is reported.
const CHANNEL_OPEN_RETRY_FOR: Duration = Duration::from_secs(3);

impl SshSession {
    /// Runs `command` (a shell command line, passed as-is to the remote user's shell) with
    /// `stdin` fed then EOF; collects stdout, stderr and the exit status. Many execs may run
    /// concurrently on one session, one channel each.
    ///
    /// Stdin is written while output is read, so a command may stream any amount both ways.
    /// At most [`MAX_CONCURRENT_EXECS`] run at once; the others wait. A non-zero exit status is
    /// returned in [`ExecOutput::status`], not as an error; a command killed by a signal gets
    /// 128 + the signal number. The command line never appears in errors (it may hold secrets).
    ///
    /// # Errors
    /// [`SshError::Channel`] when the connection is lost, [`SshError::ChannelRefused`] or
    /// [`SshError::ExecRefused`] when the server will not run it, [`SshError::NoExitStatus`]
    /// when the command's end was not reported.
    pub(super) async fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, SshError> {
        let _slot = self.slots.acquire().await.map_err(|_| SshError::Channel {
            host: self.host_name.clone(),
            reason: "the session is closing".to_string(),
        })?;
        let channel = self.open_session_channel().await?;
        let (reader, writer) = channel.split();
        let writer = Arc::new(writer);
        let guard = CloseOnDrop(Some(Arc::clone(&writer)));
        writer
            .exec(true, command)
            .await
            .map_err(|e| self.channel_error(e))?;
        let send = async {
            if !stdin.is_empty() {
                writer.data_bytes(stdin.to_vec()).await?;
            }
            writer.eof().await
        };
        self.collect(reader, send, guard).await
    }

    /// Feeds stdin (`send`) while reading the channel until the server closes it; returns
    /// what the command printed and its exit status. `guard` closes the channel if this ends
    /// before the server closed it.
    async fn collect(
        &self,
        mut reader: ChannelReadHalf,
        send: impl Future<Output = Result<(), russh::Error>>,
        mut guard: CloseOnDrop,
    ) -> Result<ExecOutput, SshError> {
        tokio::pin!(send);
        let mut sent = false;
        let mut output = ExecOutput::default();
        let mut status: Option<u32> = None;
        loop {
            tokio::select! {
                // A failed write means the channel is going away; the exit status (or its
                // absence) read below tells what happened, so the error itself is not kept.
                _ = &mut send, if !sent => sent = true,
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => output.stdout.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        output.stderr.extend_from_slice(&data)
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(signal_status(&signal_name))
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::ExecRefused {
                            host: self.host_name.clone(),
                        });
                    }
                    Some(ChannelMsg::Close) => {
                        guard.disarm();
                        break;
                    }
                    None => break,
                    Some(_) => {}
                },
            }
        }
        match status {
            Some(status) => {
                output.status = status;
                Ok(output)
            }
            None => Err(SshError::NoExitStatus {
                host: self.host_name.clone(),
            }),
        }
    }

    /// Opens a session channel. sshd frees a session slot only some time after it closed the
    /// channel, so right after another exec ended a new channel may be refused although
    /// fewer than [`MAX_CONCURRENT_EXECS`] are open: refusals are retried for a while.
    async fn open_session_channel(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            match self.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(russh::Error::ChannelOpenFailure(
                    ChannelOpenFailure::ConnectFailed
                    | ChannelOpenFailure::AdministrativelyProhibited
                    | ChannelOpenFailure::ResourceShortage,
                )) if started.elapsed() < CHANNEL_OPEN_RETRY_FOR => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(self.channel_error(e)),
            }
        }
    }

    fn channel_error(&self, error: russh::Error) -> SshError {
        match error {
            russh::Error::ChannelOpenFailure(failure) => SshError::ChannelRefused {
                host: self.host_name.clone(),
                reason: open_failure_text(&failure),
            },
            other => SshError::Channel {
                host: self.host_name.clone(),
                reason: other.to_string(),
            },
        }
    }
}

impl Transport for SshSession {
    /// One command; with `--trace`, what it sent and received is recorded.
    async fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, SshError> {
        let result = SshSession::exec(self, command, stdin).await;
        if crate::trace::on() {
            let (exit, stdout, stderr, error) = match &result {
                Ok(o) => (Some(o.status), &o.stdout[..], &o.stderr[..], None),
                Err(e) => (None, &b""[..], &b""[..], Some(e.to_string())),
            };
            crate::trace::record(crate::trace::Exchange {
                host: &self.host_name,
                command,
                stdin,
                exit,
                stdout,
                stderr,
                error,
            });
        }
        result
    }
}

/// Exit status a shell reports for a command killed by `signal`.
fn signal_status(signal: &Sig) -> u32 {
    let number = match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    };
    128 + number
}

/// Closes a channel if the exec using it is dropped or fails before the server closed it, so
/// that the server's session slot (MaxSessions) is freed.
struct CloseOnDrop(Option<Arc<ChannelWriteHalf<client::Msg>>>);

impl CloseOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.close().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_killed_by_a_signal_reports_128_plus_its_number() {
        assert_eq!(signal_status(&Sig::TERM), 143);
        assert_eq!(signal_status(&Sig::KILL), 137);
        assert_eq!(signal_status(&Sig::HUP), 129);
        assert_eq!(signal_status(&Sig::Custom("XCPU".to_string())), 255);
    }
}
