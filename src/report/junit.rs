//! A run as JUnit XML (`--junit FILE`), for CI test reports: one `<testsuite>` per host,
//! holding a `host` test case (connecting, facts, planning, the lock, packages, drains:
//! everything outside the roles) and one test case per role. A failure carries its kind
//! and error; a role that was not started is skipped, saying why.
//!
//! Pure. Every text is masked, made printable and XML-escaped; characters XML 1.0 does not
//! allow never reach the document.

use super::{HostEnd, Outcome, RunMode, Status};
use crate::plan::HostPlan;
use crate::secrets::Secrets;
use crate::shell::printable;
use std::time::Duration;

/// One host for the report: how it ended, its roles (the tier's, in order), its plan.
pub struct JunitHost<'a> {
    pub end: HostEnd<'a>,
    pub roles: Vec<String>,
    pub plan: Option<&'a HostPlan>,
}

/// A host's test cases (name, how it ended), in order.
type Cases = Vec<(String, Case)>;

/// How one test case ended.
#[derive(Debug, PartialEq, Eq)]
enum Case {
    Passed(Option<String>),
    Failed { kind: String, message: String },
    Skipped(String),
}

/// The JUnit XML document of a run.
pub fn junit(mode: RunMode, hosts: &[JunitHost], total: Duration, secrets: &Secrets) -> String {
    let suites: Vec<(String, Cases, Duration)> = hosts
        .iter()
        .map(|h| (h.end.host.to_string(), cases(mode, h), h.end.elapsed))
        .collect();
    let count = |f: &dyn Fn(&Case) -> bool| -> usize {
        suites
            .iter()
            .flat_map(|(_, cases, _)| cases.iter())
            .filter(|(_, c)| f(c))
            .count()
    };
    let tests = count(&|_| true);
    let failures = count(&|c| matches!(c, Case::Failed { .. }));
    let skipped = count(&|c| matches!(c, Case::Skipped(_)));
    let name = format!("foobar-provision {}", mode_word(mode));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        xml(&name, secrets),
        total.as_secs_f64()
    );
    for (h, (host, cases, elapsed)) in hosts.iter().zip(&suites) {
        let classname = format!("{}.{}", h.end.tier, host);
        let f = cases
            .iter()
            .filter(|(_, c)| matches!(c, Case::Failed { .. }))
            .count();
        let s = cases
            .iter()
            .filter(|(_, c)| matches!(c, Case::Skipped(_)))
            .count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"{s}\" time=\"{:.3}\">\n",
            xml(host, secrets),
            cases.len(),
            elapsed.as_secs_f64()
        ));
        for (i, (case, result)) in cases.iter().enumerate() {
            // The host's own case carries its wall time; the roles' are within it.
            let time = if i == 0 { elapsed.as_secs_f64() } else { 0.0 };
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
                xml(&classname, secrets),
                xml(case, secrets)
            ));
            match result {
                Case::Passed(None) => out.push_str("/>\n"),
                Case::Passed(Some(text)) => out.push_str(&format!(
                    ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                    xml(text, secrets)
                )),
                Case::Failed { kind, message } => out.push_str(&format!(
                    ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(kind, secrets),
                    xml(message.lines().next().unwrap_or(""), secrets),
                    xml(message, secrets)
                )),
                Case::Skipped(why) => out.push_str(&format!(
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    xml(why, secrets)
                )),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn mode_word(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Plan => "plan",
        RunMode::Apply => "apply",
    }
}

