//! Reviewed plans and reports, the real binary against a private sshd on loopback (see
//! tests/support/sshd.rs; skipped, saying so, without root or /usr/sbin/sshd): the
//! confirmation on a terminal (a pseudo-terminal), `plan --out` then `apply FILE` applied as
//! reviewed or refused as stale, `--format markdown`, `--junit` and the job summary, and the
//! JSON documents against their schemas in docs/.

use crate::schema_check;
use crate::support::pty::OnTerminal;
use crate::support::sshd::{Host, SECRET};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn schema(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read schema");
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Fails the test with every mismatch of `doc` against docs/`name`.
fn assert_schema(name: &str, doc: &serde_json::Value) {
    if let Err(errors) = schema_check::check(&schema(name), doc) {
        panic!("{name}:\n{}\n{doc:#}", errors.join("\n"));
    }
}

/// On a terminal, apply shows the plan and asks; `n` changes nothing, `y` applies; with
/// nothing to change it does not ask.
#[test]
fn on_a_terminal_apply_asks_and_only_yes_applies() {
    let Some(h) = Host::start("prompt") else {
        return;
    };
    let mut t = OnTerminal::spawn(&mut h.tool("apply", &[]));
    t.wait_for("Apply 2 changes on 1 host? [y/N] ", WAIT);
    let screen = t.screen();
    assert!(
        screen.contains("+greeting from-inventory"),
        "the plan first:\n{screen}"
    );
    t.type_line("n");
    let (code, screen) = t.finish(WAIT);
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains("Apply cancelled: nothing was changed."),
        "{screen}"
    );
    assert_eq!(h.read("site.conf"), None, "answering n changed nothing");

    let mut t = OnTerminal::spawn(&mut h.tool("apply", &[]));
    t.wait_for("[y/N] ", WAIT);
    t.type_line("y");
    let (code, screen) = t.finish(WAIT);
    assert_eq!(code, 0, "{screen}");
    assert_eq!(
        h.read("site.conf").as_deref(),
        Some("greeting from-inventory\n")
    );
    assert_eq!(
        h.read("secret.conf").as_deref(),
        Some(format!("password {SECRET}\n").as_str())
    );

    let (code, screen) = OnTerminal::spawn(&mut h.tool("apply", &[])).finish(WAIT);
    assert_eq!(code, 0, "{screen}");
    assert!(
        !screen.contains("[y/N]"),
        "nothing to change, nothing asked:\n{screen}"
    );
}

