//! The inventory: one YAML file that describes the stack (hosts, tiers, SSH, vars, secrets).
//!
//! Loading is strict: unknown keys, duplicate hosts or addresses, unknown tiers or roles,
//! bad addresses, ports and CIDRs are errors with file:line:column and, for typos, the
//! nearest valid name. Nothing here touches the network.
//!
//! `schema.rs` is the file as written (serde types), `validate.rs` turns it into an
//! [`Inventory`], checking each section in file order, and `select.rs` applies `--limit`
//! and `--tier`.

mod schema;
mod select;
mod validate;

pub use select::SelectError;
pub use validate::{RELEASE_ID_LEN, is_release_id, parse};

/// Names templates see that the inventory and `--var` cannot set.
pub const BUILT_IN_NAMES: [&str; 10] = [
    "domain",
    "vip",
    "vips",
    "pki",
    "host",
    "hosts",
    "tiers",
    "admin_networks",
    "secrets",
    "db_primary_host",
];

use crate::diag::Diagnostic;
use serde_json::{Map, Value};
use serde_saphyr::Location;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest inventory file we read (bytes); a guard against accidents and YAML bombs.
const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub domain: String,
    /// The virtual IPs, in the file's order: none, one (active-passive: the VIP tier's
    /// highest priority holds it) or two (active-active: each load balancer is master of
    /// one and backup of the other). The first is the one templates call `vip`.
    pub vips: Vec<Ipv4Addr>,
    pub ssh: SshSettings,
    pub admin_networks: Vec<String>,
    /// Declared tiers, in rollout order (the file's order).
    pub tiers: Vec<Tier>,
    /// Hosts in inventory order.
    pub hosts: Vec<Host>,
    pub vars: Map<String, Value>,
    pub secrets: Vec<SecretSpec>,
    /// Where each var is set in the file, for messages about its value.
    pub var_at: VarPlaces,
    /// The internal CA (`pki:`), when the inventory has one.
    pub pki: Option<Pki>,
    /// `--var KEY=VALUE`: above every other var (set by the command, empty in the file).
    pub cli_vars: Map<String, Value>,
}

/// `pki:`: which secrets hold the internal CA, and the certificates' lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    /// Secret holding the CA certificate(s), PEM: every one is trusted; the one matching
    /// the key signs.
    pub ca: String,
    /// Secret holding the CA's private key (never sent to a host).
    pub ca_key: String,
    /// A certificate expiring within this many days is renewed (default 30).
    pub renew_within_days: u32,
    /// Lifetime of a new certificate, in days (default 90).
    pub validity_days: u32,
    /// Where `pki:` is written, for messages.
    pub line: u64,
    pub column: u64,
}

/// Where vars are set in the inventory (the key's position), by scope.
#[derive(Debug, Clone, Default)]
pub struct VarPlaces {
    pub inventory: BTreeMap<String, Location>,
    /// By tier name.
    pub tiers: BTreeMap<String, BTreeMap<String, Location>>,
    /// By host name.
    pub hosts: BTreeMap<String, BTreeMap<String, Location>>,
}

impl VarPlaces {
    /// Where the value `host` sees for `var` is set: host vars, else tier vars, else
    /// inventory vars (the precedence of rendering); `None` when it comes from a role.
    pub fn of(&self, host: &Host, var: &str) -> Option<Location> {
        let in_scope = |m: Option<&BTreeMap<String, Location>>| m.and_then(|m| m.get(var)).copied();
        in_scope(self.hosts.get(&host.name))
            .or_else(|| in_scope(self.tiers.get(&host.tier)))
            .or_else(|| in_scope(Some(&self.inventory)))
    }
}

/// A value from an input file as it can be shown in a message on one line: control
/// characters escaped, cut after 80 characters.
pub fn shown(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == 80 {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    /// The OpenSSH client configuration honoured (`ssh.config`).
    pub config: SshConfigChoice,
    /// Which settings the inventory gives itself: those win over the SSH configuration's.
    pub set: SshSet,
}

/// `ssh.config`: which OpenSSH client configuration is honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshConfigChoice {
    /// `~/.ssh/config` when it exists (the default).
    Default,
    /// This file (it must exist).
    File(PathBuf),
    /// `ssh.config: false`: none.
    Ignore,
}

