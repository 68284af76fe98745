//! Helpers for the end-to-end tests: the lab, the real binary, and looks inside hosts.
//! Every address used here is the lab's own (172.30.77.0/24, made by tests/lab/up).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

pub const VIP: &str = "172.30.77.10";
pub const DOMAIN: &str = "www.foobar.com";

/// Lab hosts and the services each runs once converged.
pub const SERVICES: &[(&str, &[&str])] = &[
    ("db1", &["mariadb"]),
    ("app1", &["foobar-app"]),
    ("web1", &["nginx"]),
    ("lb1", &["haproxy", "keepalived"]),
    ("lb2", &["haproxy", "keepalived"]),
];

static LAB: Mutex<()> = Mutex::new(());

/// Held while a test uses the lab: a thread lock (tests of one binary) and a file
/// lock (test binaries or people running at the same time on this machine).
pub struct LabLock {
    _thread: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// The lab is shared: end-to-end tests take turns.
pub fn lab_lock() -> LabLock {
    let thread = LAB.lock().unwrap_or_else(|p| p.into_inner());
    let path = root().join("tests/lab/.e2e.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    LabLock {
        _thread: thread,
        _file: file,
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn state() -> PathBuf {
    root().join("tests/lab/.state")
}

pub fn sh(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lab_script(name: &str, args: &[&str]) {
    let (code, out, err) = sh(Command::new("bash")
        .arg(root().join("tests/lab").join(name))
        .args(args)
        .env("FOOBAR_PROVISION", env!("CARGO_BIN_EXE_foobar-provision")));
    assert_eq!(code, 0, "tests/lab/{name} failed:\n{out}\n{err}");
}

/// Brings the lab up (a no-op when it is running).
pub fn lab_up(inventory: Option<&Path>) {
    match inventory {
        Some(p) => lab_script("up", &[&p.to_string_lossy()]),
        None => lab_script("up", &[]),
    }
}

/// Removes every lab host and starts bare ones (new host keys).
pub fn lab_recreate() {
    lab_script("down", &[]);
    lab_script("up", &[]);
}

pub fn docker_exec(host: &str, script: &str) -> (i32, String, String) {
    sh(Command::new("docker").args(["exec", host, "sh", "-c", script]))
}

/// Stdout of a command inside a lab host; panics with its output when it fails.
pub fn inside(host: &str, script: &str) -> String {
    let (code, out, err) = docker_exec(host, script);
    assert_eq!(code, 0, "in {host}: `{script}` failed:\n{out}{err}");
    out
}

/// A result of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

pub fn tool(args: &[&str]) -> Run {
    let (code, stdout, stderr) = sh(Command::new(env!("CARGO_BIN_EXE_foobar-provision"))
        .args(args)
        .current_dir(root()));
    Run {
        code,
        stdout,
        stderr,
    }
}

/// A copy of inventories/lab.yml in a temp folder, paths made absolute, `edit` applied.
pub fn lab_inventory(tag: &str, edit: impl Fn(String) -> String) -> (PathBuf, TempDir) {
    let dir = TempDir::new(tag);
    let text = std::fs::read_to_string(root().join("inventories/lab.yml")).expect("lab.yml");
    let text = text.replace("../tests/lab/.state", &state().to_string_lossy());
    let path = dir.0.join("lab.yml");
    std::fs::write(&path, edit(text)).expect("write inventory");
    (path, dir)
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("fp-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every service's main PID, start time and child PIDs (workers), per host: equal
/// snapshots mean nothing was started, restarted or reloaded in between.
pub fn snapshot(hosts: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (host, services) in SERVICES {
        if !hosts.contains(host) {
            continue;
        }
        for s in *services {
            let state = inside(
                host,
                &format!(
                    "pid=$(systemctl show -p MainPID --value {s}); \
                     t=$(systemctl show -p ActiveEnterTimestampMonotonic --value {s}); \
                     kids=$(pgrep -P \"$pid\" 2>/dev/null | sort -n | tr '\\n' ' '); \
                     echo \"pid=$pid since=$t children=$kids\""
                ),
            );
            out.insert(format!("{host}/{s}"), state.trim().to_string());
        }
    }
    out
}

pub fn all_hosts() -> Vec<&'static str> {
    SERVICES.iter().map(|(h, _)| *h).collect()
}

/// `curl` through the VIP with the lab's CA, as a browser would reach www.foobar.com.
pub fn https(path: &str) -> (i32, String) {
    let (code, out, err) = sh(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        "--resolve",
        &format!("{DOMAIN}:443:{VIP}"),
        "--cacert",
        &state().join("tls/ca.pem").to_string_lossy(),
        &format!("https://{DOMAIN}{path}"),
    ]));
    (code, format!("{out}{err}"))
}

/// As [`https`], retried for up to `secs` seconds (HAProxy needs a few health checks
/// to bring a rebuilt backend back into rotation).
pub fn https_eventually(path: &str, secs: u64) -> (i32, String) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (code, body) = https(path);
        let served = code == 0 && !body.contains("503 Service Unavailable");
        if served || std::time::Instant::now() > until {
            return (code, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Recap statuses by host from a JSON run.
pub fn recap(run: &Run) -> BTreeMap<String, (String, u64)> {
    let doc = run.json();
    doc["recap"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or("?").to_string(),
                        (
                            h["status"].as_str().unwrap_or("?").to_string(),
                            h["changes"].as_u64().unwrap_or(0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Takes the lab, brings it up and converges it: how most end-to-end tests start.
pub fn converged_lab() -> LabLock {
    let lock = lab_lock();
    lab_up(None);
    converge();
    lock
}

/// Applies the lab inventory and insists it converged.
pub fn converge() {
    let r = tool(&["apply", "inventories/lab.yml", "--format", "json"]);
    assert_eq!(r.code, 0, "apply failed:\n{}", r.all());
}

/// A client requesting https://www.foobar.com/health through the VIP every `interval`,
/// as a browser would, until stopped. Bounded: it stops by itself after `max`.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Probe>>>,
    pub started: std::time::Instant,
}

#[derive(Debug, Clone)]
pub struct Probe {
    /// Since the prober started.
    pub at: std::time::Duration,
    pub ok: bool,
}

impl Prober {
    pub fn start(interval: std::time::Duration, max: std::time::Duration) -> Prober {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let started = std::time::Instant::now();
        let ca = state().join("tls/ca.pem").to_string_lossy().to_string();
        let handle = std::thread::spawn(move || {
            let mut probes = Vec::new();
            while !flag.load(Ordering::SeqCst) && started.elapsed() < max {
                let t0 = std::time::Instant::now();
                let out = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "1",
                        "--resolve",
                    ])
                    .arg(format!("{DOMAIN}:443:{VIP}"))
                    .args(["--cacert", &ca])
                    .arg(format!("https://{DOMAIN}/health"))
                    .output();
                let ok = out.map(|o| o.stdout == b"200").unwrap_or(false);
                probes.push(Probe {
                    at: t0 - started,
                    ok,
                });
                if let Some(rest) = interval.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            probes
        });
        Prober {
            stop,
            handle: Some(handle),
            started,
        }
    }

    pub fn stop(mut self) -> Vec<Probe> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Appends a measured figure to target/e2e-figures.txt (printed by tests/run) and stderr.
pub fn figure(line: &str) {
    use std::io::Write;
    eprintln!("FIGURE {line}");
    let path = root().join("target/e2e-figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Which lb host holds the VIP now (None when neither does).
pub fn vip_holder() -> Option<&'static str> {
    ["lb1", "lb2"]
        .into_iter()
        .find(|h| docker_exec(h, &format!("ip -o -4 addr show | grep -qF ' {VIP}/'")).0 == 0)
}

/// Waits until the VIP is held by `want` (or by anyone when `want` is None).
pub fn wait_vip(want: Option<&str>, secs: u64) -> Option<&'static str> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let h = vip_holder();
        if h.is_some() && (want.is_none() || h == want) {
            return h;
        }
        if std::time::Instant::now() > until {
            return h;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Applies and insists the run changed nothing on any host.
pub fn assert_no_changes(inventory: &str, extra: &[&str]) {
    let mut args = vec!["apply", inventory, "--format", "json"];
    args.extend_from_slice(extra);
    let r = tool(&args);
    assert_eq!(r.code, 0, "apply failed:\n{}", r.all());
    for (host, (status, changes)) in recap(&r) {
        assert_eq!(
            (status.as_str(), changes),
            ("ok", 0),
            "{host} changed on a repeated apply"
        );
    }
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

/// A copy of the project's roles/ and templates/ in a temp folder, to break on purpose.
pub fn project_copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    for d in ["roles", "templates"] {
        copy_dir(&root().join(d), &dir.0.join(d));
    }
    dir
}

/// The tool's temporary and backup files (`.NAME.fp-*`) left in `dirs` on `host`, one
/// path a line; empty when there are none.
pub fn fp_leftovers(host: &str, dirs: &[&str]) -> String {
    let (_, out, _) = docker_exec(
        host,
        &format!(
            "for d in {}; do ls -A \"$d\" 2>/dev/null | grep -F '.fp-' | sed \"s#^#$d/#\"; done; true",
            dirs.join(" ")
        ),
    );
    out.trim().to_string()
}

/// A run refused by a validator: exit 1, the failed validation of `target` named, the
/// validator's own words (`words`) shown, and the promise that nothing live changed.
pub fn assert_refused_by_validation(run: &Run, target: &str, words: &str) {
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("validation of {target}")),
        "{}",
        run.all()
    );
    assert!(
        run.stdout.contains(words),
        "the validator's own words: {}",
        run.all()
    );
    assert!(run.stdout.contains("left as they were"), "{}", run.all());
}
