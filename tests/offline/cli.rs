//! The real binary, offline: check, render, hosts, error messages, exit codes.
//! No test here reaches any host; the ones that run `plan`/`apply` on bad input prove
//! that no connection was made with a listener of their own on loopback.

use crate::support::{copy_dir, sh, temp_dir};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_foobar-provision"))
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/project")
}

/// Writes the fixture inventory with `edit` applied, SSH port pointing at `port`.
fn inventory(dir: &Path, port: u16, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(fixture().join("inventories/good.yml")).expect("fixture");
    let path = dir.join("inv.yml");
    std::fs::write(&path, edit(text.replace("PORT", &port.to_string()))).expect("write inv");
    path
}

/// The binary with the fixture's secret set, bounded in time.
fn run(cmd: &mut Command) -> (i32, String, String) {
    sh(cmd.env("FP_TEST_PW", "canary-pw-1234"))
}

#[test]
fn check_accepts_the_fixture() {
    let t = temp_dir("check");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, out, err) = run(bin().arg("check").arg(&inv).arg("--root").arg(fixture()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok:") && out.contains("2 hosts") && out.contains("4 files"),
        "{out}"
    );
}

#[test]
fn render_writes_files_with_precedence_and_masks_secrets() {
    let t = temp_dir("render");
    let inv = inventory(t.path(), 22, |s| s);
    let out_dir = t.path().join("out");
    let (code, out, err) = run(bin()
        .arg("render")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .arg("--out")
        .arg(&out_dir));
    assert_eq!(code, 0, "{out}{err}");
    let site = std::fs::read_to_string(out_dir.join("web1/etc/nginx/sites-enabled/site.conf"))
        .expect("rendered");
    // host var port=8080 beats the role default 80; tier greeting beats inventory greeting
    assert!(site.contains("listen 127.0.0.1:8080;"), "{site}");
    assert!(site.contains("# from-tier"), "{site}");
    assert!(site.contains("# peer web2 127.0.0.2"), "{site}");
    let web2 = std::fs::read_to_string(out_dir.join("web2/etc/nginx/sites-enabled/site.conf"))
        .expect("rendered");
    assert!(web2.contains("listen 127.0.0.2:80;"), "{web2}");
    let secret =
        std::fs::read_to_string(out_dir.join("web1/etc/nginx/secret.conf")).expect("rendered");
    assert_eq!(secret, "password <secret:pw>;\n");
    assert!(!out.contains("canary") && !err.contains("canary"));

    let revealed = t.path().join("revealed");
    let (code, _, err) = run(bin()
        .arg("render")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .arg("--out")
        .arg(&revealed)
        .arg("--reveal-secrets"));
    assert_eq!(code, 0, "{err}");
    let path = revealed.join("web1/etc/nginx/secret.conf");
    assert_eq!(
        std::fs::read_to_string(&path).expect("rendered"),
        "password canary-pw-1234;\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "revealed secrets are written private");
}

#[test]
fn hosts_lists_name_address_tier() {
    let t = temp_dir("hosts");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, out, err) = run(bin().arg("hosts").arg(&inv).arg("--root").arg(fixture()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "web1 127.0.0.1 web\nweb2 127.0.0.2 web\n");
    let (code, _, err) = run(bin()
        .arg("hosts")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .arg("--limit")
        .arg("web3"));
    assert_eq!(code, 1);
    assert!(
        err.contains("no host `web3`") && err.contains("did you mean"),
        "{err}"
    );
}

/// Bad input: exit 1, file:line:column, a hint, and no connection to the host.
#[test]
fn malformed_inventory_fails_before_any_connection() {
    let t = temp_dir("malformed");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let inv = inventory(t.path(), port, |s| {
        s.replace(
            "    tier: web\n    vars:",
            "    tier: web\n    adress: 1.2.3.4\n    vars:",
        )
    });
    for cmd in ["plan", "apply", "check"] {
        let (code, out, err) = run(bin().arg(cmd).arg(&inv).arg("--root").arg(fixture()));
        assert_eq!(code, 1, "{cmd}: {out}{err}");
        let expected = format!("{}:16:5: unknown field `adress`", inv.display());
        assert!(err.contains(&expected), "{cmd}: {err}");
        assert!(err.contains("did you mean `address`?"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        listener.accept().is_err(),
        "no connection may be made on bad input"
    );
}

#[test]
fn template_errors_name_template_line_and_host() {
    let t = temp_dir("tpl");
    let project = t.path().join("project");
    copy_dir(&fixture(), &project);
    std::fs::write(
        project.join("templates/web/site.conf.tera"),
        "line one\nlisten {{ no_such_var }};\n",
    )
    .expect("write");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, _, err) = run(bin().arg("check").arg(&inv).arg("--root").arg(&project));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("templates/web/site.conf.tera:2:"), "{err}");
    assert!(err.contains("web1"), "{err}");
}

#[test]
fn missing_secret_is_reported_with_the_variable_name() {
    let t = temp_dir("secret");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, _, err) = sh(bin()
        .arg("plan")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .env_remove("FP_TEST_PW"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("environment variable FP_TEST_PW is not set"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:", inv.display())), "{err}");
}

#[test]
fn unreachable_host_is_exit_1_and_named_in_the_recap() {
    let t = temp_dir("unreach");
    // A port nobody listens on: bind, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let inv = inventory(t.path(), port, |s| s);
    let (code, out, err) = run(bin()
        .arg("plan")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .arg("--limit")
        .arg("web1")
        .arg("--format")
        .arg("json"));
    assert_eq!(code, 1, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(doc["recap"][0]["host"], "web1");
    assert_eq!(doc["recap"][0]["status"], "unreachable");
    assert_eq!(doc["exit_code"], 1);
}

#[test]
fn help_explains_commands_and_exit_codes() {
    let (code, out, _) = run(bin().arg("--help"));
    assert_eq!(code, 0);
    for word in [
        "check",
        "render",
        "plan",
        "apply",
        "trust",
        "Exit codes",
        "2 plan found",
    ] {
        assert!(out.contains(word), "--help lacks {word}: {out}");
    }
}

/// Review finding 1, reproduction: `render INV --out o`, then
/// `render INV --out o --reveal-secrets` left `o/web1/etc/nginx/secret.conf` at 0644 with
/// the real password in it, and a symlink planted in `o` was followed. Now the second
/// render needs `--replace`, writes the revealed file 0600, and replaces the symlink.
#[test]
fn render_over_an_earlier_render_needs_replace_and_writes_revealed_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let t = temp_dir("render-replace");
    let inv = inventory(t.path(), 22, |s| s);
    let out_dir = t.path().join("o");
    let fixture = fixture();
    let render = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "render".as_ref(),
            inv.as_os_str(),
            "--root".as_ref(),
            fixture.as_os_str(),
            "--out".as_ref(),
            out_dir.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run(bin().args(&args))
    };
    let (code, out, err) = render(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let victim = t.path().join("victim");
    std::fs::write(&victim, "untouched\n").expect("write victim");
    let planted = out_dir.join("web2/etc/nginx/sites-enabled/site.conf");
    std::fs::remove_file(&planted).expect("remove rendered file");
    std::os::unix::fs::symlink(&victim, &planted).expect("plant symlink");

    let (code, out, err) = render(&["--reveal-secrets"]);
    assert_eq!(code, 1, "a non-empty OUT needs --replace: {out}{err}");
    assert!(err.contains("--replace"), "{err}");

    let (code, out, err) = render(&["--reveal-secrets", "--replace"]);
    assert_eq!(code, 0, "{out}{err}");
    let secret = out_dir.join("web1/etc/nginx/secret.conf");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("rendered"),
        "password canary-pw-1234;\n"
    );
    let mode = std::fs::metadata(&secret)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a revealed file is private");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched\n"
    );
    let meta = std::fs::symlink_metadata(&planted).expect("stat");
    assert!(
        meta.file_type().is_file(),
        "the symlink was replaced by the file"
    );
}

/// A port nobody listens on: bound, noted, closed.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `apply` with stdin not a terminal and no --yes: refused before any connection, both
/// ways out spelled out.
#[test]
fn apply_without_a_terminal_or_yes_refuses_before_connecting() {
    let t = temp_dir("no-tty");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let inv = inventory(t.path(), port, |s| s);
    let (code, out, err) = run(bin().arg("apply").arg(&inv).arg("--root").arg(fixture()));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("stdin is not a terminal"), "{err}");
    assert!(
        err.contains(&format!("foobar-provision apply {} --yes", inv.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "foobar-provision plan {} --out plan.json, then foobar-provision apply plan.json",
            inv.display()
        )),
        "{err}"
    );
    assert!(err.contains("no host was contacted"), "{err}");
    assert!(listener.accept().is_err(), "no connection may be made");
}

