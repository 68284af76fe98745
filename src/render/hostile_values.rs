//! Hostile inventory values (issue 10): for every inventory field that reaches a host's
//! root shell (the domain, vars used in role commands, host names), a generated value
//! with quotes, `$()`, backticks, newlines, NUL, control characters or great length is
//! either refused by `check` (a located diagnostic, printable) or lands in the rendered
//! role commands only as one `shell::quote` word.
//!
//! The check is differential: the repository's own project (roles/, templates/) renders
//! inventories/lab.yml twice, once with a plain marker in the field and once with the
//! hostile value; the hostile commands must be the marker's commands with each marker
//! replaced by `quote(value)`, nothing else changed.
//!
//! Cases per field: `PROPTEST_CASES` (default 100; a debug build renders about ten
//! cases a second).

use super::Project;
use crate::desired::DesiredHost;
use crate::diag::Diagnostic;
use crate::inventory::{self, Inventory};
use crate::shell::quote;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::path::{Path, PathBuf};

/// A plain word that `quote` leaves as it is and that appears nowhere in the project.
const MARKER: &str = "hostilemarker";

/// Pieces hostile strings are made of: shell syntax, YAML and Tera syntax, control
/// characters, option dashes, and harmless text to mix in.
const PIECES: &[&str] = &[
    "'",
    "\"",
    "$(",
    ")",
    "`",
    "\n",
    "\0",
    "\r",
    "\t",
    "\u{1b}[2J",
    "\u{7f}",
    ";",
    "|",
    "&",
    " ",
    "${IFS}",
    "\\",
    "#",
    "*",
    "?",
    "~",
    "!",
    "-",
    "--allow-unauthenticated",
    "{{",
    "}}",
    "{%",
    "%}",
    "<",
    ">",
    "\u{2028}",
    "é",
    "a",
    "x.com",
    ".",
    "foo-bar",
    "touch /tmp/pwned",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(0..PIECES.len(), 1..12)
            .prop_map(|ix| ix.iter().map(|i| PIECES[*i]).collect::<String>()),
        any::<String>().prop_filter("not empty", |s| !s.is_empty()),
        (0..PIECES.len(), 100..5000usize).prop_map(|(i, n)| format!("a{}", PIECES[i].repeat(n))),
    ]
}

/// A field of lab.yml and how to put a value in it (the value comes JSON-quoted, which
/// YAML reads as a double-quoted string).
struct Field {
    name: &'static str,
    /// What the plain run uses (the marker, or a domain holding it).
    plain: &'static str,
    set: fn(&str, &str) -> String,
}

const FIELDS: &[Field] = &[
    Field {
        name: "domain",
        plain: "hostilemarker.test",
        set: |lab, v| lab.replacen("domain: www.foobar.com", &format!("domain: {v}"), 1),
    },
    Field {
        name: "vars.db_name (SQL and the mysql health check)",
        plain: MARKER,
        set: |lab, v| lab.replacen("  db_name: foobar ", &format!("  db_name: {v} "), 1),
    },
    Field {
        name: "vars.db_user",
        plain: MARKER,
        set: |lab, v| lab.replacen("  db_user: foobar ", &format!("  db_user: {v} "), 1),
    },
    Field {
        name: "vars.app_port (the app health checks)",
        plain: MARKER,
        set: |lab, v| lab.replacen("  app_port: 8000", &format!("  app_port: {v}"), 1),
    },
    Field {
        name: "tier vars app_port",
        plain: MARKER,
        set: |lab, v| {
            after(
                lab,
                "    roles: [firewall, pki, node_exporter, app]
",
                v,
            )
        },
    },
    Field {
        name: "host vars app_port",
        plain: MARKER,
        set: |lab, v| {
            after(
                lab,
                "    address: 172.30.77.31
    tier: app
",
                v,
            )
        },
    },
    Field {
        name: "host name",
        plain: MARKER,
        set: |lab, v| lab.replacen("  app1:\n", &format!("  {v}:\n"), 1),
    },
];

