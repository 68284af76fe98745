//! `trust`: show each selected host's key fingerprint and record it in the inventory's
//! known_hosts file. Refuses a changed or revoked key; trusting is always this explicit act.
//!
//! A new key is verified before it is recorded: against `--fingerprint`, or by the operator
//! on a terminal (`Trust this key? [y/N]`). Without either, it is recorded as before, but
//! the output says plainly that it was not verified and how to check it: scripts that
//! trust freshly built hosts keep working, and nobody takes such a key for a checked one.

use super::reach::check_identities;
use super::{EXIT_FAIL, EXIT_OK, load, refuse_run_options, select};
use crate::cli::Common;
use crate::transport::{self, known_hosts};
use russh::keys::PublicKey;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// How a new key is verified before it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyCheck {
    /// `--fingerprint`: the key must have this one (normalised to `SHA256:` + unpadded
    /// base64, as [`known_hosts::fingerprint`] writes it).
    Fingerprint(String),
    /// Stdin is a terminal: show the fingerprint and ask.
    Ask,
    /// Neither: record it, saying clearly that it was not verified.
    Unverified,
}

impl KeyCheck {
    /// `--fingerprint` as given: `SHA256:...` (the prefix and base64 padding optional).
    fn fingerprint(given: &str) -> Result<KeyCheck, String> {
        let given = given.trim();
        let hash = match given.split_once(':') {
            None => given,
            Some((alg, hash)) if alg.eq_ignore_ascii_case("SHA256") => hash,
            Some(_) => {
                return Err(format!(
                    "--fingerprint {given}: give the SHA256 fingerprint, as `ssh-keygen -lf \
                     /etc/ssh/ssh_host_ed25519_key.pub` prints it on the host (SHA256:...)"
                ));
            }
        };
        Ok(KeyCheck::Fingerprint(format!(
            "SHA256:{}",
            hash.trim_end_matches('=')
        )))
    }
}

pub(super) async fn trust(c: &Common, fingerprint: Option<&str>) -> anyhow::Result<i32> {
    refuse_run_options(c, "trust")?;
    let l = load(c)?;
    let hosts = select(&l, c)?;
    // Jump hosts authenticate: their keys are checked before any connection.
    check_identities(&l.inv, &l.routes, &hosts)?;
    let check = match fingerprint {
        Some(fp) => KeyCheck::fingerprint(fp).map_err(anyhow::Error::msg)?,
        None if std::io::stdin().is_terminal() => KeyCheck::Ask,
        None => KeyCheck::Unverified,
    };
    let mut code = EXIT_OK;
    for h in hosts {
        let opts = l.route(h)?;
        // Directly or through the jump hosts; the key types known for the host first.
        // known_hosts names the host as OpenSSH does: its name (or IP), `[name]:port`.
        let scanned = transport::scan_host_key_via_jump(&opts).await;
        let settled = scanned
            .map_err(|e| format!("{}: {e}", h.name))
            .and_then(|key| {
                let target = Target {
                    name: &h.name,
                    address: &opts.address,
                    port: opts.port,
                    known_hosts: &opts.known_hosts,
                };
                settle(&target, &key, &check, &mut ask_on_terminal)
            });
        match settled {
            Ok(message) => println!("{message}"),
            Err(message) => {
                eprintln!("{message}");
                code = EXIT_FAIL;
            }
        }
    }
    Ok(code)
}

/// Puts `question` on stderr and reads the answer from stdin: yes only for `y` or `yes`.
fn ask_on_terminal(question: &str) -> std::io::Result<bool> {
    let mut stderr = std::io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The host being trusted, and the known_hosts file to record its key in.
struct Target<'a> {
    name: &'a str,
    address: &'a str,
    port: u16,
    known_hosts: &'a Path,
}

/// Decides about the key `t` offered and records it when it is new and passes `check`;
/// `ask` puts a question to the operator. Returns what to print; the error says what to do.
fn settle(
    t: &Target,
    key: &PublicKey,
    check: &KeyCheck,
    ask: &mut dyn FnMut(&str) -> std::io::Result<bool>,
) -> Result<String, String> {
    let (name, addr, path) = (t.name, t.address, t.known_hosts);
    let fp = known_hosts::fingerprint(key);
    if let KeyCheck::Fingerprint(expected) = check
        && *expected != fp
    {
        return Err(format!(
            "{name} ({addr}): the host offers {} key {fp}, not the expected {expected}; \
             refusing to trust it. Check the fingerprint on the host's console \
             (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`): if it is not {fp}, someone may be \
             in the middle.",
            key.algorithm().as_str()
        ));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{name}: cannot read {}: {e}", path.display())),
    };
    match known_hosts::check(&text, addr, t.port, key) {
        known_hosts::HostKeyStatus::Trusted => {
            Ok(format!("{name} ({addr}): already trusted, {fp}"))
        }
        known_hosts::HostKeyStatus::Unknown => {
            let how = match check {
                KeyCheck::Fingerprint(_) => "matches --fingerprint",
                KeyCheck::Ask => {
                    let question = format!(
                        "{name} ({addr}) offers {} key {fp}\nTrust this key? [y/N] ",
                        key.algorithm().as_str()
                    );
                    let yes = ask(&question)
                        .map_err(|e| format!("{name}: cannot read the answer: {e}"))?;
                    if !yes {
                        return Err(format!(
                            "{name} ({addr}): not trusted (the answer was not y)"
                        ));
                    }
                    "confirmed"
                }
                KeyCheck::Unverified => "",
            };
            let line = known_hosts::entry_line(addr, t.port, key);
            append_line(path, &line)
                .map_err(|e| format!("{name}: cannot write {}: {e}", path.display()))?;
            let shown = path.display();
            Ok(if how.is_empty() {
                format!(
                    "{name} ({addr}): recorded {fp} in {shown}, but it was NOT verified (no \
                     terminal to ask, no --fingerprint). Compare it with the host's own \
                     (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on its console); if they \
                     differ, remove it with `ssh-keygen -R {} -f {shown}`. Next time pass \
                     --fingerprint SHA256:...",
                    known_hosts::host_pattern(addr, t.port)
                )
            } else {
                format!("{name} ({addr}): trusted {fp} ({how}), recorded in {shown}")
            })
        }
        known_hosts::HostKeyStatus::Changed { line, .. } => Err(format!(
            "{name} ({addr}): the host now offers {fp}, but {}:{line} holds another key for it. \
             If the host was rebuilt, remove the old entry with `ssh-keygen -R {} -f {}` and run trust again; \
             otherwise this may be an attack: do not proceed.",
            path.display(),
            known_hosts::host_pattern(addr, t.port),
            path.display()
        )),
        known_hosts::HostKeyStatus::Revoked { line } => Err(format!(
            "{name} ({addr}): the key it offers ({fp}) is marked @revoked at {}:{line}; refusing to trust it",
            path.display()
        )),
    }
}

