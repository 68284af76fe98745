//! Host key verification against an OpenSSH `known_hosts` file, as pure functions.
//!
//! russh's own check is not used: it accepts `@revoked` keys, skips tab-separated lines and
//! ignores `@cert-authority` markers in ways that differ from OpenSSH. Here the text of the
//! file goes in and a [`HostKeyStatus`] comes out, with OpenSSH's matching rules:
//!
//! - a host is looked up as `addr` on port 22 and as `[addr]:port` otherwise ([`host_pattern`]);
//! - the host field is a comma list of patterns with `*` / `?` wildcards and `!` negation (a
//!   matching negated pattern excludes the line), or one hashed `|1|salt|hash` name
//!   (HMAC-SHA1 of the looked-up name keyed by the salt), compared case-insensitively;
//! - `@revoked` lines reject their key for the hosts they match, whatever other lines say;
//! - `@cert-authority` lines are ignored (host certificates are not accepted);
//! - fields may be separated by spaces or tabs; blank lines, `#` comments and lines that do not
//!   parse are skipped.

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{HostPatterns, Marker};
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyBase64};
use sha1::Sha1;

/// What a `known_hosts` file says about the key a host offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A plain (unmarked) line for this host holds exactly this key, and no `@revoked` line
    /// matches it.
    Trusted,
    /// No plain line names this host: it has never been trusted.
    Unknown,
    /// Plain lines name this host, but none holds the offered key: the host was rebuilt, or
    /// someone is in the middle.
    Changed {
        /// OpenSSH-style fingerprints (`SHA256:...`) of the keys the file holds for the host.
        known_fingerprints: Vec<String>,
        /// 1-based line number of the first line for the host.
        line: usize,
    },
    /// An `@revoked` line for this host holds the offered key: never connect.
    Revoked {
        /// 1-based line number of the `@revoked` line.
        line: usize,
    },
}

/// One usable line of a known_hosts file.
struct Entry {
    /// 1-based line number in the file.
    line: usize,
    marker: Option<Marker>,
    hosts: HostPatterns,
    key: PublicKey,
}

/// Parses one line; `None` for blank lines, comments and anything malformed.
fn parse_line(text: &str) -> Option<(Option<Marker>, HostPatterns, PublicKey)> {
    let text = text.trim_start();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let mut fields = text.split_whitespace();
    let mut first = fields.next()?;
    let marker = if first.starts_with('@') {
        let marker = first.parse::<Marker>().ok()?;
        first = fields.next()?;
        Some(marker)
    } else {
        None
    };
    let hosts = first.parse::<HostPatterns>().ok()?;
    let key_type = fields.next()?;
    let key_base64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{key_type} {key_base64}")).ok()?;
    // The type named on the line must be the type inside the blob.
    if key.algorithm().as_str() != key_type {
        return None;
    }
    Some((marker, hosts, key))
}

fn entries(known_hosts_text: &str) -> impl Iterator<Item = Entry> + '_ {
    known_hosts_text
        .lines()
        .enumerate()
        .filter_map(|(index, text)| {
            let (marker, hosts, key) = parse_line(text)?;
            Some(Entry {
                line: index + 1,
                marker,
                hosts,
                key,
            })
        })
}

/// Glob match with `*` (any run, also empty) and `?` (any one character), on bytes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen in the pattern and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// HMAC-SHA1 of `name` keyed by `salt` equals `hash` (OpenSSH's `HashKnownHosts`).
fn hashed_name_matches(salt: &[u8], hash: &[u8; 20], name: &str) -> bool {
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(hash).is_ok()
}

