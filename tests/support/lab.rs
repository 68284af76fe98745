//! The five-host lab (tests/lab/): taking turns on it, bringing it up, looking inside
//! hosts, and reaching the site through the VIP. Every address is the lab's own.

use super::command::*;
use super::guard::Restore;
use super::{root, temp_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const VIP: &str = "172.30.77.10";
pub const DOMAIN: &str = "www.foobar.com";

/// The hosts of inventories/lab.yml.
pub const LAB_HOSTS: &[&str] = &["db1", "app1", "web1", "lb1", "lb2", "mon1"];

/// Lab hosts and the services each runs once converged.
pub const SERVICES: &[(&str, &[&str])] = &[
    (
        "db1",
        &[
            "mariadb",
            "prometheus-node-exporter",
            "prometheus-mysqld-exporter",
        ],
    ),
    ("app1", &["foobar-app", "prometheus-node-exporter"]),
    (
        "web1",
        &[
            "nginx",
            "prometheus-node-exporter",
            "prometheus-nginx-exporter",
        ],
    ),
    (
        "lb1",
        &["haproxy", "keepalived", "prometheus-node-exporter"],
    ),
    (
        "lb2",
        &["haproxy", "keepalived", "prometheus-node-exporter"],
    ),
    (
        "mon1",
        &[
            "prometheus",
            "prometheus-alertmanager",
            "prometheus-blackbox-exporter",
            "prometheus-node-exporter",
        ],
    ),
];

/// How long a test waits for its turn on the lab before it fails (tests/run runs one
/// test at a time; this only bites when someone else holds the lab).
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);
/// tests/lab/up may build the image (about 90 s) and boots five hosts.
const LAB_SCRIPT_LIMIT: Duration = Duration::from_secs(600);

static LAB: Mutex<()> = Mutex::new(());

