//! `status`: the stack's health as its monitoring sees it. Over SSH to a host whose tier has
//! the prometheus role (the same connection code as `plan` and `apply`: strict host keys, no
//! new port open to the operator), one bounded command asks Prometheus on 127.0.0.1 for its
//! targets, its alerts and `foobar_vip_held`; [`crate::monitoring`] parses and summarizes
//! them per tier and host and names the tiers to reprovision. Exit 0 when every target is
//! up and no alert fires, else 1.

use super::reach::check_identities;
use super::{EXIT_FAIL, EXIT_OK, Loaded, close_sessions, load, refuse_run_options, select};
use crate::apply::{exec_bounded, timed_out};
use crate::cli::Common;
use crate::inventory::Host;
use crate::monitoring::{self, InventoryHost, MAX_ANSWER_BYTES, QUERIES, Summary};
use crate::progress::Format;
use crate::shell;
use crate::transport;
use anyhow::{Context, anyhow, bail};
use std::collections::BTreeSet;
use std::time::Duration;

/// The role whose hosts are asked.
const PROMETHEUS_ROLE: &str = "prometheus";
/// Where Prometheus listens on its host (the prometheus role's --web.listen-address).
const PROMETHEUS_PORT: u16 = 9090;
/// The whole remote command (three local HTTP calls of at most 10 s each).
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn status(c: &Common) -> anyhow::Result<i32> {
    refuse_run_options(c, "status")?;
    let l = load(c)?;
    let selected = select(&l, c)?;
    let apply = format!(
        "foobar-provision apply {}",
        shell::quote(&c.inventory.display().to_string())
    );
    let mons = monitoring_hosts(&l);
    if mons.is_empty() {
        eprintln!("{}", no_monitoring_tier(&c.inventory.display().to_string()));
        return Ok(EXIT_FAIL);
    }
    let mut failures = Vec::new();
    let mut answer = None;
    for h in &mons {
        match ask(&l, h).await {
            Ok(a) => {
                answer = Some((h, a));
                break;
            }
            Err(e) => failures.push(format!("{}: {e:#}", h.name)),
        }
    }
    let Some((mon, a)) = answer else {
        bail!(
            "no monitoring host answered:\n  {}\nhint: check that the host is up and converged \
             (`{apply} --tier {}`), then run status again",
            failures.join("\n  "),
            shell::quote(&mons[0].tier),
        );
    };
    // With two VIPs (active-active) status shows the first one's holder.
    let first_vip = l.inv.vip().map(|v| v.to_string());
    let (targets, alerts, vip) = (
        monitoring::parse_targets(&a.targets),
        monitoring::parse_alerts(&a.alerts, a.now),
        monitoring::parse_vip(&a.vip, first_vip.as_deref()),
    );
    let ctx = |e: String| anyhow!("{}: {e}", mon.name);
    let (mut targets, mut alerts, vip) = (
        targets.map_err(ctx)?,
        alerts.map_err(ctx)?,
        vip.map_err(ctx)?,
    );

    // --limit / --tier: only what concerns the selected hosts (and their tiers' probes).
    let names: BTreeSet<&str> = selected.iter().map(|h| h.name.as_str()).collect();
    let tiers: Vec<String> = l
        .inv
        .tiers
        .iter()
        .filter(|t| selected.iter().any(|h| h.tier == t.name))
        .map(|t| t.name.clone())
        .collect();
    let known: BTreeSet<&str> = l.inv.hosts.iter().map(|h| h.name.as_str()).collect();
    let keep = |tier: &str, host: &str| {
        tiers.iter().any(|t| t == tier) && (names.contains(host) || !known.contains(host))
    };
    if !c.limit.is_empty() || !c.tier.is_empty() {
        targets.retain(|t| keep(&t.tier, &t.host));
        alerts.retain(|a| keep(&a.tier, &a.host));
    }
    let inventory: Vec<InventoryHost> = selected
        .iter()
        .map(|h| InventoryHost {
            name: h.name.clone(),
            tier: h.tier.clone(),
        })
        .collect();
    let summary = monitoring::summarize(
        &format!("{} ({})", mon.name, mon.address),
        &inventory,
        &tiers,
        targets,
        alerts,
        &vip,
        &apply,
    );
    print(&summary, c, &l, &apply, &mon.tier)?;
    Ok(if summary.healthy { EXIT_OK } else { EXIT_FAIL })
}

