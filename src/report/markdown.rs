//! A run as Markdown, for GitHub: a summary table (host, tier, changes, result) and one
//! collapsible `<details>` block per host with something to show (its plan in a ```diff
//! block, its error in a ```text block). `plan --format markdown` prints it (a
//! pull-request comment); `GITHUB_STEP_SUMMARY` gets it at the end of `plan` and `apply`.
//!
//! Pure. Secrets are masked before anything is escaped; text in table cells and summaries
//! is escaped (HTML and Markdown punctuation as character references), code blocks are
//! fenced with more backticks than they hold.

use super::{HostEnd, Outcome, RunMode, plan_text::plan_text_flush};
use crate::plan::HostPlan;
use crate::secrets::Secrets;
use crate::shell::printable;

/// Most characters of a document: GitHub refuses comments over 65,536. Hosts whose block
/// would go past it are listed as left out instead.
pub const MAX_CHARS: usize = 60_000;
/// Most characters of an error shown in a table cell (the whole error is in its block).
const CELL_CHARS: usize = 120;

/// The Markdown document of a run.
pub fn markdown(
    mode: RunMode,
    hosts: &[HostEnd],
    plans: &[&HostPlan],
    secrets: &Secrets,
) -> String {
    let plan_of = |name: &str| plans.iter().copied().find(|p| p.host == name);
    let mut out = format!("### foobar-provision {}\n\n", mode_word(mode));
    out.push_str(&headline(mode, hosts));
    out.push_str("\n\n| host | tier | changes | result |\n| --- | --- | ---: | --- |\n");
    for h in hosts {
        let changes =
            plan_of(h.host).map_or_else(|| "-".to_string(), |p| p.change_count().to_string());
        out.push_str(&format!(
            "| {} | {} | {changes} | {} |\n",
            escape(h.host),
            escape(h.tier),
            result(mode, h.outcome, secrets)
        ));
    }
    let mut left_out: Vec<&str> = Vec::new();
    for h in hosts {
        let block = details(mode, h, plan_of(h.host), secrets);
        if block.is_empty() {
            continue;
        }
        if out.len() + block.len() + 200 > MAX_CHARS || !left_out.is_empty() {
            left_out.push(h.host);
            continue;
        }
        out.push('\n');
        out.push_str(&block);
    }
    if !left_out.is_empty() {
        out.push_str(&format!(
            "\nLeft out to stay within GitHub's comment size: the details of {}; see the job's log.\n",
            left_out.iter().map(|h| escape(h)).collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

fn mode_word(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Plan => "plan",
        RunMode::Apply => "apply",
    }
}

/// One sentence: how many hosts change (and how many changes), how many failed.
fn headline(mode: RunMode, hosts: &[HostEnd]) -> String {
    let changed: Vec<usize> = hosts
        .iter()
        .filter_map(|h| match h.outcome {
            Some(Outcome::Changed(n)) => Some(*n),
            _ => None,
        })
        .collect();
    let failed = hosts
        .iter()
        .filter(|h| h.outcome.is_some_and(Outcome::is_failure))
        .count();
    let not_started = hosts.iter().filter(|h| h.outcome.is_none()).count();
    let verb = match mode {
        RunMode::Plan => "would change",
        RunMode::Apply => "changed",
    };
    let mut s = format!(
        "**{}** of {} host(s) {verb} ({} change(s))",
        changed.len(),
        hosts.len(),
        changed.iter().sum::<usize>()
    );
    if failed > 0 {
        s.push_str(&format!("; **{failed} failed**"));
    }
    if not_started > 0 {
        s.push_str(&format!("; {not_started} not started"));
    }
    s.push('.');
    s
}

/// The result cell: what happened, and for a failure its kind and first line.
fn result(mode: RunMode, o: Option<&Outcome>, secrets: &Secrets) -> String {
    let Some(o) = o else {
        return "not started".into();
    };
    match o {
        Outcome::Ok => "no changes".into(),
        Outcome::Changed(_) if mode == RunMode::Plan => "would change".into(),
        Outcome::Changed(_) => "changed".into(),
        Outcome::Skipped(why) => format!("skipped: {}", escape(&first_line(why, secrets))),
        _ => {
            let word = super::Status::of(o).word();
            let kind = o.kind().map(|k| format!(" ({k})")).unwrap_or_default();
            let role = o
                .failed_role()
                .map(|r| format!(" in role {}", escape(r)))
                .unwrap_or_default();
            let message = o
                .error()
                .map(|e| first_line(e, secrets))
                .unwrap_or_default();
            format!("**{word}**{role}{kind}: {}", escape(&message))
        }
    }
}

/// The first line of `text`, masked, printable, cut to [`CELL_CHARS`].
fn first_line(text: &str, secrets: &Secrets) -> String {
    let masked = printable(&secrets.mask(text));
    let line = masked.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// A host's collapsible block: its error (if it failed), then its plan (if it has
/// changes). Empty when there is neither.
fn details(mode: RunMode, h: &HostEnd, plan: Option<&HostPlan>, secrets: &Secrets) -> String {
    let error = h
        .outcome
        .filter(|o| o.is_failure())
        .and_then(|o| o.error())
        .map(|e| printable(&secrets.mask(e)));
    let plan = plan.filter(|p| !p.is_empty());
    if error.is_none() && plan.is_none() {
        return String::new();
    }
    let mut what = Vec::new();
    if let Some(p) = plan {
        what.push(format!("{} change(s)", p.change_count()));
    }
    if let Some(o) = h.outcome.filter(|o| o.is_failure()) {
        what.push(super::Status::of(o).word().to_string());
    }
    let mut out = format!(
        "<details><summary><b>{}</b> ({}): {}</summary>\n\n",
        escape(h.host),
        escape(h.tier),
        what.join(", ")
    );
    if let Some(e) = &error {
        out.push_str(&fenced("text", e));
    }
    if let Some(p) = plan {
        if error.is_some() && mode == RunMode::Apply {
            out.push_str("The plan it was applying:\n\n");
        }
        out.push_str(&fenced("diff", &secrets.mask(&plan_text_flush(p))));
    }
    out.push_str("</details>\n");
    out
}

/// `text` in a fenced code block of `lang`, the fence longer than any run of backticks
/// in it.
fn fenced(lang: &str, text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let body = text.trim_end_matches('\n');
    format!("{fence}{lang}\n{body}\n{fence}\n\n")
}

/// Text for a table cell or an HTML summary: printable, on one line, with HTML's and
/// Markdown's special characters as character references (so nothing in it is markup).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '&' | '<' | '>' | '"' | '\'' | '|' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#'
            | '!' | '~' | '\\' | '{' | '}' | '+' | '=' | '^' | '$' | '@' => {
                out.push_str(&format!("&#{};", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{self, SECRET};

    fn document(mode: RunMode) -> String {
        let plans = fixtures::plans();
        let refs: Vec<&HostPlan> = plans.iter().collect();
        let outcomes = match mode {
            RunMode::Plan => fixtures::plan_outcomes(),
            RunMode::Apply => fixtures::apply_outcomes(),
        };
        markdown(
            mode,
            &fixtures::ends(&outcomes),
            &refs,
            &fixtures::secrets(),
        )
    }

    #[test]
    fn plan_matches_its_golden_file() {
        fixtures::golden("plan.md", &document(RunMode::Plan));
    }

    #[test]
    fn apply_matches_its_golden_file() {
        fixtures::golden("apply.md", &document(RunMode::Apply));
    }

    #[test]
    fn no_secret_and_no_escape_code_reaches_the_document() {
        for mode in [RunMode::Plan, RunMode::Apply] {
            let doc = document(mode);
            assert!(!doc.contains(SECRET), "{doc}");
            assert!(!doc.contains('\u{1b}'), "{doc}");
        }
    }

    #[test]
    fn a_summary_table_then_one_block_per_host_with_something_to_show() {
        let doc = document(RunMode::Plan);
        assert!(
            doc.contains("| host | tier | changes | result |\n| --- | --- | ---: | --- |\n"),
            "{doc}"
        );
        assert!(doc.contains("| app1 | app | 5 | would change |"), "{doc}");
        assert!(doc.contains("| lb1 | lb | 0 | no changes |"), "{doc}");
        // Changed hosts and the failed one have a block; the converged one has none.
        assert_eq!(doc.matches("<details>").count(), 3, "{doc}");
        assert!(!doc.contains("<b>lb1</b>"), "{doc}");
        // Diff lines are flush left in a diff block.
        assert!(doc.contains("```diff\n"), "{doc}");
        assert!(doc.contains("\n-listen 80;\n+listen 443;\n"), "{doc}");
    }

    #[test]
    fn a_cell_holds_no_markup_and_no_line_break() {
        let cell = escape("a | b <i>x</i> `c` *d* [e](f)\nnext");
        assert!(
            !cell.contains(['|', '<', '>', '`', '*', '[', ']', '(', ')', '\n']),
            "{cell}"
        );
        assert_eq!(escape("web1"), "web1");
    }

    #[test]
    fn a_fence_is_longer_than_any_backtick_run_it_holds() {
        assert_eq!(fenced("diff", "+a\n"), "```diff\n+a\n```\n\n");
        assert_eq!(fenced("diff", "x ```` y"), "`````diff\nx ```` y\n`````\n\n");
    }

    #[test]
    fn a_long_document_leaves_out_the_last_hosts_details() {
        let plans = fixtures::plans();
        let mut big = plans[1].clone();
        if let Some(f) = big.roles[1].files.get_mut(0) {
            f.diff = Some(format!("+{}\n", "x".repeat(MAX_CHARS)));
        }
        let refs: Vec<&HostPlan> = vec![&plans[0], &big];
        let outcomes = fixtures::plan_outcomes();
        let doc = markdown(
            RunMode::Plan,
            &fixtures::ends(&outcomes),
            &refs,
            &fixtures::secrets(),
        );
        assert!(doc.len() < MAX_CHARS, "{}", doc.len());
        assert!(
            doc.contains("<b>app1</b>"),
            "the first host's block is kept"
        );
        assert!(
            doc.contains("Left out to stay within GitHub's comment size: the details of web1, db1"),
            "{doc}"
        );
    }
}
