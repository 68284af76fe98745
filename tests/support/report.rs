//! Reading the tool's JSON document (`--format json`): the recap and the plan, strictly.
//! A document without them, or without a host it should list, fails the test: a check
//! over zero hosts must never pass.

use super::command::{Run, tool};
use std::collections::BTreeMap;

/// `hosts` sorted, for comparing with a map's keys.
fn sorted<'a>(hosts: &[&'a str]) -> Vec<&'a str> {
    let mut v = hosts.to_vec();
    v.sort_unstable();
    v
}

/// Status and number of changes per host from a JSON run's recap. Fails the test when
/// the document has no `recap` array, when an entry lacks its host, status or changes,
/// or when the recap does not list exactly `hosts`.
pub fn recap(run: &Run, hosts: &[&str]) -> BTreeMap<String, (String, u64)> {
    let doc = run.json();
    let entries = doc
        .get("recap")
        .and_then(|r| r.as_array())
        .unwrap_or_else(|| panic!("the JSON output has no `recap` array:\n{}", run.all()));
    let mut out = BTreeMap::new();
    for h in entries {
        let field = |k: &str| {
            h.get(k)
                .unwrap_or_else(|| panic!("a recap entry without `{k}`: {h}\n{}", run.all()))
        };
        let host = field("host").as_str().expect("recap host is a string");
        let status = field("status").as_str().expect("recap status is a string");
        let changes = field("changes").as_u64().expect("recap changes is a count");
        let dup = out.insert(host.to_string(), (status.to_string(), changes));
        assert!(
            dup.is_none(),
            "{host} is twice in the recap:\n{}",
            run.all()
        );
    }
    assert_eq!(
        out.keys().map(String::as_str).collect::<Vec<_>>(),
        sorted(hosts),
        "the recap must list exactly these hosts:\n{}",
        run.all()
    );
    out
}

/// Insists a JSON apply exited 0 and changed nothing on any of `hosts` (all of them in
/// the recap); says which hosts it checked.
pub fn assert_unchanged(run: &Run, hosts: &[&str], when: &str) {
    assert_eq!(run.code, 0, "apply {when} failed:\n{}", run.all());
    for (host, (status, changes)) in recap(run, hosts) {
        assert_eq!(
            (status.as_str(), changes),
            ("ok", 0),
            "{host} changed {when}"
        );
    }
    eprintln!("nothing changed {when} on {}", hosts.join(", "));
}

/// Applies `inventory` (plus `extra` options) and insists nothing changed on `hosts`.
pub fn assert_no_changes(inventory: &str, extra: &[&str], hosts: &[&str]) {
    let mut args = vec!["apply", "--yes", inventory, "--format", "json"];
    args.extend_from_slice(extra);
    assert_unchanged(&tool(&args), hosts, "on a repeated apply");
}

/// `plan INVENTORY` finds nothing to change (exit 0): the hosts match the repository.
pub fn assert_plan_empty(inventory: &str) {
    let plan = tool(&["plan", inventory]);
    assert_eq!(
        plan.code,
        0,
        "plan must find nothing to change:\n{}",
        plan.all()
    );
    assert!(plan.stdout.contains("no changes"), "{}", plan.stdout);
}

/// One file in a host's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub role: String,
    pub path: String,
    /// create, update, unfinished, ...
    pub action: String,
    /// The unified diff shown, if any (never for a file holding a secret).
    pub diff: Option<String>,
    /// The file holds a secret.
    pub sensitive: bool,
}

/// What the plan says about one host.
#[derive(Debug, Clone, Default)]
pub struct HostPlan {
    pub files: Vec<PlannedFile>,
    /// "reload haproxy", "restart mariadb", ...
    pub actions: Vec<String>,
    /// (certificate path, issue | renew | reissue | fixkey).
    pub certificates: Vec<(String, String)>,
    /// (directory, link or absent path, mkdir | metadata | link | relink | replace | remove
    /// | unfinished | refuse).
    pub paths: Vec<(String, String)>,
}

