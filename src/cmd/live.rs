//! `plan` and `apply`: they share every stage up to Apply. Load and render everything
//! offline first (bad input never touches a host), connect to every selected host and
//! plan it, show the plans; `apply` then executes exactly those plans by the rollout
//! rules ([`crate::rollout`]). Both end with the recap and the exit code.

use super::interrupt::{INTERRUPTED, watch_ctrl_c};
use super::reach::{Routes, check_identities};
use super::{
    EXIT_CHANGES, EXIT_FAIL, EXIT_OK, attach_releases, close_sessions, load, load_ca, render_all,
    select,
};
use crate::apply::HostLock;
use crate::cli::Live;
use crate::desired::DesiredHost;
use crate::gather::Reader;
use crate::inventory::Inventory;
use crate::plan::CertCheck;
use crate::progress::Reporter;
use crate::release::Target;
use crate::report::{ErrorKind, HostEnd, Outcome, Recap, RunMode, plan_text, recap_text};
use crate::rollout::{self, Context, HostRun, Peer, Rules};
use crate::secrets::Secrets;
use crate::timings::timings_text;
use crate::transport::{self, SshError, SshOptions, SshSession};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

pub(super) use crate::report::RunMode as Mode;

/// `rollback`: `apply` (or `plan` with `--plan`) of the selected hosts' releases only,
/// each going to its previous release (or `--to`).
pub(super) async fn rollback(r: &crate::cli::Rollback) -> anyhow::Result<i32> {
    let target = match &r.to {
        Some(id) if !crate::inventory::is_release_id(id) => anyhow::bail!(
            "--to `{}`: not a release id (12 lowercase hex digits, as plan and apply show them)",
            crate::shell::printable(id)
        ),
        Some(id) => Target::Pin(id.clone()),
        None => Target::Previous,
    };
    let mode = if r.plan { Mode::Plan } else { Mode::Apply };
    live(&r.live, mode, Some(target)).await
}

/// A rollback touches releases only: the hosts' other roles and changes are left out
/// (no files, certificates, packages, drift checks; no migration).
fn only_releases(desired: &mut Vec<DesiredHost>) -> anyhow::Result<()> {
    desired.retain(|d| d.roles.iter().any(|r| r.release.is_some()));
    if desired.is_empty() {
        anyhow::bail!(
            "none of the selected hosts deploys releases: rollback works on the tiers with `release:` (select them with --tier)"
        );
    }
    for d in desired.iter_mut() {
        d.roles.retain(|r| r.release.is_some());
        for r in &mut d.roles {
            r.files.clear();
            r.certificates.clear();
            r.packages.clear();
            r.drift_check = None;
            r.validate = None;
            if let Some(rel) = &mut r.release {
                rel.migrate = None;
            }
        }
    }
    Ok(())
}

pub(super) async fn live(opts: &Live, mode: Mode, release: Option<Target>) -> anyhow::Result<i32> {
    let c = &opts.common;
    let reporter = Reporter::new(c.format);
    // 1. Everything offline first: bad input never touches a host.
    let l = load(c)?;
    let hosts = select(&l, c)?;
    let secrets = Secrets::load(&l.inv)?;
    check_identities(&l.inv, &l.routes, &hosts)?;
    if let Some(path) = &opts.trace {
        crate::trace::start(path, &secrets)
            .map_err(|e| anyhow::anyhow!("--trace {}: {e}", path.display()))?;
    }
    let ca = load_ca(&l.inv, &secrets)?;
    let mut desired = render_all(&l, &hosts, &secrets, true)?;
    attach_releases(&l.inv, &mut desired, release.as_ref())?;
    if release.is_some() {
        only_releases(&mut desired)?;
    }
    let certs = ca
        .as_ref()
        .zip(l.inv.pki.as_ref())
        .map(|(ca, pki)| CertCheck {
            ca,
            now: SystemTime::now(),
            renew_within: Duration::from_secs(u64::from(pki.renew_within_days) * 86_400),
        });
    let started = Instant::now();
    watch_ctrl_c();

    // 2. Connect, read and plan every host, in parallel (bounded by --forks).
    let rules = Rules::new(&l.inv.tiers, usize::from(opts.forks), opts.keep_going);
    // One lock identity for the run: facts report the lock's holder; apply takes it.
    let lock = HostLock::for_this_run();
    let mut runs = connect_all(
        &l.inv,
        &l.routes,
        desired,
        (&secrets, certs.as_ref()),
        &reporter,
        &lock,
        opts.forks,
    )
    .await;
    rollout::order(&mut runs, &rules);
    rollout::plan_migrations(&mut runs);
    rollout::plan_drains(&mut runs, &rules, |via| {
        l.inv.hosts_of(via).map(|h| h.name.clone()).collect()
    });

    // 3. Show the plans.
    reporter.clear();
    if let Some(header) = super::vars::header(&l.inv.cli_vars) {
        reporter.line(&secrets.mask(&header));
    }
    if !reporter.is_json() {
        for plan in runs.iter().filter_map(|r| r.plan.as_ref()) {
            reporter.line(&secrets.mask(&plan_text(plan, reporter.colors())));
        }
    }

    // 4. Apply exactly those plans, or say what they would change.
    match mode {
        Mode::Apply => {
            let peers = connect_balancers(&l.inv, &l.routes, &runs, &rules, &reporter).await;
            let cx = Context {
                sudo: l.inv.ssh.sudo,
                secrets: &secrets,
                reporter: &reporter,
                interrupted: &INTERRUPTED,
                lock: Some(lock.clone()),
                ca: ca.as_ref(),
            };
            rollout::apply_all(&mut runs, &peers, &rules, &cx).await;
            close_peers(peers).await;
        }
        Mode::Plan => planned_outcomes(&mut runs),
    }
    close_all(&mut runs).await;
    reporter.clear();

    // 5. Recap and exit code. An interrupted apply fails, whatever it got done.
    let interrupted = mode == Mode::Apply && INTERRUPTED.load(Ordering::SeqCst);
    let code = exit_code(&runs, mode, interrupted);
    let shown = Shown {
        reporter: &reporter,
        secrets: &secrets,
        timings: opts.timings,
        vars: &l.inv.cli_vars,
    };
    print_recap(&runs, mode, code, started.elapsed(), &shown)?;
    Ok(code)
}

