//! Secret values: read from the environment, from files outside the inventory, or from
//! what a command prints (`sops`, `pass`, `op`, `vault`: `command.rs`), and masked out of
//! everything the tool prints or writes locally.

mod command;

use crate::diag::Diagnostic;
use crate::inventory::{Inventory, SecretSource, SecretSpec};
use std::collections::BTreeMap;

/// What replaces a secret in any output.
const MASK: &str = "********";

/// Secrets shorter than this are not masked by substring (they would mask ordinary
/// text); the loader refuses them instead.
const MIN_SECRET_LEN: usize = 6;

/// The secret values of one run, by name.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Reads every secret the inventory declares (the commands at once). Every secret that
    /// cannot be read is reported, in one error.
    pub fn load(inv: &Inventory) -> Result<Secrets, Diagnostic> {
        Self::load_with(inv, |name| std::env::var(name).ok())
    }

    /// As [`Secrets::load`], with the environment given as a function (for tests).
    fn load_with(
        inv: &Inventory,
        env: impl Fn(&str) -> Option<String> + Sync,
    ) -> Result<Secrets, Diagnostic> {
        let read: Vec<Result<String, Diagnostic>> = std::thread::scope(|scope| {
            let running: Vec<_> = inv
                .secrets
                .iter()
                .map(|spec| {
                    let env = &env;
                    scope.spawn(move || read_one(inv, spec, env))
                })
                .collect();
            running
                .into_iter()
                .zip(&inv.secrets)
                .map(|(r, spec)| {
                    r.join().unwrap_or_else(|_| {
                        Err(Diagnostic::new(
                            &inv.path,
                            spec.line,
                            spec.column,
                            format!("secret `{}`: reading it failed", spec.name),
                        ))
                    })
                })
                .collect()
        });
        let mut values = BTreeMap::new();
        let mut errors = Vec::new();
        for (spec, r) in inv.secrets.iter().zip(read) {
            match r {
                Ok(v) => {
                    values.insert(spec.name.clone(), v);
                }
                Err(d) => errors.push(d),
            }
        }
        let loaded = Secrets { values };
        if let Some(d) = Diagnostic::combine(errors) {
            // A command's stderr may hold another secret's value.
            let mut d = d;
            d.message = loaded.mask(&d.message);
            return Err(d);
        }
        Ok(loaded)
    }

    /// Secrets from literal values (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Secrets {
        Secrets {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Values by name, for the template context.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// Whether `text` holds any secret value (or any line of a multi-line one, as
    /// [`Secrets::mask`] finds them).
    pub fn appears_in(&self, text: &str) -> bool {
        self.needles().any(|n| text.contains(n))
            || text.lines().any(|l| self.is_short_secret_line(l))
    }

    /// Replaces every secret value in `text` with [`MASK`]. Multi-line secrets (PEM keys)
    /// are masked whole and line by line, so a diff hunk showing part of one is masked too:
    /// lines of [`MIN_SECRET_LEN`] characters or more wherever they appear, shorter lines
    /// when they make a whole line of `text` (see [`Secrets::is_short_secret_line`]).
    ///
    /// Mask text before it is escaped (JSON, shell quoting): the escaped form of a secret
    /// is not found here.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut needles: Vec<&str> = self.needles().collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in needles {
            if out.contains(n) {
                out = out.replace(n, MASK);
            }
        }
        if !self.values.values().any(|v| v.trim().contains('\n')) {
            return out;
        }
        out.split_inclusive('\n')
            .map(|line| {
                if !self.is_short_secret_line(line) {
                    return line.to_string();
                }
                let marker = diff_marker(line).map(String::from).unwrap_or_default();
                let end = &line[line.trim_end_matches(['\n', '\r']).len()..];
                format!("{marker}{MASK}{end}")
            })
            .collect()
    }

    /// Substrings masked wherever they appear: each whole value (also without surrounding
    /// whitespace, so a file's final newline does not hide it) and each line of a
    /// multi-line value that has at least [`MIN_SECRET_LEN`] characters, except PEM armour.
    fn needles(&self) -> impl Iterator<Item = &str> {
        self.values.values().flat_map(|v| {
            let trimmed = v.trim();
            let whole = std::iter::once(v.as_str())
                .chain((trimmed != v && !trimmed.is_empty()).then_some(trimmed));
            let lines = v
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_SECRET_LEN && !l.starts_with("-----"));
            whole.chain(lines)
        })
    }

    /// Whether this line of output is, apart from a diff marker (`+`, `-`, space) and
    /// surrounding whitespace, exactly one of the short lines (under [`MIN_SECRET_LEN`]
    /// characters) of a multi-line secret, such as the last line of a PEM body (`xyz=`).
    ///
    /// Why only whole lines: a fragment of 1 to 5 characters is everywhere in ordinary text
    /// (`END`, `=`, `abc`), so masking it as a substring would wreck every output. Such
    /// lines show up whole in diffs and in printed files, which is how a multi-line secret
    /// is shown line by line; elsewhere (inside another line) at most those few characters
    /// of one line could appear, which are not the value and cannot be told from ordinary
    /// text. Lines without a letter or digit (`}`, `==`, empty) hold no secret material
    /// and are left alone, as is the PEM armour.
    fn is_short_secret_line(&self, line: &str) -> bool {
        let body = line.trim_end_matches(['\n', '\r']);
        let body = diff_marker(body).map_or(body, |m| &body[m.len()..]).trim();
        if body.is_empty() || body.len() >= MIN_SECRET_LEN {
            return false;
        }
        self.values
            .values()
            .filter(|v| v.trim().contains('\n'))
            .flat_map(|v| v.lines().map(str::trim))
            .any(|l| l == body && !l.starts_with("-----") && l.chars().any(char::is_alphanumeric))
    }
}

