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

/// Turns a serde-saphyr error into a diagnostic: position from the error, message
/// without the snippet, and a "did you mean" for unknown keys.
pub fn from_yaml_error(file: &Path, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let full = err.without_snippet().to_string();
    let message = strip_location_suffix(full.lines().next().unwrap_or("invalid YAML").trim());
    let mut d = Diagnostic::new(file, line, column, message.clone());
    if let Some((unknown, expected)) = parse_unknown_field(&message) {
        let candidates: Vec<&str> = expected.iter().map(String::as_str).collect();
        d.hint = Some(match crate::suggest::nearest(&unknown, &candidates) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("valid keys here: {}", expected.join(", ")),
        });
    } else if message.contains("duplicate") {
        d.hint = Some("each key may appear once in a mapping; remove or rename one".into());
    }
    d
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
