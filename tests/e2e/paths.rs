//! Directories, links and absent paths end to end, on one lab host (mon1): a throwaway
//! role (written into a copy of the project) keeps a folder, a link and an absent file
//! under /srv/foobar-test. Apply converges them and a second plan is empty; drift made by
//! hand (the folder's mode and group, the link repointed, the file back) is planned and
//! fixed, each link or removal change running the role's handler once; a folder with
//! entries where the file must be absent fails the plan and is left alone.
//!
//! The test holds the lab lock; its guard removes /srv/foobar-test and converges the lab
//! with the repository's inventory (which knows nothing of the role).

use crate::support::*;
use serde_json::Value;

const HOST: &str = "mon1";
const BASE: &str = "/srv/foobar-test";

/// The throwaway role: a folder (root:adm 0750) in a folder of its own, a link to it, a
/// file that must be absent; the link and the removal notify a handler that counts its
/// runs in a log beside them.
const ROLE: &str = "\
description: e2e test of directories, links and absent paths (tests/e2e/paths.rs)
directories:
  - path: /srv/foobar-test
  - path: /srv/foobar-test/www
    owner: root
    group: adm
    mode: \"0750\"
links:
  - path: /srv/foobar-test/current
    target: www
    notify: count
absent:
  - path: /srv/foobar-test/old.conf
    notify: count
handlers:
  count: \"echo run >> /srv/foobar-test/handler.log\"
";

/// A copy of the project with the role `e2e_paths`, and the lab's inventory giving it to
/// the mon tier (after its other roles). The folders must outlive the test's runs.
struct Project {
    root: tempfile::TempDir,
    inventory: std::path::PathBuf,
    _inventory_dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let root = project_copy("paths");
        let role = root.path().join("roles/e2e_paths");
        std::fs::create_dir_all(&role).expect("mkdir role");
        std::fs::write(role.join("role.yml"), ROLE).expect("write role.yml");
        let (inventory, dir) = lab_inventory("paths", |t| {
            let from = "blackbox_exporter, backup_store]";
            assert!(
                t.contains(from),
                "the lab's mon tier no longer ends with blackbox_exporter, backup_store: update this test"
            );
            t.replacen(from, "blackbox_exporter, backup_store, e2e_paths]", 1)
        });
        Project {
            root,
            inventory,
            _inventory_dir: dir,
        }
    }

    /// The tool on mon1 with this project: `cmd` (plan or apply) and `extra` options.
    fn run(&self, cmd: &str, extra: &[&str]) -> Run {
        let inv = self.inventory.to_string_lossy().into_owned();
        let root = self.root.path().to_string_lossy().into_owned();
        let mut args = vec![cmd, inv.as_str(), "--root", &root, "--limit", HOST];
        args.extend_from_slice(extra);
        tool(&args)
    }
}

/// `MODE OWNER GROUP` of the folder, where the link points, and whether the absent file
/// is there, on mon1, in one line: `750 root adm | www | absent`.
fn state() -> String {
    inside(
        HOST,
        &format!(
            "printf '%s | %s | %s\\n' \"$(stat -c '%a %U %G' {BASE}/www)\" \
             \"$(readlink {BASE}/current)\" \
             \"$(if [ -e {BASE}/old.conf ] || [ -L {BASE}/old.conf ]; then echo present; else echo absent; fi)\""
        ),
    )
    .trim()
    .to_string()
}

/// How many times the role's handler ran so far.
fn handler_runs() -> usize {
    inside(HOST, &format!("cat {BASE}/handler.log 2>/dev/null || true"))
        .lines()
        .count()
}

/// The role's path changes and handlers in a JSON plan of mon1: (path, action) each,
/// and the handlers its actions run.
fn planned(run: &Run) -> (Vec<(String, String)>, Vec<String>) {
    let plan = plan_of(run, &[HOST]);
    let host = &plan[HOST];
    assert!(
        host.files.is_empty() && host.certificates.is_empty(),
        "only the role's paths may change: {host:?}\n{}",
        run.all()
    );
    let doc = run.json();
    let handlers = doc["plan"][0]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["actions"].as_array().into_iter().flatten())
        .map(|a| {
            a["handler"]
                .as_str()
                .unwrap_or("(not a handler)")
                .to_string()
        })
        .collect::<Vec<_>>();
    let mut paths = host.paths.clone();
    paths.sort();
    (paths, handlers)
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows
        .iter()
        .map(|(p, a)| (format!("{BASE}/{p}"), a.to_string()))
        .collect();
    v.sort();
    v
}

/// A plan (JSON) of mon1 that finds changes: exit 2.
fn plan_json(p: &Project) -> Run {
    let run = p.run("plan", &["--format", "json"]);
    assert_eq!(run.code, 2, "plan must find changes:\n{}", run.all());
    run
}

