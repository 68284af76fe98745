//! `db backup`, `db list`, `db restore`: the database's backups, over the same SSH
//! connections as `apply` (strict host keys, sudo). The pure half (scripts, manifest,
//! checks) is [`crate::backup`].

use super::reach::check_identities;
use super::{EXIT_FAIL, EXIT_OK, Loaded, close_sessions, load, refuse_run_options};
use crate::apply::{exec_bounded, timed_out};
use crate::backup::{self, MAX_MANIFEST_BYTES, MAX_RESTORE_BYTES, Manifest};
use crate::cli::{DbCommand, DbHost, DbRestore};
use crate::inventory::Host;
use crate::progress::Format;
use crate::shell::printable;
use crate::transport::{self, ExecOutput};
use anyhow::{Context, anyhow, bail};
use std::time::{Duration, Instant};

/// A backup's run on the db host (the unit's own limit is an hour).
const BACKUP_LIMIT: Duration = Duration::from_secs(3700);
/// Reading manifests, counting rows.
const READ_LIMIT: Duration = Duration::from_secs(120);
/// Reading a backup file, loading it.
const RESTORE_LIMIT: Duration = Duration::from_secs(3600);

pub(super) async fn db(c: &DbCommand) -> anyhow::Result<i32> {
    match c {
        DbCommand::Backup(h) => backup_now(h).await,
        DbCommand::List(h) => list(h).await,
        DbCommand::Restore(r) => restore(r).await,
    }
}

/// The first host of a tier that has `role` (or `--host`, which must have it).
fn host_with<'a>(l: &'a Loaded, role: &'a str, wanted: Option<&str>) -> anyhow::Result<&'a Host> {
    match wanted {
        Some(name) => {
            let h = l.inv.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
                anyhow!("--host {}: no such host in the inventory", printable(name))
            })?;
            if !l.inv.hosts_with_role(role).any(|w| w.name == h.name) {
                bail!("--host {name}: its tier `{}` has no `{role}` role", h.tier);
            }
            Ok(h)
        }
        None => l.inv.hosts_with_role(role).next().ok_or_else(|| {
            anyhow!(
                "no tier of {} has the `{role}` role (README, \"Backups\")",
                l.inv.path.display()
            )
        }),
    }
}

/// Runs `script` as root on `h` (one connection), bounded; a broken connection or a
/// timeout is an error.
async fn run_on(
    l: &Loaded,
    h: &Host,
    script: &str,
    stdin: &[u8],
    limit: Duration,
) -> anyhow::Result<ExecOutput> {
    check_identities(&l.inv, &l.routes, &[h])?;
    let session = transport::connect(&l.route(h)?)
        .await
        .with_context(|| format!("connecting to {} ({})", h.name, h.address))?;
    let out = exec_bounded(&session, &h.name, script, stdin, l.inv.ssh.sudo, limit).await;
    close_sessions([session]).await;
    let out = out.map_err(|e| anyhow!("{}: {}", h.name, printable(&e)))?;
    if timed_out(&out) {
        bail!(
            "{}: stopped after {} s (the time limit)",
            h.name,
            limit.as_secs()
        );
    }
    Ok(out)
}

/// What a failed command said (stdout and stderr, cut, printable).
fn said(out: &ExecOutput) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = text.trim();
    let cut: String = text
        .chars()
        .rev()
        .take(4000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    printable(&cut)
}

fn tables_text(m: &Manifest) -> String {
    m.tables
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn backup_now(a: &DbHost) -> anyhow::Result<i32> {
    refuse_run_options(&a.common, "db backup")?;
    let l = load(&a.common)?;
    let db = host_with(&l, "db_backup", a.host.as_deref())?;
    let store = host_with(&l, "backup_store", None)?;
    let started = Instant::now();
    let out = run_on(&l, db, &backup::backup_script(), b"", BACKUP_LIMIT).await?;
    if out.status != 0 {
        bail!(
            "{}: the backup failed (foobar-backup.service, exit {}); its last lines:\n{}",
            db.name,
            out.status,
            said(&out)
        );
    }
    let m = backup::parse_manifest(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| anyhow!("{}: the backup ran, but its manifest: {e}", db.name))?;
    let took = started.elapsed().as_secs_f64();
    match a.common.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "backup": m,
                "stored_on": store.name,
                "path": format!("{}/{}", backup::STORE_DIR, m.file),
                "seconds": took,
            }))?
        ),
        Format::Text | Format::Markdown => println!(
            "backup {} of database {} on {}: {} bytes (sha256 {}), {} rows ({})\nstored on {}:{}/{} in {took:.1}s\nrestore it with: foobar-provision db restore {} --from {}",
            m.name,
            m.database,
            m.host,
            m.size,
            m.sha256,
            m.rows(),
            tables_text(&m),
            store.name,
            backup::STORE_DIR,
            m.file,
            l.inv.path.display(),
            m.name
        ),
    }
    Ok(EXIT_OK)
}

