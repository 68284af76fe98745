//! The database's replication as the inventory says it (pure): which db host is the
//! primary (var `db_primary`, default the first host with the mysql role), and the one-line
//! edit of the inventory `db promote` makes so that the file says what is now true.
//!
//! What runs on the hosts is the mysql role's `foobar-db-replica` (templates/mysql/):
//! `converge` (its handler), `check` (its health check), `promote` (`db promote`).

use crate::inventory::{Host, Inventory};
use serde_json::Value;

/// The var naming the primary.
pub const VAR: &str = "db_primary";

/// The host `db promote` and `db reseed` run on the hosts.
pub const SCRIPT: &str = "/usr/local/sbin/foobar-db-replica";

/// The primary the inventory names: `--var db_primary=...`, then the inventory's top-level
/// `vars:`, else the first host with the mysql role. `None` when no host has the role; an
/// error when the var names no such host.
pub fn primary(inv: &Inventory) -> Result<Option<&Host>, String> {
    let named = inv
        .cli_vars
        .get(VAR)
        .or_else(|| inv.vars.get(VAR))
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(format!("var {VAR}: a host name, not {other}")),
        })
        .transpose()?;
    let mut dbs = inv.hosts_with_role("mysql");
    match named {
        None => Ok(dbs.next()),
        Some(name) => match dbs.find(|h| h.name == name) {
            Some(h) => Ok(Some(h)),
            None => Err(format!(
                "var {VAR}: `{}` is not a host with the mysql role",
                crate::shell::printable(name)
            )),
        },
    }
}

/// An edit of the inventory's text: the new text, and the 1-based line changed or added.
#[derive(Debug, PartialEq, Eq)]
pub struct Edit {
    pub text: String,
    pub line: usize,
    /// What the line said before (`None`: the line was added).
    pub was: Option<String>,
}

