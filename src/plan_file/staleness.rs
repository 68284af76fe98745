//! Whether a saved plan still holds: the saved plan against the same plan made now, its
//! inputs first ([`stale_inputs`], before any host is reached), then its hosts
//! ([`stale_hosts`]). Pure; every difference is one [`Staleness`], named for the operator;
//! none means the saved plan can be applied.

use super::{FileBasis, HostBasis, InputKind, LiveFile, PlanFile, UnitState};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One thing that changed since the plan was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// An input file's content (or a release id) differs, or it came or went.
    Input {
        kind: InputKind,
        path: String,
        was: Option<String>,
        now: Option<String>,
    },
    /// A secret's value changed (which one is not known: only a digest is saved).
    Secrets,
    /// The host is selected now but was not planned, or the other way round.
    Host { host: String, planned: bool },
    /// A managed file on the host is not what it was.
    File {
        host: String,
        path: String,
        was: Option<FileBasis>,
        now: Option<FileBasis>,
    },
    Package {
        host: String,
        name: String,
        was: Option<bool>,
        now: Option<bool>,
    },
    Unit {
        host: String,
        name: String,
        was: Option<UnitState>,
        now: Option<UnitState>,
    },
    Release {
        host: String,
        root: String,
        was: Option<String>,
        now: Option<String>,
    },
    /// A role's drift check passes now and failed then, or the other way round.
    Drift {
        host: String,
        role: String,
        drifted: bool,
    },
    /// Nothing recorded changed, but the plan made now differs (a certificate near its
    /// renewal, a folder, a link, a leftover temporary file...): at this JSON pointer.
    Plan { host: String, at: String },
}

/// What differs in the inputs and secrets (known before any host is reached).
pub fn stale_inputs(saved: &PlanFile, now: &PlanFile) -> Vec<Staleness> {
    let index = |p: &PlanFile| -> BTreeMap<(InputKind, String), String> {
        p.inputs
            .iter()
            .map(|i| ((i.kind, i.path.clone()), i.hash.clone()))
            .collect()
    };
    let (was, is) = (index(saved), index(now));
    let keys: BTreeSet<&(InputKind, String)> = was.keys().chain(is.keys()).collect();
    let mut out: Vec<Staleness> = keys
        .into_iter()
        .filter(|k| was.get(*k) != is.get(*k))
        .map(|k| Staleness::Input {
            kind: k.0,
            path: k.1.clone(),
            was: was.get(k).cloned(),
            now: is.get(k).cloned(),
        })
        .collect();
    if saved.secrets != now.secrets {
        out.push(Staleness::Secrets);
    }
    out
}

/// What differs on the hosts: hosts planned or not, then each host's facts; its plan only
/// when no recorded fact explains the difference.
pub fn stale_hosts(saved: &PlanFile, now: &PlanFile) -> Vec<Staleness> {
    let mut out = Vec::new();
    let now_hosts: BTreeMap<&str, &HostBasis> =
        now.hosts.iter().map(|h| (h.host.as_str(), h)).collect();
    for was in &saved.hosts {
        match now_hosts.get(was.host.as_str()) {
            Some(is) => out.extend(host(was, is)),
            None => out.push(Staleness::Host {
                host: was.host.clone(),
                planned: true,
            }),
        }
    }
    for is in &now.hosts {
        if !saved.hosts.iter().any(|h| h.host == is.host) {
            out.push(Staleness::Host {
                host: is.host.clone(),
                planned: false,
            });
        }
    }
    out
}

