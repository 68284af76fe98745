//! Property tests standing in for a fuzzer (no nightly here): `inventory::parse` and
//! `role::parse` on arbitrary text, on mutations of the valid fixture files, and on
//! generated YAML made of the formats' own keys. Neither may panic, and every error must
//! read `PATH[:LINE:COL]: message`, naming a line that exists, in user words.
//!
//! Cases per property: `PROPTEST_CASES` (default 4000; 5 properties).
//! `PROPTEST_CASES=20000 cargo test --release --test offline fuzz_inventory:: -- --nocapture`
//! for a long run.

use foobar_provision::diag::Diagnostic;
use foobar_provision::{inventory, role};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DEFAULT_CASES: u32 = 4000;
/// A single parse taking longer than this (debug build) is reported as a failure.
const SLOW: Duration = Duration::from_secs(2);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/project")
}

fn good_inventory() -> String {
    std::fs::read_to_string(fixture().join("inventories/good.yml"))
        .expect("fixture")
        .replace("PORT", "2222")
}

fn good_role() -> String {
    std::fs::read_to_string(fixture().join("roles/web/role.yml")).expect("fixture")
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        // Findings are turned into corpus cases by hand; no files written next to tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

const INV_PATH: &str = "fuzz/inventories/site.yml";
const ROLE_PATH: &str = "fuzz/roles/web/role.yml";

/// Problems with one diagnostic, as a string for the runner.
fn judge(d: &Diagnostic, path: &str, text: &str) -> Result<(), String> {
    let shown = d.to_string();
    if !shown.starts_with(path) {
        return Err(format!("does not start with the path: {shown}"));
    }
    let lines = line_count(text);
    // A position may be one past the last line (end of file), never further.
    if d.line > lines + 1 {
        return Err(format!(
            "line {} but the text has {lines} lines: {shown}",
            d.line
        ));
    }
    if d.line > 0 && d.line <= lines {
        let width = line_text(text, d.line).chars().count() as u64;
        // Column one past the end is where an unexpected line end is reported.
        if d.column > width + 1 {
            return Err(format!(
                "column {} but line {} has {width} chars: {shown}",
                d.column, d.line
            ));
        }
    }
    if d.message.trim().is_empty() {
        return Err(format!("empty message: {shown}"));
    }
    // serde / serde-saphyr internals that should never reach a user.
    for jargon in [
        "Option<",
        "DuplicateKeyPolicy",
        "budget breached",
        "deserialize",
        "panicked",
        " { ",
    ] {
        if d.message.contains(jargon) {
            return Err(format!("internal jargon `{jargon}`: {shown}"));
        }
    }
    Ok(())
}

/// Guards against pathological slowness (not a benchmark).
fn timed<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let t0 = Instant::now();
    let out = f();
    let took = t0.elapsed();
    if took > SLOW {
        return Err(format!("parse took {took:?}"));
    }
    Ok(out)
}

/// Line `n` (1-based) as YAML counts lines.
fn line_text(text: &str, n: u64) -> String {
    let t = text.replace("\r\n", "\n").replace('\r', "\n");
    t.split('\n').nth(n as usize - 1).unwrap_or("").to_string()
}

/// Lines as YAML counts them: `\n`, `\r\n` and a lone `\r` each end one.
fn line_count(text: &str) -> u64 {
    1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64
}

/// `Ok(None)`: the text parsed; `Ok(Some(message))`: a well-formed error; `Err`: a problem.
type Outcome = Result<Option<String>, String>;

fn check_inventory(text: &str) -> Outcome {
    let roles = vec![
        "web".to_string(),
        "mysql".to_string(),
        "haproxy".to_string(),
    ];
    match timed(|| inventory::parse(Path::new(INV_PATH), text, &roles))? {
        Ok(_) => Ok(None),
        Err(d) => judge(&d, INV_PATH, text).map(|()| Some(d.message)),
    }
}

fn check_role(text: &str) -> Outcome {
    let templates = fixture().join("templates");
    match timed(|| role::parse(Path::new(ROLE_PATH), text, "web", &templates))? {
        Ok(_) => Ok(None),
        Err(d) => judge(&d, ROLE_PATH, text).map(|()| Some(d.message)),
    }
}

/// A message with its particulars (`names`, numbers) blanked, to count kinds of errors.
fn kind(message: &str) -> String {
    let mut out = String::new();
    let mut in_tick = false;
    for c in message.chars() {
        match c {
            '`' => {
                in_tick = !in_tick;
                if in_tick {
                    out.push_str("`_`");
                }
            }
            _ if in_tick => {}
            '0'..='9' => {
                if !out.ends_with('N') {
                    out.push('N');
                }
            }
            _ => out.push(c),
        }
    }
    out.chars().take(70).collect()
}

