//! How to reach each host, settled once per run before anything renders: the inventory's
//! SSH settings over the OpenSSH client configuration (`~/.ssh/config` or `ssh.config`),
//! names resolved once, and the identity files checked before any connection.
//!
//! Precedence, per setting: what the inventory writes (the host's, else its tier's, else
//! `ssh:`) > what the SSH configuration says for the host's `address` > the defaults (root,
//! port 22, ~/.ssh/known_hosts, 10 s, the agent). A host's `address` plays the part of the
//! name given to `ssh`: the configuration's `Host` lines match it, its `HostName` replaces
//! a name (never an IP address written in the inventory). The port and user found here are
//! written back into the host: templates see them (`ssh_port` opens the firewall).

use crate::diag::Diagnostic;
use crate::inventory::{Host, Inventory, SshConfigChoice};
use crate::transport::ssh_config::{
    self, HostConfig, JumpSpec, MAX_JUMPS, RealFiles, Sourced, SshConfig, Tokens,
};
use crate::transport::{JumpHost, SshOptions};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The login name here and the home folder (`~`, `%d`, `%u`).
#[derive(Debug, Clone)]
pub(super) struct Env {
    pub(super) home: PathBuf,
    pub(super) local_user: String,
}

impl Env {
    /// From `HOME` and `USER` (or `LOGNAME`).
    pub(super) fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            home: PathBuf::from(var("HOME").unwrap_or_else(|| "/".into())),
            local_user: var("USER")
                .or_else(|| var("LOGNAME"))
                .unwrap_or_else(|| "root".into()),
        }
    }
}

/// Turns a name into addresses (the system's resolver; tests give a table).
pub(super) trait Resolve {
    fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system's resolver (getaddrinfo: /etc/hosts, DNS).
pub(super) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        use std::net::ToSocketAddrs;
        (name, 0u16)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|e| e.to_string())
    }
}

/// Whether a file exists (identity files named by the SSH configuration that do not are
/// skipped, as ssh does), and whether a default identity file can be used as it is.
pub(super) trait Exists {
    fn exists(&self, path: &Path) -> bool;
    /// A key that loads without asking anything (not encrypted, or FOOBAR_SSH_PASSPHRASE
    /// opens it): a default one that does not is left to the agent, as ssh leaves it.
    fn usable_key(&self, path: &Path) -> bool {
        self.exists(path)
    }
}

pub(super) struct RealExists;

impl Exists for RealExists {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn usable_key(&self, path: &Path) -> bool {
        path.is_file() && crate::transport::check_identity_file("", path).is_ok()
    }
}

/// The identity files ssh tries when nothing names one, in its order (those it still
/// supports and russh reads).
const DEFAULT_IDENTITIES: [&str; 3] = ["id_rsa", "id_ecdsa", "id_ed25519"];

/// Every host's way in, by host name, and what to tell the user about it.
#[derive(Debug, Default)]
pub(super) struct Routes {
    pub(super) by_host: BTreeMap<String, SshOptions>,
    /// Identity files of the SSH configuration that do not exist (skipped).
    pub(super) warnings: Vec<String>,
}

/// The SSH configuration the inventory asks for: `~/.ssh/config` when it exists (default),
/// `ssh.config: PATH` (which must exist), none for `ssh.config: false`.
pub(super) fn load_config(inv: &Inventory, env: &Env) -> Result<Option<SshConfig>, Diagnostic> {
    let path = match &inv.ssh.config {
        SshConfigChoice::Ignore => return Ok(None),
        SshConfigChoice::File(p) => p.clone(),
        SshConfigChoice::Default => {
            let p = env.home.join(".ssh/config");
            if !p.is_file() {
                return Ok(None);
            }
            p
        }
    };
    SshConfig::parse(&path, &env.home, &RealFiles).map(Some)
}

