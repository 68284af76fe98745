//! The subcommands, from a parsed command line to an exit code.
//!
//! `plan` and `apply` share every stage up to Apply: load -> render -> connect + facts
//! -> plan. `apply` then executes exactly the plan it printed.

use crate::apply::{self, Interruption, Outcome, Remote};
use crate::cli::{Cli, Command, Common, Live};
use crate::desired::DesiredHost;
use crate::diag::Diagnostic;
use crate::facts::{self, FactQuery};
use crate::inventory::{self, Host, Inventory};
use crate::output::{Reporter, outcome_word, plan_text};
use crate::plan::{self, HostPlan};
use crate::render::{Project, find_root};
use crate::secrets::Secrets;
use crate::shell;
use crate::transport::{self, SshOptions, SshSession, known_hosts};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;

/// Set by Ctrl-C: no new host or role is started; the step in flight finishes (a role not
/// yet swapped in is abandoned, one already in place is finished). A second Ctrl-C exits
/// at once.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long closing a session may take at the end of a run.
const SESSION_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Exit code after a second Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_ABORTED: i32 = 130;

/// First Ctrl-C: set [`INTERRUPTED`] and say what happens; second: exit at once.
fn watch_ctrl_c() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
        return;
    };
    tokio::spawn(async move {
        if sigint.recv().await.is_none() {
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!(
            "interrupted: finishing the step in flight, then stopping; nothing new is started \
             (press Ctrl-C again to abort at once)"
        );
        if sigint.recv().await.is_some() {
            eprintln!(
                "aborted: steps in flight were cut off; temporary files (.NAME.fp-XXXXXX) may \
                 remain beside their targets; run plan to see where each host stands"
            );
            std::process::exit(EXIT_ABORTED);
        }
    });
}

pub async fn main(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Check(c) => check(&c),
        Command::Render {
            common,
            out,
            reveal_secrets,
        } => render(&common, &out, reveal_secrets),
        Command::Hosts(c) => hosts(&c),
        Command::Trust(c) => trust(&c).await,
        Command::Plan(l) => live(&l, false).await,
        Command::Apply(l) => live(&l, true).await,
    };
    result.unwrap_or_else(fail)
}

/// Inventory + project, loaded and validated; no host touched.
struct Loaded {
    inv: Inventory,
    project: Project,
}

fn load(c: &Common) -> Result<Loaded, Diagnostic> {
    if !c.inventory.is_file() {
        return Err(
            Diagnostic::new(&c.inventory, 0, 0, "inventory file not found")
                .with_hint("give the path of an inventory YAML file, e.g. inventories/lab.yml"),
        );
    }
    let root = match &c.root {
        Some(r) => r.clone(),
        None => find_root(&c.inventory).ok_or_else(|| {
            Diagnostic::new(
                &c.inventory,
                0,
                0,
                "no folder with roles/ and templates/ found above the inventory",
            )
            .with_hint("run from the project, or pass --root DIR")
        })?,
    };
    let project = Project::load(&root)?;
    let inv = inventory::load(&c.inventory, &project.role_names())?;
    Ok(Loaded { inv, project })
}

/// A command's result: its exit code, or the error to print (exit 1).
type Exit = Result<i32, String>;

fn fail(e: String) -> i32 {
    eprintln!("error: {e}");
    EXIT_FAIL
}

/// Turns any displayable error into the message a command fails with.
trait OrFail<T> {
    fn or_fail(self) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn select<'a>(l: &'a Loaded, c: &Common) -> Result<Vec<&'a Host>, String> {
    l.inv.select(&c.limit, &c.tier).map_err(|e| e.to_string())
}

fn render_all(
    l: &Loaded,
    hosts: &[&Host],
    secrets: &Secrets,
    reveal: bool,
) -> Result<Vec<DesiredHost>, Diagnostic> {
    let values = if reveal {
        secrets.values().clone()
    } else {
        secrets_placeholders(&l.inv)
    };
    hosts
        .iter()
        .map(|h| {
            l.project
                .render_host(&l.inv, h, &values, secrets)
                .map_err(|mut d| {
                    d.message = secrets.mask(&d.message);
                    d.hint = d.hint.map(|h| secrets.mask(&h));
                    d
                })
        })
        .collect()
}

fn secrets_placeholders(inv: &Inventory) -> std::collections::BTreeMap<String, String> {
    inv.secrets
        .iter()
        .map(|s| (s.name.clone(), format!("<secret:{}>", s.name)))
        .collect()
}