/// One secret's value, or why it cannot be read.
fn read_one(
    inv: &Inventory,
    spec: &SecretSpec,
    env: &(impl Fn(&str) -> Option<String> + Sync),
) -> Result<String, Diagnostic> {
    let d = |msg: String, hint: String| {
        Diagnostic::new(&inv.path, spec.line, spec.column, msg).with_hint(hint)
    };
    let raw = match &spec.source {
        SecretSource::Env(var) => env(var).ok_or_else(|| {
            d(
                format!(
                    "secret `{}`: environment variable {var} is not set",
                    spec.name
                ),
                format!("export {var}=... before running, or point the secret at a file"),
            )
        })?,
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            d(
                format!(
                    "secret `{}`: cannot read {}: {e}",
                    spec.name,
                    path.display()
                ),
                "create the file (mode 0600) or point the secret at an environment variable"
                    .to_string(),
            )
        })?,
        SecretSource::Command { argv, timeout, dir } => {
            let value = command::run(argv, dir, *timeout, command::MAX_OUTPUT).map_err(|e| {
                d(
                    format!("secret `{}`: {e}", spec.name),
                    "run the command by hand to see why; it must print the secret on stdout and exit 0"
                        .to_string(),
                )
            })?;
            // A program prints its value with one final newline; only that one goes.
            let value = value
                .strip_suffix("\r\n")
                .or_else(|| value.strip_suffix('\n'))
                .unwrap_or(&value)
                .to_string();
            return check_length(spec, value).map_err(|(m, h)| d(m, h));
        }
    };
    // Files conventionally end with a newline; a one-line secret should not.
    let value = if raw.trim_end().contains('\n') {
        raw
    } else {
        raw.trim_end_matches(['\n', '\r']).to_string()
    };
    check_length(spec, value).map_err(|(m, h)| d(m, h))
}

/// A value long enough to be masked wherever it appears.
fn check_length(spec: &SecretSpec, value: String) -> Result<String, (String, String)> {
    if value.trim().len() < MIN_SECRET_LEN {
        return Err((
            format!(
                "secret `{}` is shorter than {MIN_SECRET_LEN} characters",
                spec.name
            ),
            "use a longer random value (e.g. `openssl rand -hex 16`)".to_string(),
        ));
    }
    Ok(value)
}

