//! The inventory: one YAML file that describes the stack (hosts, tiers, SSH, vars, secrets).
//!
//! Loading is strict: unknown keys, duplicate hosts or addresses, unknown tiers or roles,
//! bad addresses, ports and CIDRs are errors with file:line:column and, for typos, the
//! nearest valid name. Nothing here touches the network.

use crate::diag::{Diagnostic, from_yaml_error};
use crate::ordered_map::OrderedMap;
use crate::suggest::nearest;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tiers in dependency order: each is worked after the ones before it.
pub const TIER_ORDER: [&str; 4] = ["db", "app", "web", "lb"];

/// Largest inventory file we read (bytes); a guard against accidents and YAML bombs.
pub const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub domain: String,
    pub vip: Option<Ipv4Addr>,
    pub ssh: SshSettings,
    pub admin_networks: Vec<String>,
    /// Declared tiers, in [`TIER_ORDER`].
    pub tiers: Vec<Tier>,
    /// Hosts in inventory order.
    pub hosts: Vec<Host>,
    pub vars: Map<String, Value>,
    pub secrets: Vec<SecretSpec>,
}

#[derive(Debug, Clone)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub use_agent: bool,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub jump_host: Option<JumpHostSettings>,
    pub sudo: bool,
}

#[derive(Debug, Clone)]
pub struct JumpHostSettings {
    pub address: String,
    pub port: u16,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub roles: Vec<String>,
    pub vars: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
    pub tier: String,
    pub port: u16,
    pub user: String,
    pub vars: Map<String, Value>,
}

/// Where a secret's value comes from. The value itself is never in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: SecretSource,
    /// Where the secret is declared, for error messages.
    pub line: u64,
    pub column: u64,
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    domain: Spanned<String>,
    #[serde(default)]
    vip: Option<Spanned<String>>,
    #[serde(default)]
    ssh: Option<RawSsh>,
    #[serde(default)]
    admin_networks: Vec<Spanned<String>>,
    tiers: OrderedMap<RawTier>,
    hosts: OrderedMap<RawHost>,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    secrets: OrderedMap<RawSecret>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    identity_file: Option<String>,
    #[serde(default)]
    use_agent: Option<bool>,
    #[serde(default)]
    known_hosts: Option<String>,
    #[serde(default)]
    connect_timeout: Option<Spanned<f64>>,
    #[serde(default)]
    jump_host: Option<RawJump>,
    #[serde(default)]
    sudo: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJump {
    address: String,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    vars: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Spanned<String>,
    tier: Spanned<String>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    vars: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<String>,
}

/// YAML parser limits: generous for any real inventory, fatal to alias bombs.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_aliases: 1000,
            max_nodes: 200_000,
            max_total_scalar_bytes: 4 * 1024 * 1024,
            max_documents: 1,
        },
    }
}

