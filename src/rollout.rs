//! The rollout rules: which host is applied when, and what stops a rollout.
//!
//! - Tiers one after another, in the order of [`Rules::tiers`] (db, app, web, lb for the
//!   stack).
//! - Within a tier, hosts in parallel, at most [`Rules::forks`] at once. A serial tier (the
//!   lb pair) goes one host at a time, the VIP holder last, and a failed host keeps the
//!   next one from starting: the peer that still serves the VIP must not get the same
//!   broken change.
//! - A failed tier stops the later tiers, and a host that could not be planned stops the
//!   whole apply before anything starts, unless [`Rules::keep_going`].
//! - Ctrl-C (the `interrupted` flag): the host in flight finishes its step, no new tier or
//!   host starts, and every host not started says what it did not get.
//!
//! Generic over [`Transport`]: the tests below run it on a scripted fake that records the
//! order of commands and fails or interrupts where told.

use crate::apply::{self, Remote};
use crate::inventory::TIER_ORDER;
use crate::plan::HostPlan;
use crate::progress::Reporter;
use crate::report::{Interruption, Outcome};
use crate::secrets::Secrets;
use crate::transport::Transport;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How one tier is rolled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    pub name: String,
    /// One host at a time, the VIP holder last; a failed host stops the tier.
    pub serial: bool,
}

/// The rules of a rollout.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Tiers in rollout order. A host whose tier is not listed is never applied.
    pub tiers: Vec<TierRule>,
    /// Hosts worked at the same time within a parallel tier (at least 1).
    pub forks: usize,
    /// Go on past failures (the run still fails).
    pub keep_going: bool,
}

impl Rules {
    /// The stack's rules: tiers in [`TIER_ORDER`], the lb tier serial.
    pub fn stack(forks: usize, keep_going: bool) -> Rules {
        Rules {
            tiers: TIER_ORDER
                .iter()
                .map(|t| TierRule {
                    name: (*t).to_string(),
                    serial: *t == "lb",
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
    /// Holds the VIP now (lb hosts): rolled out last in its tier.
    pub holds_vip: bool,
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
            holds_vip: false,
            elapsed: Duration::ZERO,
            round_trips: 0,
        }
    }
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
}

/// Sorts hosts into rollout order: by tier, and within a tier the VIP holder last.
pub fn order<T>(hosts: &mut [HostRun<T>], rules: &Rules) {
    hosts.sort_by_key(|h| (rules.position(&h.tier), h.holds_vip));
}

/// Applies every host's plan by the rules; every host without an outcome gets one.
/// `hosts` must be in [`order`].
pub async fn apply_all<T: Transport>(hosts: &mut [HostRun<T>], rules: &Rules, cx: &Context<'_>) {
    let mut stopped: Option<String> = None;
    if !rules.keep_going && hosts.iter().any(|h| failed(h.outcome.as_ref())) {
        cx.reporter.warn(
            "not applying: some hosts could not be planned (see the recap); --keep-going applies the others",
        );
        stopped = Some("not started: some hosts could not be planned".into());
    }
    for tier in &rules.tiers {
        if stopped.is_some() {
            break;
        }
        if cx.interrupted.load(Ordering::SeqCst) {
            cx.reporter.warn("interrupted: no further tier started");
            break;
        }
        apply_tier(hosts, tier, rules, cx).await;
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

/// Applies the hosts of one tier that have no outcome yet.
async fn apply_tier<T: Transport>(
    hosts: &mut [HostRun<T>],
    tier: &TierRule,
    rules: &Rules,
    cx: &Context<'_>,
) {
    // A fair semaphore: hosts start in the order they are listed (VIP holder last).
    let sem = Semaphore::new(if tier.serial { 1 } else { rules.forks });
    let failed_peer: Mutex<Option<String>> = Mutex::new(None);
    let (sem, failed_peer) = (&sem, &failed_peer);
    let work = hosts
        .iter_mut()
        .filter(|h| h.tier == tier.name && h.outcome.is_none())
        .map(|h| async move {
            let _permit = sem.acquire().await.ok();
            let (Some(session), Some(plan)) = (&h.session, &h.plan) else {
                return;
            };
            if cx.interrupted.load(Ordering::SeqCst) {
                h.outcome = Some(not_started(plan));
                return;
            }
            if tier.serial && !rules.keep_going {
                let peer = failed_peer.lock().ok().and_then(|p| p.clone());
                if let Some(peer) = peer {
                    h.outcome = Some(Outcome::Skipped(format!(
                        "not started: {peer} failed before it in tier {} (one host at a time); \
                         this host keeps its configuration",
                        tier.name
                    )));
                    return;
                }
            }
            let started = Instant::now();
            let remote = Remote {
                transport: session.as_ref(),
                sudo: cx.sudo,
                secrets: cx.secrets,
                reporter: cx.reporter,
                host: &h.name,
                interrupted: cx.interrupted,
                limits: apply::Limits::default(),
                lock: cx.lock.clone(),
            };
            let o = apply::apply_host(&remote, plan).await;
            if o.is_failure()
                && let Ok(mut p) = failed_peer.lock()
            {
                p.get_or_insert_with(|| h.name.clone());
            }
            cx.reporter.done(&h.name, &o);
            h.elapsed += started.elapsed();
            h.outcome = Some(o);
        });
    futures::future::join_all(work).await;
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
mod tests {
    use super::*;
    use crate::plan::{Action, RolePlan};
    use crate::progress::Format;
    use crate::report::ErrorKind;
    use crate::shell::Init;
    use crate::transport::{ExecOutput, SshError};
    use std::collections::HashMap;
    use std::future::Future;

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
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.leave();
                Ok(ExecOutput {
                    status,
                    stdout: Vec::new(),
                    stderr: b"scripted failure".to_vec(),
                })
            }
        }
    }

    /// A plan with one role whose only change is a handler.
    fn plan(host: &str, tier: &str) -> HostPlan {
        HostPlan {
            host: host.into(),
            tier: tier.into(),
            address: "192.0.2.1".into(),
            init: Init::Systemd,
            packages_to_install: Vec::new(),
            stale_temps: Vec::new(),
            roles: vec![RolePlan {
                role: format!("{tier}-role"),
                drift: None,
                files: Vec::new(),
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
                h.holds_vip = vip;
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
        let reporter = Reporter::new(Format::Json);
        let secrets = Secrets::default();
        let cx = Context {
            sudo,
            secrets: &secrets,
            reporter: &reporter,
            interrupted: &script.interrupted,
            lock: None,
        };
        apply_all(hs, rules, &cx).await;
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
            log.iter().all(
                |(h, c)| c.starts_with("sudo -n -- sh -c ") && c.contains(&format!("echo {h}"))
            ),
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
        // Without sudo the command goes to sh directly.
        let log = script.log.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(log.iter().all(|(_, c)| c.starts_with("sh -c ")), "{log:?}");
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
    fn stack_rules_follow_tier_order_with_lb_serial_and_at_least_one_fork() {
        let rules = Rules::stack(0, true);
        let tiers: Vec<(&str, bool)> = rules
            .tiers
            .iter()
            .map(|t| (t.name.as_str(), t.serial))
            .collect();
        assert_eq!(
            tiers,
            [("db", false), ("app", false), ("web", false), ("lb", true)]
        );
        assert_eq!(rules.forks, 1);
        assert!(rules.keep_going);
        assert_eq!(Rules::stack(7, false).forks, 7);
        assert!(!Rules::stack(7, false).keep_going);
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