/// Settles every host's way in: writes the resolved address, port and user into
/// `inv.hosts` (and `inv.ssh.sudo` when the inventory does not say), and returns each
/// host's [`SshOptions`].
///
/// # Errors
/// Every host whose name does not resolve (one error naming each, with its line), a
/// `ProxyCommand` the configuration applies, a bad `ProxyJump` chain, two hosts at one
/// address, a VIP that is a host's address.
pub(super) fn settle(
    inv: &mut Inventory,
    config: Option<&SshConfig>,
    env: &Env,
    dns: &dyn Resolve,
    files: &dyn Exists,
) -> Result<Routes, Diagnostic> {
    let mut routes = Routes::default();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut resolved: BTreeMap<String, Result<IpAddr, String>> = BTreeMap::new();
    let empty = SshConfig::default();
    let config = config.unwrap_or(&empty);
    let snapshot = inv.clone();
    for host in &mut inv.hosts {
        match route(&snapshot, host, config, env, dns, files, &mut resolved) {
            Ok((opts, mut warnings)) => {
                routes.warnings.append(&mut warnings);
                routes.by_host.insert(host.name.clone(), opts);
            }
            Err(d) => errors.push(d),
        }
    }
    if let Some(d) = Diagnostic::combine(errors) {
        return Err(d);
    }
    check_addresses(inv)?;
    if !inv.ssh.set.sudo && !inv.ssh.set.user {
        inv.ssh.sudo = inv.hosts.iter().any(|h| h.user != "root");
    }
    Ok(routes)
}

/// One host's way in; sets its address, port and user.
fn route(
    inv: &Inventory,
    host: &mut Host,
    config: &SshConfig,
    env: &Env,
    dns: &dyn Resolve,
    files: &dyn Exists,
    resolved: &mut BTreeMap<String, Result<IpAddr, String>>,
) -> Result<(SshOptions, Vec<String>), Diagnostic> {
    let (line, column) = host.address_at;
    let at = |msg: String| Diagnostic::new(&inv.path, line, column, msg);
    let written = host.written_address();
    let hc = config.lookup(&written);
    if inv.ssh.jump_host.is_none()
        && let Some(place) = config.proxy_command(&written)
    {
        return Err(Diagnostic::new(
            &place.file,
            place.line,
            1,
            format!(
                "SSH configuration: ProxyCommand applies to host `{}` ({written}), which foobar-provision does not run",
                host.name
            ),
        )
        .with_hint(
            "use `ProxyJump` (e.g. `ProxyJump bastion`) or the inventory's `ssh.jump_host`",
        ));
    }
    if !host.user_set
        && let Some(u) = &hc.user
    {
        host.user = u.clone();
    }
    if !host.port_set
        && let Some(p) = hc.port
    {
        host.port = p;
    }
    // The name known_hosts is searched for, and the address connected to.
    let known_name = match &host.hostname {
        None => host.address.to_string(),
        Some(name) => hc.host_name.clone().unwrap_or_else(|| name.clone()),
    };
    if host.hostname.is_some() {
        let ip = match known_name.parse::<IpAddr>() {
            Ok(ip) => Ok(ip),
            Err(_) => resolved
                .entry(known_name.to_ascii_lowercase())
                .or_insert_with(|| first_address(dns, &known_name))
                .clone(),
        };
        host.address = ip.map_err(|e| {
            at(format!(
                "host `{}`: address `{}` does not resolve{}: {e}",
                host.name,
                written,
                if known_name == written {
                    String::new()
                } else {
                    format!(" (HostName {known_name})")
                }
            ))
            .with_hint(
                "names are resolved on this machine, once per run (hosts behind a jump host \
                 too): fix the name or the resolver, or write the host's IP address",
            )
        })?;
    }
    let tokens = Tokens {
        home: &env.home,
        local_user: &env.local_user,
        host: &known_name,
        remote_user: &host.user,
    };
    let mut warnings = Vec::new();
    let identity_files = match &host.identity_file {
        Some(f) => vec![f.path.clone()],
        // Nothing names one: ssh's default files that exist and open without a question.
        None if hc.identity_files.is_empty() => DEFAULT_IDENTITIES
            .iter()
            .map(|name| env.home.join(".ssh").join(name))
            .filter(|p| files.usable_key(p))
            .collect(),
        None => config_identities(&hc.identity_files, &tokens, files, &mut warnings)
            .map_err(|e| at(format!("host `{}`: {e}", host.name)))?,
    };
    let identities_only = hc.identities_only == Some(true);
    let use_agent = if inv.ssh.set.use_agent {
        inv.ssh.use_agent
    } else {
        inv.ssh.use_agent && !identities_only
    };
    let known_hosts = match (&hc.user_known_hosts_file, inv.ssh.set.known_hosts) {
        (Some(f), false) => ssh_config::expand_path(&f.value, &tokens).map_err(|e| {
            at(format!(
                "host `{}`: {} UserKnownHostsFile {e}",
                host.name, f.at
            ))
        })?,
        _ => inv.ssh.known_hosts.clone(),
    };
    let connect_timeout = match (hc.connect_timeout, inv.ssh.set.connect_timeout) {
        (Some(t), false) => t,
        _ => inv.ssh.connect_timeout,
    };
    let jumps = jumps(inv, &hc, config, env, files, &mut warnings)
        .map_err(|e| at(format!("host `{}`: {e}", host.name)))?;
    let opts = SshOptions {
        host_name: host.name.clone(),
        address: known_name,
        ip: Some(host.address),
        port: host.port,
        user: host.user.clone(),
        identity_files,
        use_agent,
        known_hosts,
        connect_timeout,
        jumps,
    };
    Ok((opts, warnings))
}

