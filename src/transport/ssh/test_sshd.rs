//! The test harness: a private OpenSSH sshd on 127.0.0.1, started for each test with its own
//! host keys and authorized_keys in a temporary directory, and killed (by its pid) when the
//! test ends; plus ssh-keygen and ssh-agent helpers.
//!
//! It never hangs: every external command it runs (sshd, ssh-keygen, ssh-agent, ssh-add, id)
//! is bounded by a timeout. Its guards never panic when dropped: what they cannot undo (a
//! process that will not die, a directory that will not go) is written to stderr.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use russh::keys::PublicKey;

use super::SshOptions;
use crate::transport::known_hosts;

const SSHD: &str = "/usr/sbin/sshd";
/// Said when a program the tests need is missing.
pub(crate) const INSTALL_HINT: &str = "the SSH transport tests need OpenSSH's server and \
                                       client: install them with `apt-get install \
                                       openssh-server`";
/// Longest a helper command (ssh-keygen, ssh-add, id) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest sshd may take to answer on its port, and ssh-agent to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a killed process may take to be reaped before its guard gives up on it.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a line to stderr; never panics (unlike `eprintln!`), for use in `Drop`.
fn log(message: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "test_sshd: {message}");
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "foobar-ssh-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log(format_args!("cannot remove {}: {e}", self.0.display())),
        }
    }
}

/// A child process killed by its pid, and reaped, when dropped.
pub(crate) struct Killed(Child);

impl Killed {
    /// Starts `command`; panics (with the install hint) if it cannot be started.
    pub(crate) fn spawn(command: &mut Command) -> Killed {
        let program = command.get_program().to_string_lossy().into_owned();
        match command.spawn() {
            Ok(child) => Killed(child),
            Err(e) => panic!("cannot start {program}: {e}; {INSTALL_HINT}"),
        }
    }

    /// The exit status, once the process has ended.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id();
        // Killing a process that has already been reaped is refused with InvalidInput.
        if let Err(e) = self.0.kill()
            && e.kind() != io::ErrorKind::InvalidInput
        {
            log(format_args!("cannot kill pid {pid}: {e}"));
        }
        match wait_until(&mut self.0, Instant::now() + REAP_TIMEOUT) {
            Ok(Some(_)) => {}
            Ok(None) => log(format_args!(
                "pid {pid} has not ended {REAP_TIMEOUT:?} after SIGKILL; left behind"
            )),
            Err(e) => log(format_args!("cannot wait for pid {pid}: {e}")),
        }
    }
}

/// Waits for `child` to end, until `deadline`; `None` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a pipe to its end on a thread of its own; the bytes arrive on the returned channel.
fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = sender.send(bytes);
    });
    receiver
}

/// Runs `program` with `args` to its end; returns its stdout, trimmed.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    run_command(Command::new(program).args(args))
}

/// Runs `command` (stdin empty) to its end within [`COMMAND_TIMEOUT`]; returns its stdout,
/// trimmed. Panics if it cannot start, fails or takes too long (it is killed then).
pub(crate) fn run_command(command: &mut Command) -> String {
    run_command_within(command, COMMAND_TIMEOUT)
}

