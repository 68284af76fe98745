//! The recap at the end of `plan` and `apply`: one line per host in text, or the typed
//! JSON document ([`Recap`]) that CI and scripts read.

use super::outcome::{ErrorKind, Outcome};
use crate::plan::HostPlan;
use serde::Serialize;
use std::time::Duration;

/// Version of the JSON document's shape. Bumped when a field changes meaning or goes away
/// (adding a field does not bump it).
pub const FORMAT_VERSION: u32 = 1;

/// Which command produced the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Plan,
    Apply,
}

/// One host at the end of a run, as the recap needs it.
#[derive(Debug, Clone, Copy)]
pub struct HostEnd<'a> {
    pub host: &'a str,
    pub tier: &'a str,
    /// `None` only for a host that never got an outcome (reported as skipped).
    pub outcome: Option<&'a Outcome>,
    pub elapsed: Duration,
    pub round_trips: u32,
}

/// The `--format json` document of `plan` and `apply`.
#[derive(Debug, Serialize)]
pub struct Recap<'a> {
    pub format_version: u32,
    pub mode: RunMode,
    /// Every host that could be planned, in rollout order.
    pub plan: Vec<&'a HostPlan>,
    pub recap: Vec<HostRecap>,
    pub exit_code: i32,
    pub seconds: f64,
}

/// How a host ended, in the JSON recap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Unreachable,
    Interrupted,
    Skipped,
}

/// One host's line of the JSON recap.
#[derive(Debug, Serialize)]
pub struct HostRecap {
    pub host: String,
    pub tier: String,
    pub status: Status,
    /// Changes made (apply) or to make (plan).
    pub changes: usize,
    /// What failed, for a host that did not end well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    pub error: Option<String>,
    pub seconds: f64,
    pub round_trips: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applied_roles: Option<Vec<String>>,
}

/// Why a host without an outcome did not run.
const NOT_STARTED: &str = "not started: an earlier tier failed";

impl HostRecap {
    pub fn new(h: &HostEnd) -> HostRecap {
        let skipped = Outcome::Skipped(NOT_STARTED.into());
        let o = h.outcome.unwrap_or(&skipped);
        let (status, changes) = match o {
            Outcome::Ok => (Status::Ok, 0),
            Outcome::Changed(n) => (Status::Changed, *n),
            Outcome::Failed(_) => (Status::Failed, 0),
            Outcome::Unreachable(_) => (Status::Unreachable, 0),
            Outcome::Interrupted(_) => (Status::Interrupted, 0),
            Outcome::Skipped(_) => (Status::Skipped, 0),
        };
        let (applied_roles, not_applied_roles) = match o {
            Outcome::Interrupted(i) => (Some(i.applied.clone()), Some(i.not_applied.clone())),
            _ => (None, None),
        };
        HostRecap {
            host: h.host.to_string(),
            tier: h.tier.to_string(),
            status,
            changes,
            kind: o.kind(),
            error: o.error().map(str::to_string),
            seconds: h.elapsed.as_secs_f64(),
            round_trips: h.round_trips,
            applied_roles,
            not_applied_roles,
        }
    }
}

impl<'a> Recap<'a> {
    pub fn new(
        mode: RunMode,
        plan: Vec<&'a HostPlan>,
        hosts: &[HostEnd],
        exit_code: i32,
        total: Duration,
    ) -> Recap<'a> {
        Recap {
            format_version: FORMAT_VERSION,
            mode,
            plan,
            recap: hosts.iter().map(HostRecap::new).collect(),
            exit_code,
            seconds: total.as_secs_f64(),
        }
    }
}

/// The word a host ends with, in progress lines and the text recap.
pub fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Changed(n) => format!("changed ({n})"),
        Outcome::Failed(_) => "FAILED".into(),
        Outcome::Unreachable(_) => "UNREACHABLE".into(),
        Outcome::Interrupted(_) => "INTERRUPTED".into(),
        Outcome::Skipped(_) => "skipped (not started)".into(),
    }
}

