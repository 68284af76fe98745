//! Facts: what a host is now. One remote script gathers everything for a host in one
//! round trip ([`script`]); pure parsers turn its output into [`Facts`] ([`parse`]).

use crate::shell::{Init, quote};
use std::collections::BTreeMap;

/// A managed file as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFact {
    pub sha256: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

/// A unit's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFact {
    /// `active`, `inactive`, `failed`, ... (systemctl is-active)
    pub active: String,
    /// `enabled`, `disabled`, `not-found`, ... (systemctl is-enabled)
    pub enabled: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub init: Init,
    /// Managed paths; `None` when the file does not exist.
    pub files: BTreeMap<String, Option<FileFact>>,
    /// Packages asked about: `true` when installed.
    pub packages: BTreeMap<String, bool>,
    pub services: BTreeMap<String, ServiceFact>,
    /// Whether this host holds the VIP now (`None` when no VIP was asked about).
    pub holds_vip: Option<bool>,
    /// Managed paths that still have an apply's backup beside them: that apply put the
    /// file in place but did not finish (handlers, health checks).
    pub unfinished: std::collections::BTreeSet<String>,
    /// Roles whose drift check failed: the live state differs from the files.
    pub drifted: std::collections::BTreeSet<String>,
    /// Temporary files an interrupted apply left beside managed paths.
    pub stale_temps: std::collections::BTreeSet<String>,
}

/// What the facts script must ask about.
#[derive(Debug, Clone, Default)]
pub struct FactQuery<'a> {
    pub paths: Vec<&'a str>,
    pub packages: Vec<&'a str>,
    pub services: Vec<&'a str>,
    pub vip: Option<String>,
    /// (role, command): a role's drift check, run as root; failure = drifted.
    pub drift: Vec<(&'a str, &'a str)>,
}

/// The one script that gathers a host's facts. Its output is read by [`parse`].
pub fn script(q: &FactQuery) -> String {
    let mut s = String::from(
        "if [ -d /run/systemd/system ]; then echo 'INIT systemd'; else echo 'INIT other'; fi\n",
    );
    if !q.paths.is_empty() {
        let paths: Vec<String> = q.paths.iter().map(|p| quote(p)).collect();
        s.push_str(&format!(
            // Existing files are collected in "$@" so that one sha256sum and one stat
            // cover them all (a fork per file per tool was most of a no-op's time).
            "set --\nfor p in {}; do d=${{p%/*}}; [ -e \"$d/.${{p##*/}}.fp-prev\" ] && echo \"B $p\"; \
             for t in \"$d/.${{p##*/}}\".fp-??????; do [ -f \"$t\" ] && echo \"T $t\"; done; \
             if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then set -- \"$@\" \"$p\"; else echo \"F 0 $p\"; fi; done\n\
             if [ $# -gt 0 ]; then sha256sum -- \"$@\" | sed 's/^/H /'; stat -c 'M %a %U %G %n' -- \"$@\"; fi\n",
            paths.join(" ")
        ));
    }
    if !q.packages.is_empty() {
        let pkgs: Vec<String> = q.packages.iter().map(|p| quote(p)).collect();
        s.push_str(&format!(
            "dpkg-query -W -f='P ${{Package}} ${{db:Status-Status}}\\n' {} 2>/dev/null || true\n",
            pkgs.join(" ")
        ));
    }
    if !q.services.is_empty() {
        // One systemctl call for every unit: blocks of Id=, ActiveState=, UnitFileState=.
        let units: Vec<String> = q.services.iter().map(|u| quote(&unit_name(u))).collect();
        s.push_str(&format!(
            "if command -v systemctl >/dev/null; then systemctl show -p Id -p ActiveState -p UnitFileState -- {} 2>/dev/null | sed 's/^/U /'; fi\n",
            units.join(" ")
        ));
    }
    if let Some(vip) = &q.vip {
        s.push_str(&format!(
            "if ip -o -4 addr show 2>/dev/null | grep -qF ' {}/'; then echo 'VIP yes'; else echo 'VIP no'; fi\n",
            vip
        ));
    }
    for (role, cmd) in &q.drift {
        s.push_str(&format!(
            "if ( {cmd} ) >/dev/null 2>&1; then echo 'D ok {role}'; else echo 'D drift {role}'; fi\n"
        ));
    }
    s.push_str("echo END\n");
    s
}

