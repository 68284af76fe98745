//! HTTPS between every tier, with the internal CA of the inventory's `pki:`: HAProxy ->
//! Nginx, Nginx -> app and app -> MariaDB are TLS with certificates of that CA on both
//! sides (mutual TLS). Each hop refuses plaintext, a client without a certificate and a
//! client whose certificate another CA signed; the normal path serves data from MariaDB.
//! Every private key was made on its host, is 0600, and never crossed a connection (the
//! tool's own `--trace` shows everything that did); renewing every certificate under
//! load costs no request.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const WEB1: &str = "172.30.77.21";
const APP1: &str = "172.30.77.31";
const DB1: &str = "172.30.77.41";

/// Every certificate of the lab: (host, certificate, key, key's owner), one per host (the
/// paths are `client_cert_of`'s).
fn certs() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    LAB_HOSTS
        .iter()
        .map(|&h| {
            let (cert, key) = client_cert_of(h);
            let owner = match h {
                "db1" => "mysql",
                "app1" => "www-data",
                "mon1" => "prometheus",
                _ => "root",
            };
            (h, cert, key, owner)
        })
        .collect()
}

/// A CA that is not the internal one and a client certificate it signed, copied to
/// /tmp/rogue.{crt,key} (and the CA to /tmp/rogue-ca.pem) on each of `hosts`.
fn rogue_client_on(hosts: &[&str]) -> tempfile::TempDir {
    let dir = temp_dir("rogue-ca");
    let d = dir.path().to_string_lossy().to_string();
    let script = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/CN=rogue CA' \
           -addext basicConstraints=critical,CA:TRUE -keyout ca.key -out ca.pem 2>/dev/null; \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=web1' \
           -keyout rogue.key -out rogue.csr 2>/dev/null; \
         printf 'subjectAltName=DNS:web1,DNS:web,DNS:app,IP:{WEB1},IP:{APP1}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > ext; \
         openssl x509 -req -in rogue.csr -CA ca.pem -CAkey ca.key -days 2 -set_serial 7 -extfile ext -out rogue.crt 2>/dev/null; \
         chmod 644 rogue.key"
    );
    let (code, _, err) = sh_within(
        Command::new("sh").args(["-c", &script]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "openssl: a rogue CA and client certificate: {err}");
    for h in hosts {
        for (f, to) in [
            ("rogue.crt", "/tmp/rogue.crt"),
            ("rogue.key", "/tmp/rogue.key"),
            ("ca.pem", "/tmp/rogue-ca.pem"),
        ] {
            let from = dir.path().join(f).to_string_lossy().to_string();
            let (code, _, err) = docker(&["cp", &from, &format!("{h}:{to}")]);
            assert_eq!(code, 0, "docker cp {f} to {h}: {err}");
        }
    }
    dir
}

/// `curl` inside `from` with `args`: (HTTP status, or 000 when no HTTP answer came; the
/// output). Bounded by curl's own --max-time and the docker limit.
fn curl_in(from: &str, args: &str) -> (String, String) {
    let (_, out, err) = docker_exec(
        from,
        &format!("curl -sS -o /dev/null --max-time 5 -w '%{{http_code}}' {args}"),
    );
    (out.trim().to_string(), err)
}

/// One hop seen from its client: plaintext, TLS without a client certificate and with the
/// rogue one are refused (no 200); the host's own certificate of the internal CA passes.
fn check_hop(label: &str, from: &str, https_url: &str, plain_urls: &[&str]) {
    let (cert, key) = client_cert_of(from);
    for url in plain_urls {
        let (status, err) = curl_in(from, url);
        assert_ne!(
            status, "200",
            "{label}: plaintext {url} must be refused ({err})"
        );
        figure(&format!(
            "tls: {label}: plaintext {url} -> {status} {}",
            err.trim()
        ));
    }
    let (status, err) = curl_in(from, &format!("-k {https_url}"));
    assert_ne!(
        status, "200",
        "{label}: no client certificate must be refused ({err})"
    );
    let (status, err) = curl_in(
        from,
        &format!("-k --cert /tmp/rogue.crt --key /tmp/rogue.key {https_url}"),
    );
    assert_ne!(
        status, "200",
        "{label}: another CA's certificate must be refused ({err})"
    );
    figure(&format!(
        "tls: {label}: a client certificate of another CA -> {status} {}",
        err.trim()
    ));
    // The server's own certificate: the internal CA verifies it; another CA does not.
    let (status, err) = curl_in(
        from,
        &format!("--cacert /tmp/rogue-ca.pem --cert {cert} --key {key} {https_url}"),
    );
    assert_ne!(
        status, "200",
        "{label}: verified against another CA ({err})"
    );
    let (status, err) = curl_in(
        from,
        &format!("--cacert {INTERNAL_CA} --cert {cert} --key {key} {https_url}"),
    );
    assert_eq!(status, "200", "{label}: the internal path must work: {err}");
}

