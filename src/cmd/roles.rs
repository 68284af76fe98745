//! `--role` and `--skip-role`: which roles of the selected hosts run. The others are left
//! out of the run entirely: neither read (facts) nor changed, their handlers and health
//! checks do not run. A host left with no role is not connected to at all.

use crate::cli::Common;
use crate::desired::DesiredHost;
use crate::inventory::{Host, Inventory};
use crate::suggest::nearest;

/// The roles a run keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Filter {
    /// `--role`: only these (empty: every role).
    only: Vec<String>,
    /// `--skip-role`: never these.
    skip: Vec<String>,
}

impl Filter {
    /// `None` when neither option is given.
    pub(super) fn new(c: &Common) -> Option<Filter> {
        (!c.roles.is_empty() || !c.skip_roles.is_empty()).then(|| Filter {
            only: c.roles.clone(),
            skip: c.skip_roles.clone(),
        })
    }

    pub(super) fn keeps(&self, role: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|r| r == role))
            && !self.skip.iter().any(|r| r == role)
    }
}

/// The hosts that keep at least one role; every name must be a role of the project, and
/// each `--role` one of a selected host's.
///
/// # Errors
/// An unknown role (with the nearest name), a `--role` none of the selected hosts has,
/// nothing left.
pub(super) fn select<'a>(
    inv: &Inventory,
    project_roles: &[String],
    hosts: Vec<&'a Host>,
    c: &Common,
) -> anyhow::Result<Vec<&'a Host>> {
    let Some(filter) = Filter::new(c) else {
        return Ok(hosts);
    };
    let known: Vec<&str> = project_roles.iter().map(String::as_str).collect();
    for (option, names) in [("--role", &c.roles), ("--skip-role", &c.skip_roles)] {
        for name in names {
            if known.contains(&name.as_str()) {
                continue;
            }
            let shown = crate::shell::printable(name);
            match nearest(name, &known) {
                Some(n) => {
                    anyhow::bail!("{option}: no role `{shown}` under roles/; did you mean `{n}`?")
                }
                None => anyhow::bail!(
                    "{option}: no role `{shown}` under roles/ (roles: {})",
                    known.join(", ")
                ),
            }
        }
    }
    let roles_of = |h: &Host| -> Vec<String> {
        inv.tier(&h.tier)
            .map(|t| t.roles.clone())
            .unwrap_or_default()
    };
    for name in &c.roles {
        if !hosts.iter().any(|h| roles_of(h).contains(name)) {
            let tiers: Vec<&str> = inv
                .tiers
                .iter()
                .filter(|t| t.roles.contains(name))
                .map(|t| t.name.as_str())
                .collect();
            anyhow::bail!(
                "--role {name}: none of the selected hosts has it ({})",
                if tiers.is_empty() {
                    "no tier of the inventory lists it".to_string()
                } else {
                    format!("tiers with it: {}", tiers.join(", "))
                }
            );
        }
    }
    let kept: Vec<&Host> = hosts
        .into_iter()
        .filter(|h| roles_of(h).iter().any(|r| filter.keeps(r)))
        .collect();
    if kept.is_empty() {
        anyhow::bail!("--skip-role leaves none of the selected hosts any role to run");
    }
    Ok(kept)
}

/// Drops the roles the filter leaves out (and the hosts left with none).
pub(super) fn keep(desired: &mut Vec<DesiredHost>, filter: &Filter) {
    for d in desired.iter_mut() {
        d.roles.retain(|r| filter.keeps(&r.name));
    }
    desired.retain(|d| !d.roles.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn inv() -> Inventory {
        let text = "domain: www.example.test\ntiers:\n  web:\n    roles: [nginx, app]\n  db:\n    roles: [mysql]\n\
                    hosts:\n  web1: {address: 192.0.2.1, tier: web}\n  db1: {address: 192.0.2.2, tier: db}\n";
        let roles: Vec<String> = ["nginx", "app", "mysql", "haproxy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        crate::inventory::parse(Path::new("inv.yml"), text, &roles)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn common(roles: &[&str], skip: &[&str]) -> Common {
        Common {
            inventory: PathBuf::from("inv.yml"),
            limit: Vec::new(),
            tier: Vec::new(),
            format: crate::progress::Format::Text,
            root: None,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            skip_roles: skip.iter().map(|s| s.to_string()).collect(),
            var: Vec::new(),
        }
    }

    fn run(roles: &[&str], skip: &[&str]) -> Result<Vec<String>, String> {
        let inv = inv();
        let project: Vec<String> = ["nginx", "app", "mysql", "haproxy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let hosts: Vec<&Host> = inv.hosts.iter().collect();
        select(&inv, &project, hosts, &common(roles, skip))
            .map(|v| v.iter().map(|h| h.name.clone()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn hosts_without_a_kept_role_are_left_out() {
        type Row<'a> = (&'a [&'a str], &'a [&'a str], Result<&'a [&'a str], &'a str>);
        let rows: [Row; 7] = [
            (&[], &[], Ok(&["web1", "db1"])),
            (&["nginx"], &[], Ok(&["web1"])),
            (&["nginx", "mysql"], &[], Ok(&["web1", "db1"])),
            (&[], &["mysql"], Ok(&["web1"])),
            (&[], &["nginx"], Ok(&["web1", "db1"])),
            (
                &["mysql"],
                &["mysql"],
                Err("--skip-role leaves none of the selected hosts any role to run"),
            ),
            (
                &["haproxy"],
                &[],
                Err(
                    "--role haproxy: none of the selected hosts has it (no tier of the inventory lists it)",
                ),
            ),
        ];
        for (only, skip, want) in rows {
            let want = want
                .map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(run(only, skip), want, "{only:?} {skip:?}");
        }
    }

    #[test]
    fn unknown_roles_say_the_nearest_or_list_them() {
        assert_eq!(
            run(&["ngnix"], &[]),
            Err("--role: no role `ngnix` under roles/; did you mean `nginx`?".into())
        );
        assert_eq!(
            run(&[], &["zzzzzzzz"]),
            Err(
                "--skip-role: no role `zzzzzzzz` under roles/ (roles: nginx, app, mysql, haproxy)"
                    .into()
            )
        );
    }

    #[test]
    fn filter_keeps_only_the_named_and_never_the_skipped() {
        let f = Filter {
            only: vec!["a".into(), "b".into()],
            skip: vec!["b".into()],
        };
        assert!(f.keeps("a") && !f.keeps("b") && !f.keeps("c"));
        assert_eq!(Filter::new(&common(&[], &[])), None);
    }
}