/// [`run_command`] with another time limit.
fn run_command_within(command: &mut Command, timeout: Duration) -> String {
    let shown = format!("{command:?}");
    let mut child = Killed::spawn(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = read_in_background(child.0.stdout.take());
    let stderr = read_in_background(child.0.stderr.take());
    let status = match wait_until(&mut child.0, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        Ok(None) => panic!("{shown} did not end within {timeout:?}"),
        Err(e) => panic!("cannot wait for {shown}: {e}"),
    };
    // The pipes close when the program ends; a grandchild could keep them open.
    let collect = |pipe: mpsc::Receiver<Vec<u8>>| {
        let bytes = pipe.recv_timeout(REAP_TIMEOUT).unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim().to_string()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    assert!(status.success(), "{shown} failed ({status}): {stderr}");
    stdout
}

/// Makes a key pair with ssh-keygen; returns the private key path.
pub(crate) fn keygen(dir: &TempDir, name: &str, key_type: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let path_text = path.to_string_lossy().into_owned();
    let mut args = vec!["-q", "-t", key_type, "-N", passphrase, "-C", name, "-f"];
    args.push(&path_text);
    if key_type == "rsa" {
        args.extend(["-b", "2048"]);
    }
    if !passphrase.is_empty() {
        // Few KDF rounds keep decryption quick in debug builds.
        args.extend(["-a", "2"]);
    }
    run("ssh-keygen", &args);
    path
}

/// The public half of a key made by [`keygen`].
pub(crate) fn public_key(private: &Path) -> PublicKey {
    PublicKey::from_openssh(public_key_line(private).trim()).expect("parse public key")
}

/// The text of the `.pub` file beside a key made by [`keygen`].
fn public_key_line(private: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", private.display())).expect("read public key")
}

/// A TCP port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// A private sshd on 127.0.0.1 with an ed25519 and an RSA host key.
pub(crate) struct Lab {
    /// First field, so that sshd is killed before its directory is removed.
    sshd: Option<Killed>,
    pub(crate) dir: TempDir,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) host_ed25519: PublicKey,
    pub(crate) host_rsa: PublicKey,
    /// The key authorized_keys holds from the start.
    pub(crate) user_key: PathBuf,
    authorized_keys: PathBuf,
}

impl Lab {
    /// Makes the keys and starts sshd; panics with what went wrong if it cannot. `None`
    /// (the test is skipped, and says so) when OpenSSH's server is not installed: plain
    /// `cargo test` must pass on a machine without it.
    pub(crate) fn start(tag: &str) -> Option<Lab> {
        if !Path::new(SSHD).exists() {
            log(format_args!("skipped: {SSHD} is missing; {INSTALL_HINT}"));
            return None;
        }
        let dir = TempDir::new(tag);
        let host_ed = keygen(&dir, "host_ed25519", "ed25519", "");
        let host_rsa = keygen(&dir, "host_rsa", "rsa", "");
        let user_key = keygen(&dir, "user_ed25519", "ed25519", "");
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, public_key_line(&user_key))
            .expect("write authorized_keys");
        let user = run("id", &["-un"]);
        if run("id", &["-u"]) == "0" {
            // sshd running as root wants its privilege separation directory.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let mut lab = Lab {
            sshd: None,
            host_ed25519: public_key(&host_ed),
            host_rsa: public_key(&host_rsa),
            port: free_port(),
            dir,
            user,
            user_key,
            authorized_keys,
        };
        lab.spawn_sshd(&host_ed, &host_rsa);
        Some(lab)
    }

    fn spawn_sshd(&mut self, host_ed: &Path, host_rsa: &Path) {
        let config = self.dir.join("sshd_config");
        std::fs::write(&config, "").expect("write sshd_config");
        let log = std::fs::File::create(self.dir.join("sshd.log")).expect("create sshd log");
        let options = [
            "ListenAddress=127.0.0.1".to_string(),
            format!("HostKey={}", host_ed.display()),
            format!("HostKey={}", host_rsa.display()),
            format!("AuthorizedKeysFile={}", self.authorized_keys.display()),
            "StrictModes=no".to_string(),
            "PidFile=none".to_string(),
            "UsePAM=no".to_string(),
        ];
        let mut command = Command::new(SSHD);
        command
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .args(["-p", &self.port.to_string()]);
        for option in &options {
            command.args(["-o", option]);
        }
        let mut sshd = Killed::spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.wait_for_banner(&mut sshd);
        self.sshd = Some(sshd);
    }

    /// Waits until sshd answers on its port with an SSH banner; panics (sshd is killed by
    /// its guard) if it exits or stays silent for [`START_TIMEOUT`].
    fn wait_for_banner(&self, sshd: &mut Killed) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = sshd.try_wait() {
                panic!("sshd exited ({status}) at start:\n{}", self.sshd_log());
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 7];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                    let _ = stream.write_all(b"SSH-2.0-probe\r\n");
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {} within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What sshd wrote to its log so far (for failure messages).
    pub(crate) fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Adds the public halves of these keys (made by [`keygen`]) to authorized_keys.
    pub(crate) fn authorize(&self, keys: &[&Path]) {
        let mut authorized = std::fs::read_to_string(&self.authorized_keys).expect("read");
        for key in keys {
            authorized.push_str(&public_key_line(key));
        }
        std::fs::write(&self.authorized_keys, authorized).expect("write authorized_keys");
    }

    /// Writes a known_hosts file with these lines and returns its path.
    pub(crate) fn known_hosts(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.dir.join(name);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("write known_hosts");
        path
    }

    /// A known_hosts file that trusts the lab's ed25519 host key.
    pub(crate) fn trusting_known_hosts(&self) -> PathBuf {
        self.known_hosts(
            "known_hosts",
            &[known_hosts::entry_line(
                "127.0.0.1",
                self.port,
                &self.host_ed25519,
            )],
        )
    }

    /// Options for host `lab1` at the lab's sshd, with the lab's user key and no agent.
    pub(crate) fn options(&self, known_hosts: PathBuf) -> SshOptions {
        SshOptions {
            port: self.port,
            identity_files: vec![self.user_key.clone()],
            use_agent: false,
            connect_timeout: Duration::from_secs(10),
            ..SshOptions::new("lab1", "127.0.0.1", self.user.clone(), known_hosts)
        }
    }

    /// Starts an ssh-agent holding the lab's user key; returns it (killed when dropped) and
    /// its socket.
    pub(crate) fn start_agent(&self) -> (Killed, PathBuf) {
        let socket = self.dir.join("agent.sock");
        let agent = Killed::spawn(
            Command::new("ssh-agent")
                .args(["-D", "-a"])
                .arg(&socket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        run_command(
            Command::new("ssh-add")
                .arg(&self.user_key)
                .env("SSH_AUTH_SOCK", &socket),
        );
        (agent, socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_overstays_is_killed_and_reported() {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            run_command_within(Command::new("sleep").arg("30"), Duration::from_millis(200))
        });
        let message = outcome.expect_err("must time out");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("did not end within 200ms"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_failing_command_is_reported_with_its_stderr() {
        let outcome = std::panic::catch_unwind(|| run("ssh-keygen", &["-l", "-f", "/nonexistent"]));
        let message = outcome.expect_err("must fail");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("failed") && message.contains("/nonexistent"),
            "{message}"
        );
    }

    #[test]
    fn dropping_the_guard_kills_the_process() {
        let mut sleeper = Killed::spawn(Command::new("sleep").arg("30"));
        let pid = sleeper.0.id();
        assert!(sleeper.try_wait().is_none());
        drop(sleeper);
        // Gone, or (if the pid was reused meanwhile) something else.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.starts_with(b"sleep\x0030"), "pid {pid} still runs");
    }
}