/// The first address a name resolves to.
fn first_address(dns: &dyn Resolve, name: &str) -> Result<IpAddr, String> {
    dns.resolve(name)?
        .into_iter()
        .next()
        .ok_or_else(|| "no address".to_string())
}

/// The configuration's identity files, expanded; those that do not exist are skipped with
/// a warning, as ssh does.
fn config_identities(
    written: &[Sourced<String>],
    tokens: &Tokens,
    files: &dyn Exists,
    warnings: &mut Vec<String>,
) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in written {
        let path = ssh_config::expand_path(&f.value, tokens)
            .map_err(|e| format!("{} IdentityFile {e}", f.at))?;
        if files.exists(&path) {
            if !out.contains(&path) {
                out.push(path);
            }
        } else {
            warnings.push(format!(
                "warning: {}: IdentityFile {}: no such file (skipped, as ssh does)",
                f.at,
                path.display()
            ));
        }
    }
    Ok(out)
}

/// The jump hosts: the inventory's `ssh.jump_host` (its missing settings from the
/// configuration), else the configuration's `ProxyJump` chain.
fn jumps(
    inv: &Inventory,
    hc: &HostConfig,
    config: &SshConfig,
    env: &Env,
    files: &dyn Exists,
    warnings: &mut Vec<String>,
) -> Result<Vec<JumpHost>, String> {
    if let Some(j) = &inv.ssh.jump_host {
        let jc = config.lookup(&j.address);
        let user = match (&jc.user, j.user_set) {
            (Some(u), false) => u.clone(),
            _ => j.user.clone(),
        };
        let port = match (jc.port, j.port_set) {
            (Some(p), false) => p,
            _ => j.port,
        };
        let address = jc.host_name.clone().unwrap_or_else(|| j.address.clone());
        let tokens = Tokens {
            home: &env.home,
            local_user: &env.local_user,
            host: &address,
            remote_user: &user,
        };
        let identity_files = config_identities(&jc.identity_files, &tokens, files, warnings)?;
        return Ok(vec![JumpHost {
            address,
            port,
            user,
            identity_files,
        }]);
    }
    match &hc.proxy_jump {
        Some(pj) if !pj.value.is_empty() => {
            let chain = expand_chain(&pj.value, config, env, files, warnings, 0)
                .map_err(|e| format!("{} ProxyJump: {e}", pj.at))?;
            if chain.len() > MAX_JUMPS {
                return Err(format!(
                    "{} ProxyJump: the chain has {} jump hosts, more than {MAX_JUMPS}",
                    pj.at,
                    chain.len()
                ));
            }
            Ok(chain)
        }
        _ => Ok(Vec::new()),
    }
}