/// Under GitHub Actions an input error is also a `::error` annotation on its line.
#[test]
fn github_actions_annotates_input_errors() {
    let t = temp_dir("annotate");
    let inv = inventory(t.path(), 22, |s| {
        s.replace(
            "    tier: web\n    vars:",
            "    tier: web\n    adress: 1.2.3.4\n    vars:",
        )
    });
    let (code, out, err) = run(bin()
        .arg("check")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .env("GITHUB_ACTIONS", "true"));
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no annotation: {out}"));
    assert!(
        line.contains("inv.yml,line=16,col=5,title=foobar-provision::unknown field `adress`"),
        "{line}"
    );
    assert!(line.contains("%0Ahint: did you mean `address`?"), "{line}");
    let (_, out, _) = run(bin()
        .arg("check")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .env_remove("GITHUB_ACTIONS"));
    assert!(!out.contains("::error"), "only under GitHub Actions: {out}");
}

#[test]
fn markdown_is_for_plan_only() {
    let t = temp_dir("md-only");
    let inv = inventory(t.path(), 22, |s| s);
    let (code, _, err) = run(bin()
        .args(["check", "--format", "markdown"])
        .arg(&inv)
        .arg("--root")
        .arg(fixture()));
    assert_eq!(code, 1);
    assert!(err.contains("--format markdown is for `plan`"), "{err}");
}