/// `nginx` -> `nginx.service`; names with a unit suffix stay as they are.
pub fn unit_name(service: &str) -> String {
    if service.contains('.') {
        service.to_string()
    } else {
        format!("{service}.service")
    }
}

/// Parses the facts script's output. Packages and services asked about but not
/// mentioned are missing / unknown.
pub fn parse(output: &str, q: &FactQuery) -> Result<Facts, String> {
    let mut init = None;
    let mut files = BTreeMap::new();
    let mut packages: BTreeMap<String, bool> =
        q.packages.iter().map(|p| (p.to_string(), false)).collect();
    let mut services = BTreeMap::new();
    let mut holds_vip = None;
    let mut ended = false;
    let mut unit: Option<String> = None;
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut metas: BTreeMap<String, (u32, String, String)> = BTreeMap::new();
    let mut unfinished = std::collections::BTreeSet::new();
    let mut drifted = std::collections::BTreeSet::new();
    let mut stale_temps = std::collections::BTreeSet::new();
    for (n, line) in output.lines().enumerate() {
        let bad = || format!("facts output line {}: cannot read `{line}`", n + 1);
        let mut parts = line.splitn(2, ' ');
        let tag = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        match tag {
            "INIT" => {
                init = Some(if rest == "systemd" {
                    Init::Systemd
                } else {
                    Init::Other
                });
            }
            "F" => {
                let path = rest.strip_prefix("0 ").ok_or_else(bad)?;
                files.insert(path.to_string(), None);
            }
            "H" => {
                // sha256sum: "HASH  PATH"
                let (hash, path) = rest.split_once("  ").ok_or_else(bad)?;
                if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                hashes.insert(path.to_string(), hash.to_string());
            }
            "M" => {
                let f: Vec<&str> = rest.splitn(4, ' ').collect();
                if f.len() != 4 {
                    return Err(bad());
                }
                let mode = u32::from_str_radix(f[0], 8).map_err(|_| bad())?;
                metas.insert(f[3].to_string(), (mode, f[1].to_string(), f[2].to_string()));
            }
            "P" => {
                let f: Vec<&str> = rest.split(' ').collect();
                if f.len() < 2 {
                    return Err(bad());
                }
                // dpkg-query may print name:arch for multi-arch packages
                let name = f[0].split(':').next().unwrap_or(f[0]);
                packages.insert(name.to_string(), f[1] == "installed");
            }
            "U" => {
                let Some((key, value)) = rest.split_once('=') else {
                    continue; // the blank line between two units' blocks
                };
                match key {
                    "Id" => {
                        let name = value.strip_suffix(".service").unwrap_or(value).to_string();
                        services.insert(
                            name.clone(),
                            ServiceFact {
                                active: "unknown".into(),
                                enabled: "not-found".into(),
                            },
                        );
                        unit = Some(name);
                    }
                    "ActiveState" | "UnitFileState" => {
                        let fact = unit
                            .as_ref()
                            .and_then(|u| services.get_mut(u))
                            .ok_or_else(bad)?;
                        let v = if value.is_empty() { "not-found" } else { value };
                        if key == "ActiveState" {
                            fact.active = v.to_string();
                        } else {
                            fact.enabled = v.to_string();
                        }
                    }
                    _ => {}
                }
            }
            "VIP" => holds_vip = Some(rest == "yes"),
            "D" => match rest.split_once(' ') {
                Some(("drift", role)) => {
                    drifted.insert(role.to_string());
                }
                Some(("ok", _)) => {}
                _ => return Err(bad()),
            },
            "T" => {
                stale_temps.insert(rest.to_string());
            }
            "B" => {
                unfinished.insert(rest.to_string());
            }
            "END" => ended = true,
            "" => {}
            _ => return Err(bad()),
        }
    }
    if !ended {
        return Err(
            "facts output ended early (the connection dropped or the script failed)".into(),
        );
    }
    for p in &q.paths {
        if files.contains_key(*p) {
            continue; // reported missing
        }
        match (hashes.remove(*p), metas.remove(*p)) {
            (Some(sha256), Some((mode, owner, group))) => {
                files.insert(
                    p.to_string(),
                    Some(FileFact {
                        sha256,
                        mode,
                        owner,
                        group,
                    }),
                );
            }
            _ => return Err(format!("facts output lacks the file {p}")),
        }
    }
    Ok(Facts {
        init: init.ok_or("facts output lacks the INIT line")?,
        files,
        packages,
        services,
        holds_vip,
        unfinished,
        drifted,
        stale_temps,
    })
}