/// Sets `db_primary: NEW` in the top-level `vars:` block of an inventory's text: the
/// existing line's value is replaced (its indentation and comment kept), or a line is added
/// as the block's first. Refused (the operator edits by hand) when there is no top-level
/// `vars:` block, when it is written inline (`vars: {...}`), or when the var is set more than
/// once or with a value that is not a plain word.
pub fn set_primary(text: &str, new: &str) -> Result<Edit, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_end() == "vars:" || l.starts_with("vars: #"))
    else {
        return Err("the inventory has no top-level `vars:` block (a line `vars:`)".into());
    };
    // The block: the lines after it that are indented, blank or comments.
    let mut end = start + 1;
    while end < lines.len() {
        let l = lines[end];
        let blank = l.trim().is_empty();
        if !blank && !l.starts_with(' ') && !l.starts_with('#') {
            break;
        }
        end += 1;
    }
    let block = start + 1..end;
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let indent = lines[block.clone()]
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| indent_of(l))
        .unwrap_or(2);
    let key = format!("{VAR}:");
    let hits: Vec<usize> = block
        .clone()
        .filter(|&i| indent_of(lines[i]) == indent && lines[i].trim_start().starts_with(&key))
        .collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match hits.as_slice() {
        [] => {
            out.insert(start + 1, format!("{}{key} {new}\n", " ".repeat(indent)));
            Ok(Edit {
                text: out.concat(),
                line: start + 2,
                was: None,
            })
        }
        [i] => {
            let l = lines[*i];
            // The value's place in the line: after the key and its spaces, up to a comment
            // or the line's end; everything around it is kept as written.
            let at = l.len() - l.trim_start().len() + key.len();
            let rest = &l[at..];
            let start = at + (rest.len() - rest.trim_start().len());
            let body = l[start..].trim_end_matches(['\n', '\r']);
            let len = body.find(" #").unwrap_or(body.len());
            let value = body[..len].trim_end();
            let word = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !word {
                return Err(format!(
                    "line {}: `{}` is not a plain host name",
                    i + 1,
                    crate::shell::printable(value)
                ));
            }
            let spaces = if start == at { " " } else { "" };
            out[*i] = format!("{}{spaces}{new}{}", &l[..start], &l[start + value.len()..]);
            Ok(Edit {
                text: out.concat(),
                line: i + 1,
                was: Some(value.to_string()),
            })
        }
        many => Err(format!(
            "`{VAR}` is set {} times in `vars:` (lines {})",
            many.len(),
            many.iter()
                .map(|i| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inventory with web1 and, in tier `db` (role mysql), db1 then db2.
    fn inventory(tail: &str) -> Inventory {
        let text = format!(
            "domain: www.example.test\ntiers:\n  web:\n    roles: [web]\n  db:\n    roles: [mysql]\n\
             hosts:\n  web1:\n    address: 192.0.2.21\n    tier: web\n  db1:\n    address: 192.0.2.41\n    tier: db\n\
             \x20 db2:\n    address: 192.0.2.42\n    tier: db\n{tail}"
        );
        crate::inventory::parse(
            std::path::Path::new("inv.yml"),
            &text,
            &["web".to_string(), "mysql".to_string()],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn name(inv: &Inventory) -> Result<Option<String>, String> {
        primary(inv).map(|h| h.map(|h| h.name.clone()))
    }

    #[test]
    fn the_primary_is_the_var_else_the_first_host_with_mysql() {
        assert_eq!(name(&inventory("")), Ok(Some("db1".into())));
        let mut inv = inventory("vars:\n  db_primary: db2\n");
        assert_eq!(name(&inv), Ok(Some("db2".into())));
        // --var wins over the file.
        inv.cli_vars.insert(VAR.into(), Value::String("db1".into()));
        assert_eq!(name(&inv), Ok(Some("db1".into())));
    }

    #[test]
    fn a_primary_that_is_no_mysql_host_or_no_name_is_an_error() {
        let err = name(&inventory("vars:\n  db_primary: web1\n")).unwrap_err();
        assert!(
            err.contains("`web1` is not a host with the mysql role"),
            "{err}"
        );
        let err = name(&inventory("vars:\n  db_primary: 3\n")).unwrap_err();
        assert!(err.contains("a host name, not 3"), "{err}");
        let no_db = crate::inventory::parse(
            std::path::Path::new("inv.yml"),
            "domain: x.test\ntiers:\n  web:\n    roles: [web]\nhosts:\n  web1:\n    address: 192.0.2.21\n    tier: web\n",
            &["web".to_string()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name(&no_db), Ok(None));
    }

    #[test]
    fn the_block_ends_at_the_next_top_level_key() {
        // Another section's `db_primary:` at the same indentation is not the block's.
        let inv = "vars:\n  a: 1\n# about secrets\nsecrets:\n  db_primary: x\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.text,
            "vars:\n  db_primary: db2\n  a: 1\n# about secrets\nsecrets:\n  db_primary: x\n"
        );
        // Neither a blank line nor a comment in the first column ends the block.
        let inv = "vars:\n  a: 1\n\n  db_primary: db1\nhosts: {}\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!((e.line, e.was.as_deref()), (4, Some("db1")));
        let inv = "vars:\n  a: 1\n# the writer:\n  db_primary: db1\nhosts: {}\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!((e.line, e.was.as_deref()), (4, Some("db1")));
        // The block's indentation is its first key's, not a comment's.
        let inv = "vars:\n# shared by every host\n    a: 1\n    db_primary: db1\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!((e.line, e.was.as_deref()), (4, Some("db1")));
        assert!(e.text.ends_with("    db_primary: db2\n"), "{}", e.text);
    }

    const INV: &str = "domain: x\nvars:\n  app_port: 8000\n  db_primary: db1   # the writer\n  db_name: foobar\nsecrets: {}\n";

    #[test]
    fn the_value_is_replaced_and_the_comment_kept() {
        let e = set_primary(INV, "db2").expect("edit");
        assert_eq!(e.line, 4);
        assert_eq!(e.was.as_deref(), Some("db1"));
        assert_eq!(
            e.text,
            "domain: x\nvars:\n  app_port: 8000\n  db_primary: db2   # the writer\n  db_name: foobar\nsecrets: {}\n"
        );
    }

    #[test]
    fn a_missing_var_is_added_first_in_the_block_with_its_indentation() {
        let inv = "vars:\n    app_port: 8000\n    # note\n\nhosts: {}\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!(e.line, 2);
        assert_eq!(e.was, None);
        assert_eq!(
            e.text,
            "vars:\n    db_primary: db2\n    app_port: 8000\n    # note\n\nhosts: {}\n"
        );
    }

    #[test]
    fn the_var_of_a_host_or_tier_is_not_the_top_level_one() {
        let inv = "hosts:\n  db1:\n    vars:\n      db_primary: db1\nvars:\n  a: 1\n";
        let e = set_primary(inv, "db2").expect("edit");
        assert_eq!(e.line, 6);
        assert!(
            e.text
                .contains("      db_primary: db1\nvars:\n  db_primary: db2\n  a: 1\n")
        );
    }

    #[test]
    fn what_cannot_be_edited_safely_is_refused() {
        assert!(
            set_primary("hosts: {}\n", "db2")
                .unwrap_err()
                .contains("no top-level")
        );
        assert!(
            set_primary("vars: {db_primary: db1}\n", "db2")
                .unwrap_err()
                .contains("no top-level")
        );
        let twice = "vars:\n  db_primary: db1\n  db_primary: db3\n";
        assert!(set_primary(twice, "db2").unwrap_err().contains("2 times"));
        let odd = "vars:\n  db_primary: \"db1\"\n";
        assert!(
            set_primary(odd, "db2")
                .unwrap_err()
                .contains("plain host name")
        );
        let empty = "vars:\n  db_primary:\n";
        assert!(
            set_primary(empty, "db2")
                .unwrap_err()
                .contains("plain host name")
        );
    }

    #[test]
    fn the_last_line_without_a_newline_keeps_none() {
        let e = set_primary("vars:\n  db_primary: db1", "db2").expect("edit");
        assert_eq!(e.text, "vars:\n  db_primary: db2");
    }
}
