//! A replica of the database (var db_primary; the mysql role's foobar-db-replica; `db
//! promote`, `db reseed`): db2 joins the lab as db1's replica (seeded from a dump at a GTID
//! position, replicating over TLS); rows written through the site reach it within seconds;
//! a second apply changes nothing on either db host; promotion is refused while db1
//! answers; db1 is killed under load and `db promote --host db2` makes the site serve and
//! write again (the time from the kill, the rows lost); db1 comes back, is refused as a
//! replica while it holds its old data, and `db reseed` makes it db2's replica. After the
//! test the lab is its own again (db2 removed, db1 the only db host).

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The hosts of the inventory with db2.
const HOSTS: &[&str] = &["db1", "db2", "app1", "web1", "lb1", "lb2", "mon1"];

/// The lab's inventory with db2 (172.30.77.42) in the db tier and db1 named the primary.
fn with_db2(t: String) -> String {
    t.replace(
        "  mon1:\n",
        "  db2:\n    address: 172.30.77.42\n    tier: db\n  mon1:\n",
    )
    .replace("vars:\n  app_port", "vars:\n  db_primary: db1\n  app_port")
}

/// The visits a db host holds (root over its socket).
fn visits(host: &str) -> u64 {
    let out = inside(
        host,
        "mariadb -N -B foobar -e 'SELECT COUNT(*) FROM visits'",
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{host}: not a count: {out}"))
}

/// A field of SHOW SLAVE STATUS on `host` (empty when it replicates from nobody).
fn slave(host: &str, field: &str) -> String {
    inside(
        host,
        &format!("mariadb -e 'SHOW SLAVE STATUS\\G' | sed -n 's/^ *{field}: //p'"),
    )
    .trim()
    .to_string()
}

/// Waits until db2 holds as many visits as db1; the time it took.
fn caught_up(limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (a, b) = (visits("db1"), visits("db2"));
        if a == b {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "db2 holds {b} visits, db1 {a}, after {limit:?}: replication is not keeping up\n{}",
            inside("db2", "mariadb -e 'SHOW SLAVE STATUS\\G'")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tool on the test's inventory (outside the repository: --root names the project).
fn on(inv: &Path, command: &[&str], args: &[&str]) -> Run {
    let root = root().to_string_lossy().to_string();
    let inv = inv.to_string_lossy().to_string();
    let mut all = command.to_vec();
    all.extend([inv.as_str(), "--root", root.as_str()]);
    all.extend(args);
    tool(&all)
}

fn apply(inv: &Path) -> Run {
    on(inv, &["apply"], &["--yes", "--format", "json"])
}

fn no_changes(inv: &Path) {
    let root = root().to_string_lossy().to_string();
    assert_no_changes(&inv.to_string_lossy(), &["--root", &root], HOSTS);
}

#[test]
#[ignore = "needs the lab"]
fn a_replica_follows_takes_over_when_the_primary_dies_and_the_old_primary_rejoins() {
    let _lab = converged_lab();
    // Whatever happens: db2 goes, db1 is started again and the lab converged (db1 the
    // primary: it stops replicating if it was db2's replica).
    let _restore = Restore(|| try_docker(&["rm", "-f", "db2"]).map(|_| ()));
    let (inv, _dir) = lab_inventory("replica", with_db2);
    lab_up(Some(&inv));

    // 1. db2 joins: seeded from db1, replicating, read-only; db1 stays the primary.
    let started = Instant::now();
    let run = apply(&inv);
    assert_eq!(run.code, 0, "adding db2: {}", run.all());
    figure(&format!(
        "replica: db2 added (bare host: packages, seed, replication) in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(slave("db2", "Master_Host"), "172.30.77.41");
    assert_eq!(slave("db2", "Slave_IO_Running"), "Yes");
    assert_eq!(slave("db2", "Slave_SQL_Running"), "Yes");
    assert_eq!(slave("db2", "Using_Gtid"), "Slave_Pos");
    assert_eq!(slave("db2", "Master_SSL_Allowed"), "Yes");
    assert_eq!(
        inside("db2", "mariadb -N -e 'SELECT @@read_only'").trim(),
        "1"
    );
    assert_eq!(
        slave("db1", "Master_Host"),
        "",
        "db1 replicates from nobody"
    );
    assert_eq!(
        inside("db1", "mariadb -N -e 'SELECT @@read_only'").trim(),
        "0"
    );
    // The replication account: db2's certificate only, replication and the seed's reads.
    let grants = inside(
        "db1",
        "mariadb -N -B -e \"SHOW GRANTS FOR 'foobar_repl'@'172.30.77.42'\"",
    );
    assert!(
        grants.contains("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.*")
            && grants.contains("REQUIRE SUBJECT '/CN=db2'")
            && grants.contains("GRANT SELECT, SHOW VIEW, TRIGGER ON `foobar`.*")
            && grants.lines().count() == 2,
        "foobar_repl's grants:\n{grants}"
    );
    // Only the primary backs up: db2's backup unit is skipped by its condition, not failed,
    // and `db backup --host db2` is refused.
    let skipped = inside(
        "db2",
        "systemctl start foobar-backup.service && systemctl show -p ActiveState -p ExecMainStartTimestampMonotonic foobar-backup.service",
    );
    // (its Result is exec-condition: skipped; the unit is not failed, so no BackupFailed)
    assert!(
        skipped.contains("ActiveState=inactive")
            && skipped.contains("ExecMainStartTimestampMonotonic=0"),
        "db2's backup unit: {skipped}"
    );
    let run = on(&inv, &["db", "backup"], &["--host", "db2"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("only the primary backs up"),
        "{}",
        run.all()
    );
    // A plaintext or certificate-less client is refused as that account.
    let (code, out, err) = docker_exec(
        "db2",
        "mariadb -h 172.30.77.41 -u foobar_repl --ssl --ssl-ca=/etc/foobar/pki/ca.pem -e 'SELECT 1'",
    );
    assert_ne!(code, 0, "foobar_repl without db2's certificate: {out}{err}");
    no_changes(&inv);

    // 2. Rows written through the site reach db2.
    for _ in 0..20 {
        let (code, body) = https_eventually("/api/visits", 20);
        assert_eq!(code, 0, "{body}");
    }
    let lag = caught_up(Duration::from_secs(10));
    figure(&format!(
        "replica: 20 visits written through the site were on db2 within {:.2}s",
        lag.as_secs_f64()
    ));

    // 3. Promotion is refused while db1 answers: nothing changes.
    let run = on(&inv, &["db", "promote"], &["--host", "db2"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("still answers"), "{}", run.all());
    assert_eq!(slave("db2", "Slave_SQL_Running"), "Yes");
    assert!(
        std::fs::read_to_string(&inv)
            .expect("inventory")
            .contains("db_primary: db1"),
        "the inventory is untouched"
    );

    // 4. db1 dies under load; db2 is promoted; the site writes again.
    let load = Load::start("/api/visits", 8, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let (code, _, err) = docker(&["kill", "db1"]);
    assert_eq!(code, 0, "docker kill db1: {err}");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    let on_db2 = visits("db2");
    let run = on(&inv, &["db", "promote"], &["--host", "db2"]);
    assert_eq!(run.code, 0, "db promote: {}", run.all());
    assert!(run.stdout.contains("the primary is gone"), "{}", run.all());
    assert!(run.stdout.contains("db reseed"), "{}", run.all());
    let (code, body) = https_eventually("/api/visits", 60);
    assert_eq!(code, 0, "the site after the promotion: {body}");
    let serving = killed.elapsed().as_secs_f64();
    assert!(
        std::fs::read_to_string(&inv)
            .expect("inventory")
            .contains("db_primary: db2"),
        "db promote names db2 in the inventory"
    );
    assert_eq!(
        slave("db2", "Master_Host"),
        "",
        "db2 replicates from nobody"
    );
    assert_eq!(
        inside("db2", "mariadb -N -e 'SELECT @@read_only'").trim(),
        "0"
    );
    assert!(
        inside("app1", "cat /etc/foobar-app/env").contains("FOOBAR_DB_HOST=\"172.30.77.42\""),
        "the app writes to db2"
    );

    // 5. db1 comes back with its own data: how many rows never reached db2.
    let (code, _, err) = docker(&["start", "db1"]);
    assert_eq!(code, 0, "docker start db1: {err}");
    let up = Instant::now();
    let on_db1 = loop {
        let (code, out, _) = docker_exec(
            "db1",
            "mariadb -N -B foobar -e 'SELECT COUNT(*) FROM visits'",
        );
        if code == 0
            && let Ok(n) = out.trim().parse::<u64>()
        {
            break n;
        }
        assert!(
            up.elapsed() < Duration::from_secs(60),
            "db1's MariaDB did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    figure(&format!(
        "replica: db1 killed under load ({}): db promote, site writing to db2 {serving:.1}s after the kill; {} row(s) db1 had committed never reached db2 (asynchronous replication)",
        report.summary(),
        on_db1.saturating_sub(on_db2)
    ));

    // 6. As db2's replica db1 is refused while it holds its data (its rows are kept)...
    let run = apply(&inv);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("replicates from nobody"),
        "{}",
        run.all()
    );
    assert_eq!(slave("db1", "Master_Host"), "");
    assert_eq!(visits("db1"), on_db1, "db1's rows untouched");
    // ...and `db reseed` replaces them with db2's and makes it a replica.
    let started = Instant::now();
    let run = on(&inv, &["db", "reseed"], &["--host", "db1"]);
    assert_eq!(run.code, 0, "db reseed: {}", run.all());
    figure(&format!(
        "replica: db reseed of db1 from db2 in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(slave("db1", "Master_Host"), "172.30.77.42");
    assert_eq!(
        inside("db1", "mariadb -N -e 'SELECT @@read_only'").trim(),
        "1"
    );
    for _ in 0..5 {
        let (code, body) = https_eventually("/api/visits", 20);
        assert_eq!(code, 0, "{body}");
    }
    let started = Instant::now();
    loop {
        if visits("db1") == visits("db2") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "db1 does not follow db2"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = apply(&inv);
    assert_eq!(run.code, 0, "{}", run.all());
    no_changes(&inv);
}