/// Connects to every host and plans it, at most `forks` at once.
async fn connect_all(
    inv: &Inventory,
    routes: &Routes,
    desired: Vec<DesiredHost>,
    (secrets, certs): (&Secrets, Option<&CertCheck<'_>>),
    reporter: &Reporter,
    lock: &HostLock,
    forks: u16,
) -> Vec<HostRun<SshSession>> {
    let forks = Semaphore::new(usize::from(forks));
    let forks = &forks;
    futures::future::join_all(desired.into_iter().map(|d| async move {
        let _permit = forks.acquire().await.ok();
        let route = routes.by_host.get(&d.host.name);
        connect_and_plan(inv, route, d, (secrets, certs), reporter, lock).await
    }))
    .await
}

/// One host: connect, read, plan. Whatever fails becomes the host's outcome.
async fn connect_and_plan(
    inv: &Inventory,
    route: Option<&SshOptions>,
    d: DesiredHost,
    (secrets, certs): (&Secrets, Option<&CertCheck<'_>>),
    reporter: &Reporter,
    lock: &HostLock,
) -> HostRun<SshSession> {
    let started = Instant::now();
    let name = d.host.name.clone();
    let mut run = HostRun::new(&name, &d.host.tier);
    reporter.step(&name, "connecting");
    let connected = match route {
        Some(o) => transport::connect(o).await,
        None => Err(SshError::NoAuthMethod { host: name.clone() }),
    };
    let outcome = match connected {
        Err(e) => Err(Outcome::unreachable(
            connect_error_kind(&e),
            secrets.mask(&e.to_string()),
        )),
        Ok(session) => {
            let session = Arc::new(session);
            run.session = Some(session.clone());
            reporter.step(&name, "gathering facts");
            let reader = Reader {
                transport: session.as_ref(),
                host: &name,
                sudo: inv.ssh.sudo,
                secrets,
                // Only a VIP candidate is asked which VIPs it holds.
                vips: if inv.tier(&d.host.tier).is_some_and(|t| t.vip) {
                    inv.vips.iter().map(|v| v.to_string()).collect()
                } else {
                    Vec::new()
                },
                lock: Some(lock.clone()),
                certs,
            };
            reader.plan(&d).await
        }
    };
    match outcome {
        Ok(p) => {
            run.plan = Some(p.plan);
            run.vips_held = p.vips_held;
            run.round_trips = p.round_trips;
            reporter.step(&name, "planned");
            // Waiting for its turn in the rollout is no step of its own.
            reporter.idle(&name);
        }
        Err(o) => {
            reporter.done(&name, &o);
            run.outcome = Some(o);
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Connects the balancers that drains need but that are not selected (`--tier web`),
/// for the runtime API only: no facts, no lock, nothing applied. One that cannot be
/// reached is said and left out (a dead balancer sends no traffic to drain).
async fn connect_balancers(
    inv: &Inventory,
    routes: &Routes,
    runs: &[HostRun<SshSession>],
    rules: &Rules,
    reporter: &Reporter,
) -> Vec<Peer<SshSession>> {
    let mut wanted: Vec<&crate::inventory::Host> = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.plan.as_ref().is_some_and(|p| p.drain.is_some()))
    {
        let Some(d) = rules.tier(&r.tier).and_then(|t| t.drain.as_ref()) else {
            continue;
        };
        for h in inv.hosts_of(&d.via) {
            let selected = runs.iter().any(|r| r.name == h.name);
            if !selected && !wanted.iter().any(|w| w.name == h.name) {
                wanted.push(h);
            }
        }
    }
    let connects = wanted.into_iter().map(|h| async move {
        let connected = match routes.by_host.get(&h.name) {
            Some(o) => transport::connect(o).await,
            None => Err(SshError::NoAuthMethod {
                host: h.name.clone(),
            }),
        };
        match connected {
            Ok(s) => Some(Peer {
                name: h.name.clone(),
                tier: h.tier.clone(),
                session: Arc::new(s),
            }),
            Err(e) => {
                reporter.warn(&format!(
                    "{}: not connected ({e}): hosts are not drained from it",
                    h.name
                ));
                None
            }
        }
    });
    futures::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Closes the balancers' extra connections, bounded.
async fn close_peers(peers: Vec<Peer<SshSession>>) {
    close_sessions(
        peers
            .into_iter()
            .filter_map(|p| Arc::try_unwrap(p.session).ok()),
    )
    .await;
}

/// The kind of a failed connection, for the recap.
fn connect_error_kind(e: &SshError) -> ErrorKind {
    match e {
        SshError::KnownHostsUnreadable { .. }
        | SshError::UnknownHostKey(_)
        | SshError::HostKeyChanged(_)
        | SshError::HostKeyRevoked(_)
        | SshError::HostCertificate { .. } => ErrorKind::HostKey,
        SshError::IdentityFile { .. }
        | SshError::PassphraseRequired { .. }
        | SshError::BadPassphrase { .. }
        | SshError::NoAuthMethod { .. }
        | SshError::AuthFailed { .. } => ErrorKind::Auth,
        _ => ErrorKind::Connect,
    }
}

/// `plan`: each planned host ends ok (nothing to change) or changed (would change).
fn planned_outcomes<T>(runs: &mut [HostRun<T>]) {
    for r in runs.iter_mut().filter(|r| r.outcome.is_none()) {
        r.outcome = r.plan.as_ref().map(|p| {
            if p.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Changed(p.change_count())
            }
        });
    }
}

/// Says goodbye to every host at once, bounded: saying goodbye on a connection that
/// broke waits forever (the SSH layer's queue towards the dead peer is full), so a host
/// found unreachable is just dropped.
async fn close_all(runs: &mut [HostRun<SshSession>]) {
    let sessions: Vec<SshSession> = runs
        .iter_mut()
        .filter_map(|r| {
            let session = Arc::try_unwrap(r.session.take()?).ok()?;
            let broken = matches!(r.outcome, Some(Outcome::Unreachable(_)));
            (!broken).then_some(session)
        })
        .collect();
    close_sessions(sessions).await;
}

/// 1 when anything failed (or Ctrl-C stopped an apply), 2 when a plan found changes,
/// else 0.
fn exit_code<T>(runs: &[HostRun<T>], mode: Mode, interrupted: bool) -> i32 {
    let failed = interrupted
        || runs
            .iter()
            .any(|r| r.outcome.as_ref().is_none_or(Outcome::is_failure));
    let changes = runs
        .iter()
        .any(|r| matches!(r.outcome, Some(Outcome::Changed(_))));
    if failed {
        EXIT_FAIL
    } else if changes && mode == RunMode::Plan {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// What the end of a run prints with.
struct Shown<'a> {
    reporter: &'a Reporter,
    secrets: &'a Secrets,
    /// `--timings`: the text recap is followed by the timings.
    timings: bool,
    /// `--var`, repeated in the JSON document.
    vars: &'a serde_json::Map<String, serde_json::Value>,
}

/// The recap: the JSON document under `--format json` (with every host's timings), else
/// the text recap (and, with `--timings`, the roles' and slowest steps' times). Masked.
fn print_recap<T>(
    runs: &[HostRun<T>],
    mode: Mode,
    code: i32,
    total: Duration,
    shown: &Shown,
) -> anyhow::Result<()> {
    let (reporter, secrets) = (shown.reporter, shown.secrets);
    let timings: Vec<_> = runs.iter().map(|r| reporter.timings(&r.name)).collect();
    let ends: Vec<HostEnd> = runs
        .iter()
        .zip(&timings)
        .map(|(r, t)| HostEnd {
            host: &r.name,
            tier: &r.tier,
            outcome: r.outcome.as_ref(),
            elapsed: r.elapsed,
            round_trips: r.round_trips,
            timings: Some(t),
        })
        .collect();
    if reporter.is_json() {
        let plans = runs.iter().filter_map(|r| r.plan.as_ref()).collect();
        let mut doc = Recap::new(mode, plans, &ends, code, total);
        doc.vars = shown.vars.clone();
        println!("{}", doc.to_json_masked(secrets)?);
    } else {
        reporter.line(&secrets.mask(&recap_text(&ends, mode, total)));
        if shown.timings {
            let per_host: Vec<(&str, &_)> = runs
                .iter()
                .zip(&timings)
                .map(|(r, t)| (r.name.as_str(), t))
                .collect();
            reporter.line(&secrets.mask(&timings_text(&per_host)));
        }
    }
    Ok(())
}
