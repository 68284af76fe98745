//! GitHub Actions workflow commands: an input error as an annotation on its file, line and
//! column (`::error file=...,line=...,col=...::message`), shown on the pull request's diff.
//! Pure: the caller decides when (`GITHUB_ACTIONS=true`) and prints it on stdout.

use crate::diag::Diagnostic;

/// The `::error` command of a diagnostic; `file` is its path as the repository names it
/// (relative to the workspace when it can be).
pub fn error_annotation(d: &Diagnostic, file: &str) -> String {
    let mut props = vec![format!("file={}", property(file))];
    if d.line > 0 {
        props.push(format!("line={}", d.line));
        props.push(format!("col={}", d.column.max(1)));
    }
    props.push(format!("title={}", property("foobar-provision")));
    let mut message = d.message.clone();
    if let Some(h) = &d.hint {
        message.push_str(&format!("\nhint: {h}"));
    }
    format!("::error {}::{}", props.join(","), data(&message))
}

/// A command's message: `%`, CR and LF encoded, as the runner decodes them.
fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A property value: as [`data`], and `:` and `,` too (they end a value).
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn an_input_error_is_an_annotation_on_its_line_and_column() {
        let d = Diagnostic::new(Path::new("/x/inv.yml"), 16, 5, "unknown field `adress`")
            .with_hint("did you mean `address`?");
        assert_eq!(
            error_annotation(&d, "inventories/inv.yml"),
            "::error file=inventories/inv.yml,line=16,col=5,title=foobar-provision::unknown field `adress`%0Ahint: did you mean `address`?"
        );
    }

    #[test]
    fn without_a_position_only_the_file_is_named() {
        let d = Diagnostic::new(Path::new("inv.yml"), 0, 0, "inventory file not found");
        assert_eq!(
            error_annotation(&d, "inv.yml"),
            "::error file=inv.yml,title=foobar-provision::inventory file not found"
        );
    }

    #[test]
    fn separators_in_values_are_encoded() {
        let d = Diagnostic::new(Path::new("a"), 1, 0, "100% bad\r\nnext::line");
        assert_eq!(
            error_annotation(&d, "dir,with:odd%name"),
            "::error file=dir%2Cwith%3Aodd%25name,line=1,col=1,title=foobar-provision::100%25 bad%0D%0Anext::line"
        );
    }
}