/// Python on app1 connecting to MariaDB as the app's account: `ssl` is the PyMySQL
/// keyword arguments. Returns the script's output (`OK` or the error).
fn db_connect_from_app(ssl: &str) -> String {
    let pw = std::fs::read_to_string(state().join("secrets/db_app_password")).expect("password");
    let script = format!(
        "import os, pymysql\n\
         try:\n    c = pymysql.connect(host='{DB1}', user='foobar', password=os.environ['FP_PW'], database='foobar', connect_timeout=5{ssl})\n    \
         c.cursor().execute('SELECT 1'); print('OK')\n\
         except Exception as e:\n    print('REFUSED', e)\n"
    );
    let (code, out, err) = docker(&[
        "exec",
        "-e",
        &format!("FP_PW={}", pw.trim()),
        "app1",
        "python3",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "python on app1: {out}{err}");
    out.trim().to_string()
}

#[test]
#[ignore = "needs the lab"]
fn every_internal_hop_refuses_plaintext_and_other_cas_and_the_site_works() {
    let _lab = converged_lab();
    let _rogue = rogue_client_on(&["lb1", "web1"]);
    check_hop(
        "lb -> web",
        "lb1",
        &format!("https://{WEB1}/health"),
        &[
            &format!("http://{WEB1}/health"),
            &format!("http://{WEB1}:443/health"),
        ],
    );
    check_hop(
        "web -> app",
        "web1",
        &format!("https://{APP1}:8000/health"),
        &[&format!("http://{APP1}:8000/health")],
    );
    let (code, body) = https_eventually("/api/visits", 20);
    assert_eq!(code, 0, "{body}");
    assert!(
        body.contains("visits"),
        "data from MariaDB through every hop: {body}"
    );
}

#[test]
#[ignore = "needs the lab"]
fn mariadb_refuses_the_app_account_without_tls_or_without_its_certificate() {
    let _lab = converged_lab();
    let _rogue = rogue_client_on(&["app1"]);
    let ca = format!(", ssl_ca='{INTERNAL_CA}'");
    let (cert, key) = client_cert_of("app1");
    for (label, ssl) in [
        ("plaintext", String::new()),
        ("TLS without a client certificate", ca.clone()),
        (
            "TLS with another CA's client certificate",
            format!("{ca}, ssl_cert='/tmp/rogue.crt', ssl_key='/tmp/rogue.key'"),
        ),
    ] {
        let out = db_connect_from_app(&ssl);
        assert!(out.starts_with("REFUSED"), "{label}: {out}");
        figure(&format!("tls: app -> db: {label} -> {out}"));
    }
    let out = db_connect_from_app(&format!(
        "{ca}, ssl_cert='{cert}', ssl_key='{key}', ssl_verify_cert=True, ssl_verify_identity=True"
    ));
    assert_eq!(out, "OK", "the app's own path");
}

/// A key's lines between its PEM markers: what would show if it ever crossed.
fn key_body(host: &str, key: &str) -> Vec<String> {
    inside(host, &format!("cat {key}"))
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs the lab"]
fn private_keys_are_made_on_their_hosts_0600_and_never_cross_a_connection() {
    let _lab = converged_lab();
    // web1 loses its key and certificate, db1 its certificate: a new key is made on
    // web1, db1's key is kept; both get a certificate.
    inside(
        "web1",
        "rm -f /etc/nginx/internal/web.key /etc/nginx/internal/web.crt",
    );
    let db_key = key_body("db1", "/etc/mysql/tls/db.key");
    inside("db1", "rm -f /etc/mysql/tls/db.crt");
    let traces = temp_dir("tls-trace");
    let trace = traces
        .path()
        .join("trace.jsonl")
        .to_string_lossy()
        .to_string();
    let plan = tool(&[
        "plan",
        "inventories/lab.yml",
        "--format",
        "json",
        "--trace",
        &trace,
    ]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let planned = plan_of(&plan, LAB_HOSTS);
    assert_eq!(
        planned["web1"].certificates,
        [(
            "/etc/nginx/internal/web.crt".to_string(),
            "issue".to_string()
        )]
    );
    assert_eq!(
        planned["db1"].certificates,
        [("/etc/mysql/tls/db.crt".to_string(), "issue".to_string())]
    );
    let text = tool(&["plan", "inventories/lab.yml"]);
    assert!(
        text.stdout.contains(
            "certificate /etc/nginx/internal/web.crt: issue (a new key is made on the host)"
        ),
        "{}",
        text.stdout
    );
    let apply = tool(&[
        "apply",
        "--yes",
        "inventories/lab.yml",
        "--format",
        "json",
        "--trace",
        &trace,
    ]);
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert_eq!(
        key_body("db1", "/etc/mysql/tls/db.key"),
        db_key,
        "db1's key is kept"
    );

    let trace_text = std::fs::read_to_string(&trace).expect("the trace");
    assert!(
        trace_text.contains("BEGIN CERTIFICATE REQUEST"),
        "the trace shows the CSRs coming back"
    );
    assert!(
        !trace_text.contains("PRIVATE KEY"),
        "no private key crossed a connection"
    );
    let outputs = [plan.all(), text.all(), apply.all(), trace_text];
    for (host, _, key, owner) in certs() {
        let stat = inside(host, &format!("stat -c '%a %U' {key}"));
        assert_eq!(stat.trim(), format!("600 {owner}"), "{host}:{key}");
        for line in key_body(host, key) {
            for out in &outputs {
                assert!(!out.contains(&line), "{host}'s key {key} crossed: {line}");
            }
        }
    }
    // The CA's key is a secret: on no host, in no output.
    let ca_key = std::fs::read_to_string(state().join("pki/ca.key")).expect("CA key");
    let first = ca_key
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a key line");
    for out in &outputs {
        assert!(!out.contains(first), "the CA's key was printed");
    }
    for host in LAB_HOSTS {
        let (code, out, _) = docker_exec(
            host,
            &format!("grep -rlF -- '{first}' /etc /opt /tmp /var/tmp /root /home 2>/dev/null"),
        );
        assert_ne!(code, 0, "the CA's key is on {host}: {out}");
    }
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
    assert_plan_empty("inventories/lab.yml");
}

#[test]
#[ignore = "needs the lab"]
fn a_renewal_window_past_expiry_renews_every_certificate_under_load() {
    let _lab = converged_lab();
    // The lab's certificates live 90 days; a 120-day window makes each one due. The new
    // ones live a year, outside the window: the next plan is empty.
    let (inv, _dir) = lab_inventory("tls-renew", |t| {
        t.replace("  renew_within: 30 ", "  renew_within: 120 ")
            .replace("  validity: 90 ", "  validity: 365 ")
    });
    let inv = inv.to_string_lossy().to_string();
    let root = root().to_string_lossy().to_string();
    let plan = tool(&["plan", &inv, "--root", &root, "--format", "json"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let planned = plan_of(&plan, LAB_HOSTS);
    for (host, cert, _, _) in certs() {
        assert_eq!(
            planned[host].certificates,
            [(cert.to_string(), "renew".to_string())],
            "{host}"
        );
    }
    let serials_before: Vec<String> = certs()
        .iter()
        .map(|(h, c, _, _)| inside(h, &format!("openssl x509 -in {c} -noout -serial")))
        .collect();

    let load = Load::start("/api/visits", 16, Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(1));
    let run = tool(&["apply", "--yes", &inv, "--root", &root, "--format", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(run.code, 0, "{}", run.all());
    figure(&format!(
        "tls: every certificate renewed (6 hosts) under 16 clients: {}",
        report.summary()
    ));
    assert_eq!(
        report.failed(),
        0,
        "renewal must cost no request:\n{}",
        report.first_failures(8)
    );
    for ((h, c, _, _), before) in certs().iter().zip(&serials_before) {
        let after = inside(h, &format!("openssl x509 -in {c} -noout -serial"));
        assert_ne!(&after, before, "{h}: {c} was renewed");
    }
    let again = tool(&["plan", &inv, "--root", &root]);
    assert_eq!(again.code, 0, "the next plan is empty:\n{}", again.all());
    // Back to the repository's inventory: a year left is outside its 30-day window.
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
}

/// A new CA, EC P-256, in `dir`: (certificate path, key path).
fn new_ca(dir: &std::path::Path) -> (String, String) {
    let d = dir.to_string_lossy().to_string();
    let script = format!(
        "set -e; cd {d}; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj '/CN=foobar lab internal CA 2' -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca2.key -out ca2.pem 2>/dev/null; chmod 600 ca2.key"
    );
    let (code, _, err) = sh_within(
        Command::new("sh").args(["-c", &script]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "openssl: a second CA: {err}");
    (format!("{d}/ca2.pem"), format!("{d}/ca2.key"))
}

/// One step of a CA rotation under load: the lab's inventory with the `ca` secret read
/// from `bundle` and `ca_key` from `key`; the plan's certificate actions per host are
/// `want` (or none); apply under 16 clients costs no request; the next plan is empty.
fn rotation_step(label: &str, bundle: &str, key: &str, want: Option<&str>) -> String {
    let state = state().to_string_lossy().to_string();
    let (inv, _dir) = lab_inventory("tls-rotate", |t| {
        t.replace(&format!("{state}/pki/ca.pem"), bundle)
            .replace(&format!("{state}/pki/ca.key"), key)
    });
    let inv = inv.to_string_lossy().to_string();
    let root = root().to_string_lossy().to_string();
    let plan = tool(&["plan", &inv, "--root", &root, "--format", "json"]);
    assert_eq!(plan.code, 2, "{label}: {}", plan.all());
    for (host, p) in plan_of(&plan, LAB_HOSTS) {
        let actions: Vec<&str> = p.certificates.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(
            actions,
            want.into_iter().collect::<Vec<_>>(),
            "{label}: {host}"
        );
    }
    let load = Load::start("/api/visits", 16, Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(1));
    let run = tool(&["apply", "--yes", &inv, "--root", &root, "--format", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(run.code, 0, "{label}: {}", run.all());
    let line = format!("tls: CA rotation, {label}: {}", report.summary());
    figure(&line);
    assert_eq!(
        report.failed(),
        0,
        "{label} must cost no request:\n{}",
        report.first_failures(8)
    );
    let again = tool(&["plan", &inv, "--root", &root]);
    assert_eq!(
        again.code,
        0,
        "{label}: the next plan is empty:\n{}",
        again.all()
    );
    line
}

/// A CA rotation in three applies, each under load with no failed request: trust the new
/// CA beside the old one, sign with the new one (every certificate reissued, tier by
/// tier), drop the old one. Then the same way back to the lab's CA.
#[test]
#[ignore = "needs the lab"]
fn the_ca_rotates_in_three_applies_without_a_failed_request() {
    let _lab = converged_lab();
    let dir = temp_dir("tls-ca2");
    let (ca2, ca2_key) = new_ca(dir.path());
    let ca1 = state().join("pki/ca.pem").to_string_lossy().to_string();
    let ca1_key = state().join("pki/ca.key").to_string_lossy().to_string();
    let read = |p: &str| std::fs::read_to_string(p).expect("CA certificate");
    let both = dir.path().join("both.pem").to_string_lossy().to_string();
    std::fs::write(&both, format!("{}{}", read(&ca1), read(&ca2))).expect("bundle");
    // Whatever happens, the lab ends on its own CA (a one-step switch back: hosts may
    // refuse each other until every tier has it, but the lab is not serving a test then).
    let _back = restore();
    rotation_step("1/3 trust both CAs", &both, &ca1_key, None);
    rotation_step("2/3 sign with the new CA", &both, &ca2_key, Some("reissue"));
    rotation_step("3/3 drop the old CA", &ca2, &ca2_key, None);
    rotation_step("back 1/3", &both, &ca2_key, None);
    rotation_step("back 2/3", &both, &ca1_key, Some("reissue"));
    rotation_step("back 3/3", &ca1, &ca1_key, None);
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
    assert_plan_empty("inventories/lab.yml");
}
