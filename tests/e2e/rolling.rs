//! Zero failed requests while any tier changes, under load through the VIP: 16 clients,
//! each a new HTTPS connection per request to /api/visits (HAProxy -> Nginx -> app ->
//! MariaDB), while `apply` rolls out one change after another, with 1 web + 1 app host
//! and with 2 + 2. Every change must cost no request (non-2xx or connection error), and
//! the next plan must be empty. The figures go to tests/run's summary.
//!
//! And the one change that cannot be hitless: a restart of the only database host. The
//! plan warns; the app answers 503 with Retry-After while MariaDB is away, no request hangs,
//! and requests succeed again within seconds.

use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Concurrent clients of the load.
const CLIENTS: usize = 16;
/// The longest one load may run (it is stopped when its apply ends).
const LOAD_LIMIT: Duration = Duration::from_secs(300);

type Edit = Box<dyn Fn(String) -> String>;

/// Adds `line` under the inventory's top-level `vars:`.
fn var(line: &'static str) -> Edit {
    Box::new(move |t: String| {
        t.replace("vars:\n  app_port", &format!("vars:\n  {line}\n  app_port"))
    })
}

/// A new certificate for the site, signed by the lab's CA, as the PEM HAProxy reads
/// (certificate, CA, key), in `dir`.
fn fresh_certificate(dir: &Path) -> String {
    let tls = state().join("tls");
    let d = dir.to_string_lossy().to_string();
    let script = format!(
        "set -e; cd {d}; \
         printf 'basicConstraints = critical, CA:FALSE\\nkeyUsage = critical, digitalSignature, keyEncipherment\\nextendedKeyUsage = serverAuth\\nsubjectAltName = DNS:www.foobar.com, DNS:foobar.com\\n' > ext; \
         openssl req -new -newkey rsa:2048 -nodes -sha256 -subj '/O=foobar lab/CN=www.foobar.com' -keyout key -out csr 2>/dev/null; \
         openssl x509 -req -sha256 -days 30 -in csr -CA {t}/ca.pem -CAkey {t}/ca.key -set_serial 0x$(openssl rand -hex 16) -extfile ext -out crt 2>/dev/null; \
         cat crt {t}/ca.pem key > site.pem; chmod 600 site.pem key",
        t = tls.to_string_lossy()
    );
    let (code, _, err) = sh_within(
        Command::new("sh").args(["-c", &script]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "openssl: a new certificate: {err}");
    dir.join("site.pem").to_string_lossy().to_string()
}

/// One change rolled out under load: apply, then the load's count, then an empty plan.
/// Returns the line for the figures and whether any request failed.
fn under_load(inv: &Path, root: &str, hosts: &[&str], label: &str) -> (String, usize) {
    let inv = inv.to_string_lossy().to_string();
    let apps: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|h| h.starts_with("app"))
        .collect();
    let since: Vec<String> = apps
        .iter()
        .map(|h| inside(h, "date +%s").trim().to_string())
        .collect();
    let load = Load::start("/api/visits", CLIENTS, LOAD_LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let run = tool(&["apply", "--yes", &inv, "--root", root, "--format", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(run.code, 0, "{label}: apply failed:\n{}", run.all());
    let line = format!("{label}: {}", report.summary());
    figure(&line);
    if report.failed() > 0 {
        eprintln!("{label}: first failures:\n{}", report.first_failures(8));
    }
    // A failed request can hide a crash the next request would not see: gunicorn's master
    // must survive every change (a HUP or a planned restart), never be restarted by systemd.
    for (host, t) in apps.iter().zip(&since) {
        let crashes = inside(
            host,
            &format!(
                "journalctl -u foobar-app --since @{t} -o cat --no-pager | \
                 grep -E 'Unhandled exception in main loop|Scheduled restart job|Failed with result' || true"
            ),
        );
        assert!(
            crashes.trim().is_empty(),
            "{label}: gunicorn's master on {host} died and systemd restarted it:\n{crashes}"
        );
    }
    assert_no_changes(&inv, &["--root", root], hosts);
    (line, report.failed())
}

/// Every kind of change, one after another (each on top of the ones before), then back to
/// the repository's files, with the load running through each apply.
fn every_change_under_load(topology: &str, hosts: &[&str], scale: &dyn Fn(String) -> String) {
    let project = project_copy("rolling");
    let root = project.path().to_string_lossy().to_string();
    let certs = temp_dir("rolling-cert");
    let pem = fresh_certificate(certs.path());
    let old_pem = state()
        .join("tls/www.foobar.com.pem")
        .to_string_lossy()
        .to_string();
    let app_py = project.path().join("app/app.py");
    let own_app = app_of(project.path());
    let steps: Vec<(&str, Edit)> = vec![
        (
            "nginx.conf change (reload nginx)",
            var("nginx_worker_connections: 1000"),
        ),
        (
            "nginx site change (reload nginx)",
            var("nginx_proxy_read_timeout: 31s"),
        ),
        (
            "nginx listen change (restart nginx, drained)",
            var("nginx_listen_backlog: 1024"),
        ),
        (
            "app unit change (restart gunicorn, socket kept)",
            var("app_workers: 3"),
        ),
        (
            "app release (new code: upload, switch, gunicorn HUP)",
            Box::new(|t| t),
        ),
        (
            "haproxy change (reload, standby first)",
            var("haproxy_maxconn: 4000"),
        ),
        (
            "firewall change on every host (nft reload)",
            Box::new(|t: String| {
                t.replace(
                    "admin_networks: [172.30.77.1/32]",
                    "admin_networks: [172.30.77.1/32, 192.0.2.0/24]",
                )
            }),
        ),
        (
            "TLS certificate change (haproxy reload)",
            Box::new(move |t: String| t.replace(&old_pem, &pem)),
        ),
    ];
    let mut done: Vec<&Edit> = Vec::new();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for (label, edit) in &steps {
        done.push(edit);
        if label.starts_with("app release") {
            let code = std::fs::read_to_string(&app_py).expect("app.py");
            std::fs::write(&app_py, format!("{code}\n# changed by the rolling test\n"))
                .expect("write app.py");
        }
        let (inv, _dir) = lab_inventory("rolling", |t| {
            done.iter().fold(own_app(scale(t)), |t, e| e(t))
        });
        let (line, n) = under_load(
            &inv,
            &root,
            hosts,
            &format!("under load, {topology}: {label}"),
        );
        lines.push(line.clone());
        if n > 0 {
            failed.push(line);
        }
    }
    // Back: the repository's roles and the inventory without the changes.
    let (inv, _dir) = lab_inventory("rolling", scale);
    let repo = crate::support::root().to_string_lossy().to_string();
    let (line, n) = under_load(
        &inv,
        &repo,
        hosts,
        &format!("under load, {topology}: every change reverted at once"),
    );
    lines.push(line.clone());
    if n > 0 {
        failed.push(line);
    }
    assert!(
        failed.is_empty(),
        "requests failed while changes rolled out:\n{}\nall:\n{}",
        failed.join("\n"),
        lines.join("\n")
    );
}

#[test]
#[ignore = "needs the lab"]
fn every_change_costs_no_request_with_one_web_and_one_app_host() {
    let _lab = converged_lab();
    wait_vip(None, 20).expect("one lb holds the VIP");
    every_change_under_load("1 web + 1 app", LAB_HOSTS, &|t| t);
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
}

#[test]
#[ignore = "needs the lab"]
fn every_change_costs_no_request_with_two_web_and_two_app_hosts() {
    let _lab = converged_lab();
    let (inv, _dir, _restore) = scale_out("rolling-scale");
    let scaled = SCALED_HOSTS;
    let inv_s = inv.to_string_lossy().to_string();
    let repo = crate::support::root().to_string_lossy().to_string();
    wait_vip(None, 20).expect("one lb holds the VIP");

    // A listen change restarts nginx: the plan says so and shows the drain.
    let (listen, _d) = lab_inventory("rolling-plan", |t| {
        var("nginx_listen_backlog: 2048")(two_web_two_app(t))
    });
    let listen = listen.to_string_lossy().to_string();
    let plan = tool(&["plan", &listen, "--root", &repo, "--format", "json"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let doc = plan.json();
    let web1 = doc["plan"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["host"] == "web1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(web1["drain"]["backend"], "web", "{web1}");
    assert_eq!(
        web1["drain"]["via"],
        serde_json::json!(["lb1", "lb2"]),
        "{web1}"
    );
    let text = tool(&["plan", &listen, "--root", &repo]);
    assert!(
        text.stdout.contains("a changed `listen` line")
            && text
                .stdout
                .contains("drain: out of HAProxy backend web on lb1, lb2"),
        "{}",
        text.stdout
    );

    // `--tier web`: the balancers are not selected; they are connected for the drain only.
    let load = Load::start("/api/visits", CLIENTS, LOAD_LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let run = tool(&["apply", "--yes", &listen, "--root", &repo, "--tier", "web"]);
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(run.code, 0, "{}", run.all());
    for web in ["web1", "web2"] {
        for lb in ["lb1", "lb2"] {
            assert!(
                run.all()
                    .contains(&format!("[{web}] drained from {lb} (web)")),
                "{web} drained from {lb}:\n{}",
                run.all()
            );
        }
    }
    figure(&format!(
        "under load, 2 web + 2 app: nginx listen change with --tier web (balancers connected for the drain only): {}",
        report.summary()
    ));
    assert_eq!(report.failed(), 0, "{}", report.first_failures(8));
    assert_no_changes(&listen, &["--root", &repo], scaled);
    let run = tool(&["apply", "--yes", &inv_s, "--root", &repo]);
    assert_eq!(run.code, 0, "back to the default backlog: {}", run.all());

    every_change_under_load("2 web + 2 app", scaled, &two_web_two_app);

    scale_back();
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
}

/// A restart of the only database host: the plan warns; meanwhile the app answers 503 with
/// Retry-After (no stack trace, no hang) and serves again within seconds.
#[test]
#[ignore = "needs the lab"]
fn a_database_restart_answers_503_with_retry_after_and_recovers() {
    let _lab = converged_lab();
    wait_vip(None, 20).expect("one lb holds the VIP");
    let (inv, _dir) = lab_inventory("db-restart", |t| var("mysql_max_connections: 201")(t));
    let inv_s = inv.to_string_lossy().to_string();
    let repo = crate::support::root().to_string_lossy().to_string();
    let plan = tool(&["plan", &inv_s, "--root", &repo]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    assert!(
        plan.stdout.contains("[mysql] restart mariadb")
            && plan.stdout.contains("this restart interrupts the database"),
        "{}",
        plan.stdout
    );

    let load = Load::start("/api/visits", 4, LOAD_LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let run = tool(&[
        "apply", "--yes", &inv_s, "--root", &repo, "--format", "json",
    ]);
    let applied_at = load.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let report = load.stop();
    assert_eq!(run.code, 0, "{}", run.all());
    figure(&format!(
        "under load, database restart (mariadb, one db host): {}",
        report.summary()
    ));
    let bad: Vec<&Sample> = report
        .samples
        .iter()
        .filter(|s| !(s.ok() || s.code == 503 && s.retry_after.is_some()))
        .collect();
    assert!(
        bad.is_empty(),
        "while the database restarts, every failed answer is a 503 with Retry-After: {:?}",
        &bad[..bad.len().min(5)]
    );
    let slowest = report
        .samples
        .iter()
        .map(|s| s.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(12),
        "a request hung for {slowest:?} while the database restarted"
    );
    // Requests started more than 3 s after the apply ended all succeed.
    let late_failures = report
        .samples
        .iter()
        .filter(|s| s.at > applied_at + Duration::from_secs(3) && !s.ok())
        .count();
    assert_eq!(late_failures, 0, "{}", report.first_failures(5));
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.at > applied_at + Duration::from_secs(3))
    );
    assert_no_changes(&inv_s, &["--root", &repo], LAB_HOSTS);
    converge();
}
