//! The recap at the end of `plan` and `apply`: one line per host in text, or the typed
//! JSON document ([`Recap`]) that CI and scripts read.

use super::outcome::{ErrorKind, Outcome};
use crate::plan::HostPlan;
use crate::secrets::Secrets;
use crate::timings::HostTimings;
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
    /// How long its roles and steps took (none: not recorded).
    pub timings: Option<&'a HostTimings>,
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
    /// `--var KEY=VALUE` given on the command line (absent when none).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
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

impl Status {
    /// How `o` ended, as the recap says it.
    pub fn of(o: &Outcome) -> Status {
        match o {
            Outcome::Ok => Status::Ok,
            Outcome::Changed(_) => Status::Changed,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Unreachable(_) => Status::Unreachable,
            Outcome::Interrupted(_) => Status::Interrupted,
            Outcome::Skipped(_) => Status::Skipped,
        }
    }

    /// The status as one word, the same as in the JSON recap (and the host's audit log).
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Unreachable => "unreachable",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
        }
    }
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
    /// The role being applied when the host failed (absent when it failed outside one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub seconds: f64,
    pub round_trips: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applied_roles: Option<Vec<String>>,
    /// Per role and per step, in seconds (like Ansible's profile_tasks).
    pub timings: HostTimings,
}

/// Why a host without an outcome did not run.
const NOT_STARTED: &str = "not started: an earlier tier failed";

impl HostRecap {
    pub fn new(h: &HostEnd) -> HostRecap {
        let skipped = Outcome::Skipped(NOT_STARTED.into());
        let o = h.outcome.unwrap_or(&skipped);
        let changes = match o {
            Outcome::Changed(n) => *n,
            _ => 0,
        };
        let (applied_roles, not_applied_roles) = match o {
            Outcome::Interrupted(i) => (Some(i.applied.clone()), Some(i.not_applied.clone())),
            _ => (None, None),
        };
        HostRecap {
            host: h.host.to_string(),
            tier: h.tier.to_string(),
            status: Status::of(o),
            changes,
            kind: o.kind(),
            error: o.error().map(str::to_string),
            role: o.failed_role().map(str::to_string),
            seconds: h.elapsed.as_secs_f64(),
            round_trips: h.round_trips,
            applied_roles,
            not_applied_roles,
            timings: h.timings.cloned().unwrap_or_default(),
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
            vars: serde_json::Map::new(),
        }
    }

    /// The document as one line of JSON, with every secret masked.
    ///
    /// Masking runs on each string of the document before it is serialised: in the JSON
    /// text a secret is escaped (`pa"ss` reads `pa\"ss`, a newline `\n`) and would no
    /// longer be found. Handler commands hold rendered secrets; they are masked like every
    /// other string, so no secret value is ever serialised. (Object keys are field names.)
    ///
    /// # Errors
    /// Those of `serde_json` (none for this document in practice).
    pub fn to_json_masked(&self, secrets: &Secrets) -> serde_json::Result<String> {
        let mut doc = serde_json::to_value(self)?;
        mask_strings(&mut doc, secrets);
        serde_json::to_string(&doc)
    }
}

/// Masks every string in a JSON value, in place (mask before serialising: in JSON text a
/// secret is escaped and no longer found).
pub fn mask_json(v: &mut serde_json::Value, secrets: &Secrets) {
    mask_strings(v, secrets);
}