/// Hosts of the tiers that run Prometheus, in inventory order.
fn monitoring_hosts(l: &Loaded) -> Vec<&Host> {
    l.inv.hosts_with_role(PROMETHEUS_ROLE).collect()
}

/// What to add when no tier runs Prometheus.
fn no_monitoring_tier(inventory: &str) -> String {
    format!(
        "error: {inventory}: no tier has the `{PROMETHEUS_ROLE}` role: nothing watches the stack, \
         and status has no Prometheus to ask\n\
         hint: add a monitoring tier (last in `tiers:`, so it is rolled out after the stack) and \
         a host in it:\n\
         \x20 tiers:\n\
         \x20   mon:\n\
         \x20     roles: [firewall, node_exporter, prometheus, alertmanager, blackbox_exporter]\n\
         \x20 hosts:\n\
         \x20   mon1: {{address: ADDRESS, tier: mon}}\n\
         then add node_exporter (and the other exporters) to the other tiers' roles and run\n\
         \x20 foobar-provision apply {}\n\
         (README, section Monitoring)",
        shell::quote(inventory)
    )
}

/// One monitoring host's answers, over one SSH connection and one command.
async fn ask(l: &Loaded, h: &Host) -> anyhow::Result<monitoring::Answers> {
    check_identities(&l.inv, &l.routes, &[h])?;
    let session = transport::connect(&l.route(h)?)
        .await
        .with_context(|| format!("connecting to {} ({})", h.name, h.address))?;
    let script = monitoring::script(PROMETHEUS_PORT);
    // As the login user: asking Prometheus on loopback needs no root.
    let out = exec_bounded(&session, &h.name, &script, b"", false, STATUS_TIMEOUT).await;
    close_sessions([session]).await;
    let out = out.map_err(|e| anyhow!("{}", shell::printable(&e)))?;
    if timed_out(&out) {
        bail!(
            "asking Prometheus took longer than {} s: is the host overloaded?",
            STATUS_TIMEOUT.as_secs()
        );
    }
    let limit = QUERIES.len() * (MAX_ANSWER_BYTES + 64) + 64;
    if out.stdout.len() > limit {
        bail!(
            "the host sent {} bytes, more than the {limit} the script can print: refused",
            out.stdout.len()
        );
    }
    if out.status != 0 {
        let err = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(2000)]).into_owned();
        bail!(
            "the status command failed (exit {}): {}",
            out.status,
            shell::printable(err.trim())
        );
    }
    monitoring::split_output(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow!(e))
}

fn print(s: &Summary, c: &Common, l: &Loaded, apply: &str, mon_tier: &str) -> anyhow::Result<()> {
    match c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(s)?),
        Format::Text | Format::Markdown => {
            let vip = l.inv.vip().map(|v| v.to_string());
            let fix = format!("{apply} --tier {}", shell::quote(mon_tier));
            print!("{}", monitoring::text(s, vip.as_deref(), Some(&fix)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_prometheus_tier_the_message_shows_what_to_add() {
        let m = no_monitoring_tier("inventories/prod.yml");
        assert!(
            m.starts_with("error: inventories/prod.yml: no tier has the `prometheus` role"),
            "{m}"
        );
        assert!(m.contains("      roles: [firewall, node_exporter, prometheus, alertmanager, blackbox_exporter]\n"), "{m}");
        assert!(
            m.contains("    mon1: {address: ADDRESS, tier: mon}\n"),
            "{m}"
        );
        assert!(
            m.contains("  foobar-provision apply inventories/prod.yml\n"),
            "{m}"
        );
    }
}
