//! The stack's health as Prometheus sees it, for `status`: the one script run on the
//! monitoring host (a pure builder), the parsers of Prometheus's HTTP API answers, and the
//! summary per tier and host (which tier to reprovision), as text or JSON. Pure: no I/O.
//!
//! Everything here comes from a host and is untrusted: the answers are bounded in size on
//! the host and here, parsed with serde_json into the few fields used, and every string
//! shown goes through [`crate::shell::printable`] and is cut to a bounded length.

use crate::shell;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `status` JSON document's version: bumped only when a field changes meaning or goes.
pub const FORMAT_VERSION: u32 = 1;

/// Largest answer read from Prometheus per API call (bytes), on the host and here.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The line that ends each section of the script's output.
const SECTION_END: &str = "--foobar-status-section-end--";

/// Longest string from the host shown (characters): labels, errors, summaries.
const MAX_SHOWN: usize = 200;

/// What `status` asks Prometheus, in the order the script prints the answers.
pub const QUERIES: [&str; 3] = [
    "/api/v1/targets?state=active",
    "/api/v1/alerts",
    "/api/v1/query?query=foobar_vip_held",
];

/// The script run on the monitoring host (as the login user: it needs no root): the host's
/// clock, then each of [`QUERIES`] asked of Prometheus on 127.0.0.1:`port`: the answer, a
/// line `http=CODE` (curl's `000` when it could not connect; its message is in the answer),
/// all cut at [`MAX_ANSWER_BYTES`], then a line [`SECTION_END`].
pub fn script(port: u16) -> String {
    let mut s = String::from("date +%s\n");
    for q in QUERIES {
        s.push_str(&format!(
            "curl -sS --max-time 10 -w '\\nhttp=%{{http_code}}' {url} 2>&1 | head -c {max}; echo; echo {end}\n",
            url = shell::quote(&format!("http://127.0.0.1:{port}{q}")),
            max = MAX_ANSWER_BYTES,
            end = SECTION_END,
        ));
    }
    s
}

/// The script's output, split: the host's clock and the answer to each query.
#[derive(Debug, PartialEq)]
pub struct Answers {
    /// The monitoring host's clock (Unix seconds): alert ages are measured against it, so
    /// this machine's clock does not matter.
    pub now: i64,
    pub targets: String,
    pub alerts: String,
    pub vip: String,
}

/// Splits the script's output. An error says which part is missing or malformed.
pub fn split_output(out: &str) -> Result<Answers, String> {
    let (clock, rest) = out
        .split_once('\n')
        .ok_or("the output ends before the host's clock")?;
    let now: i64 = clock
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not the host's clock", shown(clock)))?;
    let mut sections = Vec::new();
    let mut rest = rest;
    for q in QUERIES {
        let marker = format!("\n{SECTION_END}\n");
        let (section, after) = rest
            .split_once(&marker)
            .ok_or_else(|| format!("no complete answer to {q}"))?;
        // `BODY\nhttp=CODE` (curl's own message, if any, may follow CODE).
        let (body, status) = section.rsplit_once("\nhttp=").ok_or_else(|| {
            format!("the answer to {q} is cut (larger than {MAX_ANSWER_BYTES} bytes?)")
        })?;
        let code = status.get(..3).unwrap_or(status);
        if code != "200" {
            return Err(format!(
                "Prometheus did not answer {q} (HTTP status {}): {}",
                shown(code),
                shown(format!("{body} {}", status.get(3..).unwrap_or("")).trim())
            ));
        }
        sections.push(body.trim_end_matches('\n').to_string());
        rest = after;
    }
    let [targets, alerts, vip] =
        <[String; 3]>::try_from(sections).map_err(|_| "the answers are not three".to_string())?;
    Ok(Answers {
        now,
        targets,
        alerts,
        vip,
    })
}

// ---- Prometheus's HTTP API, the fields used -------------------------------------------

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct TargetsData {
    #[serde(rename = "activeTargets", default)]
    active_targets: Vec<RawTarget>,
}

#[derive(Deserialize)]
struct RawTarget {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    health: String,
    #[serde(rename = "lastError", default)]
    last_error: String,
}

