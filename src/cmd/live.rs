//! `plan`, `apply` and `rollback`: they share every stage up to Apply. Load and render
//! everything offline first (bad input never touches a host), connect to every selected
//! host and plan it, show the plans; `apply` then asks (on a terminal, unless `--yes`) and
//! executes exactly those plans by the rollout rules ([`crate::rollout`]). All end with the
//! recap, the reports asked for (`--junit`, `GITHUB_STEP_SUMMARY`) and the exit code.
//!
//! A saved plan (`plan --out FILE`, [`crate::plan_file`]) records what the plan rests on;
//! `apply FILE` plans again from the inventory it names and applies only when nothing of
//! that changed, refusing before any change otherwise.

use super::interrupt::{INTERRUPTED, watch_ctrl_c};
use super::reach::{Routes, check_identities};
use super::{
    EXIT_CHANGES, EXIT_FAIL, EXIT_OK, Loaded, attach_releases, close_sessions, load, load_ca,
    render_all, select,
};
use crate::apply::HostLock;
use crate::cli::{ApplyArgs, Live, PlanArgs};
use crate::desired::{DesiredHost, sha256_hex};
use crate::gather::Reader;
use crate::inventory::Inventory;
use crate::plan::CertCheck;
use crate::plan_file::{self, HostBasis, Input, InputKind, Key, PlanFile, Selection, Staleness};
use crate::progress::Reporter;
use crate::release::Target;
use crate::report::{
    ErrorKind, HostEnd, JunitHost, Outcome, Recap, RunMode, junit, markdown, mask_json, plan_text,
    recap_text,
};
use crate::rollout::{self, Context, HostRun, Peer, Rules};
use crate::secrets::Secrets;
use crate::timings::timings_text;
use crate::transport::{self, SshError, SshOptions, SshSession};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

pub(super) use crate::report::RunMode as Mode;

/// What a run does besides planning (and applying).
#[derive(Default)]
pub(super) struct Extra {
    /// `apply` or `rollback`, for messages.
    command: &'static str,
    /// `plan --out`: where to save the plan.
    out: Option<PathBuf>,
    /// `--yes`: apply without asking.
    yes: bool,
    /// `apply FILE`: the file as given, and the plan saved in it.
    saved: Option<(PathBuf, PlanFile)>,
}

/// `plan`, saving the plan with `--out`.
pub(super) async fn plan(p: &PlanArgs) -> anyhow::Result<i32> {
    let extra = Extra {
        command: "plan",
        out: p.out.clone(),
        ..Extra::default()
    };
    live(&p.live, Mode::Plan, None, extra).await
}

/// `apply INVENTORY`, or `apply FILE` of a saved plan (told apart by the file's content).
pub(super) async fn apply(a: &ApplyArgs) -> anyhow::Result<i32> {
    let given = &a.live.common.inventory;
    let Some(saved) = plan_file::read(given)? else {
        let extra = Extra {
            command: "apply",
            yes: a.yes,
            ..Extra::default()
        };
        return live(&a.live, Mode::Apply, None, extra).await;
    };
    let c = &a.live.common;
    if !c.limit.is_empty()
        || !c.tier.is_empty()
        || c.root.is_some()
        || !c.roles.is_empty()
        || !c.skip_roles.is_empty()
        || !c.var.is_empty()
    {
        anyhow::bail!(
            "{}: a saved plan fixes its hosts, roles, vars and project: --limit, --tier, \
             --role, --skip-role, --var and --root cannot be given with it (plan again with \
             them: `foobar-provision plan INVENTORY --limit ... --out FILE`)",
            given.display()
        );
    }
    let s = &saved.selection;
    let inventory = PathBuf::from(&s.inventory);
    if !inventory.is_file() {
        anyhow::bail!(
            "{}: the plan's inventory {} is not found from here (it is relative to the folder \
             `plan` ran in): run apply from that folder, e.g. the repository's root",
            given.display(),
            crate::shell::printable(&s.inventory)
        );
    }
    let mut opts = a.live.clone();
    opts.common.inventory = inventory;
    opts.common.root = s.root.as_ref().map(PathBuf::from);
    opts.common.limit = s.limit.clone();
    opts.common.tier = s.tier.clone();
    opts.common.roles = s.roles.clone();
    opts.common.skip_roles = s.skip_roles.clone();
    opts.common.var = s.vars.clone();
    let extra = Extra {
        command: "apply",
        saved: Some((given.clone(), saved)),
        ..Extra::default()
    };
    live(&opts, Mode::Apply, None, extra).await
}

