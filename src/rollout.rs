//! The rollout rules: which host is applied when, and what stops a rollout.
//!
//! - Tiers one after another, in the inventory's order ([`Rules::tiers`]).
//! - The tier that holds the VIP goes one host at a time, the VIP holder last, and a
//!   failed host keeps the next one from starting: the peer that still serves the VIP
//!   must not get the same broken change.
//! - In another tier, hosts whose change interrupts nothing that serves (a new host, a
//!   file no service reads yet) go at once, at most [`Rules::forks`]; then the hosts whose
//!   change reloads or restarts a serving service go in batches ([`Rolling`], default one
//!   at a time): a batch ends (health checks passed) before the next starts, and a failed
//!   batch stops the tier, the rest keeping their configuration and serving.
//! - A tier with a `drain:` takes a host out of its balancers (HAProxy's runtime API, on
//!   every host of the `via` tier) before restarting its serving service, and puts it back
//!   once its health checks pass and the balancers see it up ([`crate::drain`]).
//! - A failed tier stops the later tiers, and a host that could not be planned stops the
//!   whole apply before anything starts, unless [`Rules::keep_going`].
//! - Ctrl-C (the `interrupted` flag): the host in flight finishes its step, no new tier or
//!   host starts, and every host not started says what it did not get.
//!
//! Generic over [`Transport`]: the tests below run it on a scripted fake that records the
//! order of commands and fails or interrupts where told.

use crate::apply::{self, Remote};
use crate::drain::{self, Balancer};
use crate::inventory::{Drain, Rolling, Tier};
use crate::plan::{DrainStep, HostPlan};
use crate::progress::Reporter;
use crate::report::{ErrorKind, Interruption, Outcome};
use crate::secrets::Secrets;
use crate::transport::Transport;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How one tier is rolled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    pub name: String,
    /// Holds the VIP: one host at a time, the VIP holder last; a failed host stops the tier.
    pub vip: bool,
    /// How many hosts whose change interrupts a serving service go at once.
    pub rolling: Rolling,
    /// Drained out of these balancers before a restart.
    pub drain: Option<Drain>,
    /// A host applied alone before the tier's others, whatever its change: the db tier's
    /// primary (its replicas seed from it and need its account and firewall first).
    pub first: Option<String>,
}

/// The rules of a rollout.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Tiers in rollout order. A host whose tier is not listed is never applied.
    pub tiers: Vec<TierRule>,
    /// Hosts worked at the same time (at least 1).
    pub forks: usize,
    /// Go on past failures (the run still fails).
    pub keep_going: bool,
}

impl Rules {
    /// The rules of an inventory's tiers, in their order.
    pub fn new(tiers: &[Tier], forks: usize, keep_going: bool) -> Rules {
        Rules {
            tiers: tiers
                .iter()
                .map(|t| TierRule {
                    name: t.name.clone(),
                    vip: t.vip,
                    rolling: t.rolling,
                    drain: t.drain.clone(),
                    first: None,
                })
                .collect(),
            forks: forks.max(1),
            keep_going,
        }
    }

    /// Where a tier comes in the rollout (unknown tiers last).
    fn position(&self, tier: &str) -> usize {
        self.tiers
            .iter()
            .position(|t| t.name == tier)
            .unwrap_or(self.tiers.len())
    }

    /// The rule of a tier, if it is in the rollout.
    pub fn tier(&self, name: &str) -> Option<&TierRule> {
        self.tiers.iter().find(|t| t.name == name)
    }
}

/// One selected host through a run: its connection and plan (when it got that far), and
/// how it ended.
pub struct HostRun<T> {
    pub name: String,
    pub tier: String,
    pub session: Option<Arc<T>>,
    pub plan: Option<HostPlan>,
    /// Set when the host is finished (or could not be planned).
    pub outcome: Option<Outcome>,
    /// How many VIPs it holds now (lb hosts): in its tier, hosts holding more go later
    /// (active-passive: the VIP holder last; active-active: a host holding both VIPs,
    /// its peer's too, goes after the peer).
    pub vips_held: usize,
    pub elapsed: Duration,
    /// SSH round trips spent planning.
    pub round_trips: u32,
}

impl<T> HostRun<T> {
    /// A host not connected yet.
    pub fn new(name: &str, tier: &str) -> HostRun<T> {
        HostRun {
            name: name.to_string(),
            tier: tier.to_string(),
            session: None,
            plan: None,
            outcome: None,
            vips_held: 0,
            elapsed: Duration::ZERO,
            round_trips: 0,
        }
    }
}

/// A host that is not applied but whose connection a drain uses (a balancer outside
/// `--tier`/`--limit`).
pub struct Peer<T> {
    pub name: String,
    pub tier: String,
    pub session: Arc<T>,
}

/// What applying a host needs besides its plan and connection.
pub struct Context<'a> {
    pub sudo: bool,
    pub secrets: &'a Secrets,
    pub reporter: &'a Reporter,
    /// Set by Ctrl-C.
    pub interrupted: &'a AtomicBool,
    /// The apply lock taken on each host (`None` in tests of the rollout order).
    pub lock: Option<apply::HostLock>,
    /// The internal CA that signs the hosts' certificate requests.
    pub ca: Option<&'a crate::pki::Ca>,
}

/// Sorts hosts into rollout order: by tier, and within a tier by the number of VIPs held,
/// fewest first (the VIP holder last); ties keep the inventory's order.
pub fn order<T>(hosts: &mut [HostRun<T>], rules: &Rules) {
    hosts.sort_by_key(|h| (rules.position(&h.tier), h.vips_held));
}

/// Keeps each tier's release migration on one host: the first, in rollout order, that
/// switches to the source's release (it runs alone, before its tier's other switches).
/// Called after [`order`], before the plans are shown.
pub fn plan_migrations<T>(hosts: &mut [HostRun<T>]) {
    let mut done: Vec<(String, String, String)> = Vec::new();
    for h in hosts.iter_mut() {
        let Some(plan) = h.plan.as_mut() else {
            continue;
        };
        let tier = plan.tier.clone();
        for rel in plan.roles.iter_mut().filter_map(|r| r.release.as_mut()) {
            if rel.migrate.is_none() {
                continue;
            }
            let key = (tier.clone(), rel.root.clone(), rel.to.clone());
            if done.contains(&key) {
                rel.migrate = None;
            } else {
                done.push(key);
            }
        }
    }
}