/// Which `ssh:` settings the inventory writes (the others are defaults, which the SSH
/// configuration may replace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SshSet {
    pub user: bool,
    pub port: bool,
    pub use_agent: bool,
    pub known_hosts: bool,
    pub connect_timeout: bool,
    pub sudo: bool,
}

#[derive(Debug, Clone)]
pub struct JumpHostSettings {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Whether the inventory gives the port and the user (else the SSH configuration may).
    pub port_set: bool,
    pub user_set: bool,
}

/// A private key file the inventory names, and who uses it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFile {
    pub path: PathBuf,
    /// `ssh.identity_file`, `tier `web``, `host `web1``.
    pub set_by: String,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub roles: Vec<String>,
    pub vars: Map<String, Value>,
    /// Holds the VIP pair (`vip: true`): rolled one host at a time, the VIP holder last.
    pub vip: bool,
    /// How many hosts change at once when their change interrupts a serving service.
    pub rolling: Rolling,
    /// Taken out of a load balancer before a restart (`drain:`).
    pub drain: Option<Drain>,
    /// The application its release role deploys (`release:`).
    pub release: Option<ReleaseSpec>,
    /// `ssh: {identity_file}`: the key its hosts log in with.
    pub identity_file: Option<IdentityFile>,
}

/// A tier's `release:`: the operator's application, deployed by the tier's role that
/// declares `release:` in its role.yml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSpec {
    pub source: ReleaseSource,
    /// Releases kept on each host (the current one included; default 5).
    pub keep: usize,
    /// Run once per deploy, on one host, before traffic moves to the new release.
    pub migrate: Option<String>,
    /// Debian packages the release needs (installed with the role's).
    pub packages: Vec<String>,
    /// Deploy this release id (one already on the hosts, or the source's) instead of
    /// the source's.
    pub pin: Option<String>,
    /// Where `release:` is written, for messages.
    pub line: u64,
    pub column: u64,
}

/// Where a release's code comes from (paths relative to the inventory's folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseSource {
    /// A folder, or a `.tar`, `.tar.gz` or `.tgz` archive (e.g. built by CI).
    Path(PathBuf),
    /// `git archive` of a ref of a local repository.
    Git { repo: PathBuf, reference: String },
}

/// How many hosts of a tier change at once when the change reloads or restarts a service
/// that is serving (`rolling:`). Hosts whose change interrupts nothing go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rolling {
    /// This many at a time (default 1); a batch's health checks pass before the next.
    Batch(usize),
    /// Every host at once (`rolling: all`).
    All,
}

/// Before a host of the tier restarts a serving service, the HAProxy of every host of
/// tier `via` puts it in drain (runtime API), waits for its sessions to end (at most
/// `timeout`), and sets it ready again once its health checks pass and HAProxy sees it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub via: String,
    /// The HAProxy backend whose servers are named after the hosts.
    pub backend: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The host's IP address: the one written as `address`, or, when a name is written, the
    /// address it resolves to (set once per run by the command, before rendering;
    /// `0.0.0.0` until then). Templates see it as `address`.
    pub address: IpAddr,
    /// The name written as `address` (a DNS name or an alias of the SSH configuration);
    /// `None` when an IP address is written. Templates see it as `hostname`.
    pub hostname: Option<String>,
    /// Where `address` is written, for messages.
    pub address_at: (u64, u64),
    pub tier: String,
    pub port: u16,
    pub user: String,
    /// Whether the inventory gives the port and the user (the host's or `ssh:`'s); else
    /// the SSH configuration may.
    pub port_set: bool,
    pub user_set: bool,
    /// The key it logs in with: the host's `identity_file`, else its tier's, else
    /// `ssh.identity_file`.
    pub identity_file: Option<IdentityFile>,
    pub vars: Map<String, Value>,
}