/// Masks every string in a JSON value, in place.
fn mask_strings(v: &mut serde_json::Value, secrets: &Secrets) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if secrets.appears_in(s) {
                *s = secrets.mask(s);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| mask_strings(x, secrets)),
        Value::Object(fields) => fields.values_mut().for_each(|x| mask_strings(x, secrets)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
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
    use crate::plan::{Action, RolePlan};
    use crate::report::{Failure, Interruption};
    use crate::shell::Init;

    fn end<'a>(host: &'a str, outcome: Option<&'a Outcome>) -> HostEnd<'a> {
        HostEnd {
            host,
            tier: "web",
            outcome,
            elapsed: Duration::from_millis(1500),
            round_trips: 1,
            timings: None,
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
        // Timings are always there (empty when nothing was recorded); no vars, no key.
        assert_eq!(
            v["recap"][1]["timings"],
            serde_json::json!({"roles": [], "steps": []})
        );
        assert!(v.get("vars").is_none(), "{v}");
    }

    #[test]
    fn json_recap_carries_each_hosts_timings_and_the_command_line_vars() {
        use crate::timings::{RoleTime, StepTime};
        let t = HostTimings {
            roles: vec![RoleTime {
                role: "nginx".into(),
                seconds: 0.5,
            }],
            steps: vec![StepTime {
                role: Some("nginx".into()),
                step: "uploading /etc/x".into(),
                seconds: 0.5,
            }],
        };
        let ok = Outcome::Ok;
        let mut host = end("web1", Some(&ok));
        host.timings = Some(&t);
        let mut doc = Recap::new(RunMode::Apply, vec![], &[host], 0, Duration::ZERO);
        doc.vars.insert("workers".into(), serde_json::json!(4));
        let v = serde_json::to_value(&doc).unwrap_or_default();
        assert_eq!(
            v["recap"][0]["timings"],
            serde_json::json!({
                "roles": [{"role": "nginx", "seconds": 0.5}],
                "steps": [{"role": "nginx", "step": "uploading /etc/x", "seconds": 0.5}]
            })
        );
        assert_eq!(v["vars"], serde_json::json!({"workers": 4}));
    }

    #[test]
    fn status_word_matches_its_json_word() {
        for o in [
            Outcome::Ok,
            Outcome::Changed(1),
            Outcome::failed(ErrorKind::Swap, "x"),
            Outcome::unreachable(ErrorKind::Connect, "x"),
            Outcome::Skipped("x".into()),
        ] {
            let s = Status::of(&o);
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.word()), "{o:?}");
        }
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

    /// docs/recap.schema.json describes the document exactly: documents of every shape
    /// (the fixtures' plans, each kind of outcome) pass, and every field the schema names
    /// appears in one of them (but `reason`: a refused path fails its host before any plan
    /// is shown).
    #[test]
    fn the_documented_schema_holds_and_names_only_real_fields() {
        use crate::report::{fixtures, schema_check};
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/recap.schema.json"))
                .expect("docs/recap.schema.json is JSON");
        let plans = fixtures::plans();
        let refs: Vec<&HostPlan> = plans.iter().collect();
        let mut used = std::collections::BTreeSet::new();
        for (mode, outcomes) in [
            (RunMode::Plan, fixtures::plan_outcomes()),
            (RunMode::Apply, fixtures::apply_outcomes()),
        ] {
            let ends = fixtures::ends(&outcomes);
            let mut doc = Recap::new(mode, refs.clone(), &ends, 1, Duration::from_secs(3));
            doc.vars.insert("tag".into(), serde_json::json!("007"));
            let json = doc.to_json_masked(&fixtures::secrets()).expect("json");
            let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
            match schema_check::check(&schema, &value) {
                Ok(u) => used.extend(u),
                Err(errors) => panic!("{mode:?}: {}\n{json}", errors.join("\n")),
            }
        }
        let unused: Vec<String> = schema_check::properties(&schema)
            .difference(&used)
            .filter(|p| *p != "PathChange.reason")
            .cloned()
            .collect();
        assert!(
            unused.is_empty(),
            "documented but never produced: {unused:?}"
        );
    }

    /// A plan whose only change runs a handler with this command.
    fn plan_running(command: &str) -> HostPlan {
        HostPlan {
            drain: None,
            host: "app1".into(),
            tier: "app".into(),
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
                role: "app".into(),
                drift: None,
                files: Vec::new(),
                certificates: Vec::new(),
                paths: Vec::new(),
                actions: vec![Action::Run {
                    handler: "reload".into(),
                    command: command.into(),
                }],
                validate: None,
                health: Vec::new(),
            }],
        }
    }

    /// Review finding 8, reproduction: a secret `pa"ss\word1` inside a handler command (and
    /// in an error) appeared unmasked in `--format json`, because masking ran on the
    /// serialised text, where the secret reads `pa\"ss\\word1`. Same for a multi-line
    /// secret, whose newlines are escaped as `\n`.
    #[test]
    fn json_recap_masks_secrets_that_json_escapes() {
        let quoted = r#"pa"ss\word1"#;
        let multi = "first-line-of-it\nsecond-line-of-it";
        let secrets = Secrets::from_pairs(&[("db_password", quoted), ("token", multi)]);
        let plan = plan_running(&format!("set-password '{quoted}' && echo '{multi}'"));
        let failed = Outcome::Failed(Failure::new(
            ErrorKind::Handler,
            format!("handler failed: {quoted} / {multi}"),
        ));
        let hosts = [end("app1", Some(&failed))];
        let doc = Recap::new(RunMode::Apply, vec![&plan], &hosts, 1, Duration::ZERO);
        let text = doc
            .to_json_masked(&secrets)
            .unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        // Neither the escaped nor the unescaped form, nor the parsed document, holds them.
        for needle in [
            "pa\\\"ss\\\\word1",
            "first-line-of-it\\nsecond",
            "word1",
            "line-of-it",
        ] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        let command = v["plan"][0]["roles"][0]["actions"][0]["command"]
            .as_str()
            .unwrap_or_default();
        assert!(!secrets.appears_in(command), "{command}");
        assert!(command.starts_with("set-password '********'"), "{command}");
        let error = v["recap"][0]["error"].as_str().unwrap_or_default();
        assert_eq!(error, "handler failed: ******** / ********");
        // The document is otherwise intact.
        assert_eq!(v["format_version"], FORMAT_VERSION);
        assert_eq!(v["plan"][0]["roles"][0]["actions"][0]["handler"], "reload");
    }
}
