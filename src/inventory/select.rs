//! `--limit` and `--tier`: which of the inventory's hosts a run works on.

use super::{Host, Inventory};
use crate::suggest::nearest;

/// Why `--limit` and `--tier` select no host. The text is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `--limit` names a host the inventory does not list.
    #[error("--limit: no host `{name}` in the inventory{}", did_you_mean(.near, "hosts", .known))]
    UnknownHost {
        name: String,
        near: Option<String>,
        known: Vec<String>,
    },
    /// `--tier` names a tier the inventory does not declare.
    #[error("--tier: no tier `{name}` in the inventory{}", did_you_mean(.near, "tiers", .known))]
    UnknownTier {
        name: String,
        near: Option<String>,
        known: Vec<String>,
    },
    /// Both are known, but no host is in both.
    #[error("--limit and --tier together select no host")]
    NothingSelected,
}

/// The end of an unknown-name message: the nearest name, or else every name.
fn did_you_mean(near: &Option<String>, what: &str, known: &[String]) -> String {
    match near {
        Some(n) => format!("; did you mean `{n}`?"),
        None => format!(" ({what}: {})", known.join(", ")),
    }
}

/// The first name of `asked` that is not in `known`, with the nearest known name.
fn first_unknown(asked: &[String], known: &[&str]) -> Option<(String, Option<String>)> {
    asked
        .iter()
        .find(|a| !known.contains(&a.as_str()))
        .map(|a| (a.clone(), nearest(a, known).map(str::to_string)))
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

impl Inventory {
    /// The hosts selected by `--limit` and `--tier` (both optional; both must match).
    pub fn select(&self, limit: &[String], tiers: &[String]) -> Result<Vec<&Host>, SelectError> {
        let hosts: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        if let Some((name, near)) = first_unknown(limit, &hosts) {
            let known = owned(&hosts);
            return Err(SelectError::UnknownHost { name, near, known });
        }
        let declared: Vec<&str> = self.tiers.iter().map(|t| t.name.as_str()).collect();
        if let Some((name, near)) = first_unknown(tiers, &declared) {
            let known = owned(&declared);
            return Err(SelectError::UnknownTier { name, near, known });
        }
        let picked: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| limit.is_empty() || limit.contains(&h.name))
            .filter(|h| tiers.is_empty() || tiers.contains(&h.tier))
            .collect();
        if picked.is_empty() {
            return Err(SelectError::NothingSelected);
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::validate::tests::{GOOD, parse_str};

    #[test]
    fn selection_by_limit_and_tier() {
        let inv = parse_str(GOOD).expect("valid");
        let names = |v: Vec<&Host>| v.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(inv.select(&[], &["web".into()]).expect("ok")),
            vec!["web1"]
        );
        assert_eq!(
            names(inv.select(&["lb1".into()], &[]).expect("ok")),
            vec!["lb1"]
        );
        let e = inv
            .select(&["web2".into()], &[])
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("did you mean `web1`?"), "{e}");
        assert!(inv.select(&["lb1".into()], &["web".into()]).is_err());
    }

    fn select_names(limit: &[&str], tiers: &[&str]) -> Result<Vec<String>, String> {
        let inv = parse_str(GOOD).expect("valid");
        let limit: Vec<String> = limit.iter().map(|s| s.to_string()).collect();
        let tiers: Vec<String> = tiers.iter().map(|s| s.to_string()).collect();
        inv.select(&limit, &tiers)
            .map(|v| v.iter().map(|h| h.name.clone()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn limit_and_tier_each_narrow_and_both_must_match() {
        // (limit, tiers, selected)
        let rows: [(&[&str], &[&str], &[&str]); 6] = [
            (&[], &[], &["lb1", "web1"]),
            (&["web1"], &[], &["web1"]),
            (&["web1", "lb1"], &[], &["lb1", "web1"]),
            (&[], &["lb"], &["lb1"]),
            (&[], &["web", "lb"], &["lb1", "web1"]),
            (&["web1"], &["web"], &["web1"]),
        ];
        for (limit, tiers, want) in rows {
            assert_eq!(
                select_names(limit, tiers),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{limit:?} {tiers:?}"
            );
        }
    }

    #[test]
    fn unknown_names_say_the_nearest_or_list_every_name() {
        let rows = [
            (
                &["web1", "wbe1"][..],
                &[][..],
                "--limit: no host `wbe1` in the inventory; did you mean `web1`?",
            ),
            (
                &["zzzzzz"],
                &[],
                "--limit: no host `zzzzzz` in the inventory (hosts: lb1, web1)",
            ),
            (
                &[],
                &["wbe"],
                "--tier: no tier `wbe` in the inventory; did you mean `web`?",
            ),
            (
                &[],
                &["zzzzzz"],
                "--tier: no tier `zzzzzz` in the inventory (tiers: web, lb)",
            ),
            (
                &["lb1"],
                &["web"],
                "--limit and --tier together select no host",
            ),
        ];
        for (limit, tiers, want) in rows {
            assert_eq!(select_names(limit, tiers), Err(want.to_string()));
        }
    }
}
