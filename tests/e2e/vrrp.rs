//! keepalived on the lab's two load balancers: the VIP stays put under load (no flapping
//! with the fast VRRP timing), and the active-active option (two VIPs, each LB master of
//! one) serves on both addresses, survives a killed LB and gives each VIP back to its
//! master. Each test ends with the lab converged by inventories/lab.yml (active-passive).

use crate::support::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The second VIP of the active-active test: a free address of the lab's network (hosts
/// are .11 to .51, Docker's own range .192/26).
const VIP2: &str = "172.30.77.9";

/// Seconds since the epoch, for `journalctl --since @SECS`.
fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// keepalived's state changes on `host` since `since` (epoch seconds): its `Entering ...
/// STATE` lines, from the host's journal.
fn transitions(host: &str, since: u64) -> Vec<String> {
    let (code, out, err) = docker_exec(
        host,
        &format!("journalctl -u keepalived --since @{since} -o cat --no-pager"),
    );
    assert_eq!(code, 0, "journalctl on {host}: {err}");
    out.lines()
        .filter(|l| l.contains("Entering") && l.contains("STATE"))
        .map(str::to_string)
        .collect()
}

/// 30 s of load through the VIP with the lab's VRRP timing: the VIP never moves (its
/// holder is sampled every 0.5 s and neither keepalived logs a state change), and no
/// request fails.
#[test]
#[ignore = "needs the lab"]
fn vip_does_not_move_under_load() {
    let _lab = converged_lab();
    let holder = wait_vip(None, 20).expect("one lb holds the VIP");
    let since = now_epoch();
    let load = Load::start("/api/visits", 16, Duration::from_secs(60));
    let mut seen = Vec::new();
    while load.elapsed() < Duration::from_secs(30) {
        seen.push(vip_holder());
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = load.stop();
    let moves: Vec<String> = ["lb1", "lb2"]
        .iter()
        .flat_map(|h| {
            transitions(h, since)
                .into_iter()
                .map(move |l| format!("{h}: {l}"))
        })
        .collect();
    let elsewhere = seen.iter().filter(|h| **h != Some(holder)).count();
    figure(&format!(
        "VIP under load for 30 s: {}; {elsewhere} of {} samples not on {holder}; {} keepalived state changes",
        report.summary(),
        seen.len(),
        moves.len()
    ));
    assert_eq!(elsewhere, 0, "the VIP left {holder}: {seen:?}");
    assert!(moves.is_empty(), "keepalived changed state: {moves:#?}");
    assert_eq!(
        report.failed(),
        0,
        "requests failed: {}",
        report.first_failures(5)
    );
}

/// Active-active: `vip: [172.30.77.10, 172.30.77.9]`. lb1 (priority 150) is master of
/// the first VIP and lb2 of the second; both serve the site over HTTPS. `docker kill lb2`:
/// both VIPs answer from lb1. lb2 boots again: each VIP returns to its master, once.
/// Then the lab's active-passive inventory puts the second VIP away.
#[test]
#[ignore = "needs the lab"]
fn active_active_two_vips_each_with_its_master() {
    let _lab = converged_lab();
    // Whatever happens, the lab ends converged with inventories/lab.yml (one VIP).
    let _restore = restore();
    let (inv, _dir) = lab_inventory("active-active", |t| {
        t.replace(
            "vip: 172.30.77.10\n",
            &format!("vip: [172.30.77.10, {VIP2}]\n"),
        )
    });
    assert!(
        std::fs::read_to_string(&inv).is_ok_and(|t| t.contains(VIP2)),
        "the temp inventory lists {VIP2}"
    );
    let inv = inv.to_string_lossy().to_string();
    let root = root().to_string_lossy().to_string();

    let run = tool(&["apply", "--yes", &inv, "--root", &root, "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let conf = inside("lb2", "cat /etc/keepalived/keepalived.conf");
    assert!(
        conf.contains(VIP2),
        "lb2's keepalived.conf has {VIP2}:\n{conf}"
    );

    // Each VIP on its master, and both serve.
    assert_eq!(
        wait_holder(VIP, Some("lb1"), 20),
        Some("lb1"),
        "{VIP} on lb1"
    );
    assert_eq!(
        wait_holder(VIP2, Some("lb2"), 20),
        Some("lb2"),
        "{VIP2} on lb2"
    );
    for addr in [VIP, VIP2] {
        let (code, body) = https_at(addr, "/api/visits");
        assert_eq!(code, 0, "the site through {addr}: {body}");
        assert!(!body.contains("503"), "the site through {addr}: {body}");
    }
    assert_no_changes(&inv, &["--root", &root], LAB_HOSTS);

    // lb2 dies: lb1 holds and serves both.
    let since = now_epoch();
    let p1 = Prober::start_at(VIP, Duration::from_millis(100), Duration::from_secs(60));
    let p2 = Prober::start_at(VIP2, Duration::from_millis(100), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let (code, _, err) = docker(&["kill", "lb2"]);
    assert_eq!(code, 0, "docker kill lb2: {err}");
    assert_eq!(
        wait_holder(VIP2, Some("lb1"), 20),
        Some("lb1"),
        "{VIP2} moves to lb1"
    );
    std::thread::sleep(Duration::from_secs(3));
    let (probes1, probes2) = (p1.stop(), p2.stop());
    assert_eq!(holder_of(VIP), Some("lb1"), "{VIP} stays on lb1");
    for addr in [VIP, VIP2] {
        let (code, body) = https_at(addr, "/api/visits");
        assert_eq!(code, 0, "the site through {addr} from lb1: {body}");
    }
    let failed = |p: &[Probe]| p.iter().filter(|p| !p.ok).count();
    figure(&format!(
        "active-active, docker kill lb2: {} of {} requests to {VIP} failed, {} of {} to {VIP2}",
        failed(&probes1),
        probes1.len(),
        failed(&probes2),
        probes2.len()
    ));
    assert!(
        probes2.last().is_some_and(|p| p.ok),
        "{VIP2} serves again from lb1"
    );
    assert_eq!(failed(&probes1), 0, "{VIP} (on lb1 all along) kept serving");

    // lb2 boots again: it takes its VIP back, lb1 keeps its own.
    lab_up(None);
    assert_eq!(
        wait_holder(VIP2, Some("lb2"), 45),
        Some("lb2"),
        "{VIP2} returns to lb2"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(holder_of(VIP), Some("lb1"), "{VIP} still on lb1");
    assert_eq!(holder_of(VIP2), Some("lb2"), "{VIP2} still on lb2");
    for addr in [VIP, VIP2] {
        let (code, body) = https_eventually_at(addr, "/api/visits", 20);
        assert_eq!(code, 0, "the site through {addr}: {body}");
    }
    // No flapping: lb1 took the second VIP once and gave it back once.
    let moves = transitions("lb1", since);
    let to_master = moves.iter().filter(|l| l.contains("MASTER")).count();
    assert!(
        to_master <= 1,
        "lb1 became master of {VIP2} more than once: {moves:#?}"
    );
    assert_no_changes(&inv, &["--root", &root], LAB_HOSTS);

    // Back to active-passive: the second VIP is gone from both hosts.
    converge();
    assert_eq!(wait_vip(Some("lb1"), 20), Some("lb1"));
    assert_eq!(holder_of(VIP2), None, "{VIP2} is released");
    let conf = inside("lb1", "cat /etc/keepalived/keepalived.conf");
    assert!(!conf.contains(VIP2), "lb1's keepalived.conf:\n{conf}");
    assert_no_changes("inventories/lab.yml", &[], LAB_HOSTS);
}

/// As [`https_eventually`], at `addr`.
fn https_eventually_at(addr: &str, path: &str, secs: u64) -> (i32, String) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, body) = https_at(addr, path);
        let served = code == 0 && !body.contains("503 Service Unavailable");
        if served || std::time::Instant::now() > until {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