/// An apply of mon1 that changes it and succeeds.
fn apply_changes(p: &Project) {
    let run = p.run("apply", &["--yes", "--format", "json"]);
    assert_eq!(run.code, 0, "apply failed:\n{}", run.all());
    let (status, changes) = recap(&run, &[HOST])[HOST].clone();
    assert!(status == "changed" && changes > 0, "{status} {changes}");
}

/// Converged: the plan is empty (exit 0) and an apply changes nothing; no temporary file
/// or backup is left beside the paths.
fn assert_converged(p: &Project, when: &str) {
    let plan = p.run("plan", &[]);
    assert_eq!(plan.code, 0, "plan {when}:\n{}", plan.all());
    assert!(plan.stdout.contains("no changes"), "{}", plan.stdout);
    assert_unchanged(
        &p.run("apply", &["--yes", "--format", "json"]),
        &[HOST],
        when,
    );
    assert_eq!(fp_leftovers(HOST, &[BASE]), "", "{when}");
}

#[test]
#[ignore = "needs the lab"]
fn directories_links_and_absent_paths_converge_and_drift_is_fixed() {
    let _lab = converged_lab();
    let _restore = Restore(|| {
        let out = try_docker(&["exec", HOST, "rm", "-rf", BASE])?;
        match out.code {
            0 => Ok(()),
            n => Err(format!("rm -rf {BASE} on {HOST} exited {n}: {}", out.all())),
        }
    });
    let p = Project::new();
    // A folder as an operator made it, with the file the role says must go.
    inside(
        HOST,
        &format!("rm -rf {BASE} && mkdir -m 0755 {BASE} && echo old > {BASE}/old.conf"),
    );

    // First converge: the folder made, the link made, the file removed; one handler run.
    let run = plan_json(&p);
    assert_eq!(
        planned(&run),
        (
            pairs(&[
                ("www", "mkdir"),
                ("current", "link"),
                ("old.conf", "remove")
            ]),
            vec!["count".to_string()]
        )
    );
    let text = p.run("plan", &[]);
    assert_eq!(text.code, 2, "{}", text.all());
    for line in [
        "  + [e2e_paths] dir /srv/foobar-test/www 0750 root:adm",
        "  + [e2e_paths] link /srv/foobar-test/current -> www",
        "  - [e2e_paths] remove /srv/foobar-test/old.conf (file)",
        "  [e2e_paths] run handler count",
    ] {
        assert!(
            text.stdout.lines().any(|l| l == line),
            "`{line}` in:\n{}",
            text.stdout
        );
    }
    apply_changes(&p);
    assert_eq!(state(), "750 root adm | www | absent");
    assert_eq!(handler_runs(), 1);
    assert_converged(&p, "after the first converge");
    assert_eq!(handler_runs(), 1, "a converged role runs no handler");

    // Drift by hand: mode and group of the folder, the link repointed, the file back.
    inside(
        HOST,
        &format!(
            "chmod 2775 {BASE}/www && chgrp root {BASE}/www && ln -sfn /tmp {BASE}/current && echo back > {BASE}/old.conf"
        ),
    );
    assert_eq!(state(), "2775 root root | /tmp | present");
    let run = plan_json(&p);
    assert_eq!(
        planned(&run),
        (
            pairs(&[
                ("www", "metadata"),
                ("current", "relink"),
                ("old.conf", "remove")
            ]),
            vec!["count".to_string()]
        )
    );
    let text = p.run("plan", &[]);
    for line in [
        "  ~ [e2e_paths] dir /srv/foobar-test/www 0750 root:adm",
        "      mode 2775 -> 0750",
        "      owner root:root -> root:adm",
        "  ~ [e2e_paths] link /srv/foobar-test/current -> www (was -> /tmp)",
        "  - [e2e_paths] remove /srv/foobar-test/old.conf (file)",
    ] {
        assert!(
            text.stdout.lines().any(|l| l == line),
            "`{line}` in:\n{}",
            text.stdout
        );
    }
    apply_changes(&p);
    assert_eq!(
        state(),
        "750 root adm | www | absent",
        "set-group-ID cleared too"
    );
    assert_eq!(handler_runs(), 2, "one handler run for both changes");
    assert_converged(&p, "after fixing the drift");

    // A folder with entries where nothing must be: never deleted; the plan fails mon1.
    inside(
        HOST,
        &format!("mkdir {BASE}/old.conf && echo data > {BASE}/old.conf/keep"),
    );
    let run = p.run("plan", &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let doc: Value = run.json();
    let entry = doc["recap"]
        .as_array()
        .and_then(|r| r.iter().find(|h| h["host"] == HOST))
        .cloned()
        .unwrap_or_else(|| panic!("no recap entry for {HOST}:\n{}", run.all()));
    assert_eq!(entry["kind"], "facts", "{entry}");
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("/srv/foobar-test/old.conf is a directory with entries")),
        "{entry}"
    );
    let run = p.run("apply", &["--yes"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(inside(HOST, &format!("cat {BASE}/old.conf/keep")), "data\n");
    assert_eq!(handler_runs(), 2);
    // _restore removes /srv/foobar-test and converges the lab.
}
