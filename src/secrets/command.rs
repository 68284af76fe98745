//! A secret's `command:` source: a program run here, without a shell, whose standard
//! output is the secret (`sops -d`, `pass show`, `op read`, `vault kv get -field=...`).
//! Bounded in time (the program and whatever it started are killed) and in size.

use crate::shell::{printable, quote};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Largest value a command may print (bytes).
pub(super) const MAX_OUTPUT: usize = 1024 * 1024;
/// How much of a failing command's stderr is shown.
const STDERR_SHOWN: usize = 4096;
/// How long the pipes may stay open once the program has ended or was killed.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs `argv` in `dir` (the inventory's folder; empty: the current one), stdin empty;
/// returns its stdout. `limit` bounds its run, `max` its output.
///
/// # Errors
/// What went wrong, in words, with the command line and its stderr: it could not start,
/// it failed, it overstayed (and was killed), it printed too much or not UTF-8.
pub(super) fn run(
    argv: &[String],
    dir: &Path,
    limit: Duration,
    max: usize,
) -> Result<String, String> {
    let shown = argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err("`command` is empty".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills what it started too.
        .process_group(0);
    if !dir.as_os_str().is_empty() {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot run `{shown}`: {e} (is `{}` installed and on PATH?)",
            printable(program)
        )
    })?;
    let stdout = collect(child.stdout.take(), max + 1);
    let stderr = collect(child.stderr.take(), STDERR_SHOWN);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for `{shown}`: {e}")),
        }
    };
    let Some(status) = status else {
        kill_group(&mut child);
        let err = stderr.recv_timeout(DRAIN).unwrap_or_default();
        return Err(format!(
            "`{shown}` did not finish within {} s and was stopped{}",
            limit.as_secs_f64(),
            stderr_note(&err)
        ));
    };
    let out = stdout.recv_timeout(DRAIN).unwrap_or_default();
    let err = stderr.recv_timeout(DRAIN).unwrap_or_default();
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_string(),
        };
        return Err(format!("`{shown}` failed ({how}){}", stderr_note(&err)));
    }
    if out.len() > max {
        return Err(format!(
            "`{shown}` printed more than {max} bytes: not a secret value"
        ));
    }
    String::from_utf8(out)
        .map_err(|_| format!("`{shown}` printed something that is not UTF-8 text"))
}

/// `: <stderr>` when there is something to show, made printable.
fn stderr_note(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = printable(text.trim());
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Reads a pipe to its end on a thread, keeping at most `keep` bytes (the rest is read and
/// dropped, so that the program never blocks on a full pipe).
fn collect(pipe: Option<impl Read + Send + 'static>, keep: usize) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

/// Kills the program's process group (what it started too), then the program, and reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn go(words: &[&str]) -> Result<String, String> {
        run(
            &argv(words),
            Path::new(""),
            Duration::from_secs(10),
            MAX_OUTPUT,
        )
    }

    #[test]
    fn stdout_is_the_value_and_no_shell_is_involved() {
        assert_eq!(
            go(&["printf", "s3cret-value\\n"]),
            Ok("s3cret-value\n".into())
        );
        // `$HOME` and `;` reach printf as they are: no shell expands them.
        assert_eq!(go(&["printf", "%s", "$HOME;x"]), Ok("$HOME;x".into()));
    }

    #[test]
    fn a_failure_shows_the_exit_status_and_stderr() {
        let e = go(&["sh", "-c", "echo wrong passphrase >&2; exit 3"]).expect_err("fails");
        assert_eq!(
            e,
            "`sh -c 'echo wrong passphrase >&2; exit 3'` failed (exit 3): wrong passphrase"
        );
        let e = go(&["no-such-program-here"]).expect_err("missing");
        assert!(
            e.starts_with("cannot run `no-such-program-here`: No such file"),
            "{e}"
        );
        assert!(e.contains("installed and on PATH"), "{e}");
    }

    #[test]
    fn a_command_that_overstays_is_stopped_with_what_it_started() {
        let started = Instant::now();
        let e = run(
            &argv(&["sh", "-c", "echo waiting >&2; sleep 30; echo late"]),
            Path::new(""),
            Duration::from_millis(300),
            MAX_OUTPUT,
        )
        .expect_err("timeout");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.contains("did not finish within 0.3 s and was stopped: waiting"),
            "{e}"
        );
    }

    #[test]
    fn output_is_bounded_and_must_be_text() {
        let e = run(
            &argv(&["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a"]),
            Path::new(""),
            Duration::from_secs(10),
            1000,
        )
        .expect_err("too big");
        assert!(e.contains("printed more than 1000 bytes"), "{e}");
        let e = go(&["printf", "\\377\\376"]).expect_err("binary");
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn it_runs_in_the_given_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw.txt"), "from-the-folder").expect("write");
        let out = run(
            &argv(&["cat", "pw.txt"]),
            dir.path(),
            Duration::from_secs(10),
            MAX_OUTPUT,
        );
        assert_eq!(out, Ok("from-the-folder".into()));
        // A relative program path is taken from there too. (A fork elsewhere in the test
        // process may briefly hold the new file open for writing: "Text file busy" is
        // retried.)
        use std::os::unix::fs::PermissionsExt;
        let script = dir.path().join("get-secret");
        std::fs::write(&script, "#!/bin/sh\nprintf 'scripted-%s' \"$1\"\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut out = Err(String::new());
        for _ in 0..20 {
            out = run(
                &argv(&["./get-secret", "db"]),
                dir.path(),
                Duration::from_secs(10),
                MAX_OUTPUT,
            );
            match &out {
                Err(e) if e.contains("Text file busy") => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => break,
            }
        }
        assert_eq!(out, Ok("scripted-db".into()));
    }
}
