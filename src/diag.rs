//! A located diagnostic: what went wrong, where (file:line:column), and what to do next.

use std::fmt;
use std::path::{Path, PathBuf};

/// One error in an input file (inventory, role, template), with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    /// 1-based; 0 when the position is unknown.
    pub column: u64,
    pub message: String,
    /// What to do next, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, line: u64, column: u64, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    /// A diagnostic at a serde-saphyr location.
    pub fn at(file: &Path, loc: serde_saphyr::Location, message: impl Into<String>) -> Self {
        Diagnostic::new(file, loc.line(), loc.column(), message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Several diagnostics as one, so that every problem is reported at once: the first
    /// one's position, then each of the others on lines of their own (file:line:col:
    /// message), hints kept. `None` for none; one is returned as it is.
    pub fn combine(all: Vec<Diagnostic>) -> Option<Diagnostic> {
        let mut all = all.into_iter();
        let mut first = all.next()?;
        let rest: Vec<Diagnostic> = all.collect();
        if rest.is_empty() {
            return Some(first);
        }
        if let Some(hint) = first.hint.take() {
            first.message.push_str(&format!("\n  hint: {hint}"));
        }
        for d in rest {
            first.message.push('\n');
            first.message.push_str(&d.to_string());
        }
        Some(first)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column.max(1),
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Turns a serde-saphyr error into a diagnostic: position from the error, a message in
/// the user's words (not serde's or the parser's internals), and a hint where one helps,
/// e.g. "did you mean" for unknown keys.
pub fn from_yaml_error(file: &Path, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let (message, hint) = describe_yaml_error(root_yaml_error(err));
    let mut d = Diagnostic::new(file, line, column, message.clone());
    d.hint = hint;
    if let Some((unknown, expected)) = parse_unknown_field(&message) {
        let candidates: Vec<&str> = expected.iter().map(String::as_str).collect();
        d.hint = Some(match crate::suggest::nearest(&unknown, &candidates) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("valid keys here: {}", expected.join(", ")),
        });
    }
    d
}

/// The error itself, without the snippet or alias wrappers around it.
fn root_yaml_error(err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    use serde_saphyr::Error as E;
    match err {
        E::WithSnippet { error, .. } | E::AliasError { error, .. } => root_yaml_error(error),
        other => other,
    }
}

const ALIAS_HINT: &str =
    "write the values out instead of multiplying them with &anchors and *aliases";

/// Message and hint for one serde-saphyr error, without position.
fn describe_yaml_error(err: &serde_saphyr::Error) -> (String, Option<String>) {
    use serde_saphyr::Error as E;
    let s = |m: &str| m.to_string();
    match err {
        E::Eof { .. } => (
            s("unexpected end of file: the file is empty or cut short"),
            Some(s(
                "the file must hold one YAML mapping (`key: value` lines)",
            )),
        ),
        E::MultipleDocuments { .. } => second_document(),
        E::Budget { breach, .. } => describe_breach(breach),
        E::AliasReplayCounterOverflow { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            (s("*aliases expand to too much data"), Some(s(ALIAS_HINT)))
        }
        E::UnknownAnchor { .. } => (
            s("this *alias names no &anchor defined before it"),
            Some(s(
                "define the anchor (`&name`) earlier in the file, or write the value out",
            )),
        ),
        E::Unexpected { expected, .. } => (expected_node(expected), None),
        E::InvalidScalar { ty, .. } => (expected_scalar(ty), None),
        E::InvalidBooleanStrict { .. } => (s("expected true or false"), None),
        E::NullIntoString { .. } => (
            s("a value is required here, but it is empty (null)"),
            Some(s("write the value after the `:`, or remove the key")),
        ),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (format!("expected {expected}, found {unexpected}"), None),
        E::SerdeMissingField { field, .. } => (
            format!("missing field `{field}`"),
            // serde-saphyr points at the last key it read of the mapping that lacks it.
            Some(format!(
                "add `{field}:` to the mapping this line belongs to (see docs/formats.md)"
            )),
        ),
        E::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => s("duplicate key"),
            },
            Some(s(
                "each key may appear once in a mapping; remove or rename one",
            )),
        ),
        E::InvalidUtf8Input => (s("not valid UTF-8"), None),
        E::NonFiniteFloat { value, .. } => (
            format!("`{value}` is not a finite number"),
            Some(format!("quote it if it is meant as text: \"{value}\"")),
        ),
        E::TaggedScalarCannotDeserializeIntoString { .. } => (
            s("a value with a YAML tag (`!name`) cannot be used as a string here"),
            Some(s("remove the tag, or put the whole value in quotes")),
        ),
        E::ExternalMessage { msg, .. } => {
            (format!("YAML syntax error: {msg}"), syntax_hint(msg).map(s))
        }
        other => {
            let full = other.to_string();
            let first = full.lines().next().unwrap_or("invalid YAML").trim();
            (strip_location_suffix(first), None)
        }
    }
}

