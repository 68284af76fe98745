//! The real binary, offline, for the operator habits of issue 11: `--limit` patterns,
//! `--role`/`--skip-role`, `--var`, `--timings`, `--color`, names as addresses, the SSH
//! configuration, identity files and secrets checked before any connection, secret
//! commands, `completions` and `man`. No test reaches a host: where `plan` runs, a
//! listener of the test's own on loopback proves what was (or was not) connected to.

use crate::support::{copy_dir, sh, temp_dir};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_foobar-provision"))
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/project")
}

/// The fixture inventory with `edit` applied, SSH port `port`, ~/.ssh/config ignored
/// (`ssh.config: false`) unless the edit says otherwise.
fn inventory(dir: &Path, port: u16, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(fixture().join("inventories/good.yml")).expect("fixture");
    let text = text
        .replace("PORT", &port.to_string())
        .replace("ssh:\n", "ssh:\n  config: false\n");
    let path = dir.join("inv.yml");
    std::fs::write(&path, edit(text)).expect("write inv");
    path
}

/// Runs the binary (the fixture's secret set, HOME in `home`), bounded in time.
fn run_in(home: &Path, cmd: &mut Command) -> (i32, String, String) {
    sh(cmd
        .env("FP_TEST_PW", "canary-pw-1234")
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("NO_COLOR"))
}

/// `check`/`render`/`hosts`/... of the fixture inventory with `args` after it.
fn tool(t: &Path, inv: &Path, command: &str, args: &[&str]) -> (i32, String, String) {
    run_in(
        t,
        bin()
            .arg(command)
            .arg(inv)
            .arg("--root")
            .arg(fixture())
            .args(args),
    )
}