async fn list(a: &DbHost) -> anyhow::Result<i32> {
    refuse_run_options(&a.common, "db list")?;
    let l = load(&a.common)?;
    let store = host_with(&l, "backup_store", a.host.as_deref())?;
    let out = run_on(&l, store, &backup::list_script(), b"", READ_LIMIT).await?;
    if out.status != 0 {
        bail!("{}: listing the backups failed: {}", store.name, said(&out));
    }
    let (good, bad) = backup::parse_list(&String::from_utf8_lossy(&out.stdout));
    match a.common.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "store": store.name,
                "backups": good,
                "unreadable": bad,
            }))?
        ),
        Format::Text | Format::Markdown => {
            if good.is_empty() {
                println!("no backups on {} ({})", store.name, backup::STORE_DIR);
            }
            for m in &good {
                println!(
                    "{:<32} {:<22} {:>12} bytes  {:>10} rows  from {}",
                    m.name,
                    m.created,
                    m.size,
                    m.rows(),
                    m.host
                );
            }
            for b in &bad {
                eprintln!("warning: {}: unreadable manifest {b}", store.name);
            }
        }
    }
    Ok(if bad.is_empty() { EXIT_OK } else { EXIT_FAIL })
}

async fn restore(r: &DbRestore) -> anyhow::Result<i32> {
    refuse_run_options(&r.db.common, "db restore")?;
    let l = load(&r.db.common)?;
    if !backup::is_backup_name(&r.from) {
        bail!(
            "--from `{}`: not a backup name (as `db list` shows them, e.g. foobar-20261201T031500Z)",
            printable(&r.from)
        );
    }
    let db = host_with(&l, "mysql", r.db.host.as_deref())?;
    let store = host_with(&l, "backup_store", None)?;
    let started = Instant::now();

    // 1. The backup, checked before anything changes.
    let name = &r.from;
    let out = run_on(
        &l,
        store,
        &backup::read_script(&format!("{name}.manifest"), MAX_MANIFEST_BYTES as u64),
        b"",
        READ_LIMIT,
    )
    .await?;
    if out.status != 0 {
        bail!(
            "{}: no backup {name} ({}); `foobar-provision db list {}` shows the ones there are",
            store.name,
            said(&out),
            l.inv.path.display()
        );
    }
    let m = backup::parse_manifest(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| anyhow!("{}: backup {name}: {e}", store.name))?;
    if m.name != *name {
        bail!("{}: {name}.manifest names backup {}", store.name, m.name);
    }
    if m.size > MAX_RESTORE_BYTES {
        bail!(
            "backup {name} is {} bytes: this tool restores at most {MAX_RESTORE_BYTES} (it passes through this machine's memory); restore it on the host with `gzip -dc FILE | mariadb`",
            m.size
        );
    }
    let out = run_on(
        &l,
        store,
        &backup::read_script(&m.file, m.size + 1),
        b"",
        RESTORE_LIMIT,
    )
    .await?;
    if out.status != 0 {
        bail!("{}: reading {}: {}", store.name, m.file, said(&out));
    }
    let data = out.stdout;
    backup::verify(&data, &m).map_err(|e| {
        anyhow!(
            "{}: {e}: nothing was restored; choose another backup (`db list`)",
            store.name
        )
    })?;

    // 2. The target: MariaDB running; its data overwritten only with --force.
    let counts_of = |out: &ExecOutput| backup::parse_counts(&String::from_utf8_lossy(&out.stdout));
    let out = run_on(&l, db, &backup::counts_script(&m.database), b"", READ_LIMIT).await?;
    if out.status != 0 {
        bail!(
            "{}: cannot read database {}: {} (converge it first: foobar-provision apply {} --tier {})",
            db.name,
            m.database,
            said(&out),
            l.inv.path.display(),
            db.tier
        );
    }
    let before = counts_of(&out).map_err(|e| anyhow!("{}: {e}", db.name))?;
    let held = backup::holding_data(&before);
    if !held.is_empty() && !r.force {
        eprintln!(
            "error: {}: database {} holds data ({}): restoring {name} replaces its tables\nhint: pass --force to overwrite it (back it up first: foobar-provision db backup {})",
            db.name,
            m.database,
            held.join(", "),
            l.inv.path.display()
        );
        return Ok(EXIT_FAIL);
    }

    // 3. Load it, then compare every table's rows with the backup's.
    let out = run_on(&l, db, &backup::restore_script(), &data, RESTORE_LIMIT).await?;
    if out.status != 0 {
        bail!(
            "{}: loading {name} failed (exit {}): {}",
            db.name,
            out.status,
            said(&out)
        );
    }
    let out = run_on(&l, db, &backup::counts_script(&m.database), b"", READ_LIMIT).await?;
    let after = counts_of(&out).map_err(|e| anyhow!("{}: {e}", db.name))?;
    backup::check_counts(&m, &after).map_err(|e| anyhow!("{}: {e}", db.name))?;
    let took = started.elapsed().as_secs_f64();
    match r.db.common.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "restored": m,
                "onto": db.name,
                "seconds": took,
            }))?
        ),
        Format::Text | Format::Markdown => println!(
            "restored {name} ({} bytes, sha256 checked) onto {} in {took:.1}s: {} rows, every table's count matches the backup ({})",
            m.size,
            db.name,
            m.rows(),
            tables_text(&m)
        ),
    }
    Ok(EXIT_OK)
}