/// Reads a YAML file with the size limit, as UTF-8.
pub fn read_yaml_text(path: &Path) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Diagnostic::new(path, 0, 0, format!("cannot read: {e}"))
            .with_hint("check the path; relative paths are taken from the current folder")
    })?;
    if meta.len() > MAX_INVENTORY_BYTES {
        return Err(Diagnostic::new(
            path,
            0,
            0,
            format!(
                "file is {} bytes, more than the {} bytes allowed",
                meta.len(),
                MAX_INVENTORY_BYTES
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::new(path, 0, 0, format!("cannot read: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| Diagnostic::new(path, 0, 0, format!("not valid UTF-8: {e}")))
}

/// Loads and validates an inventory. `role_exists` says whether a role name is known.
pub fn load(path: &Path, known_roles: &[String]) -> Result<Inventory, Diagnostic> {
    let text = read_yaml_text(path)?;
    parse(path, &text, known_roles)
}

/// Parses and validates inventory text; `path` is used for messages and relative paths.
pub fn parse(path: &Path, text: &str, known_roles: &[String]) -> Result<Inventory, Diagnostic> {
    let raw: RawInventory = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| from_yaml_error(path, &e))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve = |p: &str| -> PathBuf {
        let p = expand_home(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let at = |loc: serde_saphyr::Location, msg: String| Diagnostic::at(path, loc, msg);

    let domain = raw.domain.value.trim().to_string();
    if domain.is_empty() || domain.contains(char::is_whitespace) || !domain.contains('.') {
        return Err(at(
            raw.domain.referenced,
            format!("`{}` is not a domain name", raw.domain.value),
        )
        .with_hint("write the site's name, for example www.foobar.com"));
    }

    let vip = match &raw.vip {
        None => None,
        Some(v) => Some(v.value.parse::<Ipv4Addr>().map_err(|_| {
            at(
                v.referenced,
                format!("vip `{}` is not an IPv4 address", v.value),
            )
            .with_hint("write the virtual IP as four numbers, for example 172.30.77.10")
        })?),
    };

    let raw_ssh = raw.ssh.unwrap_or_default();
    let user = raw_ssh.user.unwrap_or_else(|| "root".to_string());
    let port = match &raw_ssh.port {
        Some(p) => check_port(path, p)?,
        None => 22,
    };
    let connect_timeout = match &raw_ssh.connect_timeout {
        Some(t) if t.value > 0.0 && t.value <= 600.0 => Duration::from_secs_f64(t.value),
        Some(t) => {
            return Err(at(
                t.referenced,
                format!("connect_timeout {} is out of range", t.value),
            )
            .with_hint("give seconds above 0 and at most 600, for example 10"));
        }
        None => Duration::from_secs(10),
    };
    let jump_host = match raw_ssh.jump_host {
        None => None,
        Some(j) => Some(JumpHostSettings {
            address: j.address,
            port: match &j.port {
                Some(p) => check_port(path, p)?,
                None => 22,
            },
            user: j.user.unwrap_or_else(|| user.clone()),
        }),
    };
    let ssh = SshSettings {
        sudo: raw_ssh.sudo.unwrap_or(user != "root"),
        user: user.clone(),
        port,
        identity_file: raw_ssh.identity_file.as_deref().map(resolve),
        use_agent: raw_ssh.use_agent.unwrap_or(true),
        known_hosts: raw_ssh
            .known_hosts
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| expand_home("~/.ssh/known_hosts")),
        connect_timeout,
        jump_host,
    };

    let mut admin_networks = Vec::new();
    for n in &raw.admin_networks {
        if !is_cidr(&n.value) {
            return Err(at(
                n.referenced,
                format!("admin network `{}` is not an address or CIDR", n.value),
            )
            .with_hint("write it as 192.0.2.0/24 or 192.0.2.7"));
        }
        admin_networks.push(n.value.clone());
    }

    // Tiers.
    let mut tiers_by_name: BTreeMap<String, Tier> = BTreeMap::new();
    for (name, t) in raw.tiers.0 {
        if !TIER_ORDER.contains(&name.value.as_str()) {
            let mut d = at(name.referenced, format!("unknown tier `{}`", name.value));
            d.hint = Some(match nearest(&name.value, &TIER_ORDER) {
                Some(n) => format!("did you mean `{n}`? tiers are {}", TIER_ORDER.join(", ")),
                None => format!("tiers are {}", TIER_ORDER.join(", ")),
            });
            return Err(d);
        }
        let mut roles = Vec::new();
        for r in t.roles {
            if !known_roles.contains(&r.value) {
                let names: Vec<&str> = known_roles.iter().map(String::as_str).collect();
                let mut d = at(r.referenced, format!("unknown role `{}`", r.value));
                d.hint = Some(match nearest(&r.value, &names) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => format!("roles under roles/: {}", names.join(", ")),
                });
                return Err(d);
            }
            if roles.contains(&r.value) {
                return Err(at(
                    r.referenced,
                    format!(
                        "role `{}` is listed twice for tier `{}`",
                        r.value, name.value
                    ),
                ));
            }
            roles.push(r.value);
        }
        tiers_by_name.insert(
            name.value.clone(),
            Tier {
                name: name.value,
                roles,
                vars: t.vars,
            },
        );
    }

    // Hosts.
    let mut hosts = Vec::new();
    let mut seen_addr: HashMap<IpAddr, String> = HashMap::new();
    for (name, h) in raw.hosts.0 {
        if !is_host_name(&name.value) {
            return Err(at(
                name.referenced,
                format!("host name `{}` is not valid", name.value),
            )
            .with_hint("use letters, digits and '-', starting with a letter (e.g. web1)"));
        }
        let address: IpAddr = h.address.value.parse().map_err(|_| {
            at(
                h.address.referenced,
                format!(
                    "host `{}`: address `{}` is not an IP address",
                    name.value, h.address.value
                ),
            )
            .with_hint("write the host's IPv4 or IPv6 address, for example 172.30.77.21")
        })?;
        if let Some(other) = seen_addr.get(&address) {
            return Err(at(
                h.address.referenced,
                format!(
                    "host `{}`: address {} is already used by host `{}`",
                    name.value, address, other
                ),
            )
            .with_hint("each host needs its own address"));
        }
        seen_addr.insert(address, name.value.clone());
        if !tiers_by_name.contains_key(&h.tier.value) {
            let declared: Vec<&str> = tiers_by_name.keys().map(String::as_str).collect();
            let mut d = at(
                h.tier.referenced,
                format!(
                    "host `{}`: tier `{}` is not declared under `tiers:`",
                    name.value, h.tier.value
                ),
            );
            d.hint = Some(match nearest(&h.tier.value, &declared) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("declared tiers: {}", declared.join(", ")),
            });
            return Err(d);
        }
        let port = match &h.port {
            Some(p) => check_port(path, p)?,
            None => ssh.port,
        };
        hosts.push(Host {
            name: name.value,
            address,
            tier: h.tier.value,
            port,
            user: h.user.unwrap_or_else(|| user.clone()),
            vars: h.vars,
        });
    }
    if hosts.is_empty() {
        return Err(Diagnostic::new(path, 0, 0, "the inventory lists no hosts")
            .with_hint("add at least one host under `hosts:`"));
    }
    if let Some(vip) = vip
        && let Some(h) = hosts.iter().find(|h| h.address == IpAddr::V4(vip))
    {
        return Err(Diagnostic::new(
            path,
            raw.vip.as_ref().map_or(0, |v| v.referenced.line()),
            raw.vip.as_ref().map_or(0, |v| v.referenced.column()),
            format!("vip {vip} is also the address of host `{}`", h.name),
        )
        .with_hint("the VIP must be an unused address that keepalived moves between hosts"));
    }

    let mut secrets = Vec::new();
    for (name, s) in raw.secrets.0 {
        let source = match (s.env, s.file) {
            (Some(e), None) if !e.is_empty() => SecretSource::Env(e),
            (None, Some(f)) if !f.is_empty() => SecretSource::File(resolve(&f)),
            _ => {
                return Err(at(
                    name.referenced,
                    format!("secret `{}` needs exactly one of `env` or `file`", name.value),
                )
                .with_hint("for example `env: FOOBAR_DB_PASSWORD` or `file: /etc/foobar/db_password`; never the value itself"));
            }
        };
        secrets.push(SecretSpec {
            name: name.value,
            source,
            line: name.referenced.line(),
            column: name.referenced.column(),
        });
    }

    let tiers = TIER_ORDER
        .iter()
        .filter_map(|t| tiers_by_name.remove(*t))
        .collect();
    Ok(Inventory {
        path: path.to_path_buf(),
        domain,
        vip,
        ssh,
        admin_networks,
        tiers,
        hosts,
        vars: raw.vars,
        secrets,
    })
}

fn check_port(path: &Path, p: &Spanned<i64>) -> Result<u16, Diagnostic> {
    u16::try_from(p.value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            Diagnostic::at(
                path,
                p.referenced,
                format!("port {} is out of range", p.value),
            )
            .with_hint("a TCP port is between 1 and 65535")
        })
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn is_host_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `addr` or `addr/prefix`, IPv4 or IPv6.
pub fn is_cidr(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => true,
        Some(p) => p.parse::<u8>().is_ok_and(|n| n <= max),
    }
}

impl Inventory {
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Hosts of a tier, in inventory order.
    pub fn hosts_of(&self, tier: &str) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.tier == tier)
    }

    /// Every role any tier uses.
    pub fn roles_used(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tiers {
            for r in &t.roles {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The hosts selected by `--limit` and `--tier` (both optional; both must match).
    pub fn select(&self, limit: &[String], tiers: &[String]) -> Result<Vec<&Host>, String> {
        for name in limit {
            if self.host(name).is_none() {
                let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
                return Err(match nearest(name, &names) {
                    Some(n) => {
                        format!("--limit: no host `{name}` in the inventory; did you mean `{n}`?")
                    }
                    None => format!(
                        "--limit: no host `{name}` in the inventory (hosts: {})",
                        names.join(", ")
                    ),
                });
            }
        }
        for t in tiers {
            if self.tier(t).is_none() {
                let names: Vec<&str> = self.tiers.iter().map(|t| t.name.as_str()).collect();
                return Err(match nearest(t, &names) {
                    Some(n) => {
                        format!("--tier: no tier `{t}` in the inventory; did you mean `{n}`?")
                    }
                    None => format!(
                        "--tier: no tier `{t}` in the inventory (tiers: {})",
                        names.join(", ")
                    ),
                });
            }
        }
        let picked: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| limit.is_empty() || limit.contains(&h.name))
            .filter(|h| tiers.is_empty() || tiers.contains(&h.tier))
            .collect();
        if picked.is_empty() {
            return Err("--limit and --tier together select no host".to_string());
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        ["nginx", "haproxy", "keepalived", "app", "mysql"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const GOOD: &str = "\
domain: www.foobar.com
vip: 172.30.77.10
ssh:
  user: deploy
  identity_file: keys/id
tiers:
  web:
    roles: [nginx]
    vars:
      a: tier
  lb:
    roles: [haproxy, keepalived]
hosts:
  lb1:
    address: 172.30.77.11
    tier: lb
  web1:
    address: 172.30.77.21
    tier: web
    vars:
      a: host
secrets:
  pw:
    env: PW
";

    fn parse_str(text: &str) -> Result<Inventory, Diagnostic> {
        parse(Path::new("inv/test.yml"), text, &roles())
    }

    #[test]
    fn parses_a_good_inventory() {
        let inv = parse_str(GOOD).expect("valid");
        assert_eq!(inv.domain, "www.foobar.com");
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.hosts[0].name, "lb1");
        assert!(inv.ssh.sudo, "non-root user gets sudo by default");
        assert_eq!(inv.ssh.identity_file, Some(PathBuf::from("inv/keys/id")));
        // tiers come out in dependency order whatever the file's order
        let names: Vec<&str> = inv.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["web", "lb"]);
        assert_eq!(inv.secrets[0].source, SecretSource::Env("PW".into()));
    }

    fn err(text: &str) -> String {
        parse_str(text).expect_err("must fail").to_string()
    }

    #[test]
    fn unknown_key_names_position_and_nearest_key() {
        let e = err(&GOOD.replace("    address: 172.30.77.21", "    adress: 172.30.77.21"));
        assert!(e.starts_with("inv/test.yml:18:"), "{e}");
        assert!(e.contains("did you mean `address`?"), "{e}");
    }

    #[test]
    fn duplicate_host_is_an_error_with_position() {
        let text = GOOD.replace("  web1:\n", "  lb1:\n");
        let e = err(&text);
        assert!(e.starts_with("inv/test.yml:17:"), "{e}");
        assert!(e.to_lowercase().contains("duplicate"), "{e}");
    }

    #[test]
    fn duplicate_address_names_both_hosts() {
        let e = err(&GOOD.replace("172.30.77.21", "172.30.77.11"));
        assert!(e.contains("inv/test.yml:18:14: host `web1`: address 172.30.77.11 is already used by host `lb1`"), "{e}");
    }

    #[test]
    fn unknown_tier_and_role_suggest() {
        let e = err(&GOOD.replace("    tier: web", "    tier: wbe"));
        assert!(
            e.contains("tier `wbe` is not declared") && e.contains("did you mean `web`?"),
            "{e}"
        );
        let e = err(&GOOD.replace("roles: [nginx]", "roles: [ngnix]"));
        assert!(
            e.contains("inv/test.yml:8:13: unknown role `ngnix`") && e.contains("`nginx`"),
            "{e}"
        );
        let e = err(&GOOD.replace("  web:\n", "  webs:\n"));
        assert!(e.contains("unknown tier `webs`"), "{e}");
    }

    #[test]
    fn bad_values_are_located() {
        let e = err(&GOOD.replace("172.30.77.21", "172.30.77.300"));
        assert!(
            e.contains("inv/test.yml:18:14:") && e.contains("not an IP address"),
            "{e}"
        );
        let e = err(&GOOD.replace("  user: deploy", "  user: deploy\n  port: 70000"));
        assert!(
            e.contains("inv/test.yml:5:9: port 70000 is out of range"),
            "{e}"
        );
        let e = err(&GOOD.replace("vip: 172.30.77.10", "vip: 172.30.77.11"));
        assert!(
            e.contains("vip 172.30.77.11 is also the address of host `lb1`"),
            "{e}"
        );
        let e = err(&GOOD.replace("    env: PW", "    env: PW\n    file: x"));
        assert!(e.contains("secret `pw` needs exactly one of"), "{e}");
        let e = err(&GOOD
            .replace("port: 22", "")
            .replace("  user: deploy", "  user: deploy\n  port: abc"));
        assert!(e.starts_with("inv/test.yml:5:"), "{e}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = err(&text);
        assert!(e.starts_with("inv/test.yml"), "{e}");
    }

    #[test]
    fn selection_by_limit_and_tier() {
        let inv = parse_str(GOOD).expect("valid");
        let names = |v: Vec<&Host>| v.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(inv.select(&[], &["web".into()]).expect("ok")),
            vec!["web1"]
        );
        assert_eq!(
            names(inv.select(&["lb1".into()], &[]).expect("ok")),
            vec!["lb1"]
        );
        let e = inv.select(&["web2".into()], &[]).expect_err("unknown");
        assert!(e.contains("did you mean `web1`?"), "{e}");
        assert!(inv.select(&["lb1".into()], &["web".into()]).is_err());
    }

    #[test]
    fn cidr_check() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("172.30.77.1"));
        assert!(is_cidr("::1/128"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("banana"));
    }
}
