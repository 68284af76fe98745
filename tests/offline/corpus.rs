//! The bad-input corpus (tests/corpus/, format in tests/corpus/README.md): every case is run
//! through the real binary with `check` and with `apply`, and must fail cleanly: exit 1, the
//! file (and line, where the case names one) in the message, every expected phrase, the
//! expected hint, no panic, within a hang guard, and no connection to any host.
//!
//! `cargo test --test offline corpus:: -- --nocapture` prints a table: case -> first line of the message.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Committed cases (files under tests/corpus/): deleting some must fail the test.
const MIN_COMMITTED_CASES: usize = 45;
/// Hang guard per run (debug build, shared machine), not a benchmark.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// The `MAX_INVENTORY_BYTES` of src/inventory.rs.
const MAX_BYTES: usize = 4 * 1024 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn fixture_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/project")
}

/// What a case says about itself.
#[derive(Debug, Default)]
struct Expect {
    description: String,
    /// Substrings stderr must contain.
    phrases: Vec<String>,
    /// Substrings the `hint:` line must contain.
    hints: Vec<String>,
    /// The file the error must name, relative to the project (projects only).
    file: Option<String>,
    /// `Some(n)`: stderr names `FILE:n:`; `None`: the tool gives no position (declared
    /// explicitly with `expect-line: none`, so the table shows which errors lack one).
    line: Option<u64>,
    /// `check` succeeds (secrets are only read by plan/apply); only `apply` must fail.
    check_passes: bool,
}

fn parse_expect(text: &str, origin: &Path) -> Expect {
    let mut e = Expect::default();
    let mut saw_line = false;
    for raw in text.lines() {
        let line = match raw.strip_prefix('#') {
            Some(rest) => rest.trim(),
            None if raw.trim().is_empty() => continue,
            // Inventory cases: the header ends at the first line that is not a comment.
            None if origin.extension().is_some_and(|x| x == "yml") => break,
            None => raw.trim(),
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "case" => e.description = value,
            "expect" => e.phrases.push(value),
            "expect-hint" => e.hints.push(value),
            "expect-file" => e.file = Some(value),
            "expect-line" => {
                saw_line = true;
                e.line =
                    match value.as_str() {
                        "none" => None,
                        n => Some(n.parse().unwrap_or_else(|_| {
                            panic!("{}: bad expect-line `{n}`", origin.display())
                        })),
                    }
            }
            "check" => e.check_passes = value == "ok",
            other if other.starts_with("expect") => {
                panic!("{}: unknown directive `{other}`", origin.display())
            }
            _ => {}
        }
    }
    assert!(
        !e.phrases.is_empty(),
        "{}: a case needs at least one `expect:`",
        origin.display()
    );
    assert!(
        saw_line,
        "{}: a case needs `expect-line: N` or `expect-line: none`",
        origin.display()
    );
    e
}

/// How to lay a case out in its scratch folder.
enum Source {
    /// tests/corpus/inventories/NN-name.yml, run against the fixture project.
    Inventory(PathBuf),
    /// tests/corpus/projects/NN-name/ with its own roles/, templates/, inventory.yml.
    Project(PathBuf),
    /// Made by the test (too big, or impossible to annotate): the inventory's bytes,
    /// or `None` for "no file at all".
    Generated(Option<Vec<u8>>),
}

struct Case {
    name: String,
    source: Source,
    expect: Expect,
}

fn committed_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for entry in sorted_entries(&corpus_dir().join("inventories")) {
        if entry.extension().is_some_and(|x| x == "yml") {
            let bytes = std::fs::read(&entry).expect("read case");
            let expect = parse_expect(&String::from_utf8_lossy(&bytes), &entry);
            cases.push(Case {
                name: format!("inventories/{}", file_name(&entry)),
                source: Source::Inventory(entry),
                expect,
            });
        }
    }
    for dir in sorted_entries(&corpus_dir().join("projects")) {
        if dir.is_dir() {
            let spec = dir.join("expect.txt");
            let text = std::fs::read_to_string(&spec)
                .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
            cases.push(Case {
                name: format!("projects/{}", file_name(&dir)),
                source: Source::Project(dir),
                expect: parse_expect(&text, &spec),
            });
        }
    }
    cases
}