/// The differences of one host.
fn host(was: &HostBasis, now: &HostBasis) -> Vec<Staleness> {
    let h = || was.host.clone();
    let mut out = Vec::new();
    for (path, a, b) in pairs(&was.files, &now.files) {
        out.push(Staleness::File {
            host: h(),
            path: path.clone(),
            was: a.cloned(),
            now: b.cloned(),
        });
    }
    for (name, a, b) in pairs(&was.packages, &now.packages) {
        out.push(Staleness::Package {
            host: h(),
            name: name.clone(),
            was: a.copied(),
            now: b.copied(),
        });
    }
    for (name, a, b) in pairs(&was.units, &now.units) {
        out.push(Staleness::Unit {
            host: h(),
            name: name.clone(),
            was: a.cloned(),
            now: b.cloned(),
        });
    }
    for (root, a, b) in pairs(&was.releases, &now.releases) {
        out.push(Staleness::Release {
            host: h(),
            root: root.clone(),
            was: a.cloned(),
            now: b.cloned(),
        });
    }
    let (d1, d2): (BTreeSet<&String>, BTreeSet<&String>) =
        (was.drifted.iter().collect(), now.drifted.iter().collect());
    for role in d1.symmetric_difference(&d2) {
        out.push(Staleness::Drift {
            host: h(),
            role: (*role).clone(),
            drifted: d2.contains(role),
        });
    }
    if out.is_empty()
        && let Some(at) = first_difference(&was.plan, &now.plan, String::new())
    {
        out.push(Staleness::Plan { host: h(), at });
    }
    out
}

/// The keys whose values differ (or that are in one map only), with both values.
fn pairs<'a, V: PartialEq>(
    a: &'a BTreeMap<String, V>,
    b: &'a BTreeMap<String, V>,
) -> Vec<(&'a String, Option<&'a V>, Option<&'a V>)> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|k| (k, a.get(k), b.get(k)))
        .filter(|(_, x, y)| x != y)
        .collect()
}

/// The JSON pointer of the first place where `a` and `b` differ (`None`: equal).
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, format!("{at}/{k}")),
                _ => Some(format!("{at}/{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let common = x
                .iter()
                .zip(y.iter())
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}/{i}")));
            common
                .or_else(|| (x.len() != y.len()).then(|| format!("{at}/{}", x.len().min(y.len()))))
        }
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".into() } else { at }),
    }
}

/// The first 12 hex digits of a hash (a keyed one is only said to differ).
fn short(hash: &str) -> String {
    if hash.starts_with(super::KEYED) {
        "(keyed: the file holds a secret)".into()
    } else {
        hash.chars().take(12).collect()
    }
}

fn live_text(f: &LiveFile) -> String {
    format!(
        "{} {}:{} sha256 {}",
        f.mode,
        f.owner,
        f.group,
        short(&f.hash)
    )
}