/// A second round trip, only when a plan has changed files to show: their current
/// content, base64-encoded, one per line (`C <base64|-> <path>`).
pub fn contents_script(paths: &[&str]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "for p in {}; do if [ -f \"$p\" ]; then echo \"C $(base64 -w0 < \"$p\") $p\"; else echo \"C - $p\"; fi; done; echo END\n",
        paths.join(" ")
    )
}

/// Parses [`contents_script`]'s output into path -> content (absent files are missing).
pub fn parse_contents(output: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    let mut ended = false;
    for line in output.lines() {
        if line == "END" {
            ended = true;
            continue;
        }
        let Some(rest) = line.strip_prefix("C ") else {
            return Err(format!("cannot read `{line}`"));
        };
        let (b64, path) = rest
            .split_once(' ')
            .ok_or_else(|| format!("cannot read `{line}`"))?;
        if b64 != "-" {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("bad base64 for {path}: {e}"))?;
            out.insert(path.to_string(), data);
        }
    }
    if !ended {
        return Err("content output ended early".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> FactQuery<'static> {
        FactQuery {
            paths: vec!["/etc/nginx/nginx.conf", "/etc/foo bar"],
            packages: vec!["nginx", "haproxy"],
            services: vec!["nginx"],
            vip: Some("172.30.77.10".into()),
            drift: vec![("firewall", "nft list table inet foobar")],
        }
    }

    /// Recorded from a lab host (Debian 12, systemd) with nginx installed.
    const RECORDED: &str = "INIT systemd
F 0 /etc/foo bar
H 5b4c1fbf8d8f0c6bc4f8e1e5e7c4d0b6b2f8e2a1c9d3e4f5a6b7c8d9e0f1a2b3  /etc/nginx/nginx.conf
M 644 root root /etc/nginx/nginx.conf
B /etc/nginx/nginx.conf
T /etc/nginx/.nginx.conf.fp-Ab12Cd
D drift firewall
D ok nginx
P nginx installed
U Id=nginx.service
U ActiveState=active
U UnitFileState=enabled
U 
U Id=haproxy.service
U ActiveState=inactive
U UnitFileState=
VIP no
END
";

    #[test]
    fn parses_recorded_output() {
        let f = parse(RECORDED, &q()).expect("parses");
        assert_eq!(f.init, Init::Systemd);
        let nginx = f.files["/etc/nginx/nginx.conf"].as_ref().expect("exists");
        assert_eq!(nginx.mode, 0o644);
        assert_eq!(nginx.owner, "root");
        assert_eq!(f.files["/etc/foo bar"], None);
        assert!(f.packages["nginx"]);
        assert!(
            !f.packages["haproxy"],
            "not mentioned by dpkg-query = missing"
        );
        assert_eq!(f.services["nginx"].active, "active");
        assert_eq!(f.services["nginx"].enabled, "enabled");
        assert_eq!(f.services["haproxy"].enabled, "not-found");
        assert_eq!(f.holds_vip, Some(false));
        assert!(f.unfinished.contains("/etc/nginx/nginx.conf"));
        assert_eq!(f.drifted.iter().collect::<Vec<_>>(), vec!["firewall"]);
        assert_eq!(
            f.stale_temps.iter().collect::<Vec<_>>(),
            vec!["/etc/nginx/.nginx.conf.fp-Ab12Cd"]
        );
    }

    #[test]
    fn truncated_or_garbled_output_is_an_error() {
        assert!(parse(&RECORDED.replace("END\n", ""), &q()).is_err());
        assert!(parse(&RECORDED.replace("F 0 /etc/foo bar\n", ""), &q()).is_err());
        assert!(
            parse(
                &RECORDED.replace("M 644 root root /etc/nginx/nginx.conf\n", ""),
                &q()
            )
            .is_err()
        );
        assert!(parse("INIT systemd\nH zz  /etc/x\nEND\n", &q()).is_err());
        assert!(parse("garbage\n", &q()).is_err());
    }

    #[test]
    fn script_quotes_paths_and_asks_everything() {
        let s = script(&q());
        assert!(
            s.contains("for p in /etc/nginx/nginx.conf '/etc/foo bar'; do"),
            "{s}"
        );
        assert!(
            s.contains("dpkg-query -W -f='P ${Package} ${db:Status-Status}\\n' nginx haproxy"),
            "{s}"
        );
        assert!(s.contains("grep -qF ' 172.30.77.10/'"), "{s}");
        assert!(s.contains("systemctl show -p Id -p ActiveState -p UnitFileState -- nginx.service 2>/dev/null | sed"), "{s}");
        assert!(s.contains("if ( nft list table inet foobar ) >/dev/null 2>&1; then echo 'D ok firewall'; else echo 'D drift firewall'; fi\n"), "{s}");
        assert!(s.ends_with("echo END\n"));
    }

    /// Runs the facts script with a local shell and parses its output.
    fn gather_locally(query: &FactQuery) -> Facts {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(query))
            .output()
            .expect("sh");
        parse(&String::from_utf8_lossy(&out.stdout), query).expect("parses")
    }

    #[test]
    fn script_runs_in_a_real_shell_on_local_files() {
        let dir = std::env::temp_dir().join(format!("fp-facts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("a.conf");
        std::fs::write(&file, "hello\n").expect("write");
        let path = file.to_string_lossy().to_string();
        let missing = dir.join("missing").to_string_lossy().to_string();
        let query = FactQuery {
            paths: vec![&path, &missing],
            ..Default::default()
        };
        let facts = gather_locally(&query);
        assert!(facts.unfinished.is_empty());
        std::fs::write(dir.join(".a.conf.fp-prev"), "old\n").expect("write");
        let facts = gather_locally(&query);
        assert_eq!(facts.unfinished.iter().collect::<Vec<_>>(), vec![&path]);
        assert!(
            facts.stale_temps.is_empty(),
            "the backup is not a temp file"
        );
        let stale = dir.join(".a.conf.fp-x1Y2z3").to_string_lossy().to_string();
        std::fs::write(&stale, "half").expect("write");
        let facts = gather_locally(&query);
        assert_eq!(facts.stale_temps.iter().collect::<Vec<_>>(), vec![&stale]);
        let f = facts.files[&path].as_ref().expect("exists");
        assert_eq!(f.sha256, crate::desired::sha256_hex(b"hello\n"));
        assert_eq!(facts.files[&missing], None);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(contents_script(&[&path, &missing]))
            .output()
            .expect("sh");
        let c = parse_contents(&String::from_utf8_lossy(&out.stdout)).expect("parses");
        assert_eq!(c[&path], b"hello\n");
        assert!(!c.contains_key(&missing));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