/// `ProxyJump a,b` as ssh runs it: `a` reached with its own configuration (its own
/// `ProxyJump` first), then `b` through it, the hops after the first without theirs.
fn expand_chain(
    specs: &[JumpSpec],
    config: &SshConfig,
    env: &Env,
    files: &dyn Exists,
    warnings: &mut Vec<String>,
    depth: usize,
) -> Result<Vec<JumpHost>, String> {
    if depth > MAX_JUMPS {
        return Err(format!(
            "jump hosts lead to each other more than {MAX_JUMPS} times (a loop?)"
        ));
    }
    let mut chain = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let hc = config.lookup(&spec.host);
        if i == 0
            && let Some(own) = hc.proxy_jump.as_ref().filter(|p| !p.value.is_empty())
        {
            chain.extend(expand_chain(
                &own.value,
                config,
                env,
                files,
                warnings,
                depth + 1,
            )?);
        }
        let address = hc.host_name.clone().unwrap_or_else(|| spec.host.clone());
        let user = spec
            .user
            .clone()
            .or_else(|| hc.user.clone())
            .unwrap_or_else(|| env.local_user.clone());
        let tokens = Tokens {
            home: &env.home,
            local_user: &env.local_user,
            host: &address,
            remote_user: &user,
        };
        let identity_files = config_identities(&hc.identity_files, &tokens, files, warnings)?;
        chain.push(JumpHost {
            port: spec.port.or(hc.port).unwrap_or(22),
            address,
            user,
            identity_files,
        });
    }
    Ok(chain)
}

/// After resolution: no two hosts at one address, no VIP at a host's address.
fn check_addresses(inv: &Inventory) -> Result<(), Diagnostic> {
    let mut seen: BTreeMap<IpAddr, &Host> = BTreeMap::new();
    for h in &inv.hosts {
        let (line, column) = h.address_at;
        if let Some(other) = seen.get(&h.address)
            && (h.hostname.is_some() || other.hostname.is_some())
        {
            return Err(Diagnostic::new(
                &inv.path,
                line,
                column,
                format!(
                    "host `{}`: address {} ({}) is also host `{}`'s ({})",
                    h.name,
                    h.address,
                    h.written_address(),
                    other.name,
                    other.written_address()
                ),
            )
            .with_hint("each host needs its own address"));
        }
        seen.insert(h.address, h);
        if h.hostname.is_some() && inv.vips.iter().any(|v| IpAddr::V4(*v) == h.address) {
            return Err(Diagnostic::new(
                &inv.path,
                line,
                column,
                format!(
                    "host `{}`: `{}` resolves to {}, which is a VIP",
                    h.name,
                    h.written_address(),
                    h.address
                ),
            )
            .with_hint("the VIP must be an unused address that keepalived moves between hosts"));
        }
    }
    Ok(())
}

