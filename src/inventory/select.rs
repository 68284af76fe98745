//! `--limit` and `--tier`: which of the inventory's hosts a run works on. `--limit` takes
//! names, `*`/`?` patterns and `!` exclusions: the hosts any name or pattern matches (every
//! host when only exclusions are given), less those an exclusion matches.

use super::{Host, Inventory};
use crate::pattern::glob_matches;
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
    /// A `--limit` pattern matches no host.
    #[error("--limit: `{pattern}` matches no host of the inventory (hosts: {})", .known.join(", "))]
    NoMatch { pattern: String, known: Vec<String> },
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
fn first_unknown(asked: &[&str], known: &[&str]) -> Option<(String, Option<String>)> {
    asked
        .iter()
        .find(|a| !known.contains(a))
        .map(|a| (a.to_string(), nearest(a, known).map(str::to_string)))
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

impl Inventory {
    /// The hosts selected by `--limit` and `--tier` (both optional; both must match).
    pub fn select(&self, limit: &[String], tiers: &[String]) -> Result<Vec<&Host>, SelectError> {
        let hosts: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        let (excluded, included): (Vec<&str>, Vec<&str>) = limit
            .iter()
            .map(String::as_str)
            .partition(|l| l.starts_with('!'));
        let excluded: Vec<&str> = excluded.iter().map(|e| &e[1..]).collect();
        let every: Vec<&str> = included.iter().chain(&excluded).copied().collect();
        let names: Vec<&str> = every.iter().copied().filter(|n| !is_pattern(n)).collect();
        if let Some((name, near)) = first_unknown(&names, &hosts) {
            let known = owned(&hosts);
            return Err(SelectError::UnknownHost { name, near, known });
        }
        if let Some(p) = every
            .iter()
            .find(|p| is_pattern(p) && !hosts.iter().any(|h| glob_matches(p, h)))
        {
            return Err(SelectError::NoMatch {
                pattern: p.to_string(),
                known: owned(&hosts),
            });
        }
        let declared: Vec<&str> = self.tiers.iter().map(|t| t.name.as_str()).collect();
        let asked_tiers: Vec<&str> = tiers.iter().map(String::as_str).collect();
        if let Some((name, near)) = first_unknown(&asked_tiers, &declared) {
            let known = owned(&declared);
            return Err(SelectError::UnknownTier { name, near, known });
        }
        let picked: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| included.is_empty() || included.iter().any(|p| glob_matches(p, &h.name)))
            .filter(|h| !excluded.iter().any(|p| glob_matches(p, &h.name)))
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
    fn limit_patterns_and_exclusions() {
        // (limit, selected)
        type Row<'a> = (&'a [&'a str], Result<&'a [&'a str], &'a str>);
        let rows: [Row; 9] = [
            (&["*"], Ok(&["lb1", "web1"])),
            (&["web*"], Ok(&["web1"])),
            (&["?b1"], Ok(&["lb1"])),
            (&["!web1"], Ok(&["lb1"])),
            (&["!web*"], Ok(&["lb1"])),
            (&["*", "!lb1"], Ok(&["web1"])),
            (&["lb1", "web1", "!web1"], Ok(&["lb1"])),
            (&["!*"], Err("--limit and --tier together select no host")),
            (
                &["db*"],
                Err("--limit: `db*` matches no host of the inventory (hosts: lb1, web1)"),
            ),
        ];
        for (limit, want) in rows {
            let want = want
                .map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(select_names(limit, &[]), want, "{limit:?}");
        }
        // An excluded name is checked like any other.
        assert_eq!(
            select_names(&["!wbe1"], &[]),
            Err("--limit: no host `wbe1` in the inventory; did you mean `web1`?".into())
        );
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