/// A loopback listener nobody else knows: `accepted` says whether anything connected.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Listener(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }
    fn accepted(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[test]
fn limit_takes_patterns_and_exclusions() {
    let t = temp_dir("limit");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, out, err) = tool(t.path(), &inv, "hosts", &["--limit", "web*,!web2"]);
    assert_eq!((code, out.as_str()), (0, "web1 127.0.0.1 web\n"), "{err}");
    let (code, out, _) = tool(t.path(), &inv, "hosts", &["--limit", "!web1"]);
    assert_eq!((code, out.as_str()), (0, "web2 127.0.0.2 web\n"));
    let (code, _, err) = tool(t.path(), &inv, "hosts", &["--limit", "db*"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--limit: `db*` matches no host of the inventory (hosts: web1, web2)"),
        "{err}"
    );
}

/// The fixture project with a second role, `extra`, in the web tier.
fn two_roles(t: &Path) -> (PathBuf, PathBuf) {
    let project = t.join("project");
    copy_dir(&fixture(), &project);
    std::fs::create_dir_all(project.join("roles/extra")).expect("mkdir");
    std::fs::write(
        project.join("roles/extra/role.yml"),
        "description: a second role\ndefaults:\n  port: 81\nfiles:\n  - template: web/site.conf.tera\n    dest: /etc/extra.conf\n    mode: \"0644\"\n",
    )
    .expect("role");
    let inv = inventory(t, 22, |s| s.replace("roles: [web]", "roles: [web, extra]"));
    (project, inv)
}

#[test]
fn role_and_skip_role_choose_the_roles_that_run() {
    let t = temp_dir("roles");
    let (project, inv) = two_roles(t.path());
    let check = |args: &[&str]| {
        run_in(
            t.path(),
            bin()
                .arg("check")
                .arg(&inv)
                .arg("--root")
                .arg(&project)
                .args(args),
        )
    };
    let (code, out, err) = check(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 files rendered"), "{out}");
    let (code, out, err) = check(&["--role", "extra"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 files rendered"), "{out}");
    let (code, out, err) = check(&["--skip-role", "extra"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 files rendered"), "{out}");
    let (code, _, err) = check(&["--role", "extar"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--role: no role `extar` under roles/; did you mean `extra`?"),
        "{err}"
    );
    let (code, _, err) = check(&["--skip-role", "web,extra"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--skip-role leaves none of the selected hosts any role"),
        "{err}"
    );
    // A command that runs nothing refuses them.
    let (code, _, err) = run_in(
        t.path(),
        bin()
            .arg("hosts")
            .arg(&inv)
            .arg("--root")
            .arg(&project)
            .args(["--role", "web"]),
    );
    assert_eq!(code, 1);
    assert!(err.contains("--role has no effect on `hosts`"), "{err}");
}

#[test]
fn var_is_above_every_other_layer_and_names_are_checked() {
    let t = temp_dir("var");
    let inv = inventory(t.path(), 22, |s| s);
    let out_dir = t.path().join("out");
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "render",
        &[
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--var",
            "port=9090",
            "--var",
            "greeting=from the command line",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let site = std::fs::read_to_string(out_dir.join("web1/etc/nginx/sites-enabled/site.conf"))
        .expect("rendered");
    // web1's host var port=8080 and the tier's greeting lose to --var.
    assert!(site.contains("listen 127.0.0.1:9090;"), "{site}");
    assert!(site.contains("# from the command line"), "{site}");
    for (var, want) in [
        ("9lives=1", "`9lives` is not a var name"),
        ("a-b=1", "`a-b` is not a var name"),
        (
            "host=x",
            "`host` is a name templates get from the inventory",
        ),
        ("novalue", "write KEY=VALUE"),
    ] {
        let (code, _, err) = tool(t.path(), &inv, "check", &["--var", var]);
        assert_eq!(code, 1, "{var}");
        assert!(err.contains(want), "{var}: {err}");
    }
}

#[test]
fn plan_shows_the_vars_in_its_header_and_timings_in_the_recap() {
    let t = temp_dir("plan-var");
    let inv = inventory(t.path(), closed_port(), |s| s);
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "plan",
        &[
            "--limit",
            "web1",
            "--var",
            "workers=4",
            "--var",
            "mode=fast",
            "--timings",
        ],
    );
    assert_eq!(code, 1, "unreachable: {out}{err}");
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first, "vars from the command line (--var, above every other var): mode=\"fast\" workers=4",
        "{out}"
    );
    assert!(out.contains("RECAP (plan)"), "{out}");
    assert!(
        out.contains("TIMINGS (roles)\n  web1       (no role ran)"),
        "{out}"
    );
    assert!(out.contains("TIMINGS (the 1 slowest steps)"), "{out}");
    assert!(out.contains("connecting"), "{out}");
    // Without --timings, no timings in the text.
    let (_, out, _) = tool(t.path(), &inv, "plan", &["--limit", "web1"]);
    assert!(!out.contains("TIMINGS"), "{out}");
    // The JSON document always has them, and the vars.
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "plan",
        &["--limit", "web1", "--var", "workers=4", "--format", "json"],
    );
    assert_eq!(code, 1, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(doc["vars"], serde_json::json!({"workers": 4}));
    let steps = &doc["recap"][0]["timings"]["steps"];
    assert_eq!(steps[0]["step"], "connecting", "{doc}");
    assert!(steps[0]["seconds"].as_f64().is_some(), "{doc}");
    assert_eq!(doc["recap"][0]["timings"]["roles"], serde_json::json!([]));
}

#[test]
fn color_is_a_global_option_and_never_means_no_escape_codes() {
    let t = temp_dir("color");
    let inv = inventory(t.path(), closed_port(), |s| s);
    for color in ["never", "always", "auto"] {
        let (code, _, err) = tool(t.path(), &inv, "check", &["--color", color]);
        assert_eq!(code, 0, "{color}: {err}");
    }
    let (code, out, err) = run_in(
        t.path(),
        bin()
            .args(["--color", "never", "plan"])
            .arg(&inv)
            .arg("--root")
            .arg(fixture())
            .args(["--limit", "web1"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(!out.contains('\x1b') && !err.contains('\x1b'), "{out}{err}");
    let (code, _, err) = tool(t.path(), &inv, "check", &["--color", "sometimes"]);
    assert_eq!(code, 2, "clap refuses it: {err}");
    assert!(
        err.contains("possible values: auto, always, never"),
        "{err}"
    );
}

#[test]
fn an_address_may_be_a_name_templates_see_its_ip() {
    let t = temp_dir("names");
    let inv = inventory(t.path(), 22, |s| {
        s.replace("127.0.0.1", "127.0.0.3")
            .replace("address: 127.0.0.2", "address: localhost")
    });
    let out_dir = t.path().join("out");
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "render",
        &["--out", out_dir.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0, "{out}{err}");
    let web2 = std::fs::read_to_string(out_dir.join("web2/etc/nginx/sites-enabled/site.conf"))
        .expect("rendered");
    assert!(
        web2.contains("listen 127.0.0.1:80;") || web2.contains("listen ::1:80;"),
        "{web2}"
    );
    // `hosts` shows the address as written.
    let (_, out, _) = tool(t.path(), &inv, "hosts", &[]);
    assert_eq!(out, "web1 127.0.0.3 web\nweb2 localhost web\n");
    // A name that does not resolve: its line, before anything else.
    let bad = inventory(t.path(), 22, |s| {
        s.replace("address: 127.0.0.2", "address: no-such-host.invalid")
    });
    let (code, _, err) = tool(t.path(), &bad, "check", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}:20:14: host `web2`: address `no-such-host.invalid` does not resolve",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn the_ssh_config_gives_the_port_of_an_alias() {
    let t = temp_dir("ssh-config");
    let listener = Listener::new();
    let config = t.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host web1-alias\n  HostName 127.0.0.1\n  Port {}\n  ConnectTimeout 2\n",
            listener.port()
        ),
    )
    .expect("config");
    let inv = inventory(t.path(), 22, |s| {
        s.replace(
            "  config: false\n",
            &format!("  config: {}\n", config.display()),
        )
        .replace("    port: 22\n", "")
        .replace("address: 127.0.0.1", "address: web1-alias")
    });
    // The listener accepts and says nothing: the handshake times out, but the
    // connection went where the configuration said.
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "plan",
        &["--limit", "web1", "--format", "json"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        listener.accepted(),
        "the configuration's Port was used: {out}{err}"
    );
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(doc["recap"][0]["status"], "unreachable", "{doc}");
    // An unsupported Match names its line.
    std::fs::write(&config, "Match exec \"true\"\n  User x\n").expect("config");
    let (code, _, err) = tool(t.path(), &inv, "check", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}:1:1: SSH configuration: `Match exec` is not supported",
            config.display()
        )),
        "{err}"
    );
}

#[test]
fn missing_identity_files_are_one_error_before_any_connection() {
    let t = temp_dir("identity");
    let listener = Listener::new();
    let inv = inventory(t.path(), listener.port(), |s| {
        s.replace(
            "  web:\n    roles: [web]\n",
            "  web:\n    roles: [web]\n    ssh:\n      identity_file: keys/tier-key\n",
        )
        .replace(
            "    tier: web\n    vars:\n      port: 8080",
            "    tier: web\n    identity_file: keys/web1-key\n    vars:\n      port: 8080",
        )
    });
    let (code, out, err) = tool(t.path(), &inv, "plan", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("2 SSH identity files cannot be used (nothing was connected)"),
        "{err}"
    );
    assert!(
        err.contains("keys/tier-key (named by tier `web` at"),
        "{err}"
    );
    assert!(
        err.contains("used by web2): No such file or directory"),
        "{err}"
    );
    assert!(
        err.contains("keys/web1-key (named by host `web1` at"),
        "{err}"
    );
    assert!(
        !listener.accepted(),
        "no connection before the identity files are checked"
    );
}

#[test]
fn every_missing_secret_is_named_at_once_and_commands_supply_secrets() {
    let t = temp_dir("secrets");
    let listener = Listener::new();
    let inv = inventory(t.path(), listener.port(), |s| {
        s.replace(
            "secrets:\n  pw:\n    env: FP_TEST_PW",
            "secrets:\n  pw:\n    env: FP_TEST_PW\n  a:\n    env: FP_UNSET_A\n  b:\n    command: [sh, -c, 'echo vault sealed >&2; exit 3']\n  c:\n    file: nowhere.txt",
        )
    });
    let (code, _, err) = tool(t.path(), &inv, "plan", &[]);
    assert_eq!(code, 1, "{err}");
    let path = inv.display().to_string();
    for want in [
        format!("{path}:28:3: secret `a`: environment variable FP_UNSET_A is not set"),
        format!(
            "{path}:30:3: secret `b`: `sh -c 'echo vault sealed >&2; exit 3'` failed (exit 3): vault sealed"
        ),
        format!("{path}:32:3: secret `c`: cannot read"),
    ] {
        assert!(err.contains(&want), "{want}\n{err}");
    }
    assert!(!listener.accepted(), "no connection with a secret missing");
    // A command that prints the secret: the run goes on to connecting.
    let inv = inventory(t.path(), closed_port(), |s| {
        s.replace(
            "    env: FP_TEST_PW",
            "    command: [printf, '%s\\n', from-a-command]",
        )
    });
    let (code, out, err) = tool(
        t.path(),
        &inv,
        "plan",
        &["--limit", "web1", "--format", "json"],
    );
    assert_eq!(code, 1, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(doc["recap"][0]["status"], "unreachable");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let t = temp_dir("completions");
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_in(t.path(), bin().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        for word in [
            "foobar-provision",
            "apply",
            "skip-role",
            "timings",
            "completions",
        ] {
            assert!(out.contains(word), "{shell} lacks {word}");
        }
    }
    let (_, script, _) = run_in(t.path(), bin().args(["completions", "bash"]));
    let file = t.path().join("fp.bash");
    std::fs::write(&file, script).expect("write");
    let (code, _, err) = sh(Command::new("bash").arg("-n").arg(&file));
    assert_eq!(code, 0, "bash -n: {err}");
    let (code, _, err) = run_in(t.path(), bin().args(["completions", "tcsh"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn man_prints_a_page_or_writes_one_per_command() {
    let t = temp_dir("man");
    let (code, out, err) = run_in(t.path(), bin().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH foobar-provision 1"), "{out}");
    assert!(out.contains("completions"), "{out}");
    let dir = t.path().join("man");
    let (code, out, err) = run_in(t.path(), bin().args(["man", "--out"]).arg(&dir));
    assert_eq!(code, 0, "{err}");
    // One page per subcommand, and the tool's own.
    assert_eq!(out.lines().count(), 12, "{out}");
    assert!(out.contains("foobar-provision-db.1"), "{out}");
    let apply = std::fs::read_to_string(dir.join("foobar-provision-apply.1")).expect("apply page");
    assert!(apply.contains(".TH foobar-provision-apply 1"), "{apply}");
    assert!(apply.contains("skip\\-role"), "{apply}");
    let mut main = String::new();
    std::fs::File::open(dir.join("foobar-provision.1"))
        .and_then(|mut f| f.read_to_string(&mut main))
        .expect("main page");
    assert!(main.contains("SUBCOMMANDS"), "{main}");
}
