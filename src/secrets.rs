//! Secret values: read from the environment or from files outside the inventory, and
//! masked out of everything the tool prints or writes locally.

use crate::diag::Diagnostic;
use crate::inventory::{Inventory, SecretSource};
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
    /// Reads every secret the inventory declares.
    pub fn load(inv: &Inventory) -> Result<Secrets, Diagnostic> {
        Self::load_with(inv, |name| std::env::var(name).ok())
    }

    /// As [`Secrets::load`], with the environment given as a function (for tests).
    fn load_with(
        inv: &Inventory,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, Diagnostic> {
        let mut values = BTreeMap::new();
        for spec in &inv.secrets {
            let d = |msg: String, hint: String| {
                Diagnostic::new(&inv.path, spec.line, spec.column, msg).with_hint(hint)
            };
            let raw = match &spec.source {
                SecretSource::Env(var) => env(var).ok_or_else(|| {
                    d(
                        format!("secret `{}`: environment variable {var} is not set", spec.name),
                        format!("export {var}=... before running, or point the secret at a file"),
                    )
                })?,
                SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                    d(
                        format!("secret `{}`: cannot read {}: {e}", spec.name, path.display()),
                        "create the file (mode 0600) or point the secret at an environment variable".to_string(),
                    )
                })?,
            };
            // Files conventionally end with a newline; a one-line secret should not.
            let value = if raw.trim_end().contains('\n') {
                raw
            } else {
                raw.trim_end_matches(['\n', '\r']).to_string()
            };
            if value.trim().len() < MIN_SECRET_LEN {
                return Err(d(
                    format!(
                        "secret `{}` is shorter than {MIN_SECRET_LEN} characters",
                        spec.name
                    ),
                    "use a longer random value (e.g. `openssl rand -hex 16`)".to_string(),
                ));
            }
            values.insert(spec.name.clone(), value);
        }
        Ok(Secrets { values })
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

    /// Whether `text` holds any secret value (or any line of a multi-line one).
    pub fn appears_in(&self, text: &str) -> bool {
        self.needles().any(|n| text.contains(n))
    }

    /// Replaces every secret value in `text` with `********`. Multi-line secrets (PEM keys)
    /// are masked whole and line by line, so a diff hunk showing part of one is masked too.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut needles: Vec<&str> = self.needles().collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in needles {
            if out.contains(n) {
                out = out.replace(n, MASK);
            }
        }
        out
    }

    fn needles(&self) -> impl Iterator<Item = &str> {
        self.values.values().flat_map(|v| {
            let whole = std::iter::once(v.as_str());
            let lines = v
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_SECRET_LEN && !l.starts_with("-----"));
            whole.chain(lines)
        })
    }
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

    #[test]
    fn debug_never_prints_values() {
        let s = Secrets::from_pairs(&[("pw", "hunter2hunter2")]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