/// Gives each plan its drain step, before the plans are shown: where the host's tier has a
/// `drain:` and the plan restarts a serving service. `via_hosts` names the hosts of a tier
/// (the balancers, selected or not). Apply drains exactly the plans that show one.
pub fn plan_drains<T>(
    hosts: &mut [HostRun<T>],
    rules: &Rules,
    via_hosts: impl Fn(&str) -> Vec<String>,
) {
    for h in hosts.iter_mut() {
        let Some(plan) = h.plan.as_mut() else {
            continue;
        };
        plan.drain = rules
            .tier(&plan.tier)
            .and_then(|t| t.drain.as_ref())
            .filter(|_| plan.restarts_serving())
            .map(|d| DrainStep {
                backend: d.backend.clone(),
                via: via_hosts(&d.via),
                timeout_s: d.timeout.as_secs_f64(),
            });
    }
}

/// The balancers a tier's drain goes through, by name: selected hosts of the `via` tier
/// that are connected, then `peers` of that tier.
fn balancers<T>(hosts: &[HostRun<T>], peers: &[Peer<T>], via: &str) -> Vec<Balancer<T>> {
    let mut out: Vec<Balancer<T>> = hosts
        .iter()
        .filter(|h| h.tier == via)
        .filter_map(|h| {
            h.session.clone().map(|session| Balancer {
                name: h.name.clone(),
                session,
            })
        })
        .collect();
    for p in peers.iter().filter(|p| p.tier == via) {
        if !out.iter().any(|b| b.name == p.name) {
            out.push(Balancer {
                name: p.name.clone(),
                session: p.session.clone(),
            });
        }
    }
    out
}

/// Applies every host's plan by the rules; every host without an outcome gets one.
/// `hosts` must be in [`order`]; `peers` are balancers connected for drains only.
pub async fn apply_all<T: Transport>(
    hosts: &mut [HostRun<T>],
    peers: &[Peer<T>],
    rules: &Rules,
    cx: &Context<'_>,
) {
    let mut stopped: Option<String> = None;
    if !rules.keep_going && hosts.iter().any(|h| failed(h.outcome.as_ref())) {
        cx.reporter.warn(
            "not applying: some hosts could not be planned (see the recap); --keep-going applies the others",
        );
        stopped = Some("not started: some hosts could not be planned".into());
    }
    if stopped.is_none() {
        install_first(hosts, rules, cx).await;
    }
    for tier in &rules.tiers {
        if stopped.is_some() {
            break;
        }
        if cx.interrupted.load(Ordering::SeqCst) {
            cx.reporter.warn("interrupted: no further tier started");
            break;
        }
        let lbs = match &tier.drain {
            Some(d) => balancers(hosts, peers, &d.via),
            None => Vec::new(),
        };
        apply_tier(hosts, tier, rules, cx, &lbs).await;
        let tier_failed = hosts
            .iter()
            .filter(|h| h.tier == tier.name)
            .any(|h| failed(h.outcome.as_ref()));
        if tier_failed && !rules.keep_going {
            cx.reporter.warn(&format!(
                "tier {} failed: later tiers not started (use --keep-going to continue past failures)",
                tier.name
            ));
            stopped = Some(format!("not started: tier {} failed", tier.name));
        }
    }
    let interrupted = cx.interrupted.load(Ordering::SeqCst);
    for h in hosts.iter_mut().filter(|h| h.outcome.is_none()) {
        h.outcome = Some(match (&h.plan, interrupted) {
            (Some(plan), true) => not_started(plan),
            _ => Outcome::Skipped(
                stopped
                    .clone()
                    .unwrap_or_else(|| "not started: its tier is not in the rollout".into()),
            ),
        });
    }
}

/// A failure that stops a rollout (an interruption stops it anyway; a skipped host
/// is a consequence, not a cause).
fn failed(o: Option<&Outcome>) -> bool {
    o.is_some_and(|o| o.is_failure() && !matches!(o, Outcome::Interrupted(_) | Outcome::Skipped(_)))
}

/// Whether a host's change interrupts a serving service or switches a release (it then
/// rolls in batches).
fn interrupts<T>(h: &HostRun<T>) -> bool {
    h.plan
        .as_ref()
        .is_some_and(|p| p.interrupts_serving() || p.switches_release())
}

/// Whether a host's plan runs a release migration.
fn migrates<T>(h: &HostRun<T>) -> bool {
    h.plan.as_ref().is_some_and(|p| {
        p.roles
            .iter()
            .any(|r| r.release.as_ref().is_some_and(|rel| rel.migrate.is_some()))
    })
}

/// Applies the hosts of one tier that have no outcome yet: its `first` host alone; then
/// the VIP tier one at a time; another tier's quiet hosts at once, then its interrupting
/// hosts batch by batch.
async fn apply_tier<T: Transport>(
    hosts: &mut [HostRun<T>],
    tier: &TierRule,
    rules: &Rules,
    cx: &Context<'_>,
    lbs: &[Balancer<T>],
) {
    let mut pending: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].tier == tier.name && hosts[i].outcome.is_none())
        .collect();
    if let Some(name) = &tier.first
        && let Some(at) = pending.iter().position(|&i| hosts[i].name == *name)
    {
        let i = pending.remove(at);
        run_group(hosts, &[i], 1, tier, cx, lbs).await;
        if failed(hosts[i].outcome.as_ref()) && !rules.keep_going {
            for &j in &pending {
                hosts[j].outcome = Some(Outcome::Skipped(format!(
                    "not started: {name} failed before it in tier {} (it goes first: the \
                     others depend on it); this host keeps its configuration",
                    tier.name
                )));
            }
            return;
        }
    }
    let (quiet, rolled): (Vec<usize>, Vec<usize>) = if tier.vip {
        (Vec::new(), pending)
    } else {
        pending.into_iter().partition(|&i| !interrupts(&hosts[i]))
    };
    let size = match tier.rolling {
        _ if tier.vip => 1,
        Rolling::Batch(n) => n.clamp(1, rules.forks),
        Rolling::All => rules.forks,
    };
    run_group(hosts, &quiet, rules.forks, tier, cx, lbs).await;
    // The host that migrates goes alone, first: no host serves the new release before
    // its migration ran.
    let (first, rest): (Vec<usize>, Vec<usize>) =
        rolled.into_iter().partition(|&i| migrates(&hosts[i]));
    let batches: Vec<&[usize]> = first.chunks(1).chain(rest.chunks(size)).collect();
    let mut failed_before: Option<String> = None;
    for batch in batches {
        if let Some(peer) = failed_before.as_ref().filter(|_| !rules.keep_going) {
            let at_once = if size == 1 {
                "one host at a time".to_string()
            } else {
                format!("{size} hosts at a time")
            };
            for &i in batch {
                hosts[i].outcome = Some(Outcome::Skipped(format!(
                    "not started: {peer} failed before it in tier {} ({at_once}); \
                     this host keeps its configuration",
                    tier.name
                )));
            }
            continue;
        }
        run_group(hosts, batch, size, tier, cx, lbs).await;
        if failed_before.is_none() {
            failed_before = batch
                .iter()
                .find(|&&i| failed(hosts[i].outcome.as_ref()))
                .map(|&i| hosts[i].name.clone());
        }
    }
}