fn generated_cases() -> Vec<Case> {
    let good = std::fs::read_to_string(fixture_project().join("inventories/good.yml"))
        .expect("fixture inventory");
    // Valid YAML all the way, so only the size check can refuse it.
    let mut huge = good.clone();
    let mut i = 0;
    while huge.len() <= MAX_BYTES {
        let _ = writeln!(huge, "  filler{i}: {}", "x".repeat(100));
        i += 1;
    }
    let expect = |phrases: &[&str], hints: &[&str], line: Option<u64>| Expect {
        description: "generated by the test".into(),
        phrases: phrases.iter().map(|s| s.to_string()).collect(),
        hints: hints.iter().map(|s| s.to_string()).collect(),
        file: None,
        line,
        check_passes: false,
    };
    vec![
        Case {
            name: "generated/empty-file".into(),
            source: Source::Generated(Some(Vec::new())),
            expect: expect(&["unexpected end of file"], &[], Some(1)),
        },
        Case {
            name: "generated/huge-file".into(),
            source: Source::Generated(Some(huge.into_bytes())),
            expect: expect(&["more than the 4194304 bytes allowed"], &[], None),
        },
        Case {
            name: "generated/10000-open-brackets".into(),
            source: Source::Generated(Some(
                format!(
                    "domain: www.example.test\nvars:\n  x: {}\n",
                    "[".repeat(10_000)
                )
                .into_bytes(),
            )),
            expect: expect(&["YAML syntax error"], &["64 levels"], Some(3)),
        },
        Case {
            name: "generated/no-such-inventory".into(),
            source: Source::Generated(None),
            expect: expect(&["inventory file not found"], &["give the path"], None),
        },
    ]
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn replace_bytes(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Copies a project, with PORT replaced by the listener's port in every .yml.
fn copy_project(from: &Path, to: &Path, port: &str) {
    std::fs::create_dir_all(to).expect("mkdir");
    for p in sorted_entries(from) {
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_project(&p, &dest, port);
        } else if p.file_name().is_some_and(|n| n != "expect.txt") {
            let bytes = std::fs::read(&p).expect("read");
            let bytes = if p.extension().is_some_and(|x| x == "yml") {
                replace_bytes(&bytes, b"PORT", port.as_bytes())
            } else {
                bytes
            };
            std::fs::write(&dest, bytes).expect("write");
        }
    }
}

/// Lays the case out under `scratch`; returns (inventory, root, file the error must name).
fn lay_out(case: &Case, scratch: &Path, port: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(scratch).expect("mkdir scratch");
    match &case.source {
        Source::Inventory(path) => {
            let inv = scratch.join(file_name(path));
            let bytes = std::fs::read(path).expect("read case");
            std::fs::write(&inv, replace_bytes(&bytes, b"PORT", port.as_bytes()))
                .expect("write inventory");
            (inv.clone(), fixture_project(), inv)
        }
        Source::Project(dir) => {
            let root = scratch.join("project");
            copy_project(dir, &root, port);
            let inv = root.join("inventory.yml");
            let named = match &case.expect.file {
                Some(f) => root.join(f),
                None => inv.clone(),
            };
            (inv, root, named)
        }
        Source::Generated(bytes) => {
            let inv = scratch.join("inventory.yml");
            if let Some(b) = bytes {
                std::fs::write(&inv, b).expect("write inventory");
            }
            (inv.clone(), fixture_project(), inv)
        }
    }
}

struct Run {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
}

fn run_binary(cmd: &str, inv: &Path, root: &Path, scratch: &Path) -> Run {
    let out_path = scratch.join(format!("{cmd}.stdout"));
    let err_path = scratch.join(format!("{cmd}.stderr"));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_foobar-provision"))
        .arg(cmd)
        .arg(inv)
        .arg("--root")
        .arg(root)
        .env("FP_TEST_PW", "canary-pw-1234")
        .env("HOME", scratch)
        .env_remove("FP_CORPUS_UNSET_VAR")
        .env_remove("FOOBAR_SSH_PASSPHRASE")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("binary starts");
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > RUN_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let stderr =
        String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned();
    Run {
        code: status.and_then(|s| s.code()),
        stderr,
        elapsed,
        timed_out,
    }
}

/// Problems with one run; empty when the run behaved.
fn judge(case: &Case, cmd: &str, run: &Run, named: &Path) -> Vec<String> {
    let e = &case.expect;
    let mut bad = Vec::new();
    let err = &run.stderr;
    if run.timed_out {
        bad.push(format!("still running after {RUN_TIMEOUT:?} (killed)"));
        return bad;
    }
    let want = if cmd == "check" && e.check_passes {
        0
    } else {
        1
    };
    if run.code != Some(want) {
        bad.push(format!("exit code {:?}, expected {want}", run.code));
    }
    if want == 0 {
        return bad;
    }
    for word in ["panicked", "RUST_BACKTRACE"] {
        if err.contains(word) {
            bad.push(format!("stderr mentions `{word}`"));
        }
    }
    let file = named.display().to_string();
    if !err.contains(&file) {
        bad.push(format!("stderr does not name the file {file}"));
    }
    if let Some(n) = e.line {
        let at = format!("{file}:{n}:");
        if !err.contains(&at) {
            bad.push(format!("stderr does not name the position {at}"));
        }
    }
    for p in &e.phrases {
        if !err.contains(p.as_str()) {
            bad.push(format!("stderr lacks `{p}`"));
        }
    }
    let hint_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.trim_start().starts_with("hint:"))
        .collect();
    for h in &e.hints {
        if !hint_lines.iter().any(|l| l.contains(h.as_str())) {
            bad.push(format!("no `hint:` line containing `{h}`"));
        }
    }
    bad
}