/// The diff marker a line starts with (`+`, `-` or a space), if any.
fn diff_marker(line: &str) -> Option<&'static str> {
    ["+", "-", " "].into_iter().find(|m| line.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_whole_values_and_pem_lines() {
        let pem =
            "-----BEGIN PRIVATE KEY-----\nAAAABBBBCCCC\nDDDDEEEEFFFF\n-----END PRIVATE KEY-----\n";
        let s = Secrets::from_pairs(&[("pw", "hunter2hunter2"), ("key", pem)]);
        assert_eq!(s.mask("password=hunter2hunter2;"), "password=********;");
        assert_eq!(s.mask(&format!("x\n{pem}y")), "x\n********y");
        assert_eq!(s.mask("+DDDDEEEEFFFF\n"), "+********\n");
        // the armour lines are not secret and stay readable
        assert_eq!(
            s.mask("-----END PRIVATE KEY-----"),
            "-----END PRIVATE KEY-----"
        );
        assert!(s.appears_in("..hunter2hunter2.."));
        assert!(!s.appears_in("nothing here"));
    }

    fn inventory(secrets: &str) -> Inventory {
        let text = format!(
            "domain: www.example.test\ntiers:\n  web:\n    roles: [web]\nhosts:\n  web1: {{address: 192.0.2.1, tier: web}}\nsecrets:\n{secrets}"
        );
        crate::inventory::parse(std::path::Path::new("inv.yml"), &text, &["web".to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn load(secrets: &str) -> Result<Secrets, String> {
        Secrets::load_with(&inventory(secrets), |name| {
            (name == "SET").then(|| "from-the-env-1".to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn every_missing_secret_is_reported_at_once_with_its_line() {
        let e = load(
            "  a: {env: SET}\n  b: {env: UNSET_ONE}\n  c: {file: /nonexistent/pw}\n  d: {command: [sh, -c, 'echo no vault >&2; exit 2']}\n",
        )
        .expect_err("three missing");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(
            lines[0], "inv.yml:9:3: secret `b`: environment variable UNSET_ONE is not set",
            "{e}"
        );
        assert!(lines[1].starts_with("  hint: export UNSET_ONE"), "{e}");
        assert!(
            lines[2].starts_with("inv.yml:10:3: secret `c`: cannot read /nonexistent/pw"),
            "{e}"
        );
        assert!(e.contains("inv.yml:11:3: secret `d`: `sh -c 'echo no vault >&2; exit 2'` failed (exit 2): no vault"), "{e}");
        assert!(!e.contains("secret `a`"), "{e}");
    }

    #[test]
    fn a_command_prints_the_value_and_one_final_newline_is_dropped() {
        let s = load(
            "  one: {command: [printf, 'line-secret\\n']}\n  two: {command: [printf, 'multi\\nline\\n\\n']}\n  set: {env: SET}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.values()["one"], "line-secret");
        assert_eq!(s.values()["two"], "multi\nline\n");
        assert_eq!(s.values()["set"], "from-the-env-1");
    }

    #[test]
    fn a_command_that_overstays_fails_its_secret_in_time() {
        let started = std::time::Instant::now();
        let e = load("  slow: {command: [sleep, '30'], timeout: 0.5}\n").expect_err("timeout");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            e.contains("secret `slow`: `sleep 30` did not finish within 0.5 s and was stopped"),
            "{e}"
        );
    }

    #[test]
    fn a_short_value_from_a_command_is_refused() {
        let e = load("  tiny: {command: [printf, 'abc\\n']}\n").expect_err("short");
        assert!(
            e.contains("secret `tiny` is shorter than 6 characters"),
            "{e}"
        );
    }

    #[test]
    fn debug_never_prints_values() {
        let s = Secrets::from_pairs(&[("pw", "hunter2hunter2")]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    /// Review finding 8, reproduction: a multi-line secret whose lines are under
    /// [`MIN_SECRET_LEN`] characters (the short last line of a PEM body, or a value made of
    /// short lines) showed through a diff line by line: `+xyz=` stayed readable.
    #[test]
    fn short_lines_of_a_multi_line_secret_never_show_in_a_diff() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAABBBBCCCC\nxyz=\n-----END PRIVATE KEY-----\n";
        let short = "ab12\ncd34\nef56\n";
        let s = Secrets::from_pairs(&[("key", pem), ("short", short)]);
        let diff = concat!(
            "--- a\n+++ b\n@@ -1,2 +1,4 @@\n-old\n",
            "+AAAABBBBCCCC\n+xyz=\n",
            "+ab12\n+cd34\n-ef56\n  ef56  \n",
        );
        let masked = s.mask(diff);
        for fragment in ["xyz=", "ab12", "cd34", "ef56", "AAAABBBB"] {
            assert!(!masked.contains(fragment), "{fragment} in {masked}");
        }
        // Diff markers and the armour stay readable.
        assert!(masked.contains("\n+********\n+********\n"), "{masked}");
        assert!(masked.contains("\n-********\n"), "{masked}");
        assert!(
            masked.starts_with("--- a\n+++ b\n@@ -1,2 +1,4 @@\n-old\n"),
            "{masked}"
        );
        // The whole value, also without its final newline, is one mask.
        assert_eq!(s.mask("x ab12\ncd34\nef56 y"), "x ******** y");
        // A short fragment inside ordinary text is not a secret line: masking it everywhere
        // would wreck the output (see `needles`).
        assert_eq!(s.mask("vab12 cd345"), "vab12 cd345");
    }
}