/// The text recap: a line per host (name, tier, outcome, wall time), what went wrong
/// indented under it, then the run's total time.
pub fn recap_text(hosts: &[HostEnd], mode: RunMode, total: Duration) -> String {
    let mut out = String::from(match mode {
        RunMode::Apply => "RECAP (apply)\n",
        RunMode::Plan => "RECAP (plan)\n",
    });
    for h in hosts {
        let word = match h.outcome {
            Some(Outcome::Changed(n)) if mode == RunMode::Plan => format!("would change ({n})"),
            Some(o) => outcome_word(o),
            None => "skipped (not started)".into(),
        };
        out.push_str(&format!(
            "  {:<10} {:<4} {:<24} {:>6.2}s\n",
            h.host,
            h.tier,
            word,
            h.elapsed.as_secs_f64()
        ));
        if let Some(o) = h.outcome {
            out.push_str(&detail_lines(o));
        }
    }
    out.push_str(&format!("  total {:.2}s", total.as_secs_f64()));
    out
}

/// What the recap says under a host that did not end well.
fn detail_lines(o: &Outcome) -> String {
    let mut out = String::new();
    match o {
        Outcome::Failed(f) | Outcome::Unreachable(f) => {
            for line in f.message.lines() {
                out.push_str(&format!("      {line}\n"));
            }
        }
        Outcome::Interrupted(i) => {
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
        Outcome::Skipped(why) => out.push_str(&format!("      {why}\n")),
        Outcome::Ok | Outcome::Changed(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Failure, Interruption};

    fn end<'a>(host: &'a str, outcome: Option<&'a Outcome>) -> HostEnd<'a> {
        HostEnd {
            host,
            tier: "web",
            outcome,
            elapsed: Duration::from_millis(1500),
            round_trips: 1,
        }
    }

    #[test]
    fn json_recap_has_a_version_and_a_kind_per_failed_host() {
        let failed = Outcome::Failed(Failure::new(
            ErrorKind::HealthCheck,
            "health check `x` failed",
        ));
        let ok = Outcome::Ok;
        let hosts = [
            end("web1", Some(&failed)),
            end("web2", Some(&ok)),
            end("web3", None),
        ];
        let doc = Recap::new(RunMode::Apply, vec![], &hosts, 1, Duration::from_secs(2));
        let v = serde_json::to_value(&doc).unwrap_or_default();
        assert_eq!(v["format_version"], FORMAT_VERSION);
        assert_eq!(v["mode"], "apply");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["recap"][0]["status"], "failed");
        assert_eq!(v["recap"][0]["kind"], "health_check");
        assert_eq!(v["recap"][0]["error"], "health check `x` failed");
        assert_eq!(v["recap"][1]["status"], "ok");
        assert!(v["recap"][1].get("kind").is_none(), "{v}");
        assert!(v["recap"][1]["error"].is_null());
        assert_eq!(v["recap"][2]["status"], "skipped");
        assert_eq!(v["recap"][2]["kind"], "not_started");
        assert_eq!(v["recap"][1]["seconds"], 1.5);
        assert_eq!(v["recap"][1]["round_trips"], 1);
    }

    #[test]
    fn interrupted_hosts_list_their_roles() {
        let o = Outcome::Interrupted(Interruption {
            applied: vec!["firewall".into()],
            not_applied: vec!["nginx".into()],
            note: "stopped before role nginx".into(),
        });
        let r = HostRecap::new(&end("web1", Some(&o)));
        assert_eq!(r.status, Status::Interrupted);
        assert_eq!(r.applied_roles, Some(vec!["firewall".to_string()]));
        assert_eq!(r.not_applied_roles, Some(vec!["nginx".to_string()]));
        let text = recap_text(&[end("web1", Some(&o))], RunMode::Apply, Duration::ZERO);
        assert!(text.contains("applied: firewall\n"), "{text}");
        assert!(text.contains("not applied: nginx\n"), "{text}");
    }

    #[test]
    fn text_recap_says_would_change_in_a_plan_and_indents_errors() {
        let changed = Outcome::Changed(2);
        let failed = Outcome::unreachable(ErrorKind::Connect, "line one\nline two");
        let hosts = [end("web1", Some(&changed)), end("web2", Some(&failed))];
        let plan = recap_text(&hosts, RunMode::Plan, Duration::from_secs(1));
        assert!(plan.starts_with("RECAP (plan)\n"), "{plan}");
        assert!(plan.contains("would change (2)"), "{plan}");
        assert!(plan.contains("UNREACHABLE"), "{plan}");
        assert!(plan.contains("      line one\n      line two\n"), "{plan}");
        assert!(plan.ends_with("total 1.00s"), "{plan}");
        let apply = recap_text(&hosts, RunMode::Apply, Duration::from_secs(1));
        assert!(
            apply.contains("changed (2)") && !apply.contains("would"),
            "{apply}"
        );
    }
}