/// A loopback listener on every address the corpus uses (127.0.0.1 and .2), same port.
fn listeners() -> (Vec<TcpListener>, u16) {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = first.local_addr().expect("addr").port();
        if let Ok(second) = TcpListener::bind(("127.0.0.2", port)) {
            for l in [&first, &second] {
                l.set_nonblocking(true).expect("nonblocking");
            }
            return (vec![first, second], port);
        }
    }
    panic!("could not bind one port on both 127.0.0.1 and 127.0.0.2");
}

/// Shortens a line for the table: the scratch folder is noise.
fn tidy(line: &str, scratch: &Path) -> String {
    line.replace(&format!("{}/", scratch.display()), "")
}

#[test]
fn every_bad_input_fails_cleanly_with_check_and_apply() {
    let committed = committed_cases();
    assert!(
        committed.len() >= MIN_COMMITTED_CASES,
        "the corpus has {} cases, fewer than {MIN_COMMITTED_CASES}: were some deleted?",
        committed.len()
    );
    let cases: Vec<Case> = committed.into_iter().chain(generated_cases()).collect();
    let (listeners, port) = listeners();
    let port_text = port.to_string();
    let scratch = crate::support::temp_dir("corpus");

    let mut failures = Vec::new();
    let mut table = String::new();
    let mut slowest = (Duration::ZERO, String::new());
    for (i, case) in cases.iter().enumerate() {
        let dir = scratch.path().join(format!("{i:03}"));
        let (inv, root, named) = lay_out(case, &dir, &port_text);
        let mut first_line = String::new();
        let mut hint = String::new();
        for cmd in ["check", "apply"] {
            let run = run_binary(cmd, &inv, &root, &dir);
            if run.elapsed > slowest.0 {
                slowest = (run.elapsed, format!("{} ({cmd})", case.name));
            }
            let problems = judge(case, cmd, &run, &named);
            if !problems.is_empty() {
                failures.push(format!(
                    "{} [{cmd}] ({}): {}\n  --- stderr ---\n{}",
                    case.name,
                    case.expect.description,
                    problems.join("; "),
                    run.stderr.trim_end()
                ));
            }
            if first_line.is_empty() && !(cmd == "check" && case.expect.check_passes) {
                let mut lines = run.stderr.lines();
                first_line = tidy(lines.next().unwrap_or("(no message)"), &dir);
                hint = lines
                    .find(|l| l.trim_start().starts_with("hint:"))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default();
            }
        }
        let _ = writeln!(table, "{:<48} {}", case.name, first_line);
        if !hint.is_empty() {
            let _ = writeln!(table, "{:<48}   {}", "", hint);
        }
    }
    println!(
        "{} cases x (check, apply); slowest run {:.2?}: {}\n{table}",
        cases.len(),
        slowest.0,
        slowest.1
    );
    for l in &listeners {
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => failures.push(format!("a connection was made on bad input ({peer})")),
            Err(e) => failures.push(format!("listener error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn expectation_headers_are_parsed() {
    let e = parse_expect(
        "# case: demo\n# expect: one\n# expect: two\n# expect-hint: did you mean\n# expect-line: 7\nexpect: not header\n",
        Path::new("x.yml"),
    );
    assert_eq!(e.phrases, vec!["one", "two"]);
    assert_eq!(e.hints, vec!["did you mean"]);
    assert_eq!(e.line, Some(7));
    assert_eq!(e.description, "demo");
    let e = parse_expect(
        "case: p\nexpect: x\nexpect-file: roles/web/role.yml\nexpect-line: none\ncheck: ok\n",
        Path::new("expect.txt"),
    );
    assert_eq!(
        (e.file.as_deref(), e.line, e.check_passes),
        (Some("roles/web/role.yml"), None, true)
    );
    assert_eq!(
        replace_bytes(b"a PORT b\xff", b"PORT", b"22"),
        b"a 22 b\xff"
    );
}