/// A `---` line, or the budget's count of documents.
fn second_document() -> (String, Option<String>) {
    (
        "a second YAML document starts here; only one is allowed".to_string(),
        Some("a line `---` starts a new document: remove it, or split the file".to_string()),
    )
}

/// Message and hint for a breach of the parser budget ([`crate::inventory::yaml_options`]).
fn describe_breach(breach: &serde_saphyr::budget::BudgetBreach) -> (String, Option<String>) {
    use serde_saphyr::budget::BudgetBreach as B;
    let s = |m: &str| m.to_string();
    match breach {
        B::Documents { .. } => second_document(),
        B::Depth { .. } => (
            s("the structure is nested too deeply"),
            Some(s("lists and mappings may nest 64 levels deep at most")),
        ),
        B::Aliases { .. } | B::Anchors { .. } | B::AliasAnchorRatio { .. } => {
            (s("too many &anchors or *aliases"), Some(s(ALIAS_HINT)))
        }
        B::Nodes { .. } | B::Events { .. } | B::ScalarBytes { .. } => (
            s("the document is too large (counting what its *aliases expand to)"),
            Some(s(
                "an inventory or role is a small file; if this one multiplies values \
                 with &anchors and *aliases, write them out instead",
            )),
        ),
        breach => (
            format!("the document exceeds a parser limit ({breach:?})"),
            None,
        ),
    }
}

/// What the parser expected instead of the node it found, in the user's words.
fn expected_node(expected: &str) -> String {
    match expected {
        "mapping start" => "expected a mapping (`key: value` lines) here".to_string(),
        "sequence start" => "expected a list (`- item` lines or `[a, b]`) here".to_string(),
        "string scalar" | "scalar" => {
            "expected a single value here, not a list or mapping".to_string()
        }
        other => format!("expected {other} here"),
    }
}

/// The kind of value a Rust type wants, in the user's words.
fn expected_scalar(ty: &str) -> String {
    match ty {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "expected a whole number".to_string(),
        "f32" | "f64" | "floating point" => "expected a number".to_string(),
        "bool" | "boolean" => "expected true or false".to_string(),
        other => format!("expected a value of type {other}"),
    }
}

/// What to check for a syntax error, from the parser's message.
fn syntax_hint(msg: &str) -> Option<&'static str> {
    if msg.contains("tab") {
        Some("indent with spaces: YAML does not allow tabs in indentation")
    } else if msg.contains("recursion limit") {
        Some("lists and mappings may nest 64 levels deep at most")
    } else if msg.contains("unclosed") {
        Some("a quote or bracket opened here is not closed")
    } else if msg.contains("mismatched bracket") {
        Some("close each `[` with `]` and each `{` with `}`")
    } else if ["':'", "mapping values", "expected key", "block"]
        .iter()
        .any(|w| msg.contains(w))
    {
        Some("check the indentation, and the brackets and quotes just before this point")
    } else {
        None
    }
}

/// serde-saphyr appends " at line X column Y"; we print the position in front instead.
fn strip_location_suffix(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (backticks optional).
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.split("unknown field ").nth(1)?;
    let (unknown, rest) = rest.split_once(", expected ")?;
    let list = rest.strip_prefix("one of ").unwrap_or(rest);
    let expected: Vec<String> = list
        .split(", ")
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Some((unknown.trim().trim_matches('`').to_string(), expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_diagnostics_show_every_one_with_its_place() {
        assert_eq!(Diagnostic::combine(Vec::new()), None);
        let a = Diagnostic::new(Path::new("inv.yml"), 3, 5, "first").with_hint("do this");
        let b = Diagnostic::new(Path::new("inv.yml"), 9, 3, "second");
        assert_eq!(Diagnostic::combine(vec![a.clone()]), Some(a.clone()));
        let both = Diagnostic::combine(vec![a, b]).map(|d| d.to_string());
        assert_eq!(
            both.as_deref(),
            Some("inv.yml:3:5: first\n  hint: do this\ninv.yml:9:3: second")
        );
    }

    #[test]
    fn parses_serde_unknown_field_message() {
        let (u, e) =
            parse_unknown_field("unknown field `adress`, expected one of `address`, `tier`")
                .expect("parsed");
        assert_eq!(u, "adress");
        assert_eq!(e, vec!["address", "tier"]);
        let (u, e) = parse_unknown_field("unknown field `adress`, expected one of address, tier")
            .expect("parsed");
        assert_eq!(
            (u.as_str(), e),
            ("adress", vec!["address".to_string(), "tier".to_string()])
        );
    }

    #[test]
    fn display_puts_position_first_and_hint_after() {
        let d = Diagnostic::new(Path::new("inv.yml"), 3, 5, "bad").with_hint("fix it");
        assert_eq!(d.to_string(), "inv.yml:3:5: bad\n  hint: fix it");
    }
}