/// `apply` as another command's step (`db promote`): no question asked, the command
/// itself was the operator's decision.
pub(super) async fn apply_as(opts: &Live, command: &'static str) -> anyhow::Result<i32> {
    let extra = Extra {
        command,
        yes: true,
        ..Extra::default()
    };
    live(opts, Mode::Apply, None, extra).await
}

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
    let extra = Extra {
        command: "rollback",
        yes: r.yes,
        ..Extra::default()
    };
    live(&r.live, mode, Some(target), extra).await
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

pub(super) async fn live(
    opts: &Live,
    mode: Mode,
    release: Option<Target>,
    extra: Extra,
) -> anyhow::Result<i32> {
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
    // What the plan rests on: a saved plan's inputs are checked before any host is reached.
    let salt = match &extra.saved {
        Some((_, saved)) => saved.salt.clone(),
        None => plan_file::new_salt().map_err(anyhow::Error::msg)?,
    };
    let key = Key::new(&salt, &secrets)
        .ok_or_else(|| anyhow::anyhow!("the saved plan's salt is not hex: plan again"))?;
    let mut record = record(c, &l, &desired, (salt, &key, &secrets))?;
    if let Some((path, saved)) = &extra.saved {
        refuse_if_stale(path, &plan_file::stale_inputs(saved, &record))?;
    }
    let asks = mode == Mode::Apply && extra.saved.is_none() && !extra.yes;
    if asks && !std::io::stdin().is_terminal() {
        anyhow::bail!(no_terminal(extra.command, c));
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
    let (mut runs, mut bases) = connect_all(
        &l.inv,
        &l.routes,
        desired,
        (&secrets, certs.as_ref(), &key),
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
    for r in &runs {
        if let (Some(plan), Some(mut basis)) = (&r.plan, bases.remove(&r.name)) {
            let mut json = serde_json::to_value(plan)?;
            mask_json(&mut json, &secrets);
            basis.plan = json;
            record.hosts.push(basis);
        }
    }
    if let Some((path, saved)) = &extra.saved
        && let Err(e) = check_saved_hosts(path, saved, &record, &runs)
    {
        close_all(&mut runs).await;
        return Err(e);
    }

    // 3. Show the plans, and ask before applying them.
    reporter.clear();
    if let Some(header) = super::vars::header(&l.inv.cli_vars) {
        reporter.line(&secrets.mask(&header));
    }
    if !reporter.is_document() {
        for plan in runs.iter().filter_map(|r| r.plan.as_ref()) {
            reporter.line(&secrets.mask(&plan_text(plan, reporter.colors())));
        }
    }
    if asks && !confirmed(&runs, &reporter, &secrets).await {
        close_all(&mut runs).await;
        eprintln!(
            "{} cancelled: nothing was changed.",
            capitalised(extra.command)
        );
        return Ok(EXIT_FAIL);
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

    // 5. Recap, reports and exit code. An interrupted apply fails, whatever it got done.
    // The files first (a failure to write one fails the run, and the recap says so); what
    // became of them is said after the recap.
    let interrupted = mode == Mode::Apply && INTERRUPTED.load(Ordering::SeqCst);
    let mut code = exit_code(&runs, mode, interrupted);
    let total = started.elapsed();
    let mut notes = write_reports(opts, &l.inv, &runs, mode, total, &secrets);
    if let Some(out) = &extra.out {
        notes.push(save_plan(out, &record, &runs));
    }
    if notes.iter().any(Result::is_err) {
        code = EXIT_FAIL;
    }
    let shown = Shown {
        reporter: &reporter,
        secrets: &secrets,
        timings: opts.timings,
        vars: &l.inv.cli_vars,
    };
    print_recap(&runs, mode, code, total, &shown)?;
    for note in notes {
        match note {
            Ok(said) => eprintln!("{said}"),
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(code)
}

/// The saved plan of this run, before any host is read: the command line, the keyed
/// secrets' digest, every input's hash.
fn record(
    c: &crate::cli::Common,
    l: &Loaded,
    desired: &[DesiredHost],
    (salt, key, secrets): (String, &Key, &Secrets),
) -> anyhow::Result<PlanFile> {
    let mut inputs = Vec::new();
    let hash_of = |path: &Path| -> anyhow::Result<String> {
        std::fs::read(path)
            .map(|b| sha256_hex(&b))
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))
    };
    inputs.push(Input {
        kind: InputKind::Inventory,
        path: c.inventory.to_string_lossy().into_owned(),
        hash: hash_of(&c.inventory)?,
    });
    let mut roles: Vec<&str> = desired
        .iter()
        .flat_map(|d| d.roles.iter().map(|r| r.name.as_str()))
        .collect();
    roles.sort_unstable();
    roles.dedup();
    for f in l.project.inputs(&roles) {
        let kind = match f.kind {
            "role" => InputKind::Role,
            "static" => InputKind::Static,
            _ => InputKind::Template,
        };
        inputs.push(Input {
            kind,
            path: f.relative,
            hash: hash_of(&f.path)?,
        });
    }
    let mut releases: BTreeMap<&str, &str> = BTreeMap::new();
    for d in desired {
        for b in d
            .roles
            .iter()
            .filter_map(|r| r.release.as_ref().and_then(|rel| rel.bundle.as_ref()))
        {
            releases.insert(&d.host.tier, &b.id);
        }
    }
    inputs.extend(releases.into_iter().map(|(tier, id)| Input {
        kind: InputKind::Release,
        path: tier.to_string(),
        hash: id.to_string(),
    }));
    inputs.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    Ok(PlanFile {
        kind: plan_file::KIND.into(),
        format_version: plan_file::FORMAT_VERSION,
        tool_version: plan_file::TOOL_VERSION.into(),
        created: plan_file::now_utc(),
        selection: Selection {
            inventory: c.inventory.to_string_lossy().into_owned(),
            root: c.root.as_ref().map(|r| r.to_string_lossy().into_owned()),
            limit: c.limit.clone(),
            tier: c.tier.clone(),
            roles: c.roles.clone(),
            skip_roles: c.skip_roles.clone(),
            // A secret's value given as a var (unlikely) is not written: masked, the
            // plan made from it is stale.
            vars: c.var.iter().map(|v| secrets.mask(v)).collect(),
        },
        secrets: key.secrets_digest(),
        salt,
        inputs,
        hosts: Vec::new(),
    })
}

/// Refuses a saved plan when anything it rests on changed, naming each thing.
fn refuse_if_stale(path: &Path, stale: &[Staleness]) -> anyhow::Result<()> {
    if stale.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = stale.iter().map(|s| format!("  - {s}")).collect();
    anyhow::bail!(
        "{}: the plan is stale: run plan again. Since it was made:\n{}\nNothing was changed.",
        path.display(),
        lines.join("\n")
    )
}

/// Every host of a saved plan must be planned again, to the same facts and plan.
fn check_saved_hosts(
    path: &Path,
    saved: &PlanFile,
    record: &PlanFile,
    runs: &[HostRun<SshSession>],
) -> anyhow::Result<()> {
    let unplanned: Vec<String> = runs
        .iter()
        .filter(|r| r.plan.is_none())
        .map(|r| {
            let why = r
                .outcome
                .as_ref()
                .and_then(Outcome::error)
                .unwrap_or("not planned");
            format!("  - {}: {}", r.name, why.lines().next().unwrap_or(""))
        })
        .collect();
    if !unplanned.is_empty() {
        anyhow::bail!(
            "{}: the saved plan cannot be checked, so nothing was applied: these hosts could \
             not be read again:\n{}\nFix them and apply the plan again (or plan again without them).",
            path.display(),
            unplanned.join("\n")
        );
    }
    refuse_if_stale(path, &plan_file::stale_hosts(saved, record))
}

/// Why `apply` without a terminal needs `--yes` or a saved plan, both ways spelled out.
fn no_terminal(command: &str, c: &crate::cli::Common) -> String {
    let inv = c.inventory.display();
    let first = format!(
        "{command} changes hosts only once confirmed, and stdin is not a terminal to ask on. Either:\n  \
         - apply what it plans now without asking: foobar-provision {command} {inv} --yes"
    );
    let second = if command == "apply" {
        format!(
            "\n  - or review a saved plan first: foobar-provision plan {inv} --out plan.json, \
             then foobar-provision apply plan.json"
        )
    } else {
        String::new()
    };
    format!("{first}{second}\nNothing was changed: no host was contacted.")
}

fn capitalised(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The question before applying: `Apply 14 changes on 5 hosts? [y/N] `.
fn question(changes: usize, hosts: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "Apply {changes} change{} on {hosts} host{}? [y/N] ",
        s(changes),
        s(hosts)
    )
}

/// Whether an answer says yes: `y` or `yes`, any case.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Asks on the terminal whether to apply the plans shown (nothing to change: no question,
/// yes). The plans go to stderr first when stdout is a JSON document. Ctrl-C or end of
/// input is a no.
async fn confirmed<T>(runs: &[HostRun<T>], reporter: &Reporter, secrets: &Secrets) -> bool {
    let plans: Vec<_> = runs
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .filter(|p| !p.is_empty())
        .collect();
    let changes: usize = plans.iter().map(|p| p.change_count()).sum();
    if changes == 0 {
        return true;
    }
    if reporter.is_document() {
        for p in &plans {
            eprint!("{}", secrets.mask(&plan_text(p, false)));
        }
    }
    let unplanned: Vec<&str> = runs
        .iter()
        .filter(|r| r.plan.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if !unplanned.is_empty() {
        eprintln!(
            "warning: {} could not be planned (see above): nothing is applied there",
            unplanned.join(", ")
        );
    }
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(question(changes, plans.len()).as_bytes());
    let _ = stderr.flush();
    // A thread of its own: a read blocked on the terminal must not hold the runtime
    // (nor the process's end) once Ctrl-C answered instead.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().read_line(&mut answer);
        let _ = tx.send(read.map(|_| answer));
    });
    loop {
        tokio::select! {
            answer = &mut rx => return matches!(answer, Ok(Ok(a)) if is_yes(&a)),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    eprintln!();
                    return false;
                }
            }
        }
    }
}