/// The first phase: every selected host's packages at once (`forks` at a time), before
/// any tier rolls; the tiers then swap, reload and check in their order as before. A host
/// whose installation failed keeps that failure (nothing else was changed on it) and its
/// tier fails as it would have.
async fn install_first<T: Transport>(hosts: &mut [HostRun<T>], rules: &Rules, cx: &Context<'_>) {
    let sem = Semaphore::new(rules.forks.max(1));
    let sem = &sem;
    let work = hosts
        .iter_mut()
        .filter(|h| h.outcome.is_none() && rules.tier(&h.tier).is_some())
        .filter(|h| {
            h.plan
                .as_ref()
                .is_some_and(|p| !p.packages_to_install.is_empty())
        })
        .map(|h| async move {
            let _permit = sem.acquire().await.ok();
            if cx.interrupted.load(Ordering::SeqCst) {
                return;
            }
            let (Some(session), Some(plan)) = (&h.session, &mut h.plan) else {
                return;
            };
            let started = Instant::now();
            let remote = remote(&h.name, session.as_ref(), cx);
            let failed = match apply::install_first(&remote, plan).await {
                Ok(()) => {
                    plan.packages_ready = true;
                    // Ends the installation's step: its time is the installation's, not
                    // the installation's plus the wait for the host's tier.
                    cx.reporter
                        .step(&h.name, "packages installed; waiting for its tier");
                    None
                }
                Err(o) => Some(o),
            };
            h.elapsed += started.elapsed();
            if let Some(o) = failed {
                cx.reporter.done(&h.name, &o);
                h.outcome = Some(o);
            }
        });
    futures::future::join_all(work).await;
}

/// How `apply` reaches one host.
fn remote<'a, T: Transport>(host: &'a str, session: &'a T, cx: &'a Context<'_>) -> Remote<'a, T> {
    Remote {
        transport: session,
        sudo: cx.sudo,
        secrets: cx.secrets,
        reporter: cx.reporter,
        host,
        interrupted: cx.interrupted,
        limits: apply::Limits::default(),
        lock: cx.lock.clone(),
        ca: cx.ca,
    }
}

/// Applies the hosts at `indexes` concurrently, at most `width` at once, in the order
/// given (a fair semaphore).
async fn run_group<T: Transport>(
    hosts: &mut [HostRun<T>],
    indexes: &[usize],
    width: usize,
    tier: &TierRule,
    cx: &Context<'_>,
    lbs: &[Balancer<T>],
) {
    if indexes.is_empty() {
        return;
    }
    let sem = Semaphore::new(width.max(1));
    let sem = &sem;
    let work = hosts
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| indexes.contains(i))
        .map(|(_, h)| async move {
            let _permit = sem.acquire().await.ok();
            apply_one(h, tier, cx, lbs).await;
        });
    futures::future::join_all(work).await;
}

