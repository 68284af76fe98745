//! `db backup`, `db list`, `db restore`: the database's backups; `db promote`, `db
//! reseed`: its replicas. Over the same SSH connections as `apply` (strict host keys,
//! sudo). The pure halves are [`crate::backup`] (scripts, manifest, checks) and
//! [`crate::replica`] (which host is the primary, the inventory's edit).

use super::reach::check_identities;
use super::{EXIT_FAIL, EXIT_OK, Loaded, close_sessions, load, refuse_run_options};
use crate::apply::{exec_bounded, timed_out};
use crate::backup::{self, MAX_MANIFEST_BYTES, MAX_RESTORE_BYTES, Manifest};
use crate::cli::{DbCommand, DbHost, DbPromote, DbReseed, DbRestore, Live};
use crate::inventory::Host;
use crate::progress::Format;
use crate::replica;
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
        DbCommand::Promote(p) => promote(p).await,
        DbCommand::Reseed(r) => reseed(r).await,
    }
}

/// `--host`, which must have `role`; else the primary (var db_primary) when it has the
/// role, else the first host of a tier that has it.
fn host_with<'a>(l: &'a Loaded, role: &'a str, wanted: Option<&str>) -> anyhow::Result<&'a Host> {
    if wanted.is_none()
        && let Some(p) = replica::primary(&l.inv).map_err(anyhow::Error::msg)?
        && l.inv.hosts_with_role(role).any(|h| h.name == p.name)
    {
        return Ok(p);
    }
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
    if let Some(p) = replica::primary(&l.inv).map_err(anyhow::Error::msg)?
        && p.name != db.name
    {
        bail!(
            "--host {}: a replica of {} (var {}): only the primary backs up (the replicas' backup unit is skipped); leave --host out",
            db.name,
            p.name,
            replica::VAR
        );
    }
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

/// Promoting a replica: seconds for it to apply what it received.
const PROMOTE_LIMIT: Duration = Duration::from_secs(120);
/// Seeding a replica: the dump of the primary's database, loaded (the script's own waits
/// are shorter).
const RESEED_LIMIT: Duration = Duration::from_secs(3600);

/// Why the primary counts as gone, or that it is not.
enum Primary {
    Gone(String),
    Answers,
}

/// Is the primary gone? Unreachable over SSH, or reachable with its MariaDB not answering.
async fn primary_state(l: &Loaded, h: &Host) -> anyhow::Result<Primary> {
    check_identities(&l.inv, &l.routes, &[h])?;
    let session = match transport::connect(&l.route(h)?).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(Primary::Gone(format!(
                "not reachable over SSH ({})",
                printable(&e.to_string())
            )));
        }
    };
    let script = "mariadb-admin --connect-timeout=5 ping";
    let out = exec_bounded(&session, &h.name, script, b"", l.inv.ssh.sudo, READ_LIMIT).await;
    close_sessions([session]).await;
    Ok(match out {
        Ok(o) if o.status == 0 && !timed_out(&o) => Primary::Answers,
        Ok(o) => Primary::Gone(format!(
            "reachable over SSH, but its MariaDB does not answer ({})",
            said(&o)
        )),
        Err(e) => Primary::Gone(format!("its connection broke ({})", printable(&e))),
    })
}

/// `--host` (a host with the mysql role) and the primary the inventory names, refused
/// when they are the same host (`why` says why that cannot be).
fn replica_and_primary<'a>(
    l: &'a Loaded,
    host: &str,
    why: &str,
) -> anyhow::Result<(&'a Host, &'a Host)> {
    let target = host_with(l, "mysql", Some(host))?;
    let primary = replica::primary(&l.inv)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow!("no host has the mysql role"))?;
    if primary.name == target.name {
        bail!(
            "{}: it is the primary of {} (var {}, else the first host with the mysql role): {why}",
            target.name,
            l.inv.path.display(),
            replica::VAR
        );
    }
    Ok((target, primary))
}

/// `apply` options for a step of `db promote` or `db reseed`: these hosts, these vars.
fn apply_options(common: &crate::cli::Common, limit: Vec<String>, var: Vec<String>) -> Live {
    let mut common = common.clone();
    common.limit = limit;
    common.var.extend(var);
    Live {
        common,
        forks: 10,
        keep_going: false,
        trace: None,
        junit: None,
        timings: false,
    }
}