/// Saves the plan (`--out`) when every host could be planned: where it went, or why not.
fn save_plan<T>(out: &Path, record: &PlanFile, runs: &[HostRun<T>]) -> Result<String, String> {
    let unplanned: Vec<&str> = runs
        .iter()
        .filter(|r| r.plan.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if !unplanned.is_empty() {
        return Err(format!(
            "--out {}: no plan saved: {} could not be planned; a saved plan must cover every \
             selected host (fix them, or plan without them using --limit)",
            out.display(),
            unplanned.join(", ")
        ));
    }
    plan_file::write(out, record)?;
    let changes: usize = runs
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .map(|p| p.change_count())
        .sum();
    Ok(format!(
        "plan saved to {} ({changes} change(s) on {} host(s)); after review, apply exactly it with: foobar-provision apply {}",
        out.display(),
        runs.len(),
        out.display()
    ))
}

/// `--junit FILE` and GitHub's job summary (`GITHUB_STEP_SUMMARY`): an error for each that
/// could not be written.
fn write_reports<T>(
    opts: &Live,
    inv: &Inventory,
    runs: &[HostRun<T>],
    mode: Mode,
    total: Duration,
    secrets: &Secrets,
) -> Vec<Result<String, String>> {
    let mut notes = Vec::new();
    let ends = host_ends(runs);
    if let Some(path) = &opts.junit {
        let hosts: Vec<JunitHost> = runs
            .iter()
            .zip(&ends)
            .map(|(r, end)| JunitHost {
                end: *end,
                roles: match &r.plan {
                    Some(p) => p.roles.iter().map(|x| x.role.clone()).collect(),
                    None => inv
                        .tier(&r.tier)
                        .map(|t| t.roles.clone())
                        .unwrap_or_default(),
                },
                plan: r.plan.as_ref(),
            })
            .collect();
        let doc = junit(mode, &hosts, total, secrets);
        if let Err(e) = std::fs::write(path, doc) {
            notes.push(Err(format!(
                "--junit {}: cannot write: {e}",
                path.display()
            )));
        }
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
        let plans: Vec<_> = runs.iter().filter_map(|r| r.plan.as_ref()).collect();
        let doc = markdown(mode, &ends, &plans, secrets);
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .and_then(|mut f| f.write_all(format!("{doc}\n").as_bytes()));
        if let Err(e) = appended {
            notes.push(Err(format!(
                "GITHUB_STEP_SUMMARY {}: cannot append the summary: {e}",
                Path::new(&summary).display()
            )));
        }
    }
    notes
}

/// Connects to every host and plans it, at most `forks` at once.
/// Connects to every host and plans it, at most `forks` at once; also returns, by host,
/// what each planned host's plan rests on (for a saved plan).
async fn connect_all(
    inv: &Inventory,
    routes: &Routes,
    desired: Vec<DesiredHost>,
    (secrets, certs, key): (&Secrets, Option<&CertCheck<'_>>, &Key),
    reporter: &Reporter,
    lock: &HostLock,
    forks: u16,
) -> (Vec<HostRun<SshSession>>, BTreeMap<String, HostBasis>) {
    let forks = Semaphore::new(usize::from(forks));
    let forks = &forks;
    let done = futures::future::join_all(desired.into_iter().map(|d| async move {
        let _permit = forks.acquire().await.ok();
        let route = routes.by_host.get(&d.host.name);
        connect_and_plan(inv, route, d, (secrets, certs, key), reporter, lock).await
    }))
    .await;
    let mut bases = BTreeMap::new();
    let runs = done
        .into_iter()
        .map(|(run, basis)| {
            if let Some(b) = basis {
                bases.insert(run.name.clone(), b);
            }
            run
        })
        .collect();
    (runs, bases)
}

/// One host: connect, read, plan. Whatever fails becomes the host's outcome.
async fn connect_and_plan(
    inv: &Inventory,
    route: Option<&SshOptions>,
    d: DesiredHost,
    (secrets, certs, key): (&Secrets, Option<&CertCheck<'_>>, &Key),
    reporter: &Reporter,
    lock: &HostLock,
) -> (HostRun<SshSession>, Option<HostBasis>) {
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
    let mut basis = None;
    match outcome {
        Ok(p) => {
            basis = Some(plan_file::host_basis(&d, &p.facts, key));
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
    (run, basis)
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

/// Each host's end, for the reports (no timings: they are in the recap).
fn host_ends<T>(runs: &[HostRun<T>]) -> Vec<HostEnd<'_>> {
    runs.iter()
        .map(|r| HostEnd {
            host: &r.name,
            tier: &r.tier,
            outcome: r.outcome.as_ref(),
            elapsed: r.elapsed,
            round_trips: r.round_trips,
            timings: None,
        })
        .collect()
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
    } else if reporter.is_document() {
        let plans: Vec<_> = runs.iter().filter_map(|r| r.plan.as_ref()).collect();
        print!("{}", markdown(mode, &ends, &plans, secrets));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Format;

    #[test]
    fn the_question_counts_changes_and_hosts() {
        assert_eq!(question(14, 5), "Apply 14 changes on 5 hosts? [y/N] ");
        assert_eq!(question(1, 1), "Apply 1 change on 1 host? [y/N] ");
    }

    #[test]
    fn only_y_or_yes_is_a_yes() {
        for yes in ["y", "Y\n", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "y es", "ok"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn without_a_terminal_both_ways_are_spelled_out() {
        let c = crate::cli::Common {
            inventory: "inventories/lab.yml".into(),
            limit: vec![],
            tier: vec![],
            format: Format::Text,
            root: None,
            roles: vec![],
            skip_roles: vec![],
            var: vec![],
        };
        let apply = no_terminal("apply", &c);
        assert!(
            apply.contains("foobar-provision apply inventories/lab.yml --yes"),
            "{apply}"
        );
        assert!(
            apply.contains("foobar-provision plan inventories/lab.yml --out plan.json, then foobar-provision apply plan.json"),
            "{apply}"
        );
        assert!(apply.contains("Nothing was changed"), "{apply}");
        let rollback = no_terminal("rollback", &c);
        assert!(
            rollback.contains("foobar-provision rollback inventories/lab.yml --yes"),
            "{rollback}"
        );
        assert!(!rollback.contains("--out"), "{rollback}");
    }
}