/// One host: drained first when its tier says so and it restarts a serving service,
/// applied, then ready again.
async fn apply_one<T: Transport>(
    h: &mut HostRun<T>,
    tier: &TierRule,
    cx: &Context<'_>,
    lbs: &[Balancer<T>],
) {
    let (Some(session), Some(plan)) = (&h.session, &h.plan) else {
        return;
    };
    if cx.interrupted.load(Ordering::SeqCst) {
        h.outcome = Some(not_started(plan));
        return;
    }
    let started = Instant::now();
    // The drain the plan showed (plan_drains), with its tier's settings.
    let drain = tier
        .drain
        .as_ref()
        .filter(|_| plan.drain.is_some() && !lbs.is_empty());
    if let Some(d) = drain {
        cx.reporter
            .step(&h.name, "draining from the load balancers");
        match drain::drain(lbs, &h.name, d, cx.sudo).await {
            Ok(notes) => {
                for n in notes {
                    cx.reporter.step(&h.name, &cx.secrets.mask(&n));
                }
            }
            Err(e) => {
                // Whatever was drained is put back; nothing on the host was changed.
                let _ = drain::ready(lbs, &h.name, d, cx.sudo).await;
                let o = Outcome::failed(
                    ErrorKind::Drain,
                    format!(
                        "{e}\n  nothing was changed on {}; it was set ready again where it had \
                         been drained",
                        h.name
                    ),
                );
                cx.reporter.done(&h.name, &o);
                h.elapsed += started.elapsed();
                h.outcome = Some(o);
                return;
            }
        }
    }
    let remote = remote(&h.name, session.as_ref(), cx);
    let mut o = apply::apply_host(&remote, plan).await;
    if let Some(d) = drain.filter(|_| !matches!(o, Outcome::Unreachable(_))) {
        cx.reporter
            .step(&h.name, "waiting until the load balancers see it up");
        match drain::ready(lbs, &h.name, d, cx.sudo).await {
            Ok(notes) => {
                for n in notes {
                    cx.reporter.step(&h.name, &cx.secrets.mask(&n));
                }
            }
            Err(e) if !o.is_failure() => {
                o = Outcome::failed(
                    ErrorKind::Drain,
                    format!(
                        "{} was changed and passed its health checks, but {e}",
                        h.name
                    ),
                );
            }
            Err(e) => cx.reporter.warn(&format!("{}: {e}", h.name)),
        }
    }
    cx.reporter.done(&h.name, &o);
    h.elapsed += started.elapsed();
    h.outcome = Some(o);
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

#[cfg(test)]
mod sim_bench;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, RolePlan};
    use crate::progress::Format;
    use crate::report::ErrorKind;
    use crate::shell::Init;
    use crate::transport::{ExecOutput, SshError};
    use std::collections::HashMap;
    use std::future::Future;
    use std::sync::Mutex;

    /// What the fake hosts saw and how they behave.
    #[derive(Default)]
    struct Script {
        /// (host, command), in the order they ran.
        log: Mutex<Vec<(String, String)>>,
        /// Every command on these hosts exits 1.
        failing: Vec<&'static str>,
        /// A command on this host sets the interrupted flag (Ctrl-C while it works).
        interrupt_on: Option<&'static str>,
        interrupted: Arc<AtomicBool>,
        /// Hosts running a command now, and the most seen at once per tier.
        running: Mutex<HashMap<String, usize>>,
        most_at_once: Mutex<HashMap<String, usize>>,
        /// What a balancer answers to the drain script.
        drain_answer: &'static str,
        /// What a balancer answers to the ready script (default: up).
        ready_answer: Option<&'static str>,
    }

    impl Rules {
        /// The lab's tiers: db, app, web, lb (the VIP tier); web drains via lb.
        fn stack(forks: usize, keep_going: bool) -> Rules {
            let tier = |name: &str| TierRule {
                name: name.into(),
                vip: name == "lb",
                rolling: Rolling::Batch(1),
                drain: (name == "web").then(|| Drain {
                    via: "lb".into(),
                    backend: "web".into(),
                    timeout: Duration::from_secs(5),
                }),
                first: None,
            };
            Rules {
                tiers: ["db", "app", "web", "lb"].into_iter().map(tier).collect(),
                forks: forks.max(1),
                keep_going,
            }
        }
    }

    /// A fake host: records each command, then answers after a short pause.
    struct Fake {
        host: &'static str,
        tier: &'static str,
        script: Arc<Script>,
    }

    impl Fake {
        fn enter(&self) {
            let s = &self.script;
            if let (Ok(mut log), Ok(mut running), Ok(mut most)) =
                (s.log.lock(), s.running.lock(), s.most_at_once.lock())
            {
                log.push((self.host.to_string(), String::new()));
                let n = running.entry(self.tier.to_string()).or_default();
                *n += 1;
                let m = most.entry(self.tier.to_string()).or_default();
                *m = (*m).max(*n);
            }
        }

        fn leave(&self) {
            if let Ok(mut running) = self.script.running.lock()
                && let Some(n) = running.get_mut(self.tier)
            {
                *n -= 1;
            }
        }
    }

    impl Transport for Fake {
        fn exec(
            &self,
            command: &str,
            _stdin: &[u8],
        ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send {
            self.enter();
            if let Ok(mut log) = self.script.log.lock()
                && let Some(last) = log.last_mut()
            {
                last.1 = command.to_string();
            }
            let status = u32::from(self.script.failing.contains(&self.host));
            if self.script.interrupt_on == Some(self.host) {
                self.script.interrupted.store(true, Ordering::SeqCst);
            }
            // The balancers' runtime API scripts answer as HAProxy would let them.
            let stdout = if command.contains("state drain") {
                self.script.drain_answer.as_bytes().to_vec()
            } else if command.contains("state ready") {
                self.script
                    .ready_answer
                    .unwrap_or("FP-READY up\n")
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            };
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.leave();
                Ok(ExecOutput {
                    status,
                    stdout,
                    stderr: b"scripted failure".to_vec(),
                })
            }
        }
    }

    /// A plan with one role whose only change is a handler.
    fn plan(host: &str, tier: &str) -> HostPlan {
        HostPlan {
            drain: None,
            host: host.into(),
            tier: tier.into(),
            address: "192.0.2.1".into(),
            init: Init::Systemd,
            packages_to_install: Vec::new(),
            packages_ready: false,
            stale_temps: Vec::new(),
            roles: vec![RolePlan {
                release: None,
                release_error: None,
                serving: false,
                interrupts: None,
                role: format!("{tier}-role"),
                drift: None,
                files: Vec::new(),
                certificates: Vec::new(),
                paths: Vec::new(),
                actions: vec![Action::Run {
                    handler: "touch".into(),
                    command: format!("echo {host}"),
                }],
                validate: None,
                health: Vec::new(),
            }],
        }
    }

    /// Hosts (name, tier, holds the VIP), all planned, in the order given.
    fn hosts(
        script: &Arc<Script>,
        list: &[(&'static str, &'static str, bool)],
    ) -> Vec<HostRun<Fake>> {
        list.iter()
            .map(|&(host, tier, vip)| {
                let mut h = HostRun::new(host, tier);
                h.session = Some(Arc::new(Fake {
                    host,
                    tier,
                    script: script.clone(),
                }));
                h.plan = Some(plan(host, tier));
                h.vips_held = usize::from(vip);
                h
            })
            .collect()
    }

    const STACK: &[(&str, &str, bool)] = &[
        ("lb1", "lb", true),
        ("web1", "web", false),
        ("lb2", "lb", false),
        ("app1", "app", false),
        ("db1", "db", false),
        ("web2", "web", false),
    ];

    async fn roll(script: &Arc<Script>, rules: &Rules) -> Vec<HostRun<Fake>> {
        let mut hs = hosts(script, STACK);
        order(&mut hs, rules);
        apply_with(&mut hs, rules, script, true).await;
        hs
    }

    async fn apply_with(hs: &mut [HostRun<Fake>], rules: &Rules, script: &Script, sudo: bool) {
        plan_drains(hs, rules, |_| vec!["lb1".into(), "lb2".into()]);
        let reporter = Reporter::new(Format::Json);
        let secrets = Secrets::default();
        let cx = Context {
            sudo,
            secrets: &secrets,
            reporter: &reporter,
            interrupted: &script.interrupted,
            lock: None,
            ca: None,
        };
        apply_all(hs, &[], rules, &cx).await;
    }

    /// Hosts in the order of their first command.
    fn first_seen(script: &Script) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (host, _) in script.log.lock().map(|l| l.clone()).unwrap_or_default() {
            if !seen.contains(&host) {
                seen.push(host);
            }
        }
        seen
    }

    fn outcome<'a>(hs: &'a [HostRun<Fake>], host: &str) -> &'a Outcome {
        hs.iter()
            .find(|h| h.name == host)
            .and_then(|h| h.outcome.as_ref())
            .unwrap_or_else(|| panic!("{host} has no outcome"))
    }

    #[tokio::test]
    async fn tiers_roll_in_order_and_the_vip_holder_goes_last() {
        let script = Arc::new(Script::default());
        let hs = roll(&script, &Rules::stack(10, false)).await;
        let seen = first_seen(&script);
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert_eq!(&seen[..2], ["db1", "app1"], "{seen:?}");
        let mut web: Vec<&str> = seen[2..4].iter().map(String::as_str).collect();
        web.sort_unstable();
        assert_eq!(web, ["web1", "web2"], "{seen:?}");
        assert_eq!(&seen[4..], ["lb2", "lb1"], "standby first, VIP holder last");
        for h in &hs {
            assert_eq!(h.outcome, Some(Outcome::Changed(1)), "{}", h.name);
        }
        // The handler ran once on each host, through sudo.
        let log = script.log.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(log.len(), 6, "{log:?}");
        assert!(
            log.iter()
                .all(|(h, c)| c.starts_with("sudo -n -- timeout -k 10 ")
                    && c.contains(&format!("echo {h}"))),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn parallel_tiers_respect_forks_and_serial_tiers_run_one_at_a_time() {
        let script = Arc::new(Script::default());
        roll(&script, &Rules::stack(2, false)).await;
        let most = script
            .most_at_once
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        assert_eq!(most.get("web"), Some(&2), "{most:?}");
        assert_eq!(most.get("lb"), Some(&1), "{most:?}");

        let script = Arc::new(Script::default());
        roll(&script, &Rules::stack(1, false)).await;
        let most = script
            .most_at_once
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        assert_eq!(most.get("web"), Some(&1), "{most:?}");
    }

    #[tokio::test]
    async fn a_failed_lb_keeps_its_peer_from_starting() {
        let script = Arc::new(Script {
            failing: vec!["lb2"],
            ..Script::default()
        });
        let hs = roll(&script, &Rules::stack(10, false)).await;
        assert!(
            matches!(outcome(&hs, "lb2"), Outcome::Failed(f) if f.kind == ErrorKind::Handler),
            "{:?}",
            outcome(&hs, "lb2")
        );
        match outcome(&hs, "lb1") {
            Outcome::Skipped(why) => assert!(why.contains("lb2 failed before it"), "{why}"),
            o => panic!("lb1 must not start: {o:?}"),
        }
        assert!(!first_seen(&script).contains(&"lb1".to_string()));
    }

    #[tokio::test]
    async fn keep_going_applies_the_peer_and_later_tiers_anyway() {
        let script = Arc::new(Script {
            failing: vec!["web1", "lb2"],
            ..Script::default()
        });
        let hs = roll(&script, &Rules::stack(10, true)).await;
        assert_eq!(outcome(&hs, "lb1"), &Outcome::Changed(1));
        assert_eq!(outcome(&hs, "web2"), &Outcome::Changed(1));
        assert!(outcome(&hs, "web1").is_failure());
        assert!(outcome(&hs, "lb2").is_failure());
    }

    #[tokio::test]
    async fn a_failed_tier_stops_the_later_tiers() {
        let script = Arc::new(Script {
            failing: vec!["app1"],
            ..Script::default()
        });
        let hs = roll(&script, &Rules::stack(10, false)).await;
        assert_eq!(first_seen(&script), ["db1", "app1"]);
        for later in ["web1", "web2", "lb1", "lb2"] {
            assert_eq!(
                outcome(&hs, later),
                &Outcome::Skipped("not started: tier app failed".into()),
                "{later}"
            );
        }
    }

    #[tokio::test]
    async fn a_host_that_could_not_be_planned_stops_the_apply_unless_keep_going() {
        let script = Arc::new(Script::default());
        let rules = Rules::stack(10, false);
        let mut hs = hosts(&script, STACK);
        hs[1].session = None;
        hs[1].plan = None;
        hs[1].outcome = Some(Outcome::unreachable(ErrorKind::Connect, "no route"));
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, false).await;
        assert!(first_seen(&script).is_empty(), "nothing may start");
        assert!(
            matches!(outcome(&hs, "db1"), Outcome::Skipped(w) if w.contains("could not be planned"))
        );
        assert!(matches!(outcome(&hs, "web1"), Outcome::Unreachable(_)));

        let rules = Rules::stack(10, true);
        for h in &mut hs {
            if h.name != "web1" {
                h.outcome = None;
            }
        }
        apply_with(&mut hs, &rules, &script, false).await;
        assert_eq!(outcome(&hs, "db1"), &Outcome::Changed(1));
        assert_eq!(outcome(&hs, "lb1"), &Outcome::Changed(1));
        // Without sudo the login shell starts timeout directly.
        let log = script.log.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(
            log.iter().all(|(_, c)| c.starts_with("timeout -k 10 ")),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn ctrl_c_finishes_the_host_in_flight_and_starts_nothing_new() {
        let script = Arc::new(Script {
            interrupt_on: Some("app1"),
            ..Script::default()
        });
        let hs = roll(&script, &Rules::stack(10, false)).await;
        assert_eq!(first_seen(&script), ["db1", "app1"]);
        assert_eq!(outcome(&hs, "db1"), &Outcome::Changed(1));
        assert_eq!(
            outcome(&hs, "app1"),
            &Outcome::Changed(1),
            "the step in flight finishes"
        );
        for later in ["web1", "web2", "lb2", "lb1"] {
            match outcome(&hs, later) {
                Outcome::Interrupted(i) => {
                    assert!(i.applied.is_empty(), "{later}");
                    assert_eq!(i.not_applied.len(), 1, "{later}");
                    assert!(i.note.starts_with("not started: interrupted"), "{}", i.note);
                }
                o => panic!("{later}: {o:?}"),
            }
        }
    }

    #[test]
    fn order_puts_unknown_tiers_last_and_the_vip_holder_after_its_peer() {
        let script = Arc::new(Script::default());
        let mut hs = hosts(
            &script,
            &[
                ("x1", "cache", false),
                ("lb1", "lb", true),
                ("lb2", "lb", false),
                ("db1", "db", false),
            ],
        );
        order(&mut hs, &Rules::stack(1, false));
        let names: Vec<&str> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1", "lb2", "lb1", "x1"]);
    }

    #[test]
    fn order_in_the_vip_tier_goes_by_vips_held_then_inventory_order() {
        let script = Arc::new(Script::default());
        let names = |held: [usize; 2]| {
            let mut hs = hosts(&script, &[("lb1", "lb", false), ("lb2", "lb", false)]);
            hs[0].vips_held = held[0];
            hs[1].vips_held = held[1];
            order(&mut hs, &Rules::stack(1, false));
            hs.iter().map(|h| h.name.clone()).collect::<Vec<_>>()
        };
        // Active-active, both up: each holds one VIP, inventory order.
        assert_eq!(names([1, 1]), ["lb1", "lb2"]);
        // lb1 holds both (its peer died and came back without taking its VIP yet): last.
        assert_eq!(names([2, 0]), ["lb2", "lb1"]);
        assert_eq!(names([1, 2]), ["lb1", "lb2"]);
    }

    #[test]
    fn rules_follow_the_inventory_tiers_with_at_least_one_fork() {
        let tier = |name: &str, vip: bool, rolling: Rolling| Tier {
            release: None,
            name: name.into(),
            roles: vec![],
            vars: Default::default(),
            vip,
            rolling,
            drain: None,
            identity_file: None,
        };
        let tiers = [
            tier("mon", false, Rolling::All),
            tier("db", false, Rolling::Batch(1)),
            tier("edge", true, Rolling::Batch(1)),
        ];
        let rules = Rules::new(&tiers, 0, true);
        let got: Vec<(&str, bool, Rolling)> = rules
            .tiers
            .iter()
            .map(|t| (t.name.as_str(), t.vip, t.rolling))
            .collect();
        assert_eq!(
            got,
            [
                ("mon", false, Rolling::All),
                ("db", false, Rolling::Batch(1)),
                ("edge", true, Rolling::Batch(1))
            ]
        );
        assert_eq!(rules.forks, 1);
        assert!(rules.keep_going);
        assert_eq!(Rules::new(&tiers, 7, false).forks, 7);
        assert!(!Rules::new(&tiers, 7, false).keep_going);
        assert_eq!(rules.tier("edge").map(|t| t.vip), Some(true));
        assert!(rules.tier("lb").is_none());
    }

    /// A plan that reloads (or restarts) a service that is serving.
    fn serving_plan(host: &str, tier: &str, restart: bool) -> HostPlan {
        let mut p = plan(host, tier);
        p.roles[0].serving = true;
        p.roles[0].actions = vec![if restart {
            Action::Restart {
                service: "nginx".into(),
            }
        } else {
            Action::Reload {
                service: "nginx".into(),
            }
        }];
        p
    }

    fn web_tier(script: &Arc<Script>, n: usize, restart: bool) -> Vec<HostRun<Fake>> {
        const NAMES: [&str; 4] = ["web1", "web2", "web3", "web4"];
        let mut hs = hosts(
            script,
            &NAMES[..n]
                .iter()
                .map(|h| (*h, "web", false))
                .collect::<Vec<_>>(),
        );
        for h in &mut hs {
            h.plan = Some(serving_plan(&h.name, "web", restart));
        }
        hs
    }

    fn most(script: &Script, tier: &str) -> Option<usize> {
        script
            .most_at_once
            .lock()
            .ok()
            .and_then(|m| m.get(tier).copied())
    }

    #[tokio::test]
    async fn hosts_that_interrupt_a_serving_service_roll_one_at_a_time_by_default() {
        let script = Arc::new(Script::default());
        let mut hs = web_tier(&script, 3, false);
        // A fourth host with a change nothing serves yet goes at once, first.
        let mut quiet = hosts(&script, &[("web4", "web", false)]);
        hs.append(&mut quiet);
        let rules = Rules::stack(10, false);
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(most(&script, "web"), Some(1));
        assert_eq!(first_seen(&script), ["web4", "web1", "web2", "web3"]);
        assert!(hs.iter().all(|h| h.outcome == Some(Outcome::Changed(1))));
    }

    /// The lab's hosts, each with a package to install.
    fn with_packages(script: &Arc<Script>) -> Vec<HostRun<Fake>> {
        let mut hs = hosts(
            script,
            &[
                ("db1", "db", false),
                ("app1", "app", false),
                ("web1", "web", false),
                ("lb2", "lb", false),
                ("lb1", "lb", true),
            ],
        );
        for h in &mut hs {
            if let Some(p) = &mut h.plan {
                p.packages_to_install = vec![format!("pkg-{}", h.name)];
            }
        }
        hs
    }

    fn installs(script: &Script) -> Vec<(String, bool)> {
        script
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(h, c)| (h, c.contains("apt-get install")))
            .collect()
    }

    #[tokio::test]
    async fn every_hosts_packages_are_installed_at_once_before_any_tier_rolls() {
        let script = Arc::new(Script::default());
        let mut hs = with_packages(&script);
        apply_with(&mut hs, &Rules::stack(10, false), &script, true).await;
        let log = installs(&script);
        // Five installations first (at once: forks allow it), then the tiers in order,
        // none of them installing again.
        assert!(log[..5].iter().all(|(_, apt)| *apt), "{log:?}");
        assert!(log[5..].iter().all(|(_, apt)| !*apt), "{log:?}");
        assert_eq!(
            most(&script, "lb"),
            Some(2),
            "both balancers installed at once"
        );
        let rolled: Vec<&str> = log[5..].iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(rolled, ["db1", "app1", "web1", "lb2", "lb1"]);
        assert!(
            hs.iter()
                .all(|h| h.outcome.as_ref().is_some_and(|o| !o.is_failure()))
        );
    }

    #[tokio::test]
    async fn a_failed_installation_fails_its_host_and_stops_the_later_tiers_only() {
        let script = Arc::new(Script {
            failing: vec!["web1"],
            ..Script::default()
        });
        let mut hs = with_packages(&script);
        apply_with(&mut hs, &Rules::stack(10, false), &script, true).await;
        assert!(outcome(&hs, "web1").is_failure());
        // db and app (before web) were applied; lb (after it) did not start.
        assert!(!outcome(&hs, "db1").is_failure() && !outcome(&hs, "app1").is_failure());
        for lb in ["lb1", "lb2"] {
            assert!(
                matches!(outcome(&hs, lb), Outcome::Skipped(why) if why.contains("tier web failed")),
                "{lb}: {:?}",
                outcome(&hs, lb)
            );
        }
        // web1 ran its installation only.
        let web1: Vec<bool> = installs(&script)
            .into_iter()
            .filter(|(h, _)| h == "web1")
            .map(|(_, apt)| apt)
            .collect();
        assert_eq!(web1, [true]);
    }

    #[tokio::test]
    async fn the_tiers_first_host_goes_alone_before_its_quiet_and_rolled_hosts() {
        let script = Arc::new(Script::default());
        let mut hs = web_tier(&script, 3, false);
        let mut quiet = hosts(&script, &[("web4", "web", false)]);
        hs.append(&mut quiet);
        let mut rules = Rules::stack(10, false);
        rules.tiers[2].first = Some("web2".into());
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(first_seen(&script), ["web2", "web4", "web1", "web3"]);
        assert!(hs.iter().all(|h| h.outcome == Some(Outcome::Changed(1))));
    }

    #[tokio::test]
    async fn a_failed_first_host_keeps_the_rest_of_its_tier_from_starting() {
        let script = Arc::new(Script {
            failing: vec!["web2"],
            ..Script::default()
        });
        let mut hs = web_tier(&script, 3, false);
        let mut rules = Rules::stack(10, false);
        rules.tiers[2].first = Some("web2".into());
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(first_seen(&script), ["web2"]);
        for h in hs.iter().filter(|h| h.name != "web2") {
            assert!(
                matches!(&h.outcome, Some(Outcome::Skipped(why)) if why.contains("web2 failed before it")),
                "{}: {:?}",
                h.name,
                h.outcome
            );
        }
    }

    #[tokio::test]
    async fn batches_are_strict_and_all_goes_at_once() {
        let script = Arc::new(Script::default());
        let mut hs = web_tier(&script, 3, false);
        let mut rules = Rules::stack(10, false);
        rules.tiers[2].rolling = Rolling::Batch(2);
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(most(&script, "web"), Some(2));
        // web3 starts after both of the first batch ended: each host runs one command,
        // so the log is web1, web2 (either order), then web3.
        assert_eq!(first_seen(&script).last().map(String::as_str), Some("web3"));

        let script = Arc::new(Script::default());
        let mut hs = web_tier(&script, 4, false);
        rules.tiers[2].rolling = Rolling::All;
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(most(&script, "web"), Some(4));
        // ...and forks still bound it.
        let script = Arc::new(Script::default());
        let mut hs = web_tier(&script, 4, false);
        rules.forks = 3;
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(most(&script, "web"), Some(3));
    }

    #[tokio::test]
    async fn a_failed_batch_stops_the_tier_and_the_rest_keep_their_configuration() {
        let script = Arc::new(Script {
            failing: vec!["web1"],
            ..Script::default()
        });
        let mut hs = web_tier(&script, 3, false);
        apply_with(&mut hs, &Rules::stack(10, false), &script, true).await;
        assert!(outcome(&hs, "web1").is_failure());
        for later in ["web2", "web3"] {
            match outcome(&hs, later) {
                Outcome::Skipped(why) => assert!(
                    why.contains("web1 failed before it in tier web (one host at a time)")
                        && why.contains("keeps its configuration"),
                    "{why}"
                ),
                o => panic!("{later}: {o:?}"),
            }
        }
        assert_eq!(first_seen(&script), ["web1"]);

        // --keep-going rolls on.
        let script = Arc::new(Script {
            failing: vec!["web1"],
            ..Script::default()
        });
        let mut hs = web_tier(&script, 3, false);
        apply_with(&mut hs, &Rules::stack(10, true), &script, true).await;
        assert_eq!(outcome(&hs, "web3"), &Outcome::Changed(1));
    }

    /// The commands a host ran, in order.
    fn commands(script: &Script, host: &str) -> Vec<String> {
        script
            .log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(h, _)| h == host)
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_restart_is_drained_on_every_balancer_and_set_ready_after() {
        let script = Arc::new(Script {
            drain_answer: "FP-DRAIN drained 0\n",
            ..Script::default()
        });
        // lb1 is selected (its plan is empty: nothing applied); lb2 is a peer only.
        let mut hs = drained_web_tier(&script, 2, true);
        let peers = [Peer {
            name: "lb2".to_string(),
            tier: "lb".to_string(),
            session: Arc::new(Fake {
                host: "lb2",
                tier: "lb",
                script: script.clone(),
            }),
        }];
        let rules = Rules::stack(10, false);
        order(&mut hs, &rules);
        let reporter = Reporter::new(Format::Json);
        let secrets = Secrets::default();
        let cx = Context {
            sudo: true,
            secrets: &secrets,
            reporter: &reporter,
            interrupted: &script.interrupted,
            lock: None,
            ca: None,
        };
        plan_drains(&mut hs, &rules, |_| vec!["lb1".into(), "lb2".into()]);
        assert!(hs.iter().filter(|h| h.tier == "web").all(|h| {
            h.plan
                .as_ref()
                .is_some_and(|p| p.drain.as_ref().is_some_and(|d| d.backend == "web"))
        }));
        apply_all(&mut hs, &peers, &rules, &cx).await;
        let log: Vec<(String, String)> = script.log.lock().map(|l| l.clone()).unwrap_or_default();
        let step = |host: &str, what: &str| {
            log.iter()
                .position(|(h, c)| h == host && c.contains(what))
                .unwrap_or_else(|| panic!("{host} never ran {what}: {log:?}"))
        };
        for lb in ["lb1", "lb2"] {
            // web1: drained, restarted, ready; then web2 the same.
            assert!(step(lb, "s=web1;") < step("web1", "restart"), "{log:?}");
            let web1_ready = log
                .iter()
                .position(|(h, c)| h == lb && c.contains("s=web1;") && c.contains("state ready"))
                .unwrap_or(usize::MAX);
            assert!(step("web1", "restart") < web1_ready, "{log:?}");
            assert!(web1_ready < step("web2", "restart"), "{log:?}");
        }
        assert_eq!(
            commands(&script, "lb1").len(),
            4,
            "2 drains + 2 readies, nothing applied"
        );
        assert_eq!(outcome(&hs, "web1"), &Outcome::Changed(1));
        assert_eq!(outcome(&hs, "web2"), &Outcome::Changed(1));
    }

    /// `n` web hosts restarting (or reloading), lb1 selected with nothing to apply.
    fn drained_web_tier(script: &Arc<Script>, n: usize, restart: bool) -> Vec<HostRun<Fake>> {
        let mut hs = web_tier(script, n, restart);
        let mut lbs = hosts(script, &[("lb1", "lb", true)]);
        lbs[0].plan = Some(HostPlan {
            roles: vec![],
            ..plan("lb1", "lb")
        });
        hs.append(&mut lbs);
        hs
    }

    #[tokio::test]
    async fn a_host_the_balancers_do_not_see_up_again_fails_and_stops_the_tier() {
        let script = Arc::new(Script {
            drain_answer: "FP-DRAIN drained 0\n",
            ready_answer: Some("FP-READY down DOWN 1/2\n"),
            ..Script::default()
        });
        let mut hs = drained_web_tier(&script, 2, true);
        let rules = Rules::stack(10, false);
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        match outcome(&hs, "web1") {
            Outcome::Failed(f) => {
                assert_eq!(f.kind, ErrorKind::Drain);
                assert!(
                    f.message
                        .contains("web1 was changed and passed its health checks")
                        && f.message.contains("DOWN 1/2"),
                    "{}",
                    f.message
                );
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(outcome(&hs, "web2"), Outcome::Skipped(_)));

        // A host whose apply failed keeps that failure; it is still set ready.
        let script = Arc::new(Script {
            drain_answer: "FP-DRAIN drained 0\n",
            ready_answer: Some("FP-READY down DOWN\n"),
            failing: vec!["web1"],
            ..Script::default()
        });
        let mut hs = drained_web_tier(&script, 2, true);
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        match outcome(&hs, "web1") {
            Outcome::Failed(f) => assert_eq!(f.kind, ErrorKind::Handler, "{}", f.message),
            o => panic!("{o:?}"),
        }
        assert!(
            commands(&script, "lb1")
                .iter()
                .any(|c| c.contains("s=web1;") && c.contains("state ready")),
            "set ready after the failed apply"
        );
    }

    #[tokio::test]
    async fn the_vip_tier_goes_one_at_a_time_whatever_its_rolling_says() {
        let script = Arc::new(Script::default());
        let mut rules = Rules::stack(10, false);
        rules.tiers[3].rolling = Rolling::All;
        let mut hs = hosts(&script, &[("lb1", "lb", true), ("lb2", "lb", false)]);
        for h in &mut hs {
            h.plan = Some(serving_plan(&h.name, "lb", false));
        }
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(most(&script, "lb"), Some(1));
        assert_eq!(first_seen(&script), ["lb2", "lb1"]);
    }

    #[tokio::test]
    async fn a_refused_drain_leaves_the_host_untouched_and_stops_the_tier() {
        let script = Arc::new(Script {
            drain_answer: "FP-DRAIN error No such server.\n",
            ..Script::default()
        });
        let mut hs = drained_web_tier(&script, 2, true);
        let rules = Rules::stack(10, false);
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        match outcome(&hs, "web1") {
            Outcome::Failed(f) => {
                assert_eq!(f.kind, ErrorKind::Drain);
                assert!(f.message.contains("No such server"), "{}", f.message);
                assert!(
                    f.message.contains("nothing was changed on web1"),
                    "{}",
                    f.message
                );
            }
            o => panic!("{o:?}"),
        }
        assert!(
            commands(&script, "web1").is_empty(),
            "web1 must not be touched"
        );
        assert!(matches!(outcome(&hs, "web2"), Outcome::Skipped(_)));
        // A reload is not drained (it keeps serving).
        let script = Arc::new(Script {
            drain_answer: "FP-DRAIN error unused\n",
            ..Script::default()
        });
        let mut hs = drained_web_tier(&script, 1, false);
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(outcome(&hs, "web1"), &Outcome::Changed(1));
        assert!(commands(&script, "lb1").is_empty());
    }

    #[test]
    fn failures_stop_a_rollout_but_interruptions_and_skips_do_not() {
        let interrupted = Outcome::Interrupted(Interruption {
            applied: vec![],
            not_applied: vec![],
            note: String::new(),
        });
        let rows = [
            (None, false),
            (Some(Outcome::Ok), false),
            (Some(Outcome::Changed(2)), false),
            (Some(Outcome::failed(ErrorKind::Handler, "x")), true),
            (Some(Outcome::unreachable(ErrorKind::Connect, "x")), true),
            (Some(interrupted), false),
            (Some(Outcome::Skipped("x".into())), false),
        ];
        for (o, want) in rows {
            assert_eq!(failed(o.as_ref()), want, "{o:?}");
        }
    }

    #[test]
    fn a_host_kept_from_starting_by_ctrl_c_lists_the_roles_with_changes() {
        let mut p = plan("web1", "web");
        assert_eq!(
            not_started(&HostPlan {
                roles: vec![],
                ..p.clone()
            }),
            Outcome::Ok
        );
        let empty = RolePlan {
            role: "empty".into(),
            actions: vec![],
            ..p.roles[0].clone()
        };
        let with_action = RolePlan {
            role: "action".into(),
            ..p.roles[0].clone()
        };
        p.roles = vec![empty, with_action];
        match not_started(&p) {
            Outcome::Interrupted(i) => {
                assert_eq!(i.not_applied, ["action"]);
                assert!(i.applied.is_empty());
            }
            o => panic!("{o:?}"),
        }
        // Only stale temps: not empty, no role listed.
        let mut temps = plan("web1", "web");
        temps.roles.clear();
        temps.stale_temps = vec!["/etc/x.tmp".into()];
        assert!(matches!(not_started(&temps), Outcome::Interrupted(i) if i.not_applied.is_empty()));
    }

    #[tokio::test]
    async fn a_host_whose_tier_is_not_in_the_rollout_is_skipped() {
        let script = Arc::new(Script::default());
        let rules = Rules::stack(10, false);
        let mut hs = hosts(&script, &[("db1", "db", false), ("x1", "cache", false)]);
        order(&mut hs, &rules);
        apply_with(&mut hs, &rules, &script, true).await;
        assert_eq!(first_seen(&script), ["db1"]);
        assert_eq!(
            outcome(&hs, "x1"),
            &Outcome::Skipped("not started: its tier is not in the rollout".into())
        );
    }

    #[tokio::test]
    async fn in_a_parallel_tier_a_failed_host_does_not_skip_its_peers() {
        let script = Arc::new(Script {
            failing: vec!["web1"],
            ..Script::default()
        });
        // One fork: web2 starts after web1 has failed.
        let hs = roll(&script, &Rules::stack(1, false)).await;
        assert!(outcome(&hs, "web1").is_failure());
        assert_eq!(outcome(&hs, "web2"), &Outcome::Changed(1));
        assert_eq!(
            outcome(&hs, "lb1"),
            &Outcome::Skipped("not started: tier web failed".into())
        );
    }

    #[tokio::test]
    async fn ctrl_c_before_the_rollout_starts_nothing() {
        let script = Arc::new(Script::default());
        script.interrupted.store(true, Ordering::SeqCst);
        let rules = Rules::stack(10, false);
        let mut hs = hosts(&script, &[("db1", "db", false), ("web1", "web", false)]);
        hs[1].plan = None;
        apply_with(&mut hs, &rules, &script, true).await;
        assert!(first_seen(&script).is_empty());
        assert!(matches!(outcome(&hs, "db1"), Outcome::Interrupted(_)));
        // A host without a plan has nothing to report as not applied.
        assert!(matches!(outcome(&hs, "web1"), Outcome::Skipped(_)));
    }
}