impl HostPlan {
    pub fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.path.as_str()).collect()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.actions.is_empty()
            && self.certificates.is_empty()
            && self.paths.is_empty()
    }
}

/// The plan of a JSON run, per host. Fails the test when the document has no `plan`
/// array, or when it does not list exactly `hosts`.
pub fn plan_of(run: &Run, hosts: &[&str]) -> BTreeMap<String, HostPlan> {
    let doc = run.json();
    let entries = doc
        .get("plan")
        .and_then(|p| p.as_array())
        .unwrap_or_else(|| panic!("the JSON output has no `plan` array:\n{}", run.all()));
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = BTreeMap::new();
    for h in entries {
        let host = h["host"]
            .as_str()
            .unwrap_or_else(|| panic!("a plan entry without `host`: {h}"));
        let mut plan = HostPlan::default();
        for r in h["roles"].as_array().into_iter().flatten() {
            for f in r["files"].as_array().into_iter().flatten() {
                plan.files.push(PlannedFile {
                    role: text(r, "role"),
                    path: text(f, "path"),
                    action: text(f, "action"),
                    diff: f["diff"].as_str().map(str::to_string),
                    sensitive: f["sensitive"].as_bool().unwrap_or(false),
                });
            }
            for c in r["certificates"].as_array().into_iter().flatten() {
                plan.certificates.push((text(c, "cert"), text(c, "action")));
            }
            for p in r["paths"].as_array().into_iter().flatten() {
                plan.paths.push((text(p, "path"), text(p, "action")));
            }
            for a in r["actions"].as_array().into_iter().flatten() {
                plan.actions
                    .push(format!("{} {}", text(a, "action"), text(a, "service")));
            }
        }
        let dup = out.insert(host.to_string(), plan);
        assert!(dup.is_none(), "{host} is twice in the plan:\n{}", run.all());
    }
    assert_eq!(
        out.keys().map(String::as_str).collect::<Vec<_>>(),
        sorted(hosts),
        "the plan must list exactly these hosts:\n{}",
        run.all()
    );
    out
}

/// A run refused by a validator: exit 1, the failed validation of `target` named, the
/// validator's own words (`words`) shown, and the promise that nothing live changed.
pub fn assert_refused_by_validation(run: &Run, target: &str, words: &str) {
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("validation of {target}")),
        "{}",
        run.all()
    );
    assert!(
        run.stdout.contains(words),
        "the validator's own words: {}",
        run.all()
    );
    assert!(run.stdout.contains("left as they were"), "{}", run.all());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stdout: &str) -> Run {
        Run {
            code: 0,
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    #[test]
    #[should_panic(expected = "no `recap` array")]
    fn recap_fails_without_a_recap() {
        recap(&run(r#"{"mode":"apply","plan":[]}"#), &["web1"]);
    }

    #[test]
    #[should_panic(expected = "exactly these hosts")]
    fn recap_fails_when_a_host_is_missing() {
        let doc = r#"{"recap":[{"host":"web1","status":"ok","changes":0}]}"#;
        recap(&run(doc), &["web1", "lb1"]);
    }

    #[test]
    #[should_panic(expected = "exactly these hosts")]
    fn nothing_changed_fails_on_an_empty_recap() {
        assert_unchanged(&run(r#"{"recap":[]}"#), &["web1"], "here");
    }

    #[test]
    fn recap_reads_status_and_changes() {
        let doc = r#"{"recap":[{"host":"web1","status":"changed","changes":3}]}"#;
        assert_eq!(
            recap(&run(doc), &["web1"])["web1"],
            ("changed".to_string(), 3)
        );
    }

    #[test]
    #[should_panic(expected = "no `plan` array")]
    fn plan_fails_without_a_plan() {
        plan_of(&run(r#"{"recap":[]}"#), &["web1"]);
    }
}
