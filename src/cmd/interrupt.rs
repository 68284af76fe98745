//! Ctrl-C during `plan` and `apply`: the first sets [`INTERRUPTED`] (no new host or role
//! starts; the step in flight finishes or is abandoned cleanly); the second exits at once
//! with [`EXIT_ABORTED`], the one place besides `main` that ends the process.

use super::EXIT_ABORTED;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first Ctrl-C.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Starts watching for Ctrl-C (SIGINT) on the current runtime.
pub(super) fn watch_ctrl_c() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
        return;
    };
    tokio::spawn(async move {
        if sigint.recv().await.is_none() {
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!(
            "interrupted: finishing the step in flight, then stopping; nothing new is started \
             (press Ctrl-C again to abort at once)"
        );
        if sigint.recv().await.is_some() {
            eprintln!(
                "aborted: steps in flight were cut off; temporary files (.NAME.fp-XXXXXX) may \
                 remain beside their targets; run plan to see where each host stands"
            );
            std::process::exit(EXIT_ABORTED);
        }
    });
}