/// An unreachable host: the JSON recap has the documented shape, the JUnit report fails
/// the host's case and skips its role, and no plan is saved.
#[test]
fn an_unreachable_host_in_the_reports_and_no_plan_saved() {
    let t = temp_dir("unreach-reports");
    let inv = inventory(t.path(), closed_port(), |s| s);
    let junit = t.path().join("j.xml");
    let saved = t.path().join("plan.json");
    let (code, out, err) = run(bin()
        .arg("plan")
        .arg(&inv)
        .arg("--root")
        .arg(fixture())
        .args(["--limit", "web1", "--format", "json", "--junit"])
        .arg(&junit)
        .arg("--out")
        .arg(&saved));
    assert_eq!(code, 1, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recap.schema.json"),
        )
        .expect("schema"),
    )
    .expect("JSON");
    if let Err(e) = crate::schema_check::check(&schema, &doc) {
        panic!("{}\n{doc}", e.join("\n"));
    }
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("<testcase classname=\"web.web1\" name=\"host\"")
            && xml.contains("<failure type=\"connect\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"web\" time=\"0.000\">\n      <skipped message=\"not started: the host could not be planned\"/>"), "{xml}");
    assert!(
        err.contains("no plan saved: web1 could not be planned"),
        "{err}"
    );
    assert!(!saved.exists());
}

/// `apply FILE` tells a saved plan from an inventory by content: a JSON file that claims
/// to be something else is refused, naming what it is, before any connection.
#[test]
fn apply_refuses_a_json_file_that_is_not_our_plan() {
    use std::os::unix::fs::PermissionsExt;
    let t = temp_dir("not-ours");
    let file = t.path().join("plan.tfplan");
    std::fs::write(&file, r#"{"kind": "terraform plan", "format_version": 1}"#).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, out, err) = run(bin().arg("apply").arg(&file));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("not a plan saved by foobar-provision (its kind is `terraform plan`)"),
        "{err}"
    );
}

