//! Helpers shared by the two test binaries, `offline` (tests/offline/) and `e2e`
//! (tests/e2e/): bounded external commands and the real binary ([`command`]), the lab
//! ([`lab`]), the JSON recap and plan ([`report`]), the guards that put the lab back
//! ([`guard`]), a private sshd to plan and apply against offline ([`sshd`]) and a
//! pseudo-terminal ([`pty`]). Every address used is loopback or the lab's own (172.30.77.0/24).
#![allow(dead_code, unused_imports)]

pub mod command;
pub mod guard;
pub mod lab;
pub mod load;
pub mod pty;
pub mod report;
pub mod sshd;

pub use command::*;
pub use guard::*;
pub use lab::*;
pub use load::*;
pub use report::*;

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary folder, removed when dropped.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("fp-test-{tag}-"))
        .tempdir()
        .expect("make a temporary folder")
}

/// Copies a folder tree (a project's roles/ and templates/ for a test's variant).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}
