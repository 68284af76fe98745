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
}