/// Whether a host field matches the looked-up name (already lowercased).
fn hosts_match(hosts: &HostPatterns, name: &str) -> bool {
    match hosts {
        HostPatterns::HashedName { salt, hash } => hashed_name_matches(salt, hash, name),
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob_match(negated.as_bytes(), name.as_bytes()) {
                        return false;
                    }
                } else if glob_match(pattern.as_bytes(), name.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// The name under which `address:port` appears in known_hosts: `addr` for port 22,
/// `[addr]:port` otherwise (as OpenSSH writes and looks it up).
pub fn host_pattern(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// The line the `trust` command appends for `address:port` (without a trailing newline), for
/// example `[10.0.0.5]:2222 ssh-ed25519 AAAAC3...`. The key's comment is left out.
pub fn entry_line(address: &str, port: u16, key: &PublicKey) -> String {
    format!(
        "{} {} {}",
        host_pattern(address, port),
        key.algorithm().as_str(),
        key.public_key_base64()
    )
}

/// The key's SHA-256 fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Checks the key `address:port` offered against the text of a known_hosts file (an empty
/// text, for a missing file, gives [`HostKeyStatus::Unknown`]). See the module documentation
/// for the matching rules. `@revoked` wins over everything; a key trusted by any plain line
/// is [`HostKeyStatus::Trusted`]; other keys on plain lines for the host make it
/// [`HostKeyStatus::Changed`].
pub fn check(known_hosts_text: &str, address: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let name = host_pattern(address, port).to_ascii_lowercase();
    let mut trusted = false;
    let mut first_line: Option<usize> = None;
    let mut known_fingerprints: Vec<String> = Vec::new();
    for entry in entries(known_hosts_text) {
        if !hosts_match(&entry.hosts, &name) {
            continue;
        }
        let same_key = entry.key.key_data() == key.key_data();
        match entry.marker {
            Some(Marker::Revoked) => {
                if same_key {
                    return HostKeyStatus::Revoked { line: entry.line };
                }
            }
            Some(Marker::CertAuthority) => {}
            None => {
                first_line.get_or_insert(entry.line);
                if same_key {
                    trusted = true;
                } else {
                    let known = fingerprint(&entry.key);
                    if !known_fingerprints.contains(&known) {
                        known_fingerprints.push(known);
                    }
                }
            }
        }
    }
    match first_line {
        _ if trusted => HostKeyStatus::Trusted,
        Some(line) => HostKeyStatus::Changed {
            known_fingerprints,
            line,
        },
        None => HostKeyStatus::Unknown,
    }
}

/// The key algorithms of the plain (trusted) lines for `address:port`, in file order without
/// duplicates. The SSH client asks the server for these first, so that a host known by its
/// RSA key is verified by that key even if it also has an ed25519 one. RSA keys are reported
/// as `Algorithm::Rsa { hash: None }`.
pub fn known_key_algorithms(known_hosts_text: &str, address: &str, port: u16) -> Vec<Algorithm> {
    let name = host_pattern(address, port).to_ascii_lowercase();
    let mut algorithms: Vec<Algorithm> = Vec::new();
    for entry in entries(known_hosts_text) {
        if entry.marker.is_none() && hosts_match(&entry.hosts, &name) {
            let algorithm = entry.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
    }
    algorithms
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with `ssh-keygen -t ed25519 -N '' -C ''` and `ssh-keygen -t rsa -b 2048`;
    // fingerprints as printed by `ssh-keygen -lf`.
    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINiEFezQe/dkVhZlgHypMJF6P0o5beU5cvqyZT9pldvp";
    const ED1_FP: &str = "SHA256:7S20MOSHtONzAEi9FK18/oNVmAiols0oH8Y0L5eMPR0";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGECSBTkzcRWpxiuqelSvhz3ALawPTILBwO/SV/NDt6";
    const ED2_FP: &str = "SHA256:uFNEw4Mn9S4WzGUbD5U8Pdb2RtXZVC990q14SQ3Mmdc";
    const RSA1: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCzcfgY+XZ1Ytyk1nGslqC2ZW0k8WB0XXRq+ryxrQZ4ltRMpyf890t4Jq0f4E6vycthAVdYQLAFfShZ3tLtoW7g7/6cGUDOE46c0ZgE0U9MQ0sLEt300HP6muOMCKwLcQKao73o4G76YsQcE23Ewa5BzuyfFzbVBRUxUj/Mko54xEgWoPM49yeFEcJnR1J7grcc3D1SmauSLpKZSfxYwc75ptXEXplZuOS8p2JaNl1SWyaOSIZyMPkFxi24nszVSJjtSnNLD7W7f37/2DbQJHtgJTV1mWGwI+CiWojfX1ZNlOb7rjUme3FQHmfsJBXDKMZb2QCYqueBCqzzlDDyw9vN";
    const RSA1_FP: &str = "SHA256:w0II+K/enxhqc4PLLNdXeo8nPSvbCb48W/yzzy50l5A";

    /// Recorded output of `ssh-keygen -H -f FILE` on a file holding
    /// `web1.example.com ED1` and `[10.0.0.7]:2222 ED2`.
    const HASHED: &str = "\
|1|Gp9icib6OiE/UQK6gzP+/b7pqW0=|8kss7yVonPvQlGbaDvSC9Y/9U5U= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINiEFezQe/dkVhZlgHypMJF6P0o5beU5cvqyZT9pldvp 
|1|PYJW8PcVKYV+LN3+5iqafiO0usU=|p37d/Uw6uDqdkQpbfD8f9jlfXsI= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGECSBTkzcRWpxiuqelSvhz3ALawPTILBwO/SV/NDt6 
";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("test key parses")
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(fingerprint(&key(ED1)), ED1_FP);
        assert_eq!(fingerprint(&key(ED2)), ED2_FP);
        assert_eq!(fingerprint(&key(RSA1)), RSA1_FP);
    }

    #[test]
    fn host_pattern_brackets_non_default_ports() {
        assert_eq!(host_pattern("10.0.0.5", 22), "10.0.0.5");
        assert_eq!(host_pattern("10.0.0.5", 2222), "[10.0.0.5]:2222");
        assert_eq!(host_pattern("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn entry_line_is_what_openssh_writes_and_round_trips() {
        let line = entry_line("10.0.0.5", 2222, &key(&format!("{ED1} some comment")));
        assert_eq!(line, format!("[10.0.0.5]:2222 {ED1}"));
        assert_eq!(
            check(&line, "10.0.0.5", 2222, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(entry_line("db1", 22, &key(RSA1)), format!("db1 {RSA1}"));
    }

    #[test]
    fn plain_entry_trusts_its_host_only() {
        let text = format!("web1.example.com {ED1}\n");
        assert_eq!(
            check(&text, "web1.example.com", 22, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "WEB1.Example.COM", 22, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "web2.example.com", 22, &key(ED1)),
            HostKeyStatus::Unknown
        );
        // The same name on another port is another host for OpenSSH.
        assert_eq!(
            check(&text, "web1.example.com", 2222, &key(ED1)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn missing_or_empty_file_means_unknown() {
        assert_eq!(check("", "10.0.0.5", 22, &key(ED1)), HostKeyStatus::Unknown);
    }

    #[test]
    fn comma_lists_and_bracketed_ports() {
        let text = format!("web1,10.0.0.5,[10.0.0.5]:2222 {ED1}\n");
        for (address, port) in [("web1", 22), ("10.0.0.5", 22), ("10.0.0.5", 2222)] {
            assert_eq!(
                check(&text, address, port, &key(ED1)),
                HostKeyStatus::Trusted,
                "{address}:{port}"
            );
        }
        assert_eq!(
            check(&text, "10.0.0.5", 2223, &key(ED1)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(&text, "web1", 2222, &key(ED1)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn hashed_entries_from_ssh_keygen_match() {
        assert_eq!(
            check(HASHED, "web1.example.com", 22, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(HASHED, "10.0.0.7", 2222, &key(ED2)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(HASHED, "10.0.0.7", 22, &key(ED2)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(HASHED, "web1.example.com", 22, &key(ED2)),
            HostKeyStatus::Changed {
                known_fingerprints: vec![ED1_FP.to_string()],
                line: 1
            }
        );
    }

    #[test]
    fn changed_key_reports_known_fingerprints_and_first_line() {
        let text = format!("# fleet\nother {ED2}\nweb1 {ED1}\nweb1 {RSA1}\n");
        assert_eq!(
            check(&text, "web1", 22, &key(ED2)),
            HostKeyStatus::Changed {
                known_fingerprints: vec![ED1_FP.to_string(), RSA1_FP.to_string()],
                line: 3
            }
        );
        // Any of several keys for the host is enough.
        assert_eq!(check(&text, "web1", 22, &key(RSA1)), HostKeyStatus::Trusted);
    }

    #[test]
    fn revoked_wins_over_trust() {
        let text = format!("web1 {ED1}\n@revoked web1 {ED1}\n");
        assert_eq!(
            check(&text, "web1", 22, &key(ED1)),
            HostKeyStatus::Revoked { line: 2 }
        );
        // A revocation with a wildcard applies to every host.
        let text = format!("web1 {ED1}\n@revoked * {ED1}\n");
        assert_eq!(
            check(&text, "web1", 22, &key(ED1)),
            HostKeyStatus::Revoked { line: 2 }
        );
        // A revoked line for another key does not make the host known.
        let text = format!("@revoked web1 {ED2}\n");
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Unknown);
        // Nor does it trust anything.
        assert_eq!(
            check(&text, "web1", 22, &key(ED2)),
            HostKeyStatus::Revoked { line: 1 }
        );
    }

    #[test]
    fn cert_authority_lines_are_not_plain_keys() {
        let text = format!("@cert-authority web1 {ED1}\n");
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Unknown);
        assert!(known_key_algorithms(&text, "web1", 22).is_empty());
    }

    #[test]
    fn tabs_and_extra_spaces_separate_fields() {
        let text = format!(
            "web1\t{}\n  web2   {}   comment here\n",
            ED1.replace(' ', "\t"),
            ED2.replace(' ', "  ")
        );
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Trusted);
        assert_eq!(check(&text, "web2", 22, &key(ED2)), HostKeyStatus::Trusted);
        let revoked = format!("@revoked\tweb1\t{}\n", ED1.replace(' ', "\t"));
        assert_eq!(
            check(&revoked, "web1", 22, &key(ED1)),
            HostKeyStatus::Revoked { line: 1 }
        );
    }

    #[test]
    fn comments_and_malformed_lines_are_skipped_with_lines_counted() {
        let text = format!(
            "# web1 {ED2}\n\
             \n\
             web1\n\
             web1 ssh-ed25519\n\
             web1 ssh-ed25519 not-base64!!\n\
             web1 ssh-rsa {ed1_blob}\n\
             @bogus web1 {ED2}\n\
             |1|broken web1 {ED2}\n\
             web1 1024 35 1234567\n\
             \u{0}\u{ffff} garbage\n\
             web1 {ED1}\n",
            ed1_blob = ED1.split(' ').nth(1).unwrap_or_default()
        );
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Trusted);
        assert_eq!(
            check(&text, "web1", 22, &key(ED2)),
            HostKeyStatus::Changed {
                known_fingerprints: vec![ED1_FP.to_string()],
                line: 11
            }
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let text = format!("*.example.com,!db?.example.com {ED1}\n");
        assert_eq!(
            check(&text, "web1.example.com", 22, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "db1.example.com", 22, &key(ED1)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check(&text, "db10.example.com", 22, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "example.com", 22, &key(ED1)),
            HostKeyStatus::Unknown
        );
        let text = format!("[10.0.0.*]:2222 {ED1}\n");
        assert_eq!(
            check(&text, "10.0.0.9", 2222, &key(ED1)),
            HostKeyStatus::Trusted
        );
        assert_eq!(
            check(&text, "10.0.0.9", 22, &key(ED1)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn glob_matcher() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(glob_match(b"a*b", b"abab"));
        assert!(!glob_match(b"a*b", b"abac"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"**", b"x"));
    }

    #[test]
    fn known_algorithms_for_preference() {
        let text = format!(
            "web1 {RSA1}\n@revoked web1 {ED2}\nweb2 {ED1}\nweb1,web3 {RSA1}\n[web1]:2222 {ED1}\n"
        );
        assert_eq!(
            known_key_algorithms(&text, "web1", 22),
            vec![Algorithm::Rsa { hash: None }]
        );
        assert_eq!(
            known_key_algorithms(&text, "web1", 2222),
            vec![Algorithm::Ed25519]
        );
        assert!(known_key_algorithms(&text, "web9", 22).is_empty());
    }

    #[test]
    fn a_comment_line_is_skipped_even_when_it_would_parse() {
        // `#,web1` is a comma list whose second pattern names web1: only the `#` at the
        // start of the line keeps it from trusting web1.
        let text = format!("#,web1 {ED1}\n");
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Unknown);
        let text = format!("  #,web1 {ED1}\n");
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Unknown);
        assert!(known_key_algorithms(&text, "web1", 22).is_empty());
    }

    #[test]
    fn line_type_must_match_the_key_blob() {
        // An ed25519 blob announced as ssh-rsa is malformed, not a key for web1.
        let blob = ED1.split(' ').nth(1).unwrap_or_default();
        let text = format!("web1 ssh-rsa {blob}\n");
        assert_eq!(check(&text, "web1", 22, &key(ED1)), HostKeyStatus::Unknown);
    }

    #[test]
    fn glob_matcher_rules() {
        // (pattern, text, matches)
        let rows: [(&str, &str, bool); 16] = [
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("*", "abc", true),
            ("?", "", false),
            ("?", "a", true),
            ("??", "a", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("*.example.com", "web1.example.com", true),
            ("*.example.com", "web1.example.org", false),
            ("*b*b", "abxbyb", true),
            ("a*b*c", "abcbc", true),
            ("a*b*c", "abcbd", false),
            ("*?", "", false),
        ];
        for (pattern, text, want) in rows {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                want,
                "{pattern:?} ~ {text:?}"
            );
        }
    }

    #[test]
    fn negation_excludes_even_when_listed_first_or_last() {
        for hosts in ["!web1,web*", "web*,!web1"] {
            let text = format!("{hosts} {ED1}\n");
            assert_eq!(
                check(&text, "web1", 22, &key(ED1)),
                HostKeyStatus::Unknown,
                "{hosts}"
            );
            assert_eq!(
                check(&text, "web2", 22, &key(ED1)),
                HostKeyStatus::Trusted,
                "{hosts}"
            );
        }
        // A line with only a negated pattern matches nothing.
        let text = format!("!web1 {ED1}\n");
        assert_eq!(check(&text, "web2", 22, &key(ED1)), HostKeyStatus::Unknown);
        // Patterns are compared case-insensitively.
        let text = format!("WEB* {ED1}\n");
        assert_eq!(check(&text, "web2", 22, &key(ED1)), HostKeyStatus::Trusted);
    }

    #[test]
    fn hashed_name_needs_the_right_salt_and_name() {
        // From HASHED's first line: the salt and hash of `web1.example.com`.
        let line = HASHED.lines().next().unwrap_or_default();
        let field = line.split(' ').next().unwrap_or_default();
        let Ok(HostPatterns::HashedName { salt, hash }) = field.parse::<HostPatterns>() else {
            panic!("hashed field parses: {field}");
        };
        assert!(hashed_name_matches(&salt, &hash, "web1.example.com"));
        assert!(!hashed_name_matches(&salt, &hash, "web2.example.com"));
        assert!(!hashed_name_matches(
            b"other salt",
            &hash,
            "web1.example.com"
        ));
    }

    #[test]
    fn changed_lists_each_known_fingerprint_once() {
        let text = format!("web1 {ED1}\nweb1,web2 {ED1}\nweb1 {ED2}\n");
        assert_eq!(
            check(&text, "web1", 22, &key(RSA1)),
            HostKeyStatus::Changed {
                known_fingerprints: vec![ED1_FP.to_string(), ED2_FP.to_string()],
                line: 1
            }
        );
    }

    #[test]
    fn known_algorithms_are_listed_once_in_file_order() {
        let text = format!("web1 {ED1}\nweb1 {RSA1}\nweb1 {ED2}\n@cert-authority web1 {RSA1}\n");
        assert_eq!(
            known_key_algorithms(&text, "web1", 22),
            vec![Algorithm::Ed25519, Algorithm::Rsa { hash: None }]
        );
    }
}
