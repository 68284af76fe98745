//! The in-process benchmark (issue 12, part 4b): the tool's own CPU time and memory per
//! host at 1,000 and 10,000 hosts, without SSH. Every host answers after a fixed latency
//! per round trip ([`SimHost`]); its facts are those of a converged host, recorded from
//! its desired state. Two phases, as `apply` runs them: plan every host (facts, planner;
//! at most `forks` at once), then the rollout (tiers in order, forks, the VIP tier one at
//! a time) of one handler per host, which runs it and the role's health checks.
//!
//! Run by `bench/sim` (release build); it prints figures and asserts nothing:
//!   FP_SIM_HOSTS=1000,10000 FP_SIM_FORKS=100 FP_SIM_LATENCY_MS=20 bench/sim

use super::{Context, HostRun, Rules, apply_all, order};
use crate::desired::{DesiredHost, sha256_hex};
use crate::gather::Reader;
use crate::plan::Action;
use crate::progress::{Format, Reporter};
use crate::secrets::Secrets;
use crate::transport::{ExecOutput, SshError, Transport};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A simulated host: answers the facts script with `facts`, anything else with success,
/// each after `latency`; counts its round trips.
struct SimHost {
    facts: Arc<Vec<u8>>,
    latency: Duration,
    round_trips: Arc<AtomicU64>,
}

impl Transport for SimHost {
    fn exec(
        &self,
        command: &str,
        _stdin: &[u8],
    ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let stdout = if command.contains("INIT systemd") {
            self.facts.as_ref().clone()
        } else {
            Vec::new()
        };
        let latency = self.latency;
        async move {
            tokio::time::sleep(latency).await;
            Ok(ExecOutput {
                status: 0,
                stdout,
                stderr: Vec::new(),
            })
        }
    }
}

/// What the facts script prints on a host that is exactly as `d` wants it (certificates
/// and releases are left out of the benchmark's hosts).
fn converged_facts(d: &DesiredHost) -> Vec<u8> {
    let mut out = String::from("INIT systemd\n");
    for r in &d.roles {
        for f in &r.files {
            out.push_str(&format!("{}  {}\n", sha256_hex(&f.content), f.dest));
        }
    }
    for r in &d.roles {
        for f in &r.files {
            let raw = 0o100000 | f.mode;
            out.push_str(&format!("S {raw:x} {} {} {}\n", f.owner, f.group, f.dest));
        }
        for dir in &r.directories {
            let raw = 0o040000 | dir.mode;
            out.push_str(&format!(
                "S {raw:x} {} {} {}\n",
                dir.owner, dir.group, dir.path
            ));
        }
        for l in &r.links {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(l.target.as_bytes());
            out.push_str(&format!("NODE link {b64} {}\n", l.path));
        }
        for a in &r.absent {
            out.push_str(&format!("NODE none {}\n", a.path));
        }
    }
    for p in d.packages() {
        out.push_str(&format!("P {p} installed\n"));
    }
    for r in &d.roles {
        if let Some(s) = &r.service {
            let unit = if s.name.contains('.') {
                s.name.clone()
            } else {
                format!("{}.service", s.name)
            };
            let enabled = if s.enabled { "enabled" } else { "disabled" };
            out.push_str(&format!(
                "Id={unit}\nActiveState=active\nUnitFileState={enabled}\n\n"
            ));
        }
        if r.drift_check.is_some() {
            out.push_str(&format!("D ok {}\n", r.name));
        }
    }
    out.push_str("END\n");
    out.into_bytes()
}

/// This process's CPU time (user + system) so far, from /proc (USER_HZ = 100).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// `n` hosts made from the lab's: lb1 and lb2 as they are (the VIP tier goes one host at
/// a time), the others cycled over db, app, web and mon, each with its own name.
fn hosts(lab: &[DesiredHost], n: usize) -> Vec<DesiredHost> {
    let strip = |d: &DesiredHost| {
        let mut d = d.clone();
        for r in &mut d.roles {
            r.certificates.clear();
            r.release = None;
        }
        d
    };
    let (lbs, others): (Vec<&DesiredHost>, Vec<&DesiredHost>) =
        lab.iter().partition(|d| d.host.tier == "lb");
    let mut out: Vec<DesiredHost> = lbs.iter().take(n).map(|d| strip(d)).collect();
    for i in 0..n.saturating_sub(out.len()) {
        let mut d = strip(others[i % others.len()]);
        d.host.name = format!("{}-{i}", d.host.name);
        out.push(d);
    }
    out
}