/// Without a terminal, --yes applies what it plans.
#[test]
fn without_a_terminal_apply_yes_applies() {
    let Some(h) = Host::start("yes") else {
        return;
    };
    let (code, out, err) = h.run("apply", &["--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        h.read("site.conf").as_deref(),
        Some("greeting from-inventory\n")
    );
}

/// `plan --out`: a 0600 file without secrets, in the documented shape; `apply FILE` applies
/// exactly it without asking; applying it again is refused (the files it planned to create
/// are there now).
#[test]
fn a_saved_plan_is_applied_as_reviewed_and_only_once() {
    let Some(h) = Host::start("saved") else {
        return;
    };
    let (code, out, err) = h.run("plan", &["--out", "plan.json"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("plan saved to plan.json (2 change(s) on 1 host(s))"),
        "{err}"
    );
    let file = h.dir.path().join("plan.json");
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        !text.contains(SECRET),
        "no secret in the plan file:\n{text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_schema("plan-file.schema.json", &doc);
    assert_schema(
        "recap.schema.json",
        &serde_json::json!({
            "format_version": 1, "mode": "plan", "plan": [doc["hosts"][0]["plan"].clone()],
            "recap": [], "exit_code": 2, "seconds": 0.0
        }),
    );
    assert_eq!(h.read("site.conf"), None, "plan changes nothing");

    let (code, out, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(
        code, 0,
        "a saved plan needs no terminal nor --yes:\n{out}{err}"
    );
    assert_eq!(
        h.read("site.conf").as_deref(),
        Some("greeting from-inventory\n")
    );

    let (code, out, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("plan.json: the plan is stale: run plan again"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "web1: {}/site.conf appeared on the host",
            h.files().display()
        )),
        "{err}"
    );
}

/// A file edited by hand between plan and apply: refused, naming host and file; the
/// edit is left alone.
#[test]
fn a_saved_plan_is_stale_when_a_file_was_edited_by_hand() {
    let Some(h) = Host::start("edited") else {
        return;
    };
    let (code, out, err) = h.run("apply", &["--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    h.write_template("greeting {{ greeting }}!\n");
    let (code, out, err) = h.run("plan", &["--out", "plan.json"]);
    assert_eq!(code, 2, "{out}{err}");
    std::fs::write(h.files().join("site.conf"), "edited by hand\n").expect("edit");
    let (code, out, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the plan is stale: run plan again"), "{err}");
    assert!(
        err.contains(&format!(
            "web1: {}/site.conf changed on the host (0644 root:root sha256 ",
            h.files().display()
        )),
        "{err}"
    );
    assert!(err.contains("Nothing was changed."), "{err}");
    assert_eq!(h.read("site.conf").as_deref(), Some("edited by hand\n"));
}

/// A template or the inventory changed since the plan: refused before any host is reached.
#[test]
fn a_saved_plan_is_stale_when_a_template_or_the_inventory_changed() {
    let Some(h) = Host::start("inputs") else {
        return;
    };
    let (code, out, err) = h.run("plan", &["--out", "plan.json"]);
    assert_eq!(code, 2, "{out}{err}");
    h.write_template("greeting {{ greeting }} (changed)\n");
    let inv = std::fs::read_to_string(h.inventory()).expect("read");
    std::fs::write(h.inventory(), inv.replace("from-inventory", "changed")).expect("write");
    let (code, out, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the plan is stale: run plan again"), "{err}");
    assert!(err.contains("the inventory inv.yml changed"), "{err}");
    assert!(
        err.contains("template templates/site/site.conf.tera changed"),
        "{err}"
    );
    assert!(!err.contains("[web1]"), "no host was reached: {err}");
    assert_eq!(h.read("site.conf"), None);
}

/// A plan file others may read, of another version of the tool, or with options that
/// would change what it covers: refused.
#[test]
fn a_plan_file_must_be_private_ours_and_alone() {
    let Some(h) = Host::start("refused") else {
        return;
    };
    let (code, out, err) = h.run("plan", &["--out", "plan.json"]);
    assert_eq!(code, 2, "{out}{err}");
    let (code, _, err) = h.run_bare(&["apply", "plan.json", "--limit", "web1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "--limit, --tier, --role, --skip-role, --var and --root cannot be given with it"
        ),
        "{err}"
    );

    let file = h.dir.path().join("plan.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("must be readable by its owner only (mode 0600)") && err.contains("chmod 600"),
        "{err}"
    );

    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("JSON");
    doc["tool_version"] = "0.0.0-other".into();
    std::fs::write(&file, doc.to_string()).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, _, err) = h.run_bare(&["apply", "plan.json"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the plan was made by foobar-provision 0.0.0-other"),
        "{err}"
    );

    assert_eq!(h.read("site.conf"), None);
}

/// `plan --format markdown`: the summary table, the host's plan in a diff block, no secret.
#[test]
fn plan_markdown_is_a_pull_request_comment() {
    let Some(h) = Host::start("markdown") else {
        return;
    };
    let (code, out, err) = h.run("plan", &["--format", "markdown"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.starts_with("### foobar-provision plan\n"), "{out}");
    assert!(out.contains("| web1 | web | 2 | would change |"), "{out}");
    assert!(
        out.contains("<details><summary><b>web1</b> (web): 2 change(s)</summary>"),
        "{out}"
    );
    assert!(out.contains("```diff\n"), "{out}");
    assert!(out.contains("\n+greeting from-inventory\n"), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    assert!(
        err.contains("[web1] planned"),
        "progress goes to stderr: {err}"
    );
}

/// `--junit` on plan and apply, and the Markdown job summary appended under GitHub Actions.
#[test]
fn junit_and_the_job_summary_are_written() {
    let Some(h) = Host::start("junit") else {
        return;
    };
    let summary = h.dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").expect("write");
    let (code, out, err) = crate::support::sh(
        h.tool("plan", &["--junit", "plan.xml"])
            .env("GITHUB_STEP_SUMMARY", &summary),
    );
    assert_eq!(code, 2, "{out}{err}");
    let xml = std::fs::read_to_string(h.dir.path().join("plan.xml")).expect("junit");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"foobar-provision plan\" tests=\"2\" failures=\"0\""), "{xml}");
    assert!(
        xml.contains("<testcase classname=\"web.web1\" name=\"site\""),
        "{xml}"
    );
    assert!(xml.contains("would change: 2 change(s)"), "{xml}");
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.starts_with("earlier step\n### foobar-provision plan\n"),
        "appended:\n{md}"
    );

    let (code, out, err) = h.run("apply", &["--yes", "--junit", "apply.xml"]);
    assert_eq!(code, 0, "{out}{err}");
    let xml = std::fs::read_to_string(h.dir.path().join("apply.xml")).expect("junit");
    assert!(
        xml.contains("changed: 2 change(s)") && xml.contains("failures=\"0\""),
        "{xml}"
    );
}

/// The JSON document of a real plan, with changes, has the documented shape.
#[test]
fn the_json_plan_has_the_documented_shape() {
    let Some(h) = Host::start("json") else {
        return;
    };
    let (code, out, err) = h.run("plan", &["--format", "json"]);
    assert_eq!(code, 2, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_schema("recap.schema.json", &doc);
    assert_eq!(doc["plan"][0]["roles"][0]["files"][0]["action"], "create");
    assert!(!out.contains(SECRET));
}
