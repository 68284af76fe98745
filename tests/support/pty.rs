//! The tool on a pseudo-terminal (stdin, stdout and stderr all on it), as an operator at a
//! terminal runs it: wait for a question, type an answer. Bounded in time; the child is
//! killed when a wait runs out.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running on a pseudo-terminal.
pub struct OnTerminal {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    what: String,
}

impl OnTerminal {
    /// Starts `cmd` with a new pseudo-terminal as its stdin, stdout and stderr.
    pub fn spawn(cmd: &mut Command) -> OnTerminal {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master: OwnedFd =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_string_lossy().as_ref())
            .expect("open the terminal's slave side");
        let io = |f: &std::fs::File| Stdio::from(f.try_clone().expect("dup"));
        let what = super::shown(cmd);
        let child = cmd
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave))
            .spawn()
            .unwrap_or_else(|e| panic!("`{what}` could not start: {e}"));
        drop(slave);
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let keep = seen.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // Ends with EIO once every slave descriptor is closed (the child ended).
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = keep.lock() {
                    s.extend_from_slice(&chunk[..n]);
                }
            }
        });
        OnTerminal {
            child,
            master,
            seen,
            what,
        }
    }

    /// What the terminal showed so far (carriage returns dropped).
    pub fn screen(&self) -> String {
        let bytes = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Waits until the terminal shows `text`; fails the test (killing the child) after
    /// `limit`.
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.screen().contains(text) {
            if Instant::now() > end || matches!(self.child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(200));
                if self.screen().contains(text) {
                    return;
                }
                let _ = self.child.kill();
                panic!(
                    "`{}` did not show {text:?} within {} s; the terminal showed:\n{}",
                    self.what,
                    limit.as_secs(),
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type on the terminal");
    }

    /// Waits for the child to end (killed after `limit`); its exit code and the screen.
    pub fn finish(mut self, limit: Duration) -> (i32, String) {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader may still hold the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                return (status.code().unwrap_or(-1), self.screen());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not end within {} s; the terminal showed:\n{}",
                    self.what,
                    limit.as_secs(),
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