/// One run: plan `n` hosts, then roll out one handler on each.
async fn run(
    lab: &[DesiredHost],
    inv: &crate::inventory::Inventory,
    n: usize,
    forks: usize,
    latency: Duration,
) {
    let rss_before = status_kib("VmRSS");
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let desired = hosts(lab, n);
    let round_trips = Arc::new(AtomicU64::new(0));
    let secrets = Secrets::default();
    let reporter = Reporter::new(Format::Json);
    let sem = tokio::sync::Semaphore::new(forks);
    let planned = futures::future::join_all(desired.iter().map(|d| {
        let (sem, round_trips, secrets) = (&sem, round_trips.clone(), &secrets);
        async move {
            let _permit = sem.acquire().await.ok();
            let host = Arc::new(SimHost {
                facts: Arc::new(converged_facts(d)),
                latency,
                round_trips,
            });
            let reader = Reader {
                transport: host.as_ref(),
                host: &d.host.name,
                sudo: true,
                secrets,
                vips: Vec::new(),
                lock: None,
                certs: None,
            };
            let mut run = HostRun::new(&d.host.name, &d.host.tier);
            match reader.plan(d).await {
                Ok(p) => run.plan = Some(p.plan),
                Err(o) => run.outcome = Some(o),
            }
            run.session = Some(host);
            run
        }
    }))
    .await;
    let mut runs: Vec<HostRun<SimHost>> = planned;
    let (plan_wall, plan_cpu) = (t0.elapsed(), cpu_time().saturating_sub(cpu0));
    let changes: usize = runs
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .map(|p| p.change_count())
        .sum();
    let failed = runs.iter().filter(|r| r.outcome.is_some()).count();
    if let Some((name, o)) = runs
        .iter()
        .find_map(|r| r.outcome.as_ref().map(|o| (&r.name, o)))
    {
        println!("  (the simulated facts are not those of a converged host: {name}: {o:?})");
    }
    let plan_trips = round_trips.load(Ordering::Relaxed);

    // One handler per host: the rollout runs it, then the role's health checks.
    for p in runs.iter_mut().filter_map(|r| r.plan.as_mut()) {
        if let Some(role) = p.roles.first_mut() {
            role.actions.push(Action::Run {
                handler: "bench".into(),
                command: "true".into(),
            });
        }
    }
    let (cpu1, t1) = (cpu_time(), Instant::now());
    let rules = Rules::new(&inv.tiers, forks, false);
    order(&mut runs, &rules);
    let interrupted = AtomicBool::new(false);
    let cx = Context {
        sudo: true,
        secrets: &secrets,
        reporter: &reporter,
        interrupted: &interrupted,
        lock: None,
        ca: None,
    };
    apply_all(&mut runs, &[], &rules, &cx).await;
    let (apply_wall, apply_cpu) = (t1.elapsed(), cpu_time().saturating_sub(cpu1));
    let changed = runs
        .iter()
        .filter(|r| matches!(r.outcome, Some(crate::report::Outcome::Changed(_))))
        .count();
    let apply_trips = round_trips.load(Ordering::Relaxed) - plan_trips;
    let peak = status_kib("VmHWM");
    let per_host_kib = peak.saturating_sub(rss_before) as f64 / n as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{n} hosts, forks {forks}, {} ms per round trip:\n  \
         plan:    wall {:.0} ms, tool CPU {:.0} ms ({:.3} ms per host), {plan_trips} round trips, \
         {changes} changes, {failed} hosts not planned\n  \
         rollout: wall {:.0} ms, tool CPU {:.0} ms ({:.3} ms per host), {apply_trips} round trips, \
         {changed} hosts changed (one handler each, health checks after)\n  \
         memory:  peak RSS {:.1} MiB (before the hosts: {:.1} MiB), {:.1} KiB per host",
        latency.as_millis(),
        ms(plan_wall),
        ms(plan_cpu),
        ms(plan_cpu) / n as f64,
        ms(apply_wall),
        ms(apply_cpu),
        ms(apply_cpu) / n as f64,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        per_host_kib,
    );
}

#[test]
#[ignore = "a benchmark: bench/sim runs it (release build); it prints figures"]
fn simulated_hosts() {
    let (inv, lab) = crate::render::tests::lab_rendered();
    let forks: usize = env_or("FP_SIM_FORKS", "100").parse().unwrap_or(100).max(1);
    let latency = Duration::from_millis(env_or("FP_SIM_LATENCY_MS", "20").parse().unwrap_or(20));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for n in env_or("FP_SIM_HOSTS", "1000,10000")
        .split(',')
        .filter_map(|n| n.trim().parse::<usize>().ok())
    {
        runtime.block_on(run(&lab, &inv, n, forks, latency));
    }
}
