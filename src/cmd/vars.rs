//! `--var KEY=VALUE`: vars given on the command line, above every other layer of the
//! precedence (role defaults < inventory < tier < host < `--var`).

use crate::inventory::BUILT_IN_NAMES;
use serde_json::{Map, Value};

/// Every `--var`, in order (a key given twice: the last wins).
///
/// # Errors
/// A var without `=`, a key that is not an identifier or is a built-in name.
pub(super) fn parse_all(given: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for g in given {
        let (k, v) = parse(g).map_err(anyhow::Error::msg)?;
        out.insert(k, v);
    }
    Ok(out)
}

/// One `KEY=VALUE`. The value is a JSON number, `true`, `false`, `null`, or a JSON list,
/// object or quoted string when it parses as one; anything else is the string as given.
pub(super) fn parse(given: &str) -> Result<(String, Value), String> {
    let Some((key, raw)) = given.split_once('=') else {
        return Err(format!(
            "--var {}: write KEY=VALUE (e.g. --var app_workers=4)",
            crate::shell::printable(given)
        ));
    };
    if !is_identifier(key) {
        return Err(format!(
            "--var {}: `{}` is not a var name: letters, digits and `_`, not starting with a digit",
            crate::shell::printable(given),
            crate::shell::printable(key)
        ));
    }
    if BUILT_IN_NAMES.contains(&key) {
        return Err(format!(
            "--var {key}: `{key}` is a name templates get from the inventory ({}); it cannot be set",
            BUILT_IN_NAMES.join(", ")
        ));
    }
    Ok((key.to_string(), value(raw)))
}

fn value(raw: &str) -> Value {
    let t = raw.trim();
    let json_like = matches!(t, "true" | "false" | "null")
        || t.starts_with(['[', '{', '"'])
        || t.parse::<f64>().is_ok_and(f64::is_finite) && t.parse::<serde_json::Number>().is_ok();
    if json_like && let Ok(v) = serde_json::from_str::<Value>(t) {
        return v;
    }
    Value::String(raw.to_string())
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The vars as the plan's header shows them: `KEY=VALUE` (JSON), sorted by name.
pub(super) fn header(vars: &Map<String, Value>) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    let shown: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!(
        "vars from the command line (--var, above every other var): {}",
        shown.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_look_like_it_else_strings() {
        for (given, want) in [
            ("n=4", json!(4)),
            ("n=-1.5", json!(-1.5)),
            ("b=true", json!(true)),
            ("b=false", json!(false)),
            ("z=null", json!(null)),
            ("l=[1, \"a\"]", json!([1, "a"])),
            ("o={\"k\": 1}", json!({"k": 1})),
            ("q=\"007\"", json!("007")),
            ("s=hello world", json!("hello world")),
            ("s=007x", json!("007x")),
            ("s=", json!("")),
            ("s=[not json", json!("[not json")),
            ("s=a=b", json!("a=b")),
            ("s=1e999", json!("1e999")),
            ("s=True", json!("True")),
        ] {
            let (_, v) = parse(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(v, want, "{given}");
        }
    }

    #[test]
    fn names_must_be_identifiers_and_not_built_in() {
        for (given, want) in [
            ("novalue", "write KEY=VALUE"),
            ("=1", "`` is not a var name"),
            ("9a=1", "`9a` is not a var name"),
            ("a-b=1", "`a-b` is not a var name"),
            ("a.b=1", "`a.b` is not a var name"),
            (
                "host=x",
                "`host` is a name templates get from the inventory",
            ),
            ("secrets=x", "it cannot be set"),
        ] {
            let e = parse(given).expect_err(given);
            assert!(e.contains(want), "{given}: {e}");
        }
        assert!(parse("_private_1=x").is_ok());
    }

    #[test]
    fn the_last_of_a_key_given_twice_wins_and_the_header_lists_them_in_order() {
        let vars = parse_all(&["b=1".into(), "a=x".into(), "b=2".into()]).expect("vars");
        assert_eq!(vars.get("b"), Some(&json!(2)));
        assert_eq!(
            header(&vars).as_deref(),
            Some("vars from the command line (--var, above every other var): a=\"x\" b=2")
        );
        assert_eq!(header(&Map::new()), None);
    }
}