fn unit_text(u: Option<&UnitState>) -> String {
    u.map_or_else(
        || "not asked about".into(),
        |u| format!("{}/{}", u.active, u.enabled),
    )
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::Input {
                kind: InputKind::Release,
                path,
                was,
                now,
            } => {
                let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                write!(
                    f,
                    "the release of tier {path} changed: {} -> {}",
                    id(was),
                    id(now)
                )
            }
            Staleness::Input {
                kind,
                path,
                was,
                now,
            } => match (was, now) {
                (Some(_), Some(_)) => write!(f, "{} {path} changed", kind.word()),
                (None, _) => write!(f, "{} {path} is new (the plan did not use it)", kind.word()),
                (_, None) => write!(f, "{} {path} is no longer used (or is gone)", kind.word()),
            },
            Staleness::Secrets => write!(
                f,
                "a secret's value changed (the inventory's secrets are not those the plan was made with)"
            ),
            Staleness::Host {
                host,
                planned: true,
            } => write!(f, "{host}: in the plan, but not selected now"),
            Staleness::Host {
                host,
                planned: false,
            } => write!(f, "{host}: selected now, but not in the plan"),
            Staleness::File {
                host,
                path,
                was,
                now,
            } => {
                let (Some(a), Some(b)) = (was, now) else {
                    return write!(
                        f,
                        "{host}: {path}: not a managed file of the plan any more, or new"
                    );
                };
                match (&a.live, &b.live) {
                    (Some(x), Some(y)) if x != y => write!(
                        f,
                        "{host}: {path} changed on the host ({} -> {})",
                        live_text(x),
                        live_text(y)
                    ),
                    (Some(x), None) => write!(
                        f,
                        "{host}: {path} was removed from the host (was {})",
                        live_text(x)
                    ),
                    (None, Some(y)) => {
                        write!(f, "{host}: {path} appeared on the host ({})", live_text(y))
                    }
                    _ => write!(
                        f,
                        "{host}: {path}: its rendered content differs from the plan's (a var, a template or a secret changed)"
                    ),
                }
            }
            Staleness::Package {
                host,
                name,
                was,
                now,
            } => {
                let word = |v: &Option<bool>| match v {
                    Some(true) => "installed",
                    Some(false) => "not installed",
                    None => "not asked about",
                };
                write!(
                    f,
                    "{host}: package {name} was {}, now {}",
                    word(was),
                    word(now)
                )
            }
            Staleness::Unit {
                host,
                name,
                was,
                now,
            } => write!(
                f,
                "{host}: unit {name} was {}, now {} (active/enabled)",
                unit_text(was.as_ref()),
                unit_text(now.as_ref())
            ),
            Staleness::Release {
                host,
                root,
                was,
                now,
            } => {
                let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "not asked about".into());
                write!(
                    f,
                    "{host}: the release in {root}/current was {}, now {}",
                    v(was),
                    v(now)
                )
            }
            Staleness::Drift {
                host,
                role,
                drifted: true,
            } => write!(f, "{host}: role {role}'s drift check fails now (it passed)"),
            Staleness::Drift {
                host,
                role,
                drifted: false,
            } => write!(
                f,
                "{host}: role {role}'s drift check passes now (it failed)"
            ),
            Staleness::Plan { host, at } => write!(
                f,
                "{host}: its plan differs from the saved one at {at} (a certificate, a folder, a link or a leftover file changed)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_is_named_by_its_json_pointer() {
        let a = json!({"host": "web1", "roles": [{"actions": ["reload"]}, {"files": []}]});
        assert_eq!(first_difference(&a, &a, String::new()), None);
        let b = json!({"host": "web2", "roles": [{"actions": ["reload"]}, {"files": []}]});
        assert_eq!(
            first_difference(&a, &b, String::new()).as_deref(),
            Some("/host")
        );
        let c = json!({"host": "web1", "roles": [{"actions": ["restart"]}, {"files": []}]});
        assert_eq!(
            first_difference(&a, &c, String::new()).as_deref(),
            Some("/roles/0/actions/0")
        );
        let d = json!({"host": "web1", "roles": [{"actions": ["reload", "start"]}, {"files": []}]});
        assert_eq!(
            first_difference(&a, &d, String::new()).as_deref(),
            Some("/roles/0/actions/1")
        );
        let e =
            json!({"host": "web1", "roles": [{"actions": ["reload"]}, {"files": []}], "drain": {}});
        assert_eq!(
            first_difference(&a, &e, String::new()).as_deref(),
            Some("/drain")
        );
        assert_eq!(
            first_difference(&json!(1), &json!(2), String::new()).as_deref(),
            Some("/")
        );
    }

    #[test]
    fn a_file_that_appeared_or_went_is_said_so() {
        let live = LiveFile {
            hash: "0123456789abcdef".into(),
            mode: "0644".into(),
            owner: "root".into(),
            group: "root".into(),
        };
        let basis = |live: Option<LiveFile>| {
            Some(FileBasis {
                live,
                rendered: "r".into(),
            })
        };
        let file = |was, now| Staleness::File {
            host: "web1".into(),
            path: "/etc/a".into(),
            was,
            now,
        };
        assert_eq!(
            file(basis(None), basis(Some(live.clone()))).to_string(),
            "web1: /etc/a appeared on the host (0644 root:root sha256 0123456789ab)"
        );
        assert_eq!(
            file(basis(Some(live)), basis(None)).to_string(),
            "web1: /etc/a was removed from the host (was 0644 root:root sha256 0123456789ab)"
        );
        assert_eq!(
            file(None, basis(None)).to_string(),
            "web1: /etc/a: not a managed file of the plan any more, or new"
        );
    }
}
