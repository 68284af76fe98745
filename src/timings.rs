//! How long each step of a run took, per host and role (like Ansible's profile_tasks):
//! recorded from the progress steps ([`crate::progress::Reporter`] sees every one), a step
//! lasting until the host's next step or its end. Pure bookkeeping on given instants.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// One step of one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTime {
    /// The role it belonged to; `None` for connecting, facts, packages, drains.
    pub role: Option<String>,
    pub step: String,
    pub seconds: f64,
}

/// One role of one host: the sum of its steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleTime {
    pub role: String,
    pub seconds: f64,
}

/// A host's timings: its roles in the order they ran, its steps in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostTimings {
    pub roles: Vec<RoleTime>,
    pub steps: Vec<StepTime>,
}

#[derive(Default)]
struct HostLog {
    role: Option<String>,
    /// The step running now: its start, role and name.
    open: Option<(Instant, Option<String>, String)>,
    steps: Vec<StepTime>,
}

impl HostLog {
    fn close(&mut self, now: Instant) {
        if let Some((start, role, step)) = self.open.take() {
            self.steps.push(StepTime {
                role,
                step,
                seconds: now.saturating_duration_since(start).as_secs_f64(),
            });
        }
    }
}

/// Every host's steps so far.
#[derive(Default)]
pub struct Timings {
    hosts: Mutex<BTreeMap<String, HostLog>>,
}

impl Timings {
    fn with(&self, host: &str, f: impl FnOnce(&mut HostLog)) {
        if let Ok(mut hosts) = self.hosts.lock() {
            f(hosts.entry(host.to_string()).or_default());
        }
    }

    /// `host` starts `step` at `now` (its previous step ends).
    pub fn step_at(&self, host: &str, step: &str, now: Instant) {
        self.with(host, |h| {
            h.close(now);
            h.open = Some((now, h.role.clone(), step.to_string()));
        });
    }

    /// From `now` on, `host`'s steps belong to `role` (`None`: to no role); the step
    /// running ends.
    pub fn role_at(&self, host: &str, role: Option<&str>, now: Instant) {
        self.with(host, |h| {
            h.close(now);
            h.role = role.map(str::to_string);
        });
    }

    /// `host` is finished at `now`.
    pub fn finish_at(&self, host: &str, now: Instant) {
        self.with(host, |h| {
            h.close(now);
            h.role = None;
        });
    }

    /// What `host` did so far (a step still running is not counted).
    pub fn of(&self, host: &str) -> HostTimings {
        let Ok(hosts) = self.hosts.lock() else {
            return HostTimings::default();
        };
        let Some(h) = hosts.get(host) else {
            return HostTimings::default();
        };
        let mut roles: Vec<RoleTime> = Vec::new();
        for s in &h.steps {
            let Some(role) = &s.role else { continue };
            match roles.iter_mut().find(|r| &r.role == role) {
                Some(r) => r.seconds += s.seconds,
                None => roles.push(RoleTime {
                    role: role.clone(),
                    seconds: s.seconds,
                }),
            }
        }
        HostTimings {
            roles,
            steps: h.steps.clone(),
        }
    }
}

/// How many of the slowest steps the text shows.
pub const SLOWEST_SHOWN: usize = 20;

/// The text after the recap under `--timings`: each host's roles, then the slowest steps
/// of the run (host, role, step), slowest first.
pub fn timings_text(hosts: &[(&str, &HostTimings)]) -> String {
    let mut out = String::from("TIMINGS (roles)\n");
    for (host, t) in hosts {
        if t.roles.is_empty() {
            out.push_str(&format!("  {host:<10} (no role ran)\n"));
        }
        for r in &t.roles {
            out.push_str(&format!(
                "  {host:<10} {:<24} {:>8.2}s\n",
                r.role, r.seconds
            ));
        }
    }
    let mut steps: Vec<(&str, &StepTime)> = hosts
        .iter()
        .flat_map(|(h, t)| t.steps.iter().map(move |s| (*h, s)))
        .collect();
    steps.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    out.push_str(&format!(
        "TIMINGS (the {} slowest steps)\n",
        steps.len().min(SLOWEST_SHOWN)
    ));
    for (host, s) in steps.iter().take(SLOWEST_SHOWN) {
        out.push_str(&format!(
            "  {host:<10} {:<16} {:>8.2}s  {}\n",
            s.role.as_deref().unwrap_or("-"),
            s.seconds,
            s.step
        ));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_step_lasts_until_the_next_one_and_roles_sum_their_steps() {
        let t = Timings::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        t.step_at("web1", "connecting", at(0));
        t.step_at("web1", "gathering facts", at(100));
        t.role_at("web1", Some("nginx"), at(300));
        t.step_at("web1", "uploading /etc/nginx/a", at(300));
        t.step_at("web1", "validating /etc/nginx/a", at(1300));
        t.role_at("web1", Some("app"), at(1800));
        t.step_at("web1", "health check: http", at(1800));
        t.finish_at("web1", at(2000));
        let h = t.of("web1");
        let steps: Vec<(Option<&str>, &str, u64)> = h
            .steps
            .iter()
            .map(|s| {
                (
                    s.role.as_deref(),
                    s.step.as_str(),
                    (s.seconds * 1000.0).round() as u64,
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                (None, "connecting", 100),
                (None, "gathering facts", 200),
                (Some("nginx"), "uploading /etc/nginx/a", 1000),
                (Some("nginx"), "validating /etc/nginx/a", 500),
                (Some("app"), "health check: http", 200),
            ]
        );
        let roles: Vec<(&str, u64)> = h
            .roles
            .iter()
            .map(|r| (r.role.as_str(), (r.seconds * 1000.0).round() as u64))
            .collect();
        assert_eq!(roles, [("nginx", 1500), ("app", 200)]);
        assert_eq!(t.of("unknown"), HostTimings::default());
    }

    #[test]
    fn the_text_lists_roles_per_host_and_the_slowest_steps_first() {
        let step = |role: Option<&str>, step: &str, seconds: f64| StepTime {
            role: role.map(str::to_string),
            step: step.to_string(),
            seconds,
        };
        let web1 = HostTimings {
            roles: vec![RoleTime {
                role: "nginx".into(),
                seconds: 1.5,
            }],
            steps: vec![
                step(None, "connecting", 0.1),
                step(Some("nginx"), "uploading x", 1.5),
            ],
        };
        let db1 = HostTimings::default();
        let text = timings_text(&[("web1", &web1), ("db1", &db1)]);
        assert_eq!(
            text,
            "TIMINGS (roles)\n  web1       nginx                        1.50s\n  db1        (no role ran)\n\
             TIMINGS (the 2 slowest steps)\n  web1       nginx                1.50s  uploading x\n  web1       -                    0.10s  connecting"
        );
    }
}
