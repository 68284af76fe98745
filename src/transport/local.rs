//! A transport for tests: every command runs with the local shell (a host that is this
//! machine, without sudo), bounded by `timeout 60`, and is counted.

use super::{ExecOutput, SshError, Transport};
use std::future::Future;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::AsyncWriteExt;

#[derive(Default)]
pub struct Local {
    /// Commands run so far.
    pub execs: AtomicU32,
}

impl Transport for Local {
    fn exec(
        &self,
        command: &str,
        stdin: &[u8],
    ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let (command, stdin) = (command.to_string(), stdin.to_vec());
        async move {
            let failed = |e: std::io::Error| SshError::Channel {
                host: "local".into(),
                reason: e.to_string(),
            };
            let mut child = tokio::process::Command::new("timeout")
                .args(["60", "sh", "-c", &command])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(failed)?;
            if let Some(mut input) = child.stdin.take() {
                tokio::spawn(async move {
                    let _ = input.write_all(&stdin).await;
                });
            }
            let out = child.wait_with_output().await.map_err(failed)?;
            Ok(ExecOutput {
                status: out.status.code().map_or(255, |c| c as u32),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }
}