/// Held while a test uses the lab: a thread lock (tests of one binary) and a file
/// lock (test binaries or people running at the same time on this machine).
pub struct LabLock {
    _thread: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// The lab is shared: end-to-end tests take turns (bounded: see [`LOCK_WAIT`]).
pub fn lab_lock() -> LabLock {
    let until = Instant::now() + LOCK_WAIT;
    let thread = loop {
        match LAB.try_lock() {
            Ok(g) => break g,
            Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        assert!(
            Instant::now() < until,
            "waited {LOCK_WAIT:?} for another test of this binary to release the lab"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let path = root().join("tests/lab/.e2e.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
        }
        assert!(
            Instant::now() < until,
            "waited {LOCK_WAIT:?} for the lab: another process holds {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    LabLock {
        _thread: thread,
        _file: file,
    }
}

pub fn state() -> PathBuf {
    root().join("tests/lab/.state")
}

/// Runs tests/lab/NAME with this build's binary. The engine must be prepared already
/// (tests/run does it): a test never installs packages.
fn try_lab_script(name: &str, args: &[&str]) -> Result<(), String> {
    let out = run_within(
        Command::new("bash")
            .arg(root().join("tests/lab").join(name))
            .args(args)
            .env("FOOBAR_PROVISION", env!("CARGO_BIN_EXE_foobar-provision"))
            .env("FOOBAR_LAB_NO_INSTALL", "1"),
        LAB_SCRIPT_LIMIT,
    )?;
    if out.code == 0 {
        Ok(())
    } else {
        Err(format!(
            "tests/lab/{name} exited {}:\n{}",
            out.code,
            out.all()
        ))
    }
}

/// Brings the lab up (a quick no-op when it is running); for guards: never panics.
pub fn try_lab_up(inventory: Option<&Path>) -> Result<(), String> {
    match inventory {
        Some(p) => try_lab_script("up", &[&p.to_string_lossy()]),
        None => try_lab_script("up", &[]),
    }
}

/// Brings the lab up (a no-op when it is running).
pub fn lab_up(inventory: Option<&Path>) {
    try_lab_up(inventory).unwrap_or_else(|e| panic!("{e}"));
}

/// Removes every lab host and starts bare ones (new host keys).
pub fn lab_recreate() {
    try_lab_script("down", &[]).unwrap_or_else(|e| panic!("{e}"));
    lab_up(None);
}

/// The root folder of a lab host's file system, read from this machine through
/// /proc/PID/root: looking at files this way needs no `docker exec`, so it works while the
/// host is cut off and never enters the container.
pub fn host_root(host: &str) -> PathBuf {
    let (code, out, err) = docker(&["inspect", "-f", "{{.State.Pid}}", host]);
    assert_eq!(code, 0, "docker inspect {host}: {err}");
    let pid: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("docker inspect {host}: no pid in `{out}`"));
    assert!(pid > 0, "{host} is not running");
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// A copy of inventories/lab.yml in a temp folder, paths made absolute, `edit` applied.
pub fn lab_inventory(tag: &str, edit: impl Fn(String) -> String) -> (PathBuf, tempfile::TempDir) {
    let dir = temp_dir(tag);
    let text = std::fs::read_to_string(root().join("inventories/lab.yml")).expect("lab.yml");
    let text = text.replace("../tests/lab/.state", &state().to_string_lossy());
    // The app tier's release: the repository's app/ folder.
    let text = text.replace(
        "source: ../app",
        &format!("source: {}", root().join("app").display()),
    );
    let path = dir.path().join("lab.yml");
    std::fs::write(&path, edit(text)).expect("write inventory");
    (path, dir)
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
    LAB_HOSTS.to_vec()
}

/// The internal CA's certificate on every host (role pki).
pub const INTERNAL_CA: &str = "/etc/foobar/pki/ca.pem";

/// The (certificate, key) of the internal CA that lab host `host` holds: what it shows
/// as a client (HAProxy's towards the web tier, Nginx's towards the app, ...).
pub fn client_cert_of(host: &str) -> (&'static str, &'static str) {
    match host.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "lb" => (
            "/etc/haproxy/internal/client.crt",
            "/etc/haproxy/internal/client.crt.key",
        ),
        "web" => ("/etc/nginx/internal/web.crt", "/etc/nginx/internal/web.key"),
        "app" => ("/etc/foobar-app/tls/app.crt", "/etc/foobar-app/tls/app.key"),
        "db" => ("/etc/mysql/tls/db.crt", "/etc/mysql/tls/db.key"),
        _ => (
            "/etc/prometheus/tls/prometheus.crt",
            "/etc/prometheus/tls/prometheus.key",
        ),
    }
}

/// A shell command, to run inside lab host `from`, that asks the web host at `address`
/// for /health over HTTPS as HAProxy does (it prints `ok`): the internal CA verifies the web host, `from`'s
/// certificate is the client certificate. Bounded by `secs`.
pub fn web_health_from(from: &str, address: &str, secs: u32) -> String {
    let (cert, key) = client_cert_of(from);
    format!(
        "curl -fsS --max-time {secs} --cacert {INTERNAL_CA} --cert {cert} --key {key} https://{address}/health"
    )
}

/// `curl` through the VIP with the lab's CA, as a browser would reach www.foobar.com.
pub fn https(path: &str) -> (i32, String) {
    https_at(VIP, path)
}

/// `curl` to www.foobar.com at `addr` (a VIP or an LB's own address) with the lab's CA.
pub fn https_at(addr: &str, path: &str) -> (i32, String) {
    let (code, out, err) = sh(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        "--resolve",
        &format!("{DOMAIN}:443:{addr}"),
        "--cacert",
        &state().join("tls/ca.pem").to_string_lossy(),
        &format!("https://{DOMAIN}{path}"),
    ]));
    (code, format!("{out}{err}"))
}

/// As [`https`], retried for up to `secs` seconds (HAProxy needs a few health checks
/// to bring a rebuilt backend back into rotation).
pub fn https_eventually(path: &str, secs: u64) -> (i32, String) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, body) = https(path);
        let served = code == 0 && !body.contains("503 Service Unavailable");
        if served || Instant::now() > until {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
    let r = tool(&["apply", "--yes", "inventories/lab.yml", "--format", "json"]);
    assert_eq!(r.code, 0, "apply failed:\n{}", r.all());
}

/// A client requesting https://www.foobar.com/health through the VIP every `interval`,
/// as a browser would, until stopped. Bounded: it stops by itself after `max`.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Probe>>>,
    pub started: Instant,
}

#[derive(Debug, Clone)]
pub struct Probe {
    /// Since the prober started.
    pub at: Duration,
    pub ok: bool,
}

impl Prober {
    /// Requests through the lab's VIP.
    pub fn start(interval: Duration, max: Duration) -> Prober {
        Prober::start_at(VIP, interval, max)
    }

    /// Requests through `addr` (a second VIP).
    pub fn start_at(addr: &str, interval: Duration, max: Duration) -> Prober {
        Prober::start_with(addr, interval, max, None)
    }

    /// As [`Prober::start`], but a request whose TCP connection is not up within 0.2 s
    /// fails then (instead of after curl's 1 s): while a VIP has no holder each probe
    /// takes 0.2 s, so an outage is measured to about 0.2 s.
    pub fn start_fine(interval: Duration, max: Duration) -> Prober {
        Prober::start_with(VIP, interval, max, Some("0.2"))
    }

