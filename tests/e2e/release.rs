//! The operators' own application, deployed as releases (tier `app`, `release:`): a
//! one-line change timed on one and on two app hosts; with two app hosts, a deploy with a
//! migration under load through the VIP (no failed request, the migration ran exactly
//! once, the page shows the new release), a second apply that changes and sends nothing,
//! `rollback` without upload, a release whose /health fails (switched back on the first
//! host, the second never switched), a failing migration (the old release keeps serving),
//! and `keep` (the oldest releases removed). Each release is a copy of the repository's
//! app/ with a visible change; every run's releases are new (a nonce in the page), so the
//! database's records of earlier runs do not count.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

const ROOT: &str = "/opt/foobar-app";
const CLIENTS: usize = 16;
const LOAD_LIMIT: Duration = Duration::from_secs(300);

/// The release a host's `current` links to (its id), or what readlink said.
fn current(host: &str) -> String {
    let link = inside(host, &format!("readlink {ROOT}/current || true"));
    link.trim()
        .strip_prefix("releases/")
        .unwrap_or(link.trim())
        .to_string()
}

/// The release folders on `host`, sorted.
fn releases_on(host: &str) -> Vec<String> {
    let out = inside(host, &format!("ls -1 {ROOT}/releases"));
    out.lines().map(str::to_string).collect()
}

/// Sets the page's message of the app in `project` to `message`.
fn set_message(project: &Path, message: &str) {
    let path = project.join("app/app.py");
    let code = std::fs::read_to_string(&path).expect("app.py");
    let start = code.find("MESSAGE = \"").expect("MESSAGE line");
    let end = start + code[start..].find('\n').expect("end of line");
    let code = format!("{}MESSAGE = \"{message}\"{}", &code[..start], &code[end..]);
    std::fs::write(&path, code).expect("write app.py");
}