// ---- mutations -----------------------------------------------------------------------

/// YAML's punctuation and a few tokens that change a document's structure.
const TOKENS: &[&str] = &[
    "[", "]", "{", "}", ":", ": ", ",", "-", "- ", "&a ", "*a", "!!str ", "!x ", "|", ">", "'",
    "\"", "#", "%", "@", "`", "?", "~", "\t", "\n", "  ", "---\n", "...\n", "\0", "\u{feff}",
    "<<: ", "null", "1e999", "0x1F", "-0", ".nan", "\\", "é", "\u{2028}",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte { at: usize, bit: u8 },
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Insert { at: usize, token: usize },
    Indent { line: usize, by: i8 },
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), -4i8..=4).prop_map(|(line, by)| Mutation::Indent { line, by }),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let n = bytes.len().max(1);
        match *m {
            Mutation::FlipByte { at, bit } => {
                if !bytes.is_empty() {
                    bytes[at % n] ^= 1 << bit;
                }
            }
            Mutation::Insert { at, token } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, TOKENS[token].bytes());
            }
            Mutation::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
            Mutation::DeleteLine(i)
            | Mutation::DuplicateLine(i)
            | Mutation::SwapLines(i, _)
            | Mutation::Indent { line: i, .. } => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let len = lines.len();
                let i = i % len;
                match *m {
                    Mutation::DeleteLine(_) => {
                        lines.remove(i);
                    }
                    Mutation::DuplicateLine(_) => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    Mutation::SwapLines(_, j) => lines.swap(i, j % len),
                    Mutation::Indent { by, .. } if by >= 0 => {
                        lines[i].splice(0..0, std::iter::repeat_n(b' ', by as usize));
                    }
                    Mutation::Indent { by, .. } => {
                        let strip = lines[i]
                            .iter()
                            .take((-by) as usize)
                            .take_while(|b| **b == b' ')
                            .count();
                        lines[i].drain(..strip);
                    }
                    _ => unreachable!(),
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---- generated documents from the formats' own vocabulary ----------------------------

const KEYS: &[&str] = &[
    "domain",
    "vip",
    "ssh",
    "user",
    "port",
    "identity_file",
    "use_agent",
    "known_hosts",
    "connect_timeout",
    "jump_host",
    "sudo",
    "admin_networks",
    "tiers",
    "db",
    "app",
    "web",
    "lb",
    "roles",
    "vars",
    "hosts",
    "web1",
    "web2",
    "address",
    "tier",
    "secrets",
    "pw",
    "env",
    "file",
    "description",
    "packages",
    "service",
    "name",
    "enabled",
    "reload",
    "defaults",
    "files",
    "template",
    "src",
    "dest",
    "owner",
    "group",
    "mode",
    "notify",
    "validate",
    "tree",
    "command",
    "handlers",
    "health",
    "retries",
    "interval_ms",
    "adress",
    "<<",
];

const SCALARS: &[&str] = &[
    "www.example.test",
    "127.0.0.1",
    "127.0.0.2",
    "::1",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "0",
    "22",
    "65535",
    "65536",
    "-1",
    "99999999999999999999",
    "2.5",
    "true",
    "no",
    "~",
    "\"\"",
    "web",
    "wbe",
    "nginx",
    "reload",
    "relaod",
    "none",
    "\"0644\"",
    "\"0999\"",
    "/etc/x.conf",
    "etc/x",
    "web/site.conf.tera",
    "web/secret.conf.tera",
    "../x",
    "{tree}",
    "\"{{ port }}\"",
    "FP_X",
    "[]",
    "{}",
    ".inf",
    "0o644",
    "*a",
    "&a x",
];

#[derive(Debug, Clone)]
enum Node {
    Scalar(usize),
    List(Vec<Node>),
    Map(Vec<(usize, Node)>),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (0..SCALARS.len()).prop_map(Node::Scalar);
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Node::List),
            prop::collection::vec((0..KEYS.len(), inner), 0..6).prop_map(Node::Map),
        ]
    })
}