/// `lab` with `vars: {app_port: value}` added after the (tier or host) lines `anchor`.
fn after(lab: &str, anchor: &str, value: &str) -> String {
    let vars = format!("{anchor}    vars:\n      app_port: {value}\n");
    lab.replacen(anchor, &vars, 1)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every role command of every host, in a fixed order.
fn commands(hosts: &[DesiredHost]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        for r in &h.roles {
            out.extend(r.handlers.iter().map(|(_, c)| c.clone()));
            out.extend(r.health.iter().map(|c| c.command.clone()));
            out.extend(r.validate.iter().map(|v| v.command.clone()));
            out.extend(r.drift_check.iter().cloned());
            out.extend(r.files.iter().filter_map(|f| f.validate.clone()));
        }
    }
    out
}

/// `check` on the lab with `text` as its inventory: the inventory, then every host
/// rendered with placeholder secrets.
fn check(project: &Project, text: &str) -> Result<Vec<DesiredHost>, Diagnostic> {
    let path = root().join("inventories/lab.yml");
    let inv: Inventory = inventory::parse(&path, text, &project.role_names())?;
    super::tests::render_all(project, &inv)
}

/// A refusal must be a located, printable message about the inventory or a role.
fn judge_refusal(d: &Diagnostic) -> Result<(), String> {
    let shown = d.to_string();
    if shown.contains(['\0', '\r', '\u{1b}', '\u{7f}']) {
        return Err(format!("unprintable message: {shown:?}"));
    }
    if !shown.contains("lab.yml") && !shown.contains("role.yml") && !shown.contains("templates") {
        return Err(format!("the message names no input file: {shown}"));
    }
    Ok(())
}

/// The lab with the field's plain value: its text and its role commands.
fn plain(project: &Project, lab: &str, field: &Field) -> (String, Vec<String>) {
    let text = (field.set)(lab, &json(field.plain));
    let hosts = check(project, &text)
        .unwrap_or_else(|d| panic!("{}: the plain value is refused: {d}", field.name));
    (text, commands(&hosts))
}

fn property(
    project: &Project,
    lab: &str,
    field: &Field,
    (plain_text, plain): &(String, Vec<String>),
    value: &str,
) -> Result<(), String> {
    let hostile_text = (field.set)(lab, &json(value));
    if hostile_text == *plain_text {
        return Err("the field was not found in lab.yml".into());
    }
    let hostile = match check(project, &hostile_text) {
        Err(d) => return judge_refusal(&d),
        Ok(h) => commands(&h),
    };
    let quoted = quote(value);
    let quoted_plain = quote(field.plain);
    let want: Vec<String> = plain
        .iter()
        .map(|c| c.replace(&quoted_plain, &quoted))
        .collect();
    for (got, want) in hostile.iter().zip(&want) {
        if got != want {
            return Err(format!(
                "a command holds the value other than as one quoted word:\n  got:  {got:?}\n  want: {want:?}"
            ));
        }
    }
    if hostile.len() != want.len() {
        return Err(format!("{} commands, not {}", hostile.len(), want.len()));
    }
    Ok(())
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[test]
fn hostile_values_are_refused_or_stay_quoted_in_role_commands() {
    let project = Project::load(&root()).expect("the project loads");
    let lab = std::fs::read_to_string(root().join("inventories/lab.yml")).expect("lab.yml");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for field in FIELDS {
        let plain = plain(&project, &lab, field);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            ..Config::default()
        });
        let result = runner.run(&hostile(), |v| {
            property(&project, &lab, field, &plain, &v)
                .map_err(|e| TestCaseError::fail(format!("{e}\n--- value ---\n{v:?}")))
        });
        if let Err(e) = result {
            panic!("{}: {e}", field.name);
        }
    }
}

/// The reproductions of the review, by name.
#[test]
fn the_review_values_are_refused() {
    let project = Project::load(&root()).expect("the project loads");
    let lab = std::fs::read_to_string(root().join("inventories/lab.yml")).expect("lab.yml");
    for (field, value) in [
        (&FIELDS[0], "x.com';touch${IFS}/tmp/pwned;'"),
        (&FIELDS[1], "foo-bar"),
        (&FIELDS[1], "x`id`"),
        (&FIELDS[6], "-rf"),
    ] {
        let text = (field.set)(&lab, &json(value));
        let e = check(&project, &text).map(|_| ()).expect_err(value);
        judge_refusal(&e).expect("a clean refusal");
    }
}