#[test]
fn help_names_the_new_flags() {
    let (_, plan, _) = run(bin().args(["plan", "--help"]));
    for flag in ["--out <FILE>", "--junit <FILE>", "markdown"] {
        assert!(plan.contains(flag), "plan --help lacks {flag}: {plan}");
    }
    let (_, apply, _) = run(bin().args(["apply", "--help"]));
    for flag in [
        "--yes",
        "--junit <FILE>",
        "Apply N changes on M hosts? [y/N]",
        "plan --out FILE",
    ] {
        assert!(apply.contains(flag), "apply --help lacks {flag}: {apply}");
    }
    let (_, rollback, _) = run(bin().args(["rollback", "--help"]));
    assert!(rollback.contains("--yes"), "{rollback}");
}

/// The `foobar-provision ...` commands of a text (shell lines; comments, redirections and
/// `&&`/`||` tails cut off), as argument lists.
fn commands_in(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.find("foobar-provision ").map(|at| &l[at..]))
        .map(|c| {
            let end = ["#", ">", "&&", "||", "`"]
                .iter()
                .filter_map(|stop| c.find(stop))
                .min()
                .unwrap_or(c.len());
            c[..end]
                .split_whitespace()
                .map(|w| {
                    w.trim_matches('"')
                        .replace("$INVENTORY", "inventories/production.yml")
                })
                .collect()
        })
        .collect()
}

/// The example CI workflow and the README's reviewed-plan lines use commands and flags
/// that exist.
#[test]
fn the_documented_workflow_commands_parse() {
    use clap::Parser;
    let read =
        |p: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).expect(p);
    let workflow = read("docs/ci-workflow.example.yml");
    let readme = read("README.md");
    let section = readme
        .split("### Reviewed plans")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has the reviewed-plan workflow");
    let mut seen = Vec::new();
    for words in commands_in(&workflow)
        .into_iter()
        .chain(commands_in(section))
    {
        if let Err(e) = foobar_provision::cli::Cli::try_parse_from(&words) {
            panic!("`{}` does not parse: {e}", words.join(" "));
        }
        seen.push(words[1].clone());
    }
    for cmd in ["check", "plan", "apply"] {
        assert!(seen.iter().any(|s| s == cmd), "no `{cmd}` found: {seen:?}");
    }
    assert!(
        workflow.contains("--format markdown --out plan.json"),
        "{workflow}"
    );
    assert!(
        workflow.contains("foobar-provision apply reviewed/plan.json"),
        "{workflow}"
    );
}

/// A copy of the project whose lab inventory has a second db host, db2 (172.30.77.42), and
/// `db_primary: PRIMARY`.
fn lab_with_db2(tag: &str, primary: &str) -> (tempfile::TempDir, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = temp_dir(tag);
    let text = std::fs::read_to_string(root.join("inventories/lab.yml"))
        .expect("lab.yml")
        .replace(
            "  mon1:\n",
            "  db2:\n    address: 172.30.77.42\n    tier: db\n  mon1:\n",
        )
        .replace(
            "vars:\n  app_port",
            &format!("vars:\n  db_primary: {primary}\n  app_port"),
        );
    for dir in ["roles", "templates", "app"] {
        copy_dir(&root.join(dir), &t.path().join(dir));
    }
    std::fs::create_dir_all(t.path().join("inventories")).expect("mkdir");
    let inv = t.path().join("inventories/lab.yml");
    std::fs::write(&inv, text).expect("write");
    (t, inv)
}