fn render(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Scalar(i) => {
            out.push(' ');
            out.push_str(SCALARS[*i]);
            out.push('\n');
        }
        Node::List(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(items) if items.is_empty() => out.push_str(" {}\n"),
        Node::List(items) => {
            out.push('\n');
            for it in items {
                out.push_str(&pad);
                out.push('-');
                render(it, indent + 2, out);
            }
        }
        Node::Map(items) => {
            out.push('\n');
            for (k, v) in items {
                out.push_str(&pad);
                out.push_str(KEYS[*k]);
                out.push(':');
                render(v, indent + 2, out);
            }
        }
    }
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec((0..KEYS.len(), node()), 0..8).prop_map(|items| {
        let mut s = String::new();
        for (k, v) in &items {
            s.push_str(KEYS[*k]);
            s.push(':');
            render(v, 2, &mut s);
        }
        s
    })
}

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            (0..TOKENS.len()).prop_map(|i| TOKENS[i].to_string()),
            (0..KEYS.len()).prop_map(|i| KEYS[i].to_string()),
            (0..SCALARS.len()).prop_map(|i| SCALARS[i].to_string()),
            // Long runs: deep nesting, long lines, many aliases or documents.
            (0..TOKENS.len(), 0..3000usize).prop_map(|(i, n)| TOKENS[i].repeat(n)),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

/// Runs one property for the configured number of cases; prints cases, time and the
/// slowest parse (visible with --nocapture).
fn run_property<S: Strategy>(
    name: &str,
    strategy: S,
    prepare: impl Fn(S::Value) -> String,
    check: fn(&str) -> Outcome,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    let slowest = AtomicU64::new(0);
    let kinds: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let started = Instant::now();
    let result = runner.run(&strategy, |v| {
        let text = prepare(v);
        let t0 = Instant::now();
        let r = check(&text);
        slowest.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        let k = match &r {
            Ok(None) => "(parsed)".to_string(),
            Ok(Some(m)) => kind(m),
            Err(_) => "(problem)".to_string(),
        };
        *kinds.lock().expect("lock").entry(k).or_default() += 1;
        r.map(|_| ())
            .map_err(|e| TestCaseError::fail(format!("{e}\n--- input ---\n{text:?}")))
    });
    let mut kinds: Vec<(String, usize)> = kinds.into_inner().expect("lock").into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let mut report = format!(
        "{name}: {} cases in {:.2?}, slowest parse {} us; {} kinds of outcome:",
        runner.config().cases,
        started.elapsed(),
        slowest.load(Ordering::Relaxed),
        kinds.len()
    );
    for (k, n) in &kinds {
        report.push_str(&format!("\n  {n:>6}  {k}"));
    }
    println!("{report}");
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn inventory_parse_survives_arbitrary_text() {
    run_property(
        "inventory/arbitrary",
        prop_oneof![any::<String>(), yamlish()],
        |s| s,
        check_inventory,
    );
}

#[test]
fn inventory_parse_survives_mutated_fixture() {
    let good = good_inventory();
    run_property(
        "inventory/mutated",
        prop::collection::vec(mutation(), 1..6),
        |ms| apply(&good, &ms),
        check_inventory,
    );
}

#[test]
fn inventory_parse_survives_generated_documents() {
    run_property("inventory/generated", document(), |s| s, check_inventory);
}

#[test]
fn role_parse_survives_arbitrary_and_generated_text() {
    run_property(
        "role/arbitrary+generated",
        prop_oneof![any::<String>(), yamlish(), document()],
        |s| s,
        check_role,
    );
}

#[test]
fn role_parse_survives_mutated_fixture() {
    let good = good_role();
    run_property(
        "role/mutated",
        prop::collection::vec(mutation(), 1..6),
        |ms| apply(&good, &ms),
        check_role,
    );
}

/// The fixtures themselves parse, so mutations start from a valid file.
#[test]
fn fixtures_are_valid() {
    let roles = vec!["web".to_string()];
    inventory::parse(Path::new(INV_PATH), &good_inventory(), &roles).expect("fixture inventory");
    role::parse(
        Path::new(ROLE_PATH),
        &good_role(),
        "web",
        &fixture().join("templates"),
    )
    .expect("fixture role");
}

#[test]
fn mutations_do_what_they_say() {
    let t = "a: 1\nb: 2\nc: 3";
    assert_eq!(apply(t, &[Mutation::DeleteLine(1)]), "a: 1\nc: 3");
    assert_eq!(
        apply(t, &[Mutation::DuplicateLine(0)]),
        "a: 1\na: 1\nb: 2\nc: 3"
    );
    assert_eq!(apply(t, &[Mutation::SwapLines(0, 2)]), "c: 3\nb: 2\na: 1");
    assert_eq!(
        apply(t, &[Mutation::Indent { line: 1, by: 2 }]),
        "a: 1\n  b: 2\nc: 3"
    );
    assert_eq!(apply("  x", &[Mutation::Indent { line: 0, by: -4 }]), "x");
    assert_eq!(apply(t, &[Mutation::Truncate(4)]), "a: 1");
    assert_eq!(apply("ab", &[Mutation::FlipByte { at: 0, bit: 0 }]), "`b");
    assert_eq!(apply("ab", &[Mutation::Insert { at: 1, token: 0 }]), "a[b");
}