/// Checks every identity file the selected hosts (and their jump hosts) use, before any
/// connection: one error naming each file that cannot be used, and which host, tier or
/// setting uses it.
pub(super) fn check_identities(
    inv: &Inventory,
    routes: &Routes,
    hosts: &[&Host],
) -> anyhow::Result<()> {
    // path -> (who names it, the hosts that use it)
    let mut users: BTreeMap<PathBuf, (String, Vec<String>)> = BTreeMap::new();
    for h in hosts {
        let Some(opts) = routes.by_host.get(&h.name) else {
            continue;
        };
        let named_by = |path: &Path| match &h.identity_file {
            Some(f) if f.path == path && f.line > 0 => format!(
                "{} at {}:{}:{}",
                f.set_by,
                inv.path.display(),
                f.line,
                f.column
            ),
            Some(f) if f.path == path => f.set_by.clone(),
            _ => "the SSH configuration".to_string(),
        };
        let jump_files = opts.jumps.iter().flat_map(|j| j.identity_files.iter());
        for path in opts.identity_files.iter().chain(jump_files) {
            let entry = users
                .entry(path.clone())
                .or_insert_with(|| (named_by(path), Vec::new()));
            if !entry.1.contains(&h.name) {
                entry.1.push(h.name.clone());
            }
        }
    }
    let mut problems = Vec::new();
    for (path, (named_by, hosts)) in &users {
        let first = hosts.first().map_or("", String::as_str);
        if let Err(e) = crate::transport::check_identity_file(first, path) {
            problems.push(format!(
                "  {} (named by {named_by}; used by {}): {}",
                path.display(),
                hosts.join(", "),
                reason(&e)
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} SSH identity file{} cannot be used (nothing was connected):\n{}\n  hint: fix the \
         path in the inventory (`identity_file` of the host, its tier's `ssh:`, or \
         `ssh.identity_file`); an encrypted key needs FOOBAR_SSH_PASSPHRASE or ssh-agent",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n")
    )
}

/// What is wrong with an identity file, in a few words.
fn reason(e: &crate::transport::SshError) -> String {
    use crate::transport::SshError;
    match e {
        SshError::IdentityFile { reason, .. } => reason.clone(),
        SshError::PassphraseRequired { .. } => {
            "encrypted, and FOOBAR_SSH_PASSPHRASE is not set".into()
        }
        SshError::BadPassphrase { reason, .. } => {
            format!("FOOBAR_SSH_PASSPHRASE does not decrypt it ({reason})")
        }
        other => other.to_string(),
    }
}

/// Seconds as ssh and the inventory write them (for tests).
#[cfg(test)]
fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

#[cfg(test)]
#[path = "reach_sshd.rs"]
mod sshd;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ssh_config::Files;
    use std::net::{IpAddr, Ipv4Addr};

    struct Table(Vec<(&'static str, IpAddr)>);

    impl Resolve for Table {
        fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            let found: Vec<IpAddr> = self
                .0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, ip)| *ip)
                .collect();
            if found.is_empty() {
                Err("Name or service not known".into())
            } else {
                Ok(found)
            }
        }
    }

    struct AllExist;
    impl Exists for AllExist {
        fn exists(&self, _: &Path) -> bool {
            true
        }
    }
    struct NoneExist;
    impl Exists for NoneExist {
        fn exists(&self, _: &Path) -> bool {
            false
        }
    }

    struct Mem(&'static str);
    impl Files for Mem {
        fn read(&self, _: &Path) -> std::io::Result<String> {
            Ok(self.0.to_string())
        }
        fn list(&self, _: &Path) -> std::io::Result<Vec<PathBuf>> {
            Ok(Vec::new())
        }
    }

    fn env() -> Env {
        Env {
            home: PathBuf::from("/home/op"),
            local_user: "op".into(),
        }
    }

    fn config(text: &'static str) -> SshConfig {
        SshConfig::parse(
            Path::new("/home/op/.ssh/config"),
            Path::new("/home/op"),
            &Mem(text),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn inventory(ssh: &str, hosts: &str) -> Inventory {
        let text = format!(
            "domain: www.example.test\n{ssh}tiers:\n  web:\n    roles: [web]\nhosts:\n{hosts}"
        );
        crate::inventory::parse(Path::new("inv.yml"), &text, &["web".to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn dns() -> Table {
        Table(vec![
            (
                "web1.example.test",
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            ),
            ("real-web2", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12))),
        ])
    }

    #[test]
    fn ip_addresses_stay_as_written_and_defaults_apply_without_a_config() {
        let mut inv = inventory("", "  w:\n    address: 192.0.2.5\n    tier: web\n");
        let routes = settle(&mut inv, None, &env(), &dns(), &AllExist).expect("settle");
        let o = &routes.by_host["w"];
        assert_eq!(
            (o.address.as_str(), o.ip, o.port, o.user.as_str()),
            (
                "192.0.2.5",
                Some("192.0.2.5".parse().expect("ip")),
                22,
                "root"
            )
        );
        assert!(o.jumps.is_empty() && o.use_agent);
        assert_eq!(o.connect_timeout, secs(10));
        // Nothing names a key: ssh's default files (those that exist and open).
        assert_eq!(
            o.identity_files,
            ["id_rsa", "id_ecdsa", "id_ed25519"].map(|n| PathBuf::from("/home/op/.ssh").join(n))
        );
        let routes = settle(&mut inv, None, &env(), &dns(), &NoneExist).expect("settle");
        assert!(routes.by_host["w"].identity_files.is_empty());
        assert_eq!(inv.hosts[0].hostname, None);
        assert!(!inv.ssh.sudo);
    }

    #[test]
    fn names_resolve_once_and_known_hosts_uses_the_name() {
        let mut inv = inventory(
            "",
            "  w1:\n    address: web1.example.test\n    tier: web\n    port: 2222\n",
        );
        let routes = settle(&mut inv, None, &env(), &dns(), &AllExist).expect("settle");
        let o = &routes.by_host["w1"];
        assert_eq!(o.address, "web1.example.test");
        assert_eq!(o.ip, Some("192.0.2.11".parse().expect("ip")));
        assert_eq!(inv.hosts[0].address.to_string(), "192.0.2.11");
        assert_eq!(inv.hosts[0].hostname.as_deref(), Some("web1.example.test"));
        assert_eq!(
            crate::transport::known_hosts::host_pattern(&o.address, o.port),
            "[web1.example.test]:2222"
        );
    }

    #[test]
    fn every_name_that_does_not_resolve_is_named_at_once() {
        let mut inv = inventory(
            "",
            "  a:\n    address: nowhere-a\n    tier: web\n  b:\n    address: nowhere-b\n    tier: web\n",
        );
        let e = settle(&mut inv, None, &env(), &dns(), &AllExist)
            .expect_err("unresolved")
            .to_string();
        assert!(e.starts_with("inv.yml:7:14: host `a`: address `nowhere-a` does not resolve: Name or service not known"), "{e}");
        assert!(
            e.contains("\ninv.yml:10:14: host `b`: address `nowhere-b` does not resolve"),
            "{e}"
        );
        assert!(e.contains("write the host's IP address"), "{e}");
    }

    #[test]
    fn the_config_fills_what_the_inventory_leaves_out_and_the_inventory_wins() {
        let cfg = config(
            "Host web2\n  HostName real-web2\n  User deploy\n  Port 2202\n  IdentityFile ~/.ssh/id_%h\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile ~/.ssh/kh_work\n  ConnectTimeout 4\n",
        );
        // Nothing in the inventory: the configuration's values.
        let mut inv = inventory("", "  w2:\n    address: web2\n    tier: web\n");
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist).expect("settle");
        let o = &routes.by_host["w2"];
        assert_eq!(
            (o.address.as_str(), o.port, o.user.as_str()),
            ("real-web2", 2202, "deploy")
        );
        assert_eq!(o.ip, Some("192.0.2.12".parse().expect("ip")));
        assert_eq!(
            o.identity_files,
            [PathBuf::from("/home/op/.ssh/id_real-web2")]
        );
        assert!(!o.use_agent, "IdentitiesOnly turns the agent off");
        assert_eq!(o.known_hosts, PathBuf::from("/home/op/.ssh/kh_work"));
        assert_eq!(o.connect_timeout, secs(4));
        assert_eq!(
            (inv.hosts[0].port, inv.hosts[0].user.as_str()),
            (2202, "deploy")
        );
        assert!(
            inv.ssh.sudo,
            "a non-root user from the configuration gets sudo"
        );
        // The inventory says: it wins.
        let mut inv = inventory(
            "ssh:\n  user: ops\n  port: 22\n  known_hosts: /etc/kh\n  connect_timeout: 9\n  use_agent: true\n  identity_file: /keys/ops\n",
            "  w2:\n    address: web2\n    tier: web\n",
        );
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist).expect("settle");
        let o = &routes.by_host["w2"];
        assert_eq!((o.port, o.user.as_str()), (22, "ops"));
        assert_eq!(o.identity_files, [PathBuf::from("/keys/ops")]);
        assert!(o.use_agent);
        assert_eq!(o.known_hosts, PathBuf::from("/etc/kh"));
        assert_eq!(o.connect_timeout, secs(9));
    }

    #[test]
    fn an_ip_written_in_the_inventory_is_never_replaced_by_host_name() {
        let cfg = config("Host 192.0.2.5\n  HostName elsewhere\n  User deploy\n");
        let mut inv = inventory("", "  w:\n    address: 192.0.2.5\n    tier: web\n");
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist).expect("settle");
        let o = &routes.by_host["w"];
        assert_eq!(
            (o.address.as_str(), o.user.as_str()),
            ("192.0.2.5", "deploy")
        );
    }

    #[test]
    fn identity_files_of_the_config_that_do_not_exist_are_skipped_with_a_warning() {
        let cfg = config("Host *\n  IdentityFile ~/.ssh/gone\n");
        let mut inv = inventory("", "  w:\n    address: 192.0.2.5\n    tier: web\n");
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &NoneExist).expect("settle");
        assert!(routes.by_host["w"].identity_files.is_empty());
        assert_eq!(
            routes.warnings,
            [
                "warning: /home/op/.ssh/config:2: IdentityFile /home/op/.ssh/gone: no such file (skipped, as ssh does)"
            ]
        );
    }

    #[test]
    fn proxy_jump_chains_use_each_hops_own_settings() {
        let cfg = config(
            "Host inner\n  ProxyJump outer\n  User hop2\nHost outer\n  HostName 198.51.100.1\n  Port 2200\n  IdentityFile ~/.ssh/id_outer\n\
             Host web*\n  ProxyJump inner,u3@third:2203\n",
        );
        let mut inv = inventory("", "  w:\n    address: web1.example.test\n    tier: web\n");
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist).expect("settle");
        let hops: Vec<(String, u16, String)> = routes.by_host["w"]
            .jumps
            .iter()
            .map(|j| (j.address.clone(), j.port, j.user.clone()))
            .collect();
        assert_eq!(
            hops,
            [
                ("198.51.100.1".to_string(), 2200, "op".to_string()),
                ("inner".to_string(), 22, "hop2".to_string()),
                ("third".to_string(), 2203, "u3".to_string()),
            ]
        );
        assert_eq!(
            routes.by_host["w"].jumps[0].identity_files,
            [PathBuf::from("/home/op/.ssh/id_outer")]
        );
        // A loop is refused, naming the line.
        let looping =
            config("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\nHost w*\n  ProxyJump a\n");
        let e = settle(&mut inv, Some(&looping), &env(), &dns(), &AllExist)
            .expect_err("loop")
            .to_string();
        assert!(e.contains("ProxyJump") && e.contains("loop"), "{e}");
    }

    #[test]
    fn the_inventory_jump_host_wins_and_takes_its_missing_settings_from_the_config() {
        let cfg = config(
            "Host bastion\n  HostName 198.51.100.9\n  User jumper\n  Port 2222\nHost *\n  ProxyJump other\n",
        );
        let mut inv = inventory(
            "ssh:\n  jump_host:\n    address: bastion\n",
            "  w:\n    address: 192.0.2.5\n    tier: web\n",
        );
        let routes = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist).expect("settle");
        let j = &routes.by_host["w"].jumps;
        assert_eq!(j.len(), 1);
        assert_eq!(
            (j[0].address.as_str(), j[0].port, j[0].user.as_str()),
            ("198.51.100.9", 2222, "jumper")
        );
    }

    #[test]
    fn proxy_command_is_refused_with_its_line() {
        let cfg = config("Host *\n  ProxyCommand nc %h %p\n");
        let mut inv = inventory("", "  w:\n    address: 192.0.2.5\n    tier: web\n");
        let e = settle(&mut inv, Some(&cfg), &env(), &dns(), &AllExist)
            .expect_err("proxy command")
            .to_string();
        assert!(
            e.starts_with(
                "/home/op/.ssh/config:2:1: SSH configuration: ProxyCommand applies to host `w`"
            ),
            "{e}"
        );
    }

    #[test]
    fn two_names_at_one_address_or_at_a_vip_are_refused() {
        let mut inv = inventory(
            "",
            "  a:\n    address: web1.example.test\n    tier: web\n  b:\n    address: 192.0.2.11\n    tier: web\n",
        );
        let e = settle(&mut inv, None, &env(), &dns(), &AllExist)
            .expect_err("same address")
            .to_string();
        assert!(
            e.contains(
                "host `b`: address 192.0.2.11 (192.0.2.11) is also host `a`'s (web1.example.test)"
            ),
            "{e}"
        );
    }
}
