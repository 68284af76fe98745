//! A host for offline tests of the whole pipeline: a private OpenSSH sshd on 127.0.0.1
//! (its own host key, authorized key and known_hosts, killed when dropped) and a small
//! project whose role writes two files into a folder of the test's own (under /run). `plan` and `apply`
//! then run for real against this machine, touching only that folder (and, for an apply,
//! the tool's lock under /run/foobar-provision and one line of
//! /var/log/foobar-provision.log, as on any host).
//!
//! It needs root (the tool writes files owned by root and takes its lock under /run) and
//! /usr/sbin/sshd: without either, [`Host::start`] says why and returns `None`, and the test
//! is skipped (`.ci/run` runs as root and installs openssh-server).

use super::{LIMIT, sh};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
/// The secret the project's second file holds.
pub const SECRET: &str = "offline-canary-secret-42";

/// The project's role: `site.conf` (from a template reading `greeting`) and `secret.conf`
/// (holding the secret), both root's, into `{dir}`.
const ROLE: &str = "\
description: offline tests of plan and apply (tests/support/sshd.rs)
defaults:
  greeting: hello
files:
  - template: site/site.conf.tera
    dest: DIR/site.conf
    mode: \"0644\"
    notify: none
  - template: site/secret.conf.tera
    dest: DIR/secret.conf
    mode: \"0600\"
    notify: none
";

/// A private sshd and a project planned and applied against it.
pub struct Host {
    sshd: Child,
    /// Keys, known_hosts, the project, the inventory and the files the role writes.
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Host {
    /// Starts sshd; `None` (the test is skipped, saying why) without root or sshd.
    pub fn start(tag: &str) -> Option<Host> {
        let (_, uid, _) = sh(Command::new("id").arg("-u"));
        if uid.trim() != "0" {
            eprintln!(
                "skipped: this test needs root (the tool writes root's files and takes its lock)"
            );
            return None;
        }
        if !Path::new(SSHD).exists() {
            eprintln!("skipped: {SSHD} is missing; apt-get install openssh-server");
            return None;
        }
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        // Under /run (root's, 0755): no folder above may be writable by others than root,
        // or the tool refuses to write there (a checkout under /tmp is); else under the
        // build's folder.
        let prefix = format!("fp-{tag}-");
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in("/run")
            .or_else(|_| {
                std::fs::create_dir_all(base)?;
                tempfile::Builder::new().prefix(&prefix).tempdir_in(base)
            })
            .expect("tempdir");
        let d = dir.path();
        for (name, kind) in [("host_key", "ed25519"), ("user_key", "ed25519")] {
            let (code, out, err) = sh(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
                .arg(d.join(name)));
            assert_eq!(code, 0, "ssh-keygen: {out}{err}");
        }
        let user_pub = std::fs::read_to_string(d.join("user_key.pub")).expect("read");
        std::fs::write(d.join("authorized_keys"), user_pub).expect("write");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("read");
        let mut words = host_pub.split_whitespace();
        let (kind, key) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .expect("write known_hosts");
        std::fs::write(d.join("sshd_config"), "").expect("write");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .args(["-p", &port.to_string()]);
        for o in [
            "ListenAddress=127.0.0.1".to_string(),
            format!("HostKey={}", d.join("host_key").display()),
            format!("AuthorizedKeysFile={}", d.join("authorized_keys").display()),
            "StrictModes=no".into(),
            "PidFile=none".into(),
            "UsePAM=no".into(),
            "PermitRootLogin=prohibit-password".into(),
        ] {
            cmd.args(["-o", &o]);
        }
        let sshd = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let host = Host { sshd, dir, port };
        host.wait_for_banner();
        host.write_project();
        Some(host)
    }

    fn wait_for_banner(&self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 7];
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "sshd did not answer on port {} within 10 s:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The folder the role writes into.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inv.yml")
    }

    fn write_project(&self) {
        let p = self.project();
        let files = self.files();
        std::fs::create_dir_all(&files).expect("mkdir files");
        std::fs::create_dir_all(p.join("roles/site")).expect("mkdir");
        std::fs::create_dir_all(p.join("templates/site")).expect("mkdir");
        std::fs::write(
            p.join("roles/site/role.yml"),
            ROLE.replace("DIR", &files.to_string_lossy()),
        )
        .expect("write role");
        self.write_template("greeting {{ greeting }}\n");
        std::fs::write(
            p.join("templates/site/secret.conf.tera"),
            "password {{ secrets.pw }}\n",
        )
        .expect("write template");
        let d = self.dir.path();
        std::fs::write(
            self.inventory(),
            format!(
                "domain: www.example.test\n\
                 ssh:\n  user: root\n  port: {port}\n  identity_file: {key}\n  use_agent: false\n  \
                 known_hosts: {kh}\n  connect_timeout: 5\n  sudo: false\n\
                 tiers:\n  web:\n    roles: [site]\n\
                 hosts:\n  web1:\n    address: 127.0.0.1\n    tier: web\n\
                 vars:\n  greeting: from-inventory\n\
                 secrets:\n  pw:\n    env: FP_OFFLINE_PW\n",
                port = self.port,
                key = d.join("user_key").display(),
                kh = d.join("known_hosts").display(),
            ),
        )
        .expect("write inventory");
    }

    /// Replaces site.conf's template.
    pub fn write_template(&self, text: &str) {
        std::fs::write(self.project().join("templates/site/site.conf.tera"), text)
            .expect("write template");
    }

    /// The tool with this host's inventory and project: `cmd INVENTORY --root PROJECT
    /// ARGS`, run in the host's folder, the secret set, no colours.
    pub fn tool(&self, cmd: &str, args: &[&str]) -> Command {
        let mut all = vec![cmd, "inv.yml", "--root", "project"];
        all.extend_from_slice(args);
        self.bare(&all)
    }

    /// The tool with exactly `args` (e.g. `apply plan.json`), run like [`Host::tool`].
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_foobar-provision"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("FP_OFFLINE_PW", SECRET)
            .env("NO_COLOR", "1")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY");
        c
    }

    /// Runs the tool (stdin closed: no terminal): (exit code, stdout, stderr).
    pub fn run(&self, cmd: &str, args: &[&str]) -> (i32, String, String) {
        super::sh_within(&mut self.tool(cmd, args), LIMIT)
    }

    /// Runs [`Host::bare`] (stdin closed).
    pub fn run_bare(&self, args: &[&str]) -> (i32, String, String) {
        super::sh_within(&mut self.bare(args), LIMIT)
    }

    /// The content of a file the role writes (`None`: absent).
    pub fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.files().join(name)).ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}