/// The release id `plan` shows for the tier (from the JSON plan of app1).
fn planned_release(inv: &str, root: &str) -> String {
    let plan = tool(&[
        "plan", inv, "--root", root, "--limit", "app1", "--format", "json",
    ]);
    let doc = plan.json();
    doc["plan"][0]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| r["release"]["to"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no release in the plan:\n{}", plan.all()))
}

/// Asks the site (through the VIP) a few times: every answer's `message`.
fn messages(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (code, body) = https("/api/visits");
            assert_eq!(code, 0, "{body}");
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
            v["message"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

/// A query's answer on db1, as root over the socket.
fn sql(query: &str) -> String {
    inside("db1", &format!("mariadb -N -B foobar -e \"{query}\""))
        .trim()
        .to_string()
}

fn apply_text(inv: &str, root: &str) -> Run {
    tool(&["apply", "--yes", inv, "--root", root])
}

#[test]
#[ignore = "needs the lab"]
fn releases_deploy_migrate_once_roll_back_and_keep_the_last_ones() {
    let _lab = converged_lab();
    wait_vip(None, 20).expect("one lb holds the VIP");
    let nonce = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let project = project_copy("release");
    let root = project.path().to_string_lossy().to_string();
    let own_app = app_of(project.path());

    // A one-line change of the app on the lab's one app host, timed.
    set_message(project.path(), &format!("one-line change {nonce}"));
    let (inv1, _d1) = lab_inventory("release-one", &own_app);
    let inv1 = inv1.to_string_lossy().to_string();
    let started = Instant::now();
    let run = apply_text(&inv1, &root);
    let one_host = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("uploading release"), "{}", run.all());
    figure(&format!(
        "release: a one-line app change deployed on 1 app host in {:.2}s (upload, switch, HUP, health checks)",
        one_host.as_secs_f64()
    ));

    // Two app hosts (and two web hosts) from here on.
    let (_scaled, _dir, _restore) = scale_out("release-scale");
    let (inv, _d) = lab_inventory("release", |t| own_app(two_web_two_app(t)));
    let inv = inv.to_string_lossy().to_string();
    let app_hosts = ["app1", "app2"];

    // Release A.
    set_message(project.path(), &format!("release A {nonce}"));
    let a = planned_release(&inv, &root);
    let started = Instant::now();
    let run = apply_text(&inv, &root);
    assert_eq!(run.code, 0, "deploying A: {}", run.all());
    figure(&format!(
        "release: a one-line app change deployed on 2 app hosts, one after the other, in {:.2}s (no load)",
        started.elapsed().as_secs_f64()
    ));
    for h in app_hosts {
        assert_eq!(current(h), a, "{h} runs release A");
    }

    // Release B: a visible change and a migration adding a column, under load, timed.
    set_message(project.path(), &format!("release B {nonce}"));
    std::fs::write(
        project.path().join("app/migrations/002_note.sql"),
        "-- A note per visit.\nALTER TABLE visits ADD COLUMN IF NOT EXISTS note VARCHAR(64) NULL;\n",
    )
    .expect("migration");
    let b = planned_release(&inv, &root);
    assert_ne!(a, b);
    let plan = tool(&["plan", &inv, "--root", &root, "--tier", "app"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let text = plan.all();
    assert!(text.contains(&format!("release {a} -> {b}")), "{text}");
    assert!(text.contains("~ 1 file(s) changed: app.py"), "{text}");
    assert!(
        text.contains("+ 1 file(s) added: migrations/002_note.sql"),
        "{text}"
    );
    assert_eq!(
        text.matches("migration on this host before the switch")
            .count(),
        1,
        "one host migrates: {text}"
    );
    let load = Load::start("/api/visits", CLIENTS, LOAD_LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let run = tool(&["apply", "--yes", &inv, "--root", &root, "--format", "json"]);
    let two_hosts = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(run.code, 0, "deploying B: {}", run.all());
    figure(&format!(
        "release: a one-line change with a migration deployed on 2 app hosts in {:.2}s; under load: {}",
        two_hosts.as_secs_f64(),
        report.summary()
    ));
    assert_eq!(
        report.failed(),
        0,
        "requests failed during the switch:\n{}",
        report.first_failures(8)
    );
    for h in app_hosts {
        assert_eq!(current(h), b, "{h} runs release B");
    }
    let shown = messages(6);
    assert!(
        shown.iter().all(|m| *m == format!("release B {nonce}")),
        "the page shows B: {shown:?}"
    );
    assert_eq!(
        sql(&format!(
            "SELECT COUNT(*) FROM migration_runs WHERE release_id = '{b}'"
        )),
        "1",
        "the migration ran exactly once for B"
    );
    assert_eq!(
        sql(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'foobar' AND TABLE_NAME = 'visits' AND COLUMN_NAME = 'note'"
        ),
        "1",
        "B's migration added the column"
    );
    // A second apply changes nothing and sends nothing.
    assert_no_changes(&inv, &["--root", &root], SCALED_HOSTS);
    let again = apply_text(&inv, &root);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(!again.all().contains("uploading"), "{}", again.all());

    // rollback: back to A everywhere, nothing uploaded, no migration.
    let rb = tool(&["rollback", "--yes", &inv, "--root", &root, "--tier", "app"]);
    assert_eq!(rb.code, 0, "rollback: {}", rb.all());
    assert!(!rb.all().contains("uploading"), "{}", rb.all());
    assert!(
        rb.all().contains(&format!("release {b} -> {a} (rollback")),
        "{}",
        rb.all()
    );
    for h in app_hosts {
        assert_eq!(current(h), a, "{h} rolled back to A");
    }
    let shown = messages(4);
    assert!(
        shown.iter().all(|m| *m == format!("release A {nonce}")),
        "the page shows A again: {shown:?}"
    );
    assert_eq!(
        sql(&format!(
            "SELECT COUNT(*) FROM migration_runs WHERE release_id = '{a}'"
        )),
        "1",
        "the rollback ran no migration"
    );
    // The inventory still says B: plan shows B again, already on the hosts.
    let plan = tool(&["plan", &inv, "--root", &root, "--tier", "app"]);
    assert!(
        plan.all().contains("already on the host: nothing uploaded"),
        "{}",
        plan.all()
    );

    // A release whose /health fails: switched back on the first host, the second keeps A.
    set_message(project.path(), &format!("release C {nonce}"));
    let app_py = project.path().join("app/app.py");
    let good = std::fs::read_to_string(&app_py).expect("app.py");
    let bad = good.replace(
        "    return jsonify(status=\"ok\", host=HOST_NAME, release=RELEASE)\n",
        "    abort(500)\n",
    );
    assert_ne!(good, bad, "the health route was found");
    std::fs::write(&app_py, bad).expect("write");
    let run = apply_text(&inv, &root);
    assert_eq!(
        run.code,
        1,
        "a failing /health fails the apply: {}",
        run.all()
    );
    let out = run.all();
    assert!(out.contains("health check"), "{out}");
    assert!(
        out.contains(&format!("current -> release {a}")),
        "switched back: {out}"
    );
    for h in app_hosts {
        assert_eq!(current(h), a, "{h} serves A after the failed release");
    }
    assert!(
        messages(4)
            .iter()
            .all(|m| *m == format!("release A {nonce}"))
    );
    std::fs::write(&app_py, good).expect("write");

    // A failing migration: nothing switches, A keeps serving.
    set_message(project.path(), &format!("release D {nonce}"));
    let bad_sql = project.path().join("app/migrations/003_broken.sql");
    std::fs::write(&bad_sql, "THIS IS NOT SQL;\n").expect("migration");
    let run = apply_text(&inv, &root);
    assert_eq!(
        run.code,
        1,
        "a failing migration fails the apply: {}",
        run.all()
    );
    assert!(run.all().contains("migration of release"), "{}", run.all());
    for h in app_hosts {
        assert_eq!(current(h), a, "{h} serves A after the failed migration");
    }
    assert!(
        messages(4)
            .iter()
            .all(|m| *m == format!("release A {nonce}"))
    );
    std::fs::remove_file(&bad_sql).expect("rm");

    // Release E: good again; each host keeps 3 releases (the inventory's keep).
    set_message(project.path(), &format!("release E {nonce}"));
    let e = planned_release(&inv, &root);
    let run = apply_text(&inv, &root);
    assert_eq!(run.code, 0, "deploying E: {}", run.all());
    for h in app_hosts {
        assert_eq!(current(h), e, "{h} runs E");
        let kept = releases_on(h);
        assert_eq!(kept.len(), 3, "{h} keeps 3 releases: {kept:?}");
        assert!(kept.contains(&e) && kept.contains(&a), "{h}: {kept:?}");
    }
    assert_no_changes(&inv, &["--root", &root], SCALED_HOSTS);

    // A pin: back to A by the inventory (nothing sent), then the source again.
    let (pinned, _p) = lab_inventory("release-pin", |t| {
        own_app(two_web_two_app(t))
            .replace("      keep: 3", &format!("      keep: 3\n      pin: {a}"))
    });
    let pinned = pinned.to_string_lossy().to_string();
    let run = apply_text(&pinned, &root);
    assert_eq!(run.code, 0, "pinning A: {}", run.all());
    assert!(!run.all().contains("uploading"), "{}", run.all());
    for h in app_hosts {
        assert_eq!(current(h), a, "{h} pinned to A");
    }
    assert_no_changes(&pinned, &["--root", &root], SCALED_HOSTS);

    // Back to the repository's app, without the test's column and records.
    let _ = sql(
        "ALTER TABLE visits DROP COLUMN IF EXISTS note; DELETE FROM schema_migrations WHERE name IN ('002_note.sql', '003_broken.sql')",
    );
    scale_back();
}
