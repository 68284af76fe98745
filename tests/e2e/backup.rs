//! The database's backups (roles db_backup and backup_store, `db backup|list|restore`):
//! rows written through the site are backed up, db1 is destroyed and rebuilt bare, and
//! `db restore` brings every row back (the site works again); a damaged backup (a
//! flipped byte on the store) is refused before anything changes; a database that holds
//! rows is overwritten only with --force; the backup account has read-only grants; the
//! node exporter shows the last good backup's time.

use crate::support::*;
use std::time::Instant;

const INV: &str = "inventories/lab.yml";

/// A query's answer on db1, as root over the socket.
fn sql(query: &str) -> String {
    inside("db1", &format!("mariadb -N -B foobar -e \"{query}\""))
        .trim()
        .to_string()
}

/// Runs `db backup` and returns the backup's name and its row count for `visits`.
fn backup_now() -> (String, u64) {
    let started = Instant::now();
    let run = tool(&["db", "backup", INV, "--format", "json"]);
    assert_eq!(run.code, 0, "db backup: {}", run.all());
    let doc = run.json();
    let name = doc["backup"]["name"].as_str().expect("name").to_string();
    let visits = doc["backup"]["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t[0] == "visits")
        .and_then(|t| t[1].as_u64())
        .expect("visits in the manifest");
    figure(&format!(
        "backup: db backup of {visits} visits in {:.2}s ({} bytes compressed)",
        started.elapsed().as_secs_f64(),
        doc["backup"]["size"]
    ));
    (name, visits)
}

#[test]
#[ignore = "needs the lab"]
fn a_backup_brings_every_row_back_onto_a_rebuilt_db_host() {
    let _lab = converged_lab();
    for _ in 0..5 {
        let (code, body) = https_eventually("/api/visits", 20);
        assert_eq!(code, 0, "{body}");
    }
    let (name, visits) = backup_now();
    assert_eq!(sql("SELECT COUNT(*) FROM visits"), visits.to_string());
    let list = tool(&["db", "list", INV]);
    assert_eq!(list.code, 0, "{}", list.all());
    assert!(list.stdout.contains(&name), "{}", list.all());

    // db1 dies with its disk; a bare one takes its place and is converged.
    let (code, _, err) = docker(&["rm", "-f", "db1"]);
    assert_eq!(code, 0, "docker rm -f db1: {err}");
    lab_up(None);
    converge();
    let started = Instant::now();
    let run = tool(&["db", "restore", INV, "--from", &name]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(run.code, 0, "db restore: {}", run.all());
    assert!(
        run.stdout
            .contains("every table's count matches the backup"),
        "{}",
        run.all()
    );
    figure(&format!(
        "backup: db restore of {visits} visits onto a rebuilt db1 in {took:.2}s (RPO: the time since that backup)"
    ));
    assert_eq!(sql("SELECT COUNT(*) FROM visits"), visits.to_string());
    // The site works again, on the restored data.
    let (code, body) = https_eventually("/api/visits", 30);
    assert_eq!(code, 0, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["visits"].as_u64(), Some(visits + 1), "{body}");
    assert_plan_empty(INV);
}

#[test]
#[ignore = "needs the lab"]
fn a_damaged_backup_is_refused_and_rows_are_overwritten_only_with_force() {
    let _lab = converged_lab();
    let (code, body) = https_eventually("/api/visits", 20);
    assert_eq!(code, 0, "{body}");
    let (name, _) = backup_now();

    // The account the dump uses: read-only, on the application's database, local only.
    let grants = inside(
        "db1",
        "mariadb -N -B -e \"SHOW GRANTS FOR 'foobar_backup'@'localhost'\"",
    );
    let grants: Vec<&str> = grants.lines().collect();
    assert_eq!(
        grants,
        [
            "GRANT USAGE ON *.* TO `foobar_backup`@`localhost` IDENTIFIED VIA unix_socket",
            "GRANT SELECT, LOCK TABLES, SHOW VIEW, TRIGGER ON `foobar`.* TO `foobar_backup`@`localhost`",
        ],
        "the backup account's grants"
    );
    // The node exporter shows the last good backup.
    let metrics = inside(
        "db1",
        "curl -fsS --max-time 5 http://172.30.77.41:9100/metrics | grep '^foobar_backup_last_success_timestamp_seconds '",
    );
    assert!(!metrics.trim().is_empty(), "metric: {metrics}");

    // Rows on db1: refused without --force, nothing changed.
    let rows = sql("SELECT COUNT(*) FROM visits");
    let run = tool(&["db", "restore", INV, "--from", &name]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("holds data"), "{}", run.all());
    assert!(run.stderr.contains("--force"), "{}", run.all());

    // A flipped byte on the store: refused before anything changes, even with --force.
    inside(
        "mon1",
        &format!(
            "f=/var/backups/foobar/data/{name}.sql.gz; b=$(dd if=$f bs=1 skip=40 count=1 status=none | od -An -tu1 | tr -d ' '); \
             printf \"\\\\$(printf %03o $(( (b + 1) % 256 )))\" | dd of=$f bs=1 seek=40 conv=notrunc status=none"
        ),
    );
    let run = tool(&["db", "restore", INV, "--from", &name, "--force"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("is damaged"), "{}", run.all());
    assert!(run.stderr.contains("nothing was restored"), "{}", run.all());
    assert_eq!(sql("SELECT COUNT(*) FROM visits"), rows, "untouched");

    // A good backup with --force overwrites.
    let (good, visits) = backup_now();
    let run = tool(&["db", "restore", INV, "--from", &good, "--force"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(sql("SELECT COUNT(*) FROM visits"), visits.to_string());
    assert_plan_empty(INV);
}