fn check(c: &Common) -> Exit {
    let l = load(c).or_fail()?;
    let hosts = select(&l, c).or_fail()?;
    let desired = render_all(&l, &hosts, &Secrets::default(), false).or_fail()?;
    let files: usize = desired.iter().map(|d| d.paths().len()).sum();
    if c.format == crate::output::Format::Json {
        println!(
            "{}",
            json!({"ok": true, "hosts": hosts.len(), "files": files})
        );
    } else {
        println!(
            "ok: {} ({} hosts, {} roles, {} files rendered)",
            c.inventory.display(),
            hosts.len(),
            l.inv.roles_used().len(),
            files
        );
    }
    Ok(EXIT_OK)
}

fn render(c: &Common, out: &Path, reveal: bool) -> Exit {
    let l = load(c).or_fail()?;
    let hosts = select(&l, c).or_fail()?;
    let secrets = if reveal {
        Secrets::load(&l.inv).or_fail()?
    } else {
        Secrets::default()
    };
    let desired = render_all(&l, &hosts, &secrets, reveal).or_fail()?;
    let mut written = 0;
    for d in &desired {
        for r in &d.roles {
            for f in &r.files {
                let path = out.join(&d.host.name).join(f.dest.trim_start_matches('/'));
                write_local(&path, &f.content, f.sensitive || reveal)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                written += 1;
            }
        }
    }
    println!(
        "wrote {written} files for {} hosts under {}",
        desired.len(),
        out.display()
    );
    Ok(EXIT_OK)
}

fn write_local(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)?;
    std::io::Write::write_all(&mut f, content)
}

fn hosts(c: &Common) -> Exit {
    let l = load(c).or_fail()?;
    let hosts = select(&l, c).or_fail()?;
    for h in hosts {
        println!("{} {} {}", h.name, h.address, h.tier);
    }
    Ok(EXIT_OK)
}

fn ssh_options(inv: &Inventory, h: &Host) -> SshOptions {
    SshOptions {
        host_name: h.name.clone(),
        address: h.address.to_string(),
        port: h.port,
        user: h.user.clone(),
        identity_file: inv.ssh.identity_file.clone(),
        use_agent: inv.ssh.use_agent,
        known_hosts: inv.ssh.known_hosts.clone(),
        connect_timeout: inv.ssh.connect_timeout,
        jump: inv.ssh.jump_host.as_ref().map(|j| transport::JumpHost {
            address: j.address.clone(),
            port: j.port,
            user: j.user.clone(),
        }),
    }
}

async fn trust(c: &Common) -> Exit {
    let l = load(c).or_fail()?;
    let hosts = select(&l, c).or_fail()?;
    let path = l.inv.ssh.known_hosts.clone();
    let mut code = EXIT_OK;
    for h in hosts {
        let addr = h.address.to_string();
        let scanned = if l.inv.ssh.jump_host.is_some() {
            transport::scan_host_key_via_jump(&ssh_options(&l.inv, h)).await
        } else {
            transport::scan_host_key(&addr, h.port, l.inv.ssh.connect_timeout).await
        };
        let key = match scanned {
            Ok(k) => k,
            Err(e) => {
                eprintln!("{}: {e}", h.name);
                code = EXIT_FAIL;
                continue;
            }
        };
        let fp = known_hosts::fingerprint(&key);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match known_hosts::check(&text, &addr, h.port, &key) {
            known_hosts::HostKeyStatus::Trusted => {
                println!("{} ({addr}): already trusted, {fp}", h.name);
            }
            known_hosts::HostKeyStatus::Unknown => {
                let line = known_hosts::entry_line(&addr, h.port, &key);
                if let Err(e) = append_line(&path, &line) {
                    eprintln!("{}: cannot write {}: {e}", h.name, path.display());
                    code = EXIT_FAIL;
                    continue;
                }
                println!(
                    "{} ({addr}): trusted {fp}, recorded in {}",
                    h.name,
                    path.display()
                );
            }
            known_hosts::HostKeyStatus::Changed { line, .. } => {
                eprintln!(
                    "{} ({addr}): the host now offers {fp}, but {}:{line} holds another key for it. \
                     If the host was rebuilt, remove the old entry with `ssh-keygen -R {} -f {}` and run trust again; \
                     otherwise this may be an attack: do not proceed.",
                    h.name,
                    path.display(),
                    known_hosts::host_pattern(&addr, h.port),
                    path.display()
                );
                code = EXIT_FAIL;
            }
            known_hosts::HostKeyStatus::Revoked { line } => {
                eprintln!(
                    "{} ({addr}): the key it offers ({fp}) is marked @revoked at {}:{line}; refusing to trust it",
                    h.name,
                    path.display()
                );
                code = EXIT_FAIL;
            }
        }
    }
    Ok(code)
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let existing = std::fs::read(path).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")
}

