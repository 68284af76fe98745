//! Ctrl-C (SIGINT) and SIGTERM (a cancelled CI job) during `plan` and `apply`: the first
//! sets [`INTERRUPTED`] (no new host or role starts; the step in flight finishes or is
//! abandoned cleanly); the second exits at once with [`EXIT_ABORTED`], the one place
//! besides `main` that ends the process.

use super::EXIT_ABORTED;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first Ctrl-C or SIGTERM.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Starts watching for Ctrl-C (SIGINT) and SIGTERM on the current runtime.
pub(super) fn watch_ctrl_c() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                s = sigint.recv() => s.map(|()| "Ctrl-C"),
                s = sigterm.recv() => s.map(|()| "SIGTERM"),
            }
        };
        let Some(first) = next().await else {
            return;
        };
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!(
            "interrupted: finishing the step in flight, then stopping; nothing new is started \
             ({first}; press Ctrl-C again to abort at once)"
        );
        if next().await.is_some() {
            eprintln!(
                "aborted: steps in flight were cut off; temporary files (.NAME.fp-XXXXXX) may \
                 remain beside their targets; run plan to see where each host stands"
            );
            std::process::exit(EXIT_ABORTED);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, finding 16: a cancelled CI job sends SIGTERM; before the fix it killed
    /// the tool in the middle of a step (no cleanup, no recap). It now stops like Ctrl-C.
    #[tokio::test]
    async fn sigterm_is_handled_like_ctrl_c() {
        watch_ctrl_c();
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("timeout")
            .args(["5", "kill", "-TERM", &pid])
            .status()
            .map(|s| s.success());
        assert_eq!(sent.ok(), Some(true));
        for _ in 0..100 {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("SIGTERM did not set INTERRUPTED");
    }
}