/// `db promote --host NAME`.
async fn promote(p: &DbPromote) -> anyhow::Result<i32> {
    refuse_run_options(&p.common, "db promote")?;
    if !p.common.limit.is_empty() || !p.common.tier.is_empty() {
        bail!(
            "db promote chooses its hosts (every host but the old primary): --limit and --tier cannot be given"
        );
    }
    let l = load(&p.common)?;
    let (target, old) = replica_and_primary(&l, &p.host, "promote a replica")?;
    let started = Instant::now();

    // 1. The old primary must be gone: two writable primaries would split the site's data.
    match primary_state(&l, old).await? {
        Primary::Answers if !p.force => {
            eprintln!(
                "error: {}: the primary still answers (its MariaDB runs): promoting {} now would give the site two primaries\nhint: if it must go, stop it first (on {}: systemctl stop mariadb), then promote; --force only when it is fenced off some other way",
                old.name, target.name, old.name
            );
            return Ok(EXIT_FAIL);
        }
        Primary::Answers => println!(
            "{}: the primary still answers; promoting anyway (--force): it must take no more writes",
            old.name
        ),
        Primary::Gone(why) => println!("{}: the primary is gone: {why}", old.name),
    }

    // 2. The replica applies what it received and becomes writable.
    let out = run_on(
        &l,
        target,
        &format!("{} promote", replica::SCRIPT),
        b"",
        PROMOTE_LIMIT,
    )
    .await?;
    if out.status != 0 {
        bail!(
            "{}: not promoted (exit {}): {}",
            target.name,
            out.status,
            said(&out)
        );
    }
    println!("{}: {}", target.name, said(&out));
    let writable = started.elapsed().as_secs_f64();

    // 3. The inventory says it, then every host but the old primary follows it.
    let path = l.inv.path.clone();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut live = apply_options(&p.common, vec![format!("!{}", old.name)], Vec::new());
    let edited = match replica::set_primary(&text, &target.name) {
        Ok(e) => {
            write_beside(&path, &e.text)?;
            println!(
                "{}:{}: {}: {} -> {} (commit this change)",
                path.display(),
                e.line,
                replica::VAR,
                e.was.as_deref().unwrap_or("(not set)"),
                target.name
            );
            true
        }
        Err(why) => {
            println!(
                "{}: not edited ({why}): set `{}: {}` under its `vars:` yourself; this apply uses --var {}={}",
                path.display(),
                replica::VAR,
                target.name,
                replica::VAR,
                target.name
            );
            live.common
                .var
                .push(format!("{}={}", replica::VAR, target.name));
            false
        }
    };
    println!(
        "applying every host but {} with {} = {}",
        old.name,
        replica::VAR,
        target.name
    );
    let code = super::live::apply_as(&live, "db promote").await?;
    let took = started.elapsed().as_secs_f64();
    let inv = path.display();
    println!(
        "\n{} promoted: writable after {writable:.1}s, every host but {} converged to it after {took:.1}s (apply exit {code}).",
        target.name, old.name
    );
    if !edited {
        println!(
            "- Set `{}: {}` in {inv}: until then `apply` would make {} a replica again (it refuses: it holds data).",
            replica::VAR,
            target.name,
            target.name
        );
    }
    println!(
        "- {old} still holds its data when it comes back, including any rows written to it that never reached {new} (asynchronous replication: what it committed in its last moments). Nothing points the app at it now.\n- To make {old} a replica of {new} (its own data replaced by a copy of {new}'s): foobar-provision db reseed {inv} --host {old}\n  Or take it out of the inventory.",
        old = old.name,
        new = target.name
    );
    Ok(if code == 0 { EXIT_OK } else { EXIT_FAIL })
}

/// Writes `text` to `path` through a new file beside it (same mode) and a rename.
fn write_beside(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.fp-promote-{}", std::process::id()));
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let written = super::render::write_new(&tmp, text.as_bytes(), mode)
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!(
            "cannot write {}: {e} (is {} writable?)",
            path.display(),
            dir.display()
        )
    })
}

/// `db reseed --host NAME`.
async fn reseed(r: &DbReseed) -> anyhow::Result<i32> {
    refuse_run_options(&r.common, "db reseed")?;
    if !r.common.limit.is_empty() || !r.common.tier.is_empty() {
        bail!("db reseed works on --host only: --limit and --tier cannot be given");
    }
    let l = load(&r.common)?;
    let (target, primary) = replica_and_primary(
        &l,
        &r.host,
        "its data is the site's, it cannot be replaced by a copy",
    )?;
    let started = Instant::now();
    // 1. The host as the inventory says (a replica of the primary): where its files change,
    //    its replication handler replaces its data (var db_reseed).
    let live = apply_options(
        &r.common,
        vec![target.name.clone()],
        vec![format!("db_reseed={}", target.name)],
    );
    println!(
        "applying {} as a replica of {} (its data replaced where its replication changes)",
        target.name, primary.name
    );
    let code = super::live::apply_as(&live, "db reseed").await?;
    if code != 0 {
        bail!("{}: the apply failed (above): not reseeded", target.name);
    }
    // 2. Its files were current already (a broken replica): the script, now the
    //    inventory's, replaces its data unless it replicates as it should.
    let check = run_on(
        &l,
        target,
        &format!("{} check", replica::SCRIPT),
        b"",
        READ_LIMIT,
    )
    .await?;
    if check.status != 0 {
        let out = run_on(
            &l,
            target,
            &format!("{} converge --replace-data", replica::SCRIPT),
            b"",
            RESEED_LIMIT,
        )
        .await?;
        if out.status != 0 {
            bail!(
                "{}: not reseeded (exit {}): {}",
                target.name,
                out.status,
                said(&out)
            );
        }
        println!("{}: {}", target.name, said(&out));
    }
    println!(
        "{}: a replica of {} again, in {:.1}s",
        target.name,
        primary.name,
        started.elapsed().as_secs_f64()
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::write_beside;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_inventory_is_replaced_whole_with_its_mode_and_no_leftover() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inv = dir.path().join("lab.yml");
        std::fs::write(&inv, "vars:\n  db_primary: db1\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&inv, std::fs::Permissions::from_mode(0o640))
            .unwrap_or_else(|e| panic!("{e}"));
        write_beside(&inv, "vars:\n  db_primary: db2\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&inv).ok().as_deref(),
            Some("vars:\n  db_primary: db2\n")
        );
        let mode = std::fs::metadata(&inv).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o640));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, ["lab.yml"]);
    }
}