/// The test cases of one host: `host` first, then its roles.
fn cases(mode: RunMode, h: &JunitHost) -> Cases {
    let o = h.end.outcome;
    let failure = |o: &Outcome| Case::Failed {
        kind: o.kind().map_or_else(|| "failed".into(), |k| k.to_string()),
        message: o.error().unwrap_or("").to_string(),
    };
    let host_case = match o {
        None => Case::Skipped("not started: an earlier tier failed".into()),
        Some(Outcome::Skipped(why)) => Case::Skipped(why.clone()),
        Some(o @ Outcome::Interrupted(_)) => failure(o),
        Some(o) if o.is_failure() && o.failed_role().is_none() => failure(o),
        Some(_) => Case::Passed(None),
    };
    let mut out = vec![("host".to_string(), host_case)];
    let failed_role = o.and_then(Outcome::failed_role);
    let mut after_failure = false;
    for role in &h.roles {
        let planned = h
            .plan
            .and_then(|p| p.roles.iter().find(|r| r.role == *role));
        let changes = planned.map_or(0, |r| r.change_count());
        let case = match (o, h.plan) {
            (None | Some(Outcome::Skipped(_)), _) => Case::Skipped("not started".into()),
            (Some(_), None) => Case::Skipped("not started: the host could not be planned".into()),
            (Some(o), Some(_)) if failed_role == Some(role.as_str()) => {
                after_failure = true;
                failure(o)
            }
            (Some(_), Some(_)) if changes == 0 => Case::Passed(None),
            (Some(_), Some(_)) if after_failure => Case::Skipped(format!(
                "not started: role {} failed",
                failed_role.unwrap_or("")
            )),
            (Some(Outcome::Interrupted(i)), Some(_)) if i.not_applied.contains(role) => {
                Case::Skipped(format!("not applied: {}", i.note))
            }
            (Some(o), Some(_)) if o.is_failure() && failed_role.is_none() => {
                let word = Status::of(o).word();
                Case::Skipped(format!(
                    "not completed: the host {word} (see its `host` test case)"
                ))
            }
            (Some(_), Some(_)) => Case::Passed(Some(match mode {
                RunMode::Plan => format!("would change: {changes} change(s)"),
                RunMode::Apply => format!("changed: {changes} change(s)"),
            })),
        };
        out.push((role.clone(), case));
    }
    out
}

/// Text for an XML attribute or element: masked, printable, escaped; characters XML 1.0
/// forbids (U+FFFE, U+FFFF) replaced.
pub fn xml(text: &str, secrets: &Secrets) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(&secrets.mask(text)).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{self, SECRET};

    /// The fixture's hosts with the lab's roles of their tiers.
    fn document(mode: RunMode) -> String {
        let plans = fixtures::plans();
        let outcomes = match mode {
            RunMode::Plan => fixtures::plan_outcomes(),
            RunMode::Apply => fixtures::apply_outcomes(),
        };
        let roles = |tier: &str| -> Vec<String> {
            let names: &[&str] = match tier {
                "web" => &["firewall", "nginx"],
                "app" => &["firewall", "app"],
                "lb" => &["firewall", "haproxy"],
                _ => &["firewall", "mysql"],
            };
            names.iter().map(|s| s.to_string()).collect()
        };
        let hosts: Vec<JunitHost> = fixtures::ends(&outcomes)
            .into_iter()
            .map(|end| JunitHost {
                roles: roles(end.tier),
                plan: plans.iter().find(|p| p.host == end.host),
                end,
            })
            .collect();
        junit(mode, &hosts, Duration::from_secs(3), &fixtures::secrets())
    }

    #[test]
    fn plan_matches_its_golden_file() {
        fixtures::golden("plan.junit.xml", &document(RunMode::Plan));
    }

    #[test]
    fn apply_matches_its_golden_file() {
        fixtures::golden("apply.junit.xml", &document(RunMode::Apply));
    }

    #[test]
    fn the_document_is_escaped_printable_and_masked() {
        for mode in [RunMode::Plan, RunMode::Apply] {
            let doc = document(mode);
            assert!(!doc.contains(SECRET), "{doc}");
            assert!(
                !doc.chars().any(|c| (c as u32) < 0x20 && c != '\n'),
                "only newlines between elements: {doc:?}"
            );
            // The errors' markup is text, escaped.
            assert!(!doc.contains("<b>") && !doc.contains("<listen>"), "{doc}");
            assert_eq!(
                doc.matches("<testcase ").count(),
                doc.matches("/>\n").count() - doc.matches("<skipped ").count()
                    + doc.matches("</testcase>").count(),
                "every test case is closed: {doc}"
            );
        }
        assert_eq!(
            xml("a<b>&\"c'\n\u{1b}\u{ffff}", &Secrets::default()),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;^[\u{fffd}"
        );
    }

    #[test]
    fn the_failed_role_fails_and_the_roles_after_it_are_skipped() {
        let doc = document(RunMode::Apply);
        assert!(
            doc.contains("<testcase classname=\"web.web1\" name=\"nginx\" time=\"0.000\">\n      <failure type=\"validation\""),
            "{doc}"
        );
        // web1's firewall role had no changes: passed; the host itself got through.
        assert!(
            doc.contains("<testcase classname=\"web.web1\" name=\"host\" time=\"1.500\"/>"),
            "{doc}"
        );
        // lb1 never started: all of it skipped.
        assert!(
            doc.contains("<testcase classname=\"lb.lb1\" name=\"haproxy\" time=\"0.000\">\n      <skipped message=\"not started\"/>"),
            "{doc}"
        );
        assert!(
            doc.contains("<testsuites name=\"foobar-provision apply\" tests=\"12\" failures=\"2\""),
            "{doc}"
        );
    }
}