/// One selected host through the run.
struct Slot {
    desired: DesiredHost,
    session: Option<Arc<SshSession>>,
    plan: Option<HostPlan>,
    outcome: Option<Outcome>,
    elapsed: Duration,
    holds_vip: bool,
    round_trips: u32,
}

async fn live(l_opts: &Live, apply_mode: bool) -> Exit {
    let c = &l_opts.common;
    let reporter = Reporter::new(c.format);
    // 1. Everything offline first: bad input never touches a host.
    let l = load(c).or_fail()?;
    let hosts = select(&l, c).or_fail()?;
    let secrets = Secrets::load(&l.inv).or_fail()?;
    let desired = render_all(&l, &hosts, &secrets, true).or_fail()?;
    let run_start = Instant::now();
    watch_ctrl_c();

    // 2. Connect and gather facts, hosts in parallel.
    let forks = Arc::new(Semaphore::new(usize::from(l_opts.forks)));
    let vip = l.inv.vip.map(|v| v.to_string());
    let mut slots: Vec<Slot> = futures::future::join_all(desired.into_iter().map(|d| {
        let opts = ssh_options(&l.inv, &d.host);
        let forks = forks.clone();
        let secrets = &secrets;
        let reporter = &reporter;
        let sudo = l.inv.ssh.sudo;
        let vip = if d.host.tier == "lb" {
            vip.clone()
        } else {
            None
        };
        async move { gather(d, opts, forks, secrets, reporter, sudo, vip).await }
    }))
    .await;

    // 3. Order: tiers as declared (db, app, web, lb); lb standby before VIP holder.
    slots.sort_by_key(|s| {
        let tier = inventory::TIER_ORDER
            .iter()
            .position(|t| *t == s.desired.host.tier)
            .unwrap_or(99);
        (tier, s.holds_vip)
    });

    // 4. Show the plan.
    reporter.clear();
    let mut json_hosts = Vec::new();
    for s in &slots {
        if let Some(p) = &s.plan {
            if reporter.is_json() {
                json_hosts.push(serde_json::to_value(p).unwrap_or_default());
            } else {
                reporter.line(&secrets.mask(&plan_text(p, reporter.colors())));
            }
        }
    }

    if apply_mode {
        apply_all(&mut slots, &l, &secrets, &reporter, l_opts).await;
    } else {
        for s in &mut slots {
            if s.outcome.is_none() {
                s.outcome = Some(match &s.plan {
                    Some(p) if p.is_empty() => Outcome::Ok,
                    Some(p) => Outcome::Changed(p.change_count()),
                    None => Outcome::Failed("no plan".into()),
                });
            }
        }
    }
    // Goodbye to every host at once, bounded: saying goodbye on a connection that broke
    // waits forever (the SSH layer's queue towards the dead peer is full), so a host
    // found unreachable is just dropped.
    let closing: Vec<_> = slots
        .iter_mut()
        .filter_map(|s| {
            let sess = s.session.take()?;
            let sess = Arc::try_unwrap(sess).ok()?;
            let broken = matches!(s.outcome, Some(Outcome::Unreachable(_)));
            (!broken).then_some(sess)
        })
        .map(|sess| tokio::time::timeout(SESSION_CLOSE_TIMEOUT, sess.close()))
        .collect();
    futures::future::join_all(closing).await;
    reporter.clear();

    // 5. Recap and exit code. An interrupted apply fails, whatever it got done.
    let interrupted = apply_mode && INTERRUPTED.load(Ordering::SeqCst);
    let failed = interrupted
        || slots
            .iter()
            .any(|s| s.outcome.as_ref().is_none_or(Outcome::is_failure));
    let changes = slots
        .iter()
        .any(|s| matches!(s.outcome, Some(Outcome::Changed(_))));
    let code = if failed {
        EXIT_FAIL
    } else if changes && !apply_mode {
        EXIT_CHANGES
    } else {
        EXIT_OK
    };
    let total = run_start.elapsed();
    if reporter.is_json() {
        let recap: Vec<_> = slots
            .iter()
            .map(|s| {
                let (status, changes, error) = match &s.outcome {
                    Some(Outcome::Interrupted(i)) => ("interrupted", 0, Some(i.note.clone())),
                    Some(Outcome::Ok) => ("ok", 0, None),
                    Some(Outcome::Changed(n)) => ("changed", *n, None),
                    Some(Outcome::Failed(m)) => ("failed", 0, Some(m.clone())),
                    Some(Outcome::Unreachable(m)) => ("unreachable", 0, Some(m.clone())),
                    None => (
                        "skipped",
                        0,
                        Some("not started: an earlier tier failed".to_string()),
                    ),
                };
                let mut h = json!({"host": s.desired.host.name, "tier": s.desired.host.tier, "status": status,
                       "changes": changes, "error": error, "seconds": s.elapsed.as_secs_f64(),
                       "round_trips": s.round_trips});
                if let Some(Outcome::Interrupted(i)) = &s.outcome {
                    h["applied_roles"] = json!(i.applied);
                    h["not_applied_roles"] = json!(i.not_applied);
                }
                h
            })
            .collect();
        let doc = json!({"mode": if apply_mode {"apply"} else {"plan"}, "plan": json_hosts,
                         "recap": recap, "exit_code": code, "seconds": total.as_secs_f64()});
        println!("{}", secrets.mask(&doc.to_string()));
    } else {
        reporter.line(&secrets.mask(&recap_text(&slots, apply_mode, total)));
    }
    Ok(code)
}