impl Host {
    /// The address as written: the name, or the IP address.
    pub fn written_address(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// Where a secret's value comes from. The value itself is never in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    /// A program run here (no shell), in the inventory's folder; its stdout is the value.
    Command {
        argv: Vec<String>,
        timeout: Duration,
        dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: SecretSource,
    /// Where the secret is declared, for error messages.
    pub line: u64,
    pub column: u64,
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

/// Loads and validates an inventory. `known_roles` are the roles under roles/.
pub fn load(path: &Path, known_roles: &[String]) -> Result<Inventory, Diagnostic> {
    let text = read_yaml_text(path)?;
    parse(path, &text, known_roles)
}

impl Inventory {
    /// The first VIP (the only one when active-passive).
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.vips.first().copied()
    }

    /// Two VIPs: both load balancers serve, each master of one.
    pub fn active_active(&self) -> bool {
        self.vips.len() == 2
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// Hosts of a tier, in inventory order.
    pub fn hosts_of(&self, tier: &str) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.tier == tier)
    }

    /// Hosts whose tier has `role`, in inventory order.
    pub fn hosts_with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Host> {
        self.hosts.iter().filter(move |h| {
            self.tier(&h.tier)
                .is_some_and(|t| t.roles.iter().any(|r| r == role))
        })
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
}

#[cfg(test)]
mod tests {
    use super::validate::tests::{GOOD, parse_str};
    use super::*;

    #[test]
    fn tier_hosts_of_and_roles_used_follow_the_inventory() {
        let mut inv = parse_str(GOOD).expect("valid");
        assert_eq!(inv.tier("lb").map(|t| t.roles.len()), Some(2));
        assert!(inv.tier("db").is_none());
        let web: Vec<&str> = inv.hosts_of("web").map(|h| h.name.as_str()).collect();
        assert_eq!(web, ["web1"]);
        assert_eq!(inv.hosts_of("db").count(), 0);
        // A role used by two tiers is listed once, in tier order.
        inv.tiers[1].roles.push("nginx".into());
        assert_eq!(inv.roles_used(), ["nginx", "haproxy", "keepalived"]);
    }

    #[test]
    fn inventory_files_up_to_the_size_limit_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inv.yml");
        let limit = usize::try_from(MAX_INVENTORY_BYTES).expect("fits");
        assert_eq!(limit, 4 * 1024 * 1024);
        std::fs::write(&path, "#".repeat(limit)).expect("write");
        assert_eq!(read_yaml_text(&path).map(|t| t.len()), Ok(limit));
        std::fs::write(&path, "#".repeat(limit + 1)).expect("write");
        let e = read_yaml_text(&path).expect_err("too big");
        assert!(
            e.message.contains("more than the 4194304 bytes"),
            "{}",
            e.message
        );
        std::fs::write(&path, "domain: x\n").expect("write");
        assert_eq!(read_yaml_text(&path).ok().as_deref(), Some("domain: x\n"));
    }

    #[test]
    fn yaml_nesting_is_limited_to_64_levels() {
        let nested = |n: usize| {
            GOOD.replace(
                "secrets:",
                &format!(
                    "vars:\n  deep: {}{}\nsecrets:",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
            )
        };
        // `vars:` and `deep:` are two levels of the 64.
        assert!(parse_str(&nested(60)).is_ok());
        let e = parse_str(&nested(70)).expect_err("too deep");
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
    }

    #[test]
    fn yaml_nodes_are_limited_to_200_000() {
        let list = |n: usize| {
            GOOD.replace(
                "secrets:",
                &format!("vars:\n  l: [{}]\nsecrets:", vec!["0"; n].join(",")),
            )
        };
        assert_eq!(parse_str(&list(1000)).err(), None);
        // serde-saphyr's own default would take 250 000.
        let refused = parse_str(&list(210_000)).err().map(|e| e.message);
        assert!(refused.is_some(), "210 000 nodes must be refused");
    }
}