#[derive(Deserialize)]
struct AlertsData {
    #[serde(default)]
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
struct RawAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    state: String,
    #[serde(rename = "activeAt", default)]
    active_at: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(default)]
    result: Vec<RawSample>,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix time, "value"]`.
    value: (serde_json::Value, String),
}

/// One API answer's `data`, or why there is none.
fn data<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, String> {
    if text.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "the answer to {what} is larger than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    let env: Envelope<T> = serde_json::from_str(text).map_err(|e| {
        format!(
            "the answer to {what} is not Prometheus API JSON ({e}): {}",
            shown(text)
        )
    })?;
    if env.status != "success" {
        return Err(format!(
            "Prometheus answered {what} with status `{}`: {}",
            shown(&env.status),
            shown(env.error.as_deref().unwrap_or("no error given"))
        ));
    }
    env.data
        .ok_or_else(|| format!("the answer to {what} has no data"))
}

/// A scrape target: what it scrapes, where, and whether the last scrape worked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub job: String,
    pub tier: String,
    pub host: String,
    pub up: bool,
    /// Why the last scrape failed (empty when up).
    pub error: String,
}

/// An alert Prometheus holds (firing, or pending: its condition holds, not yet long enough).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub name: String,
    pub tier: String,
    pub host: String,
    pub firing: bool,
    /// Seconds since its condition began to hold (`None`: unknown).
    pub for_seconds: Option<i64>,
    pub summary: String,
}

/// A load balancer's `foobar_vip_held`.
#[derive(Debug, Clone, PartialEq)]
pub struct VipSample {
    pub host: String,
    pub held: bool,
}

pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let d: TargetsData = data("/api/v1/targets", text)?;
    Ok(d.active_targets
        .into_iter()
        .map(|t| Target {
            job: label(&t.labels, "job"),
            tier: label(&t.labels, "tier"),
            host: label(&t.labels, "host"),
            up: t.health == "up",
            // Right after a converge Prometheus has not scraped a new target yet.
            error: if t.health == "unknown" && t.last_error.is_empty() {
                "not scraped yet: run status again in a few seconds".to_string()
            } else {
                shown(&t.last_error)
            },
        })
        .collect())
}

/// The alerts; `now` (Unix seconds, the host's clock) gives their age.
pub fn parse_alerts(text: &str, now: i64) -> Result<Vec<Alert>, String> {
    let d: AlertsData = data("/api/v1/alerts", text)?;
    Ok(d.alerts
        .into_iter()
        .filter(|a| a.state == "firing" || a.state == "pending")
        .map(|a| Alert {
            name: label(&a.labels, "alertname"),
            tier: label(&a.labels, "tier"),
            host: label(&a.labels, "host"),
            firing: a.state == "firing",
            for_seconds: a
                .active_at
                .as_deref()
                .and_then(unix_seconds)
                .map(|t| (now - t).max(0)),
            summary: a
                .annotations
                .get("summary")
                .map(|s| shown(s))
                .unwrap_or_default(),
        })
        .collect())
}

/// The samples of `foobar_vip_held` for the VIP `only` (the inventory's first VIP: with two
/// VIPs, active-active, each LB holds one and reports both); `None`: every sample.
pub fn parse_vip(text: &str, only: Option<&str>) -> Result<Vec<VipSample>, String> {
    let d: QueryData = data("/api/v1/query?query=foobar_vip_held", text)?;
    Ok(d.result
        .into_iter()
        .filter(|s| match (only, s.metric.get("vip")) {
            (Some(want), Some(got)) => got == want,
            _ => true,
        })
        .map(|s| VipSample {
            host: label(&s.metric, "host"),
            held: s.value.1.trim().parse::<f64>().is_ok_and(|v| v == 1.0),
        })
        .collect())
}

fn label(labels: &BTreeMap<String, String>, name: &str) -> String {
    labels.get(name).map(|v| shown(v)).unwrap_or_default()
}

/// A string from the host as it may be shown: printable, on one line, bounded.
fn shown(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    let p = shell::printable(&one_line);
    match p.char_indices().nth(MAX_SHOWN) {
        Some((i, _)) => format!("{}...", &p[..i]),
        None => p,
    }
}

/// `2026-12-01T13:34:49.677926731Z` (RFC 3339, as Prometheus writes times) as Unix seconds;
/// `None` for anything else. Fractions are dropped; `Z` or a `+HH:MM`/`-HH:MM` offset.
pub fn unix_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Fraction, then the zone.
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && &z[3..4] == ":" => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if z.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m{sec:02}s"),
        (0, h, m, _) => format!("{h}h{m:02}m"),
        (d, h, _, _) => format!("{d}d{h:02}h"),
    }
}

// ---- the summary ----------------------------------------------------------------------

/// What the inventory says about one host (the summary lists hosts in its order).
#[derive(Debug, Clone)]
pub struct InventoryHost {
    pub name: String,
    pub tier: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHealth {
    pub name: String,
    /// `up`: every target up; `down`: one is down; `not scraped`: Prometheus has no target
    /// for it (the monitoring tier was not applied since the host was added).
    pub state: HostState,
    pub targets: Vec<Target>,
    pub alerts: Vec<Alert>,
    /// This load balancer holds the VIP (`foobar_vip_held` 1).
    pub holds_vip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Up,
    Down,
    NotScraped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierHealth {
    pub name: String,
    pub healthy: bool,
    pub hosts: Vec<HostHealth>,
    /// The command that reprovisions this tier, when it is unhealthy.
    pub reprovision: Option<String>,
}

/// The `status` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub format_version: u32,
    /// The monitoring host asked.
    pub prometheus: String,
    pub healthy: bool,
    pub tiers: Vec<TierHealth>,
    /// Load balancers holding the VIP (exactly one when all is well); `None` when no host
    /// reports `foobar_vip_held` (no vip_metric role, or no load balancer scraped).
    pub vip_holders: Option<Vec<String>>,
    /// Firing and pending alerts, firing first.
    pub alerts: Vec<Alert>,
    pub targets_total: usize,
    pub targets_down: usize,
}

/// Groups targets, alerts and the VIP samples by tier and host, in the inventory's order
/// (targets or alerts naming a host the inventory lacks, such as the site probe's `vip`,
/// are listed under their tier after its hosts). `apply` is the command line that
/// reprovisions a tier, without the tier: `foobar-provision apply INVENTORY`.
pub fn summarize(
    prometheus: &str,
    inventory: &[InventoryHost],
    tiers: &[String],
    targets: Vec<Target>,
    mut alerts: Vec<Alert>,
    vip: &[VipSample],
    apply: &str,
) -> Summary {
    alerts.sort_by_key(|a| (!a.firing, std::cmp::Reverse(a.for_seconds)));
    let mut tier_names: Vec<String> = tiers.to_vec();
    for t in targets
        .iter()
        .map(|t| &t.tier)
        .chain(alerts.iter().map(|a| &a.tier))
    {
        if !t.is_empty() && !tier_names.contains(t) {
            tier_names.push(t.clone());
        }
    }
    let holders: Vec<String> = vip
        .iter()
        .filter(|s| s.held)
        .map(|s| s.host.clone())
        .collect();
    let mut out_tiers = Vec::new();
    for tier in &tier_names {
        let mut names: Vec<String> = inventory
            .iter()
            .filter(|h| &h.tier == tier)
            .map(|h| h.name.clone())
            .collect();
        let known = names.len();
        for n in targets
            .iter()
            .filter(|t| &t.tier == tier)
            .map(|t| &t.host)
            .chain(alerts.iter().filter(|a| &a.tier == tier).map(|a| &a.host))
        {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let hosts: Vec<HostHealth> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ts: Vec<Target> = targets
                    .iter()
                    .filter(|t| &t.tier == tier && &t.host == name)
                    .cloned()
                    .collect();
                let state = if ts.is_empty() {
                    if i < known {
                        HostState::NotScraped
                    } else {
                        HostState::Up
                    }
                } else if ts.iter().all(|t| t.up) {
                    HostState::Up
                } else {
                    HostState::Down
                };
                HostHealth {
                    name: name.clone(),
                    state,
                    alerts: alerts
                        .iter()
                        .filter(|a| &a.tier == tier && &a.host == name)
                        .cloned()
                        .collect(),
                    holds_vip: holders.contains(name),
                    targets: ts,
                }
            })
            .collect();
        let healthy = hosts
            .iter()
            .all(|h| h.state == HostState::Up && h.alerts.iter().all(|a| !a.firing))
            && !alerts.iter().any(|a| a.firing && &a.tier == tier);
        out_tiers.push(TierHealth {
            name: tier.clone(),
            healthy,
            reprovision: (!healthy).then(|| format!("{apply} --tier {}", shell::quote(tier))),
            hosts,
        });
    }
    // A host that is not scraped is the monitoring tier's to fix (its config predates the
    // host): reprovisioning the host's own tier would not help.
    let not_scraped = out_tiers
        .iter()
        .any(|t| t.hosts.iter().any(|h| h.state == HostState::NotScraped));
    if not_scraped {
        for t in &mut out_tiers {
            if t.hosts.iter().all(|h| h.state != HostState::Down)
                && t.hosts.iter().all(|h| h.alerts.iter().all(|a| !a.firing))
                && !alerts.iter().any(|a| a.firing && a.tier == t.name)
            {
                t.reprovision = None;
            }
        }
    }
    let targets_down = targets.iter().filter(|t| !t.up).count();
    let healthy = out_tiers.iter().all(|t| t.healthy) && !alerts.iter().any(|a| a.firing);
    Summary {
        format_version: FORMAT_VERSION,
        prometheus: prometheus.to_string(),
        healthy,
        tiers: out_tiers,
        vip_holders: (!vip.is_empty()).then_some(holders),
        alerts,
        targets_total: targets.len(),
        targets_down,
    }
}

/// The summary as text, for people.
pub fn text(s: &Summary, vip: Option<&str>, mon_tier_fix: Option<&str>) -> String {
    let mut out = String::new();
    let firing = s.alerts.iter().filter(|a| a.firing).count();
    out.push_str(&format!(
        "Prometheus on {}: {} targets, {} down; {} alert{} firing\n",
        s.prometheus,
        s.targets_total,
        s.targets_down,
        firing,
        if firing == 1 { "" } else { "s" }
    ));
    for t in &s.tiers {
        out.push_str(&format!(
            "\ntier {}: {}\n",
            t.name,
            if t.healthy { "ok" } else { "UNHEALTHY" }
        ));
        for h in &t.hosts {
            let state = match h.state {
                HostState::Up => "up",
                HostState::Down => "DOWN",
                HostState::NotScraped => "NOT SCRAPED",
            };
            let jobs: Vec<String> = h
                .targets
                .iter()
                .map(|t| {
                    if t.up {
                        t.job.clone()
                    } else if t.error.is_empty() {
                        format!("{} down", t.job)
                    } else {
                        format!("{} down ({})", t.job, t.error)
                    }
                })
                .collect();
            let line = format!(
                "  {:<10} {:<11} {}{}",
                h.name,
                state,
                jobs.join(", "),
                if h.holds_vip { "  [holds the VIP]" } else { "" }
            );
            out.push_str(line.trim_end());
            out.push('\n');
            for a in &h.alerts {
                out.push_str(&format!(
                    "  {:<10} {} {}{}: {}\n",
                    "",
                    if a.firing { "FIRING " } else { "pending" },
                    a.name,
                    a.for_seconds
                        .map(|d| format!(" for {}", duration_text(d)))
                        .unwrap_or_default(),
                    a.summary
                ));
            }
        }
    }
    if let Some(holders) = &s.vip_holders {
        let vip = vip.unwrap_or("VIP");
        out.push('\n');
        out.push_str(&match holders.as_slice() {
            [] => format!("VIP {vip}: held by NO load balancer\n"),
            [one] => format!("VIP {vip}: held by {one}\n"),
            many => format!(
                "VIP {vip}: held by {} load balancers at once ({}): split brain\n",
                many.len(),
                many.join(", ")
            ),
        });
    }
    let fixes: Vec<&TierHealth> = s.tiers.iter().filter(|t| !t.healthy).collect();
    if s.healthy {
        out.push_str("\nall tiers healthy\n");
    } else {
        let names: Vec<&str> = fixes.iter().map(|t| t.name.as_str()).collect();
        out.push_str(&format!(
            "\nunhealthy: tier{} {}\n",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
        let cmds: Vec<&String> = fixes
            .iter()
            .filter_map(|t| t.reprovision.as_ref())
            .collect();
        if !cmds.is_empty() {
            out.push_str("reprovision with:\n");
            for c in cmds {
                out.push_str(&format!("  {c}\n"));
            }
        }
        let not_scraped = s
            .tiers
            .iter()
            .any(|t| t.hosts.iter().any(|h| h.state == HostState::NotScraped));
        if let Some(fix) = mon_tier_fix.filter(|_| not_scraped) {
            out.push_str(&format!(
                "hosts NOT SCRAPED are missing from Prometheus's config: {fix}\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from Debian bookworm's Prometheus 2.42 (prometheus 2.42.0+ds-5+deb12u1),
    // scraping a node exporter with the vip_metric textfile (lb1) and a closed port (web1),
    // evaluating the rendered foobar rules.
    const TARGETS: &str = include_str!("../tests/data/prometheus/targets.json");
    const ALERTS: &str = include_str!("../tests/data/prometheus/alerts.json");
    const VIP: &str = include_str!("../tests/data/prometheus/vip.json");
    /// The host's clock when ALERTS was recorded plus 65 s (activeAt 13:34:49.68Z).
    const NOW: i64 = 1_796_132_089 + 65;

    fn inv() -> Vec<InventoryHost> {
        [("lb1", "lb"), ("lb2", "lb"), ("web1", "web"), ("db1", "db")]
            .into_iter()
            .map(|(n, t)| InventoryHost {
                name: n.into(),
                tier: t.into(),
            })
            .collect()
    }

    fn tiers() -> Vec<String> {
        ["db", "web", "lb"].into_iter().map(String::from).collect()
    }

    fn target(job: &str, tier: &str, host: &str, up: bool) -> Target {
        Target {
            job: job.into(),
            tier: tier.into(),
            host: host.into(),
            up,
            error: if up {
                String::new()
            } else {
                "connection refused".into()
            },
        }
    }

    fn all_up() -> Vec<Target> {
        vec![
            target("node", "lb", "lb1", true),
            target("haproxy", "lb", "lb1", true),
            target("node", "lb", "lb2", true),
            target("node", "web", "web1", true),
            target("nginx", "web", "web1", true),
            target("node", "db", "db1", true),
            target("site", "lb", "vip", true),
        ]
    }

    const APPLY: &str = "foobar-provision apply inventories/lab.yml";

    #[test]
    fn the_script_asks_prometheus_on_loopback_bounded_and_marks_each_answer() {
        assert_eq!(
            script(9090),
            "date +%s\n\
             curl -sS --max-time 10 -w '\\nhttp=%{http_code}' 'http://127.0.0.1:9090/api/v1/targets?state=active' 2>&1 | head -c 4194304; echo; echo --foobar-status-section-end--\n\
             curl -sS --max-time 10 -w '\\nhttp=%{http_code}' http://127.0.0.1:9090/api/v1/alerts 2>&1 | head -c 4194304; echo; echo --foobar-status-section-end--\n\
             curl -sS --max-time 10 -w '\\nhttp=%{http_code}' 'http://127.0.0.1:9090/api/v1/query?query=foobar_vip_held' 2>&1 | head -c 4194304; echo; echo --foobar-status-section-end--\n"
        );
    }

    fn output(targets: &str, alerts: &str, vip: &str, http: [&str; 3]) -> String {
        format!(
            "1796132154\n{targets}\nhttp={}\n{SECTION_END}\n{alerts}\nhttp={}\n{SECTION_END}\n{vip}\nhttp={}\n{SECTION_END}\n",
            http[0], http[1], http[2]
        )
    }

    #[test]
    fn the_output_splits_into_the_clock_and_three_answers() {
        let a = split_output(&output(
            TARGETS.trim(),
            ALERTS.trim(),
            VIP.trim(),
            ["200", "200", "200"],
        ))
        .expect("splits");
        assert_eq!(a.now, 1_796_132_154);
        assert_eq!(a.targets, TARGETS.trim());
        assert_eq!(a.alerts, ALERTS.trim());
        assert_eq!(a.vip, VIP.trim());
    }

    #[test]
    fn a_failed_curl_or_a_cut_output_is_an_error_naming_the_query() {
        // curl's message may come before or after its -w output.
        for out in [
            output(
                "curl: (7) Failed to connect to 127.0.0.1 port 9090",
                "{}",
                "{}",
                ["000", "200", "200"],
            ),
            output(
                "",
                "{}",
                "{}",
                [
                    "000curl: (7) Failed to connect to 127.0.0.1 port 9090",
                    "200",
                    "200",
                ],
            ),
        ] {
            let e = split_output(&out).expect_err("curl failed");
            assert!(
                e.contains("/api/v1/targets")
                    && e.contains("HTTP status 000")
                    && e.contains("Failed to connect"),
                "{e}"
            );
        }
        let e = split_output(&output("{}", "{}", "{}", ["200", "503", "200"])).expect_err("503");
        assert!(e.contains("/api/v1/alerts (HTTP status 503)"), "{e}");
        let cut = output("{}", "{}", "{}", ["200", "200", "200"]);
        let e = split_output(&cut[..cut.len() - 10]).expect_err("cut");
        assert!(e.contains("foobar_vip_held"), "{e}");
        assert!(split_output("").is_err());
        assert!(
            split_output("yesterday\n")
                .expect_err("clock")
                .contains("clock")
        );
    }

    #[test]
    fn recorded_targets_parse_with_their_tier_host_and_health() {
        let t = parse_targets(TARGETS).expect("parses");
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t[0].job.as_str(),
                t[0].tier.as_str(),
                t[0].host.as_str(),
                t[0].up
            ),
            ("node", "lb", "lb1", true)
        );
        assert_eq!((t[1].host.as_str(), t[1].up), ("web1", false));
        assert!(t[1].error.contains("connection refused"), "{}", t[1].error);
    }

    #[test]
    fn recorded_alerts_parse_with_their_age_on_the_hosts_clock() {
        let a = parse_alerts(ALERTS, NOW).expect("parses");
        assert_eq!(a.len(), 2);
        assert_eq!(
            (
                a[0].name.as_str(),
                a[0].tier.as_str(),
                a[0].host.as_str(),
                a[0].firing
            ),
            ("HostDown", "web", "web1", true)
        );
        assert_eq!(a[0].for_seconds, Some(65));
        assert_eq!(
            a[0].summary,
            "web1 (web) does not answer: its node exporter is unreachable"
        );
    }

    #[test]
    fn a_target_not_scraped_yet_says_so() {
        let text = r#"{"status":"success","data":{"activeTargets":[
            {"labels":{"job":"node","tier":"web","host":"web1"},"health":"unknown","lastError":""},
            {"labels":{"job":"nginx","tier":"web","host":"web1"},"health":"down","lastError":"connection refused"}
        ]}}"#;
        let t = parse_targets(text).expect("parses");
        assert!(!t[0].up);
        assert!(t[0].error.starts_with("not scraped yet"), "{:?}", t[0]);
        assert_eq!(t[1].error, "connection refused");
    }

    #[test]
    fn recorded_vip_samples_say_who_holds_it() {
        assert_eq!(
            parse_vip(VIP, None).expect("parses"),
            parse_vip(VIP, Some("127.0.0.1")).expect("parses"),
        );
        assert_eq!(
            parse_vip(VIP, Some("127.0.0.2")).expect("parses"),
            vec![],
            "another VIP's samples are left out"
        );
        assert_eq!(
            parse_vip(VIP, None).expect("parses"),
            vec![VipSample {
                host: "lb1".into(),
                held: true
            }]
        );
    }

    /// Active-active: each LB reports both VIPs; the first VIP's holder is the one shown.
    #[test]
    fn with_two_vips_only_the_first_one_is_summarized() {
        let sample = |host: &str, vip: &str, v: &str| {
            format!(
                r#"{{"metric":{{"__name__":"foobar_vip_held","host":"{host}","vip":"{vip}"}},"value":[1796132089.1,"{v}"]}}"#
            )
        };
        let text = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{},{},{},{}]}}}}"#,
            sample("lb1", "10.0.0.1", "1"),
            sample("lb1", "10.0.0.2", "0"),
            sample("lb2", "10.0.0.1", "0"),
            sample("lb2", "10.0.0.2", "1"),
        );
        let first = parse_vip(&text, Some("10.0.0.1")).expect("parses");
        let held: Vec<&str> = first
            .iter()
            .filter(|s| s.held)
            .map(|s| s.host.as_str())
            .collect();
        assert_eq!(held, ["lb1"]);
        let s = summarize("mon1", &inv(), &tiers(), all_up(), vec![], &first, APPLY);
        assert!(
            text_of(&s).contains("VIP 10.0.0.1: held by lb1\n"),
            "{}",
            text_of(&s)
        );
        assert_eq!(parse_vip(&text, None).expect("parses").len(), 4);
    }

    fn text_of(s: &Summary) -> String {
        text(s, Some("10.0.0.1"), None)
    }

    #[test]
    fn api_errors_and_junk_are_errors_not_panics() {
        let e = parse_targets(r#"{"status":"error","errorType":"bad_data","error":"oops"}"#)
            .expect_err("error status");
        assert!(e.contains("`error`") && e.contains("oops"), "{e}");
        for junk in [
            "",
            "null",
            "[]",
            "{",
            "{\"status\":\"success\"}",
            "<html>502</html>",
        ] {
            assert!(parse_targets(junk).is_err(), "{junk}");
            assert!(parse_alerts(junk, 0).is_err(), "{junk}");
            assert!(parse_vip(junk, None).is_err(), "{junk}");
        }
        // Wrong types inside: refused, no panic.
        assert!(
            parse_vip(
                r#"{"status":"success","data":{"result":[{"metric":{},"value":7}]}}"#,
                None
            )
            .is_err()
        );
        let big = format!(
            "{{\"status\":\"success\",\"data\":{{\"activeTargets\":[]}},\"x\":\"{}\"}}",
            "a".repeat(MAX_ANSWER_BYTES)
        );
        assert!(
            parse_targets(&big)
                .expect_err("too big")
                .contains("larger than")
        );
    }

    #[test]
    fn strings_from_the_host_are_printable_one_line_and_bounded() {
        let hostile = format!(
            r#"{{"status":"success","data":{{"alerts":[{{"labels":{{"alertname":"X\u001b[2J","tier":"web","host":"web1\nFAKE"}},"annotations":{{"summary":"{}"}},"state":"firing","activeAt":"garbage"}}]}}}}"#,
            "s".repeat(1000)
        );
        let a = parse_alerts(&hostile, NOW).expect("parses");
        assert_eq!(a[0].name, "X^[[2J");
        assert_eq!(a[0].host, "web1 FAKE");
        assert_eq!(a[0].for_seconds, None);
        assert_eq!(a[0].summary.chars().count(), MAX_SHOWN + 3);
    }

    #[test]
    fn rfc3339_times_as_prometheus_writes_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-12-01T13:34:49.677926731Z"),
            Some(1_796_132_089)
        );
        assert_eq!(unix_seconds("2000-02-29T12:00:00+02:00"), Some(951_818_400));
        assert_eq!(unix_seconds("2000-02-29T12:00:00-00:30"), Some(951_827_400));
        for bad in [
            "",
            "0001-01-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01 00:00:00Z",
            "2026-12-01T00:00:00+0200",
            "２０２６-12-01T00:00:00Z",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(-3), "0s");
        assert_eq!(duration_text(42), "42s");
        assert_eq!(duration_text(65), "1m05s");
        assert_eq!(duration_text(3720), "1h02m");
        assert_eq!(duration_text(90000), "1d01h");
    }

    #[test]
    fn all_up_and_no_alert_is_healthy_with_the_vip_holder() {
        let vip = [
            VipSample {
                host: "lb1".into(),
                held: true,
            },
            VipSample {
                host: "lb2".into(),
                held: false,
            },
        ];
        let s = summarize("mon1", &inv(), &tiers(), all_up(), vec![], &vip, APPLY);
        assert!(s.healthy);
        assert_eq!(s.vip_holders, Some(vec!["lb1".to_string()]));
        let names: Vec<&str> = s.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["db", "web", "lb"]);
        let lb: Vec<(&str, bool)> = s.tiers[2]
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.holds_vip))
            .collect();
        assert_eq!(lb, [("lb1", true), ("lb2", false), ("vip", false)]);
        assert!(s.tiers.iter().all(|t| t.reprovision.is_none()));
        let t = text(&s, Some("172.30.77.10"), None);
        assert!(t.contains("VIP 172.30.77.10: held by lb1\n"), "{t}");
        assert!(t.ends_with("all tiers healthy\n"), "{t}");
    }

    /// Issue 8: nginx stopped on web1: `status` names tier web, host web1 and the command.
    #[test]
    fn a_firing_alert_names_its_tier_host_and_the_command_that_reprovisions_the_tier() {
        let mut targets = all_up();
        targets[4].up = false; // web1's nginx exporter
        targets[4].error = "connection refused".into();
        let alerts = vec![
            Alert {
                name: "NginxDown".into(),
                tier: "web".into(),
                host: "web1".into(),
                firing: true,
                for_seconds: Some(65),
                summary: "nginx does not answer on web1".into(),
            },
            Alert {
                name: "DiskNearlyFull".into(),
                tier: "db".into(),
                host: "db1".into(),
                firing: false,
                for_seconds: Some(5),
                summary: "/ on db1 has 9% free".into(),
            },
        ];
        let s = summarize("mon1", &inv(), &tiers(), targets, alerts, &[], APPLY);
        assert!(!s.healthy);
        let web = &s.tiers[1];
        assert!(!web.healthy);
        assert_eq!(
            web.reprovision.as_deref(),
            Some("foobar-provision apply inventories/lab.yml --tier web")
        );
        assert_eq!(web.hosts[0].state, HostState::Down);
        // A pending alert is shown, not counted.
        assert!(s.tiers[0].healthy, "{:?}", s.tiers[0]);
        assert_eq!(s.alerts[0].name, "NginxDown", "firing first");
        assert_eq!(s.vip_holders, None);
        let t = text(&s, None, None);
        assert!(t.contains("tier web: UNHEALTHY\n"), "{t}");
        assert!(
            t.contains("  web1       DOWN        node, nginx down (connection refused)\n"),
            "{t}"
        );
        assert!(
            t.contains("FIRING  NginxDown for 1m05s: nginx does not answer on web1\n"),
            "{t}"
        );
        assert!(t.contains("pending DiskNearlyFull for 5s"), "{t}");
        assert!(t.contains("unhealthy: tier web\nreprovision with:\n  foobar-provision apply inventories/lab.yml --tier web\n"), "{t}");
        assert!(
            t.starts_with("Prometheus on mon1: 7 targets, 1 down; 1 alert firing\n"),
            "{t}"
        );
    }

    #[test]
    fn the_vip_on_no_lb_or_on_two_is_said() {
        let none = [VipSample {
            host: "lb1".into(),
            held: false,
        }];
        let s = summarize("mon1", &inv(), &tiers(), all_up(), vec![], &none, APPLY);
        assert!(
            text(&s, Some("10.0.0.1"), None).contains("VIP 10.0.0.1: held by NO load balancer\n")
        );
        let two = [
            VipSample {
                host: "lb1".into(),
                held: true,
            },
            VipSample {
                host: "lb2".into(),
                held: true,
            },
        ];
        let s = summarize("mon1", &inv(), &tiers(), all_up(), vec![], &two, APPLY);
        assert!(
            text(&s, Some("10.0.0.1"), None)
                .contains("held by 2 load balancers at once (lb1, lb2): split brain")
        );
    }

    #[test]
    fn a_host_prometheus_does_not_scrape_is_the_monitoring_tiers_to_fix() {
        let targets: Vec<Target> = all_up().into_iter().filter(|t| t.host != "lb2").collect();
        let s = summarize("mon1", &inv(), &tiers(), targets, vec![], &[], APPLY);
        assert!(!s.healthy);
        let lb = &s.tiers[2];
        assert_eq!(lb.hosts[1].state, HostState::NotScraped);
        assert_eq!(
            lb.reprovision, None,
            "reapplying lb would not make Prometheus scrape it"
        );
        let t = text(
            &s,
            None,
            Some("foobar-provision apply inventories/lab.yml --tier mon"),
        );
        assert!(t.contains("hosts NOT SCRAPED are missing from Prometheus's config: foobar-provision apply inventories/lab.yml --tier mon\n"), "{t}");
    }

    #[test]
    fn the_json_document_has_its_version_and_snake_case_states() {
        let s = summarize("mon1", &inv(), &tiers(), all_up(), vec![], &[], APPLY);
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["healthy"], true);
        assert_eq!(v["tiers"][0]["hosts"][0]["state"], "up");
        assert_eq!(v["vip_holders"], serde_json::Value::Null);
    }
}