async fn gather(
    d: DesiredHost,
    opts: SshOptions,
    forks: Arc<Semaphore>,
    secrets: &Secrets,
    reporter: &Reporter,
    sudo: bool,
    vip: Option<String>,
) -> Slot {
    let _permit = forks.acquire_owned().await.ok();
    let started = Instant::now();
    let mut slot = Slot {
        desired: d,
        session: None,
        plan: None,
        outcome: None,
        elapsed: Duration::ZERO,
        holds_vip: false,
        round_trips: 0,
    };
    let name = slot.desired.host.name.clone();
    reporter.step(&name, "connecting");
    let session = match transport::connect(&opts).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let o = Outcome::Unreachable(secrets.mask(&e.to_string()));
            reporter.done(&name, &o);
            slot.outcome = Some(o);
            slot.elapsed = started.elapsed();
            return slot;
        }
    };
    slot.session = Some(session.clone());
    reporter.step(&name, "gathering facts");
    let q = FactQuery {
        paths: slot.desired.paths(),
        packages: slot.desired.packages(),
        services: slot.desired.services(),
        drift: slot.desired.drift_checks(),
        vip,
    };
    // Both reads of the host (facts, then old contents for diffs) run as root under
    // the stall watchdog; a broken connection makes the host unreachable.
    let read = |script: String| {
        let session = session.clone();
        let name = name.clone();
        async move {
            apply::exec_watched(session.as_ref(), &name, &shell::wrap(&script, sudo), b"")
                .await
                .map_err(|e| Outcome::Unreachable(secrets.mask(&e)))
        }
    };
    let result = async {
        let out = read(facts::script(&q)).await?;
        if out.status != 0 {
            let err = String::from_utf8_lossy(&out.stderr);
            let hint = if err.contains("sudo") {
                " (does the user have passwordless sudo? ssh.sudo in the inventory)"
            } else {
                ""
            };
            return Err(Outcome::Failed(format!(
                "gathering facts failed (exit {}){hint}: {}",
                out.status,
                secrets.mask(err.trim())
            )));
        }
        let facts = facts::parse(&String::from_utf8_lossy(&out.stdout), &q)
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        let changed = plan::content_changed(&slot.desired, &facts);
        let mut old = Default::default();
        let mut trips = 1;
        if !changed.is_empty() {
            trips += 1;
            let out = read(facts::contents_script(&changed)).await?;
            old = facts::parse_contents(&String::from_utf8_lossy(&out.stdout))
                .map_err(|e| Outcome::Failed(e.to_string()))?;
        }
        Ok((
            plan::plan_host(&slot.desired, &facts, &old, secrets),
            facts.holds_vip.unwrap_or(false),
            trips,
        ))
    }
    .await;
    match result {
        Ok((p, vip, trips)) => {
            slot.plan = Some(p);
            slot.holds_vip = vip;
            slot.round_trips = trips;
            reporter.step(&name, "planned");
        }
        Err(o) => {
            reporter.done(&name, &o);
            slot.outcome = Some(o);
        }
    }
    slot.elapsed = started.elapsed();
    slot
}