/// The database's primary is computed once (var db_primary, else the first host with the
/// mysql role) and every template follows it: with db2 the primary, db1 is db2's
/// read-only replica and does not back up, and the app writes to db2. A db_primary that
/// names no mysql host is an error of `check`, naming the var.
#[test]
fn every_template_follows_the_one_db_primary() {
    let (t, inv) = lab_with_db2("db-primary-render", "db2");
    let out = t.path().join("out");
    let (code, _, err) = run(bin().arg("render").arg("--out").arg(&out).arg(&inv));
    assert_eq!(code, 0, "{err}");
    let read = |host: &str, path: &str| {
        std::fs::read_to_string(out.join(host).join(path))
            .unwrap_or_else(|e| panic!("{host}:{path}: {e}"))
    };
    let replication = "etc/mysql/mariadb.conf.d/61-foobar-replication.cnf";
    assert!(read("db1", replication).contains("a replica of db2, read-only"));
    assert!(read("db1", replication).contains("read_only               = ON"));
    assert!(read("db2", replication).contains("the primary (db_primary), writable"));
    let script = read("db1", "usr/local/sbin/foobar-db-replica");
    assert!(
        script.contains("PRIMARY_NAME=db2\nPRIMARY_ADDRESS=172.30.77.42\n"),
        "{script}"
    );
    assert!(read("app1", "etc/foobar-app/env").contains("FOOBAR_DB_HOST=\"172.30.77.42\""));
    let backup = "etc/systemd/system/foobar-backup.service";
    assert!(read("db1", backup).contains("ExecCondition=/bin/false"));
    assert!(!read("db2", backup).contains("ExecCondition"));

    let (_t, bad) = lab_with_db2("db-primary-bad", "web1");
    let (code, _, err) = run(bin().arg("check").arg(&bad));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "inventories/lab.yml:63:3: var db_primary: `web1` is not a host with the mysql role"
        ),
        "{err}"
    );
    // A tier's own db_primary would make its hosts disagree with the others: refused.
    let text = std::fs::read_to_string(&bad).expect("read").replace(
        "  db:\n    roles:",
        "  db:\n    vars: {db_primary: db2}\n    roles:",
    );
    std::fs::write(&bad, text.replace("  db_primary: web1\n", "")).expect("write");
    let (code, _, err) = run(bin().arg("check").arg(&bad));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "inventories/lab.yml:18:12: var db_primary is set for tier `db`: set it in the top-level `vars:`"
        ),
        "{err}"
    );
}

/// `db promote` and `db reseed` refuse the primary, hosts without MariaDB and a host list
/// of their own, before any connection: the lab's inventory (no lab needed), where the
/// primary is db1 by default and, with `db_primary: db2` and a db2, db2.
#[test]
fn db_promote_and_reseed_refuse_before_connecting() {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/lab.yml");
    let lab = lab.to_string_lossy().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["promote", "--host", "db1"], "db1: it is the primary of"),
        (&["reseed", "--host", "db1"], "cannot be replaced by a copy"),
        (
            &["promote", "--host", "web1"],
            "its tier `web` has no `mysql` role",
        ),
        (&["reseed", "--host", "nope"], "--host nope: no such host"),
        (
            &["promote", "--host", "db1", "--limit", "web1"],
            "--limit and --tier cannot be given",
        ),
        (
            &["reseed", "--host", "db1", "--tier", "db"],
            "--limit and --tier cannot be given",
        ),
        (
            &["promote", "--host", "db1", "--var", "a=1"],
            "--var has no effect",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = bin();
        cmd.arg("db").arg(args[0]).arg(&lab).args(&args[1..]);
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 1, "db {args:?}: {out}{err}");
        assert!(err.contains(want), "db {args:?}: want {want:?} in:\n{err}");
    }
    // With db2 as the inventory's primary, db2 is the one refused.
    let (_t, inv) = lab_with_db2("db-primary", "db2");
    let (code, _, err) = run(bin()
        .args(["db", "promote"])
        .arg(&inv)
        .args(["--host", "db2"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("db2: it is the primary of"), "{err}");
    let (code, _, err) = run(bin()
        .args(["db", "reseed"])
        .arg(&inv)
        .args(["--host", "db2"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("db2: it is the primary of"), "{err}");
}