/// Appends `line` to the file, after a newline if the file does not end with one.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let existing = std::fs::read(path).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519 -N '' -C ''`; fingerprint from `ssh-keygen -lf`.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMV84LNX7mUwXaJwq4WxU5RTclnPT8UZSmlIlgQbE3HX";
    const KEY_FP: &str = "SHA256:QcU3VKgOQKbDLA1guTRBMhENznzpS9tuvheA/Up6pww";

    fn key() -> PublicKey {
        PublicKey::from_openssh(KEY).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `settle` for web1 at 192.0.2.10:2222 with a fresh known_hosts file; returns its
    /// result, the questions asked and the file's text afterwards.
    fn settle_with(
        check: &KeyCheck,
        answer: bool,
    ) -> (Result<String, String>, Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let known = dir.path().join("known_hosts");
        let target = Target {
            name: "web1",
            address: "192.0.2.10",
            port: 2222,
            known_hosts: &known,
        };
        let mut questions = Vec::new();
        let result = settle(&target, &key(), check, &mut |q| {
            questions.push(q.to_string());
            Ok(answer)
        });
        let text = std::fs::read_to_string(&known).unwrap_or_default();
        (result, questions, text)
    }

    /// Review finding 7, reproduction: the unknown-key error asks the operator to check the
    /// fingerprint and run `trust`, but `trust` recorded whatever key it received.
    /// `trust --fingerprint SHA256:<another>` must refuse and record nothing.
    #[test]
    fn a_key_with_another_fingerprint_is_refused_and_not_recorded() {
        let other = "SHA256:uFNEw4Mn9S4WzGUbD5U8Pdb2RtXZVC990q14SQ3Mmdc";
        let (result, questions, text) = settle_with(&KeyCheck::Fingerprint(other.into()), true);
        let err = result.expect_err("a mismatch must be refused");
        assert!(err.contains(KEY_FP) && err.contains(other), "{err}");
        assert!(questions.is_empty());
        assert_eq!(text, "");
        // The right fingerprint records the key, without a question.
        let (result, questions, text) = settle_with(&KeyCheck::Fingerprint(KEY_FP.into()), false);
        assert!(result.is_ok(), "{result:?}");
        assert!(questions.is_empty());
        assert_eq!(text, format!("[192.0.2.10]:2222 {KEY}\n"));
    }

    /// Review finding 7, reproduction: on a terminal `trust` recorded the key without
    /// asking. It must show the fingerprint, ask `Trust this key? [y/N]`, and record only
    /// on yes.
    #[test]
    fn on_a_terminal_the_key_is_recorded_only_when_confirmed() {
        let (result, questions, text) = settle_with(&KeyCheck::Ask, false);
        assert!(result.is_err(), "{result:?}");
        assert_eq!(questions.len(), 1, "{questions:?}");
        assert!(questions[0].contains(KEY_FP), "{questions:?}");
        assert!(
            questions[0].ends_with("Trust this key? [y/N] "),
            "{questions:?}"
        );
        assert_eq!(text, "");
        let (result, questions, text) = settle_with(&KeyCheck::Ask, true);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(questions.len(), 1);
        assert_eq!(text, format!("[192.0.2.10]:2222 {KEY}\n"));
    }

    /// Review finding 7: without a terminal and without --fingerprint the key is still
    /// recorded (scripts keep working), but the output says it was NOT verified and how to
    /// check it.
    #[test]
    fn without_a_terminal_the_key_is_recorded_and_said_to_be_unverified() {
        let (result, questions, text) = settle_with(&KeyCheck::Unverified, false);
        let message = result.unwrap_or_else(|e| panic!("{e}"));
        assert!(message.contains("NOT verified"), "{message}");
        assert!(message.contains("--fingerprint"), "{message}");
        assert!(questions.is_empty());
        assert_eq!(text, format!("[192.0.2.10]:2222 {KEY}\n"));
    }

    #[test]
    fn fingerprints_are_compared_with_or_without_prefix_and_padding() {
        for given in [
            KEY_FP.to_string(),
            KEY_FP.replace("SHA256:", ""),
            format!("{KEY_FP}="),
        ] {
            let check = KeyCheck::fingerprint(&given).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(check, KeyCheck::Fingerprint(KEY_FP.into()), "{given}");
        }
        let err = KeyCheck::fingerprint("MD5:12:34").expect_err("MD5 is not accepted");
        assert!(err.contains("SHA256"), "{err}");
    }
}