    fn start_with(
        addr: &str,
        interval: Duration,
        max: Duration,
        connect_timeout: Option<&'static str>,
    ) -> Prober {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let ca = state().join("tls/ca.pem").to_string_lossy().to_string();
        let resolve = format!("{DOMAIN}:443:{addr}");
        let handle = std::thread::spawn(move || {
            let mut probes = Vec::new();
            while !flag.load(Ordering::SeqCst) && started.elapsed() < max {
                let t0 = Instant::now();
                let out = run_within(
                    Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                        .args(["--max-time", "1"])
                        .args(
                            connect_timeout
                                .map(|t| ["--connect-timeout", t])
                                .iter()
                                .flatten(),
                        )
                        .arg("--resolve")
                        .arg(&resolve)
                        .args(["--cacert", &ca])
                        .arg(format!("https://{DOMAIN}/health")),
                    Duration::from_secs(5),
                );
                let ok = out.map(|o| o.stdout == "200").unwrap_or(false);
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
    holder_of(VIP)
}

/// Which lb host holds `vip` now (None when neither does).
pub fn holder_of(vip: &str) -> Option<&'static str> {
    ["lb1", "lb2"]
        .into_iter()
        .find(|h| docker_exec(h, &format!("ip -o -4 addr show | grep -qF ' {vip}/'")).0 == 0)
}

/// Waits until the VIP is held by `want` (or by anyone when `want` is None).
pub fn wait_vip(want: Option<&str>, secs: u64) -> Option<&'static str> {
    wait_holder(VIP, want, secs)
}

/// Waits until `vip` is held by `want` (or by anyone when `want` is None); returns the
/// holder at the end.
pub fn wait_holder(vip: &str, want: Option<&str>, secs: u64) -> Option<&'static str> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = holder_of(vip);
        if h.is_some() && (want.is_none() || h == want) {
            return h;
        }
        if Instant::now() > until {
            return h;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A copy of the project's roles/ and templates/ in a temp folder, to break on purpose.
pub fn project_copy(tag: &str) -> tempfile::TempDir {
    let dir = temp_dir(tag);
    for d in ["roles", "templates", "app"] {
        super::copy_dir(&root().join(d), &dir.path().join(d));
    }
    dir
}

/// An inventory edit that deploys the app of `project` (a [`project_copy`]) instead of
/// the repository's.
pub fn app_of(project: &Path) -> impl Fn(String) -> String {
    let from = format!("source: {}", root().join("app").display());
    let to = format!("source: {}", project.join("app").display());
    move |t: String| t.replace(&from, &to)
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

/// The lab's inventory text with web2 (172.30.77.22) and app2 (172.30.77.32) beside
/// web1 and app1.
pub fn two_web_two_app(t: String) -> String {
    t.replace(
        "  app1:\n",
        "  web2:\n    address: 172.30.77.22\n    tier: web\n  app1:\n",
    )
    .replace(
        "  db1:\n",
        "  app2:\n    address: 172.30.77.32\n    tier: app\n  db1:\n",
    )
}

/// The hosts of [`two_web_two_app`]'s inventory.
pub const SCALED_HOSTS: &[&str] = &["db1", "app1", "app2", "web1", "web2", "lb1", "lb2", "mon1"];

/// Starts web2 and app2 (the inventory of [`two_web_two_app`], under `tag`) and converges
/// them with the repository's roles. Returns the inventory, its folder, and a guard that
/// removes the two hosts whatever happens (the lab is its own hosts again).
pub fn scale_out(
    tag: &str,
) -> (
    PathBuf,
    tempfile::TempDir,
    Restore<impl FnMut() -> Result<(), String>>,
) {
    let restore = Restore(|| try_docker(&["rm", "-f", "web2", "app2"]).map(|_| ()));
    lab_up(None);
    let (inv, dir) = lab_inventory(tag, two_web_two_app);
    lab_up(Some(&inv));
    let run = tool(&[
        "apply",
        "--yes",
        &inv.to_string_lossy(),
        "--root",
        &root().to_string_lossy(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "converging web2 and app2: {}", run.all());
    (inv, dir, restore)
}

/// Back to the repository's lab after [`scale_out`]: web2 and app2 removed, the lab up and
/// converged (their addresses leave HAProxy's, Nginx's and Prometheus's configs).
pub fn scale_back() {
    let (code, _, err) = docker(&["rm", "-f", "web2", "app2"]);
    assert_eq!(code, 0, "removing web2 and app2: {err}");
    lab_up(None);
    converge();
}
