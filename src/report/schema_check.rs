//! A small JSON Schema checker for the tests that hold docs/*.schema.json to the documents
//! the code writes: the keywords those schemas use (`type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `$ref` to `#/$defs/...`, `oneOf`,
//! `anyOf`; `minimum` for integers), and no other: a schema using anything else fails, so
//! nothing is silently unchecked. It also says which properties of the schema a document
//! used, so a test can insist that every documented field exists.
//!
//! Test code only; compiled into the unit tests and, by path, into tests/offline.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Keywords that only describe.
const ANNOTATIONS: [&str; 6] = [
    "$schema",
    "$id",
    "title",
    "description",
    "$comment",
    "examples",
];

/// Checks `doc` against `schema` (the whole schema file: `$defs` are looked up in it).
/// Returns the properties the document used (`DEF.PROPERTY`, `DEF` being `#` for the
/// root), or every mismatch as `pointer: what`.
pub fn check(schema: &Value, doc: &Value) -> Result<BTreeSet<String>, Vec<String>> {
    let mut used = BTreeSet::new();
    let mut errors = Vec::new();
    node(schema, schema, "#", doc, "", &mut used, &mut errors);
    if errors.is_empty() {
        Ok(used)
    } else {
        Err(errors)
    }
}

/// Every property the schema defines, as `DEF.PROPERTY` (the names [`check`] returns).
pub fn properties(schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut collect = |def: &str, s: &Value| walk(def, s, &mut out);
    collect("#", schema);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, s) in defs {
            collect(name, s);
        }
    }
    out
}

fn walk(def: &str, s: &Value, out: &mut BTreeSet<String>) {
    let Some(obj) = s.as_object() else { return };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            out.insert(format!("{def}.{k}"));
            walk(&format!("{def}.{k}"), v, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = obj.get(key) {
            walk(def, v, out);
        }
    }
    for key in ["oneOf", "anyOf"] {
        for v in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            walk(def, v, out);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn node(
    root: &Value,
    s: &Value,
    def: &str,
    v: &Value,
    at: &str,
    used: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let here = if at.is_empty() { "/" } else { at };
    let Some(obj) = s.as_object() else {
        if s != &Value::Bool(true) {
            errors.push(format!("{here}: schema is not an object"));
        }
        return;
    };
    for key in obj.keys() {
        let known = matches!(
            key.as_str(),
            "type"
                | "properties"
                | "required"
                | "additionalProperties"
                | "items"
                | "enum"
                | "const"
                | "$ref"
                | "oneOf"
                | "anyOf"
                | "minimum"
                | "$defs"
        ) || ANNOTATIONS.contains(&key.as_str());
        if !known {
            errors.push(format!(
                "{here}: the schema uses `{key}`, which this checker does not know"
            ));
        }
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let Some(name) = r.strip_prefix("#/$defs/") else {
            errors.push(format!("{here}: $ref {r} is not #/$defs/NAME"));
            return;
        };
        match root.get("$defs").and_then(|d| d.get(name)) {
            Some(target) => node(root, target, name, v, at, used, errors),
            None => errors.push(format!("{here}: $ref {r} is not defined")),
        }
    }
    if let Some(t) = obj.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| is_type(v, t)) {
            errors.push(format!(
                "{here}: {} is not of type {}",
                short(v),
                types.join(" or ")
            ));
            return;
        }
    }
    if let Some(options) = obj.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errors.push(format!(
            "{here}: {} is not one of {}",
            short(v),
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = obj.get("const")
        && c != v
    {
        errors.push(format!("{here}: {} is not {c}", short(v)));
    }
    if let (Some(min), Some(n)) = (obj.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        errors.push(format!("{here}: {n} is below {min}"));
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        let Some(options) = obj.get(key).and_then(Value::as_array) else {
            continue;
        };
        let mut passing = Vec::new();
        for o in options {
            let (mut u, mut e) = (BTreeSet::new(), Vec::new());
            node(root, o, def, v, at, &mut u, &mut e);
            if e.is_empty() {
                passing.push(u);
            }
        }
        let ok = if exactly_one {
            passing.len() == 1
        } else {
            !passing.is_empty()
        };
        if ok {
            used.extend(passing.into_iter().flatten());
        } else {
            errors.push(format!(
                "{here}: {} matches {} of the {key} options",
                short(v),
                passing.len()
            ));
        }
    }
    if let Value::Object(fields) = v {
        object(root, obj, def, fields, at, used, errors);
    }
    if let (Value::Array(items), Some(item)) = (v, obj.get("items")) {
        for (i, x) in items.iter().enumerate() {
            node(root, item, def, x, &format!("{at}/{i}"), used, errors);
        }
    }
}

fn object(
    root: &Value,
    obj: &Map<String, Value>,
    def: &str,
    fields: &Map<String, Value>,
    at: &str,
    used: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let here = if at.is_empty() { "/" } else { at };
    let props = obj.get("properties").and_then(Value::as_object);
    for name in obj
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = name.as_str()
            && !fields.contains_key(name)
        {
            errors.push(format!("{here}: `{name}` is required"));
        }
    }
    for (k, x) in fields {
        let path = format!("{at}/{k}");
        match props.and_then(|p| p.get(k)) {
            Some(s) => {
                used.insert(format!("{def}.{k}"));
                node(root, s, &format!("{def}.{k}"), x, &path, used, errors);
            }
            None => match obj.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    errors.push(format!("{here}: `{k}` is not in the schema"));
                }
                Some(s @ Value::Object(_)) => node(root, s, def, x, &path, used, errors),
                _ => {}
            },
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_finds_what_differs() {
        let schema = json!({
            "type": "object",
            "required": ["a"],
            "additionalProperties": false,
            "properties": {
                "a": {"type": "integer", "minimum": 0},
                "b": {"$ref": "#/$defs/B"}
            },
            "$defs": {"B": {"type": ["string", "null"], "enum": ["x", null]}}
        });
        assert!(check(&schema, &json!({"a": 1, "b": "x"})).is_ok());
        assert!(check(&schema, &json!({"a": 1, "b": null})).is_ok());
        let errors = check(&schema, &json!({"a": -1, "b": "y", "c": 1})).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(check(&schema, &json!({"b": 1})).is_err());
        assert!(check(&json!({"pattern": "x"}), &json!("x")).is_err());
        assert_eq!(
            properties(&schema),
            ["#.a", "#.b"].into_iter().map(String::from).collect()
        );
    }
}