async fn apply_all(
    slots: &mut [Slot],
    l: &Loaded,
    secrets: &Secrets,
    reporter: &Reporter,
    opts: &Live,
) {
    let sudo = l.inv.ssh.sudo;
    let mut stop = slots
        .iter()
        .any(|s| s.outcome.as_ref().is_some_and(Outcome::is_failure))
        && !opts.keep_going;
    if stop {
        reporter.warn("not applying: some hosts could not be planned (see the recap); --keep-going applies the others");
    }
    for tier in inventory::TIER_ORDER {
        if stop {
            break;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            reporter.warn("interrupted: no further tier started");
            break;
        }
        let serial = tier == "lb";
        let parallel = if serial { 1 } else { usize::from(opts.forks) };
        let sem = Arc::new(Semaphore::new(parallel));
        // In the one-at-a-time lb tier, a failed host keeps the next one from starting:
        // the peer that still serves the VIP must not get the same broken change.
        let peer_failed = AtomicBool::new(false);
        let peer_failed = &peer_failed;
        let keep_going = opts.keep_going;
        let work: Vec<_> = slots
            .iter_mut()
            .filter(|s| s.desired.host.tier == tier && s.outcome.is_none())
            .map(|s| {
                let sem = sem.clone();
                async move {
                    let _permit = sem.acquire_owned().await.ok();
                    let (Some(sess), Some(plan)) = (&s.session, &s.plan) else {
                        return;
                    };
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        s.outcome = Some(not_started(plan));
                        return;
                    }
                    if serial && !keep_going && peer_failed.load(Ordering::SeqCst) {
                        return; // reported as skipped: not started
                    }
                    let t0 = Instant::now();
                    let remote = Remote {
                        transport: sess.as_ref(),
                        sudo,
                        secrets,
                        reporter,
                        host: &s.desired.host.name,
                        interrupted: &INTERRUPTED,
                    };
                    let o = apply::apply_host(&remote, plan).await;
                    if o.is_failure() {
                        peer_failed.store(true, Ordering::SeqCst);
                    }
                    reporter.done(&s.desired.host.name, &o);
                    s.elapsed += t0.elapsed();
                    s.outcome = Some(o);
                }
            })
            .collect();
        futures::future::join_all(work).await;
        // An interruption is not a tier failure: the loop stops on INTERRUPTED anyway.
        let tier_failed = slots
            .iter()
            .filter(|s| s.desired.host.tier == tier)
            .any(|s| {
                s.outcome
                    .as_ref()
                    .is_some_and(|o| o.is_failure() && !matches!(o, Outcome::Interrupted(_)))
            });
        if tier_failed && !opts.keep_going {
            stop = true;
            reporter.warn(&format!("tier {tier} failed: later tiers not started (use --keep-going to continue past failures)"));
        }
    }
    // After Ctrl-C, every host that was not started says what it did not get.
    if INTERRUPTED.load(Ordering::SeqCst) {
        for s in slots.iter_mut().filter(|s| s.outcome.is_none()) {
            if let Some(plan) = &s.plan {
                s.outcome = Some(not_started(plan));
            }
        }
    }
}

/// The outcome of a host that Ctrl-C kept from starting: interrupted when it had
/// changes to make (all of them not applied), ok when it had none.
fn not_started(plan: &HostPlan) -> Outcome {
    if plan.is_empty() {
        return Outcome::Ok;
    }
    Outcome::Interrupted(Interruption {
        applied: Vec::new(),
        not_applied: plan
            .roles
            .iter()
            .filter(|r| !r.files.is_empty() || !r.actions.is_empty())
            .map(|r| r.role.clone())
            .collect(),
        note: "not started: interrupted before this host's turn; nothing was changed on it".into(),
    })
}

fn recap_text(slots: &[Slot], apply_mode: bool, total: Duration) -> String {
    let mut out = String::from(if apply_mode {
        "RECAP (apply)\n"
    } else {
        "RECAP (plan)\n"
    });
    for s in slots {
        let word = match &s.outcome {
            Some(o) => {
                let w = outcome_word(o);
                if !apply_mode && matches!(o, Outcome::Changed(_)) {
                    w.replace("changed", "would change")
                } else {
                    w
                }
            }
            None => "skipped (not started)".into(),
        };
        out.push_str(&format!(
            "  {:<10} {:<4} {:<24} {:>6.2}s\n",
            s.desired.host.name,
            s.desired.host.tier,
            word,
            s.elapsed.as_secs_f64()
        ));
        if let Some(Outcome::Failed(m) | Outcome::Unreachable(m)) = &s.outcome {
            for line in m.lines() {
                out.push_str(&format!("      {line}\n"));
            }
        }
        if let Some(Outcome::Interrupted(i)) = &s.outcome {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            out.push_str(&format!("      applied: {}\n", list(&i.applied)));
            out.push_str(&format!("      not applied: {}\n", list(&i.not_applied)));
            out.push_str(&format!("      {}\n", i.note));
        }
    }
    out.push_str(&format!("  total {:.2}s", total.as_secs_f64()));
    out
}
