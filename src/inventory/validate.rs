//! From the file as written to an [`Inventory`]: every semantic check, in the order the
//! file is read (domain, vip, ssh, admin networks, tiers, hosts, vip use, secrets, pki), so the
//! first error reported is the first one in the file's sections.

use super::schema::{
    RawDrain, RawHost, RawInventory, RawPki, RawRelease, RawRolling, RawSecret, RawSsh,
    RawSshConfig, RawTier, RawVip,
};
use super::{
    Drain, Host, IdentityFile, Inventory, JumpHostSettings, Pki, ReleaseSource, ReleaseSpec,
    Rolling, SecretSource, SecretSpec, SshConfigChoice, SshSet, SshSettings, Tier, VarPlaces,
    shown, yaml_options,
};
use crate::diag::{Diagnostic, from_yaml_error};
use crate::ordered_map::OrderedMap;
use crate::suggest::nearest;
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Parses and validates inventory text; `path` is used for messages and relative paths.
pub fn parse(path: &Path, text: &str, known_roles: &[String]) -> Result<Inventory, Diagnostic> {
    let raw: RawInventory = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| from_yaml_error(path, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let domain = check_domain(path, &raw.domain)?;
    let vips = check_vips(path, raw.vip.as_ref())?;
    let ssh = ssh_settings(path, base, raw.ssh.unwrap_or_default())?;
    let admin_networks = check_admin_networks(path, &raw.admin_networks)?;
    let mut var_at = VarPlaces::default();
    let (vars, places) = split_vars(raw.vars);
    var_at.inventory = places;
    let tiers = build_tiers(path, base, raw.tiers, known_roles, &mut var_at)?;
    check_vip_tier(path, raw.vip.as_ref(), &tiers)?;
    let tiers: Vec<Tier> = tiers.into_iter().map(|(_, t)| t).collect();
    let hosts = build_hosts(path, base, raw.hosts, &tiers, &ssh, &mut var_at)?;
    check_db_primary_scope(path, &var_at)?;
    if let Some(spanned) = &raw.vip {
        check_vips_unused(path, &vips, spanned, &hosts)?;
        check_active_active(path, &vips, spanned, &tiers, &hosts)?;
    }
    let secrets = build_secrets(path, base, raw.secrets)?;
    let pki = raw.pki.map(|p| check_pki(path, p, &secrets)).transpose()?;
    Ok(Inventory {
        pki,
        path: path.to_path_buf(),
        domain,
        vips,
        ssh,
        admin_networks,
        tiers,
        hosts,
        vars,
        secrets,
        var_at,
        cli_vars: Map::new(),
    })
}

/// `pki:`: two distinct declared secrets, a lifetime of 1 to 825 days (the longest
/// browsers accept) and a renewal window shorter than the lifetime (else every apply
/// would renew every certificate).
fn check_pki(path: &Path, raw: Spanned<RawPki>, secrets: &[SecretSpec]) -> Result<Pki, Diagnostic> {
    let loc = raw.referenced;
    let p = raw.value;
    for (field, s) in [("ca", &p.ca), ("ca_key", &p.ca_key)] {
        if !secrets.iter().any(|d| d.name == s.value) {
            let names: Vec<&str> = secrets.iter().map(|d| d.name.as_str()).collect();
            let mut d = at(
                path,
                s.referenced,
                format!(
                    "pki: {field} names the secret `{}`, which `secrets:` does not declare",
                    shown(&s.value)
                ),
            );
            d.hint = Some(match nearest(&s.value, &names) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!(
                    "declare it under `secrets:` (e.g. `{}: {{file: pki/ca.pem}}`)",
                    shown(&s.value)
                ),
            });
            return Err(d);
        }
    }
    if p.ca.value == p.ca_key.value {
        return Err(at(
            path,
            p.ca_key.referenced,
            "pki: ca and ca_key name the same secret".into(),
        )
        .with_hint("the CA's certificate and its private key are two secrets"));
    }
    let days = |v: &Option<Spanned<i64>>, default: u32, lo: i64, hi: i64, what: &str| {
        let Some(v) = v else { return Ok(default) };
        u32::try_from(v.value)
            .ok()
            .filter(|d| (lo..=hi).contains(&i64::from(*d)))
            .ok_or_else(|| {
                at(
                    path,
                    v.referenced,
                    format!(
                        "pki: {what} {} is not a number of days from {lo} to {hi}",
                        v.value
                    ),
                )
            })
    };
    let validity_days = days(&p.validity, 90, 1, 825, "validity")?;
    let renew_within_days = days(&p.renew_within, 30, 0, 825, "renew_within")?;
    if renew_within_days >= validity_days {
        let v = p.renew_within.as_ref().map_or(loc, |v| v.referenced);
        return Err(at(
            path,
            v,
            format!(
                "pki: renew_within ({renew_within_days} days) must be shorter than validity ({validity_days} days)"
            ),
        )
        .with_hint("a new certificate would be inside its renewal window: every apply would renew it"));
    }
    Ok(Pki {
        ca: p.ca.value,
        ca_key: p.ca_key.value,
        renew_within_days,
        validity_days,
        line: loc.line(),
        column: loc.column(),
    })
}

/// A diagnostic at a position in the inventory.
fn at(path: &Path, loc: Location, msg: String) -> Diagnostic {
    Diagnostic::at(path, loc, msg)
}

/// A path from the inventory: `~/` is the home folder, relative paths are taken from the
/// inventory's folder.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = expand_home(p);
    if p.is_absolute() { p } else { base.join(p) }
}

/// The site's domain name, trimmed: a DNS name of two labels or more (it reaches
/// configuration files and the health checks' commands).
fn check_domain(path: &Path, domain: &Spanned<String>) -> Result<String, Diagnostic> {
    let trimmed = domain.value.trim().to_string();
    if !is_dns_name(&trimmed) {
        return Err(at(
            path,
            domain.referenced,
            format!("`{}` is not a domain name", shown(&domain.value)),
        )
        .with_hint("write the site's name, for example www.foobar.com"));
    }
    Ok(trimmed)
}

/// The optional VIPs: `vip: ADDR` (active-passive) or `vip: [ADDR, ADDR]` (active-active),
/// IPv4 addresses, distinct.
fn check_vips(path: &Path, vip: Option<&Spanned<RawVip>>) -> Result<Vec<Ipv4Addr>, Diagnostic> {
    let Some(v) = vip else {
        return Ok(Vec::new());
    };
    let written: Vec<&str> = match &v.value {
        RawVip::One(a) => vec![a.as_str()],
        RawVip::List(list) => list.iter().map(String::as_str).collect(),
    };
    if !(1..=2).contains(&written.len()) {
        return Err(at(
            path,
            v.referenced,
            format!(
                "vip lists {} addresses: give one (active-passive) or two (active-active)",
                written.len()
            ),
        )
        .with_hint(
            "write `vip: 192.0.2.10` for one VIP held by one load balancer at a time, or \
             `vip: [192.0.2.10, 192.0.2.9]` for two, each load balancer master of one",
        ));
    }
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for a in written {
        let ip = a.parse::<Ipv4Addr>().map_err(|_| {
            at(
                path,
                v.referenced,
                format!("vip `{}` is not an IPv4 address", shown(a)),
            )
            .with_hint("write the virtual IP as four numbers, for example 172.30.77.10")
        })?;
        if out.contains(&ip) {
            return Err(at(path, v.referenced, format!("vip {ip} is listed twice"))
                .with_hint("active-active needs two different addresses, one per load balancer"));
        }
        out.push(ip);
    }
    Ok(out)
}

/// The `ssh:` section with its defaults: root, port 22, the agent, ~/.ssh/known_hosts,
/// 10 s to connect, sudo unless the user is root, ~/.ssh/config when it exists. What the
/// inventory writes is noted in [`SshSet`]: it wins over the SSH configuration.
fn ssh_settings(path: &Path, base: &Path, raw: RawSsh) -> Result<SshSettings, Diagnostic> {
    let set = SshSet {
        user: raw.user.is_some(),
        port: raw.port.is_some(),
        use_agent: raw.use_agent.is_some(),
        known_hosts: raw.known_hosts.is_some(),
        connect_timeout: raw.connect_timeout.is_some(),
        sudo: raw.sudo.is_some(),
    };
    let user = raw.user.unwrap_or_else(|| "root".to_string());
    let port = optional_port(path, raw.port.as_ref(), 22)?;
    let connect_timeout = seconds(path, raw.connect_timeout.as_ref(), "connect_timeout")?;
    let jump_host = match raw.jump_host {
        None => None,
        Some(j) => Some(JumpHostSettings {
            address: j.address,
            port: optional_port(path, j.port.as_ref(), 22)?,
            port_set: j.port.is_some(),
            user_set: j.user.is_some(),
            user: j.user.unwrap_or_else(|| user.clone()),
        }),
    };
    let config = match raw.config {
        None => SshConfigChoice::Default,
        Some(c) => match c.value {
            RawSshConfig::Use(true) => SshConfigChoice::Default,
            RawSshConfig::Use(false) => SshConfigChoice::Ignore,
            RawSshConfig::Path(p) if p.trim().is_empty() || p.contains(char::is_control) => {
                return Err(at(path, c.referenced, "ssh.config is not a path".into()).with_hint(
                    "give the path of an OpenSSH client configuration, or `false` to ignore ~/.ssh/config",
                ));
            }
            RawSshConfig::Path(p) => SshConfigChoice::File(resolve(base, &p)),
        },
    };
    let identity_file = raw
        .identity_file
        .map(|f| identity_file(path, base, f, "ssh.identity_file"))
        .transpose()?;
    Ok(SshSettings {
        sudo: raw.sudo.unwrap_or(user != "root"),
        user,
        port,
        identity_file: identity_file.map(|f| f.path),
        use_agent: raw.use_agent.unwrap_or(true),
        known_hosts: raw
            .known_hosts
            .as_deref()
            .map(|p| resolve(base, p))
            .unwrap_or_else(|| expand_home("~/.ssh/known_hosts")),
        connect_timeout,
        jump_host,
        config,
        set,
    })
}

/// An `identity_file:` of the inventory (`~/` is the home folder, relative paths are taken
/// from the inventory's folder), with who sets it.
fn identity_file(
    path: &Path,
    base: &Path,
    raw: Spanned<String>,
    set_by: &str,
) -> Result<IdentityFile, Diagnostic> {
    if raw.value.trim().is_empty() || raw.value.contains(char::is_control) {
        return Err(at(
            path,
            raw.referenced,
            format!("{set_by}: `{}` is not a path", shown(&raw.value)),
        )
        .with_hint("give the path of a private key file, e.g. ~/.ssh/id_ed25519"));
    }
    Ok(IdentityFile {
        path: resolve(base, &raw.value),
        set_by: set_by.to_string(),
        line: raw.referenced.line(),
        column: raw.referenced.column(),
    })
}

/// `admin_networks:`, each an address or a CIDR.
fn check_admin_networks(
    path: &Path,
    networks: &[Spanned<String>],
) -> Result<Vec<String>, Diagnostic> {
    let mut out = Vec::new();
    for n in networks {
        if !is_cidr(&n.value) {
            return Err(at(
                path,
                n.referenced,
                format!(
                    "admin network `{}` is not an address or CIDR",
                    shown(&n.value)
                ),
            )
            .with_hint("write it as 192.0.2.0/24 or 192.0.2.7"));
        }
        out.push(n.value.clone());
    }
    Ok(out)
}

/// `tiers:` in file order (the rollout order), each with the position of its name: valid
/// names, known roles, no role twice in a tier, rollout settings, drains via declared tiers.
fn build_tiers(
    path: &Path,
    base: &Path,
    raw: OrderedMap<RawTier>,
    known_roles: &[String],
    var_at: &mut VarPlaces,
) -> Result<Vec<(Location, Tier)>, Diagnostic> {
    let declared: Vec<String> = raw.0.iter().map(|(n, _)| n.value.clone()).collect();
    let mut tiers: Vec<(Location, Tier)> = Vec::new();
    for (name, t) in raw.0 {
        if !is_tier_name(&name.value) {
            return Err(at(
                path,
                name.referenced,
                format!("tier name `{}` is not valid", shown(&name.value)),
            )
            .with_hint("use letters, digits, '-' and '_', starting with a letter (e.g. web)"));
        }
        let roles = check_tier_roles(path, &name.value, t.roles, known_roles)?;
        let vip = t.vip.as_ref().is_some_and(|v| v.value);
        let rolling = rolling(path, &name.value, t.rolling.as_ref(), vip)?;
        let drain = match t.drain {
            None => None,
            Some(d) => Some(drain(path, &name.value, d, &declared)?),
        };
        let release = t
            .release
            .map(|r| release(path, &name.value, r))
            .transpose()?;
        let (vars, places) = split_vars(t.vars);
        var_at.tiers.insert(name.value.clone(), places);
        let identity_file = t
            .ssh
            .and_then(|s| s.identity_file)
            .map(|f| identity_file(path, base, f, &format!("tier `{}`", name.value)))
            .transpose()?;
        tiers.push((
            name.referenced,
            Tier {
                name: name.value,
                roles,
                vars,
                vip,
                rolling,
                drain,
                release,
                identity_file,
            },
        ));
    }
    if tiers.is_empty() {
        return Err(
            Diagnostic::new(path, 0, 0, "the inventory declares no tiers")
                .with_hint("list tiers under `tiers:` in rollout order, each with its roles"),
        );
    }
    Ok(tiers)
}

/// Length of a release id (hex digits of the SHA-256 of its manifest).
pub const RELEASE_ID_LEN: usize = 12;

/// A tier's `release:`: exactly one of `source` or `git`, keep 1 to 100, a migration
/// command, package names, a pin that is a release id.
fn release(path: &Path, tier: &str, r: Spanned<RawRelease>) -> Result<ReleaseSpec, Diagnostic> {
    let loc = r.referenced;
    let r = r.value;
    let base = path.parent().unwrap_or(Path::new("."));
    let source = match (r.source, r.git) {
        (Some(s), None) => {
            if s.value.is_empty() || s.value.contains(char::is_control) {
                return Err(at(
                    path,
                    s.referenced,
                    format!(
                        "tier `{tier}`: release source {:?} is not a path",
                        shown(&s.value)
                    ),
                ));
            }
            ReleaseSource::Path(base.join(&s.value))
        }
        (None, Some(g)) => {
            let reference = g.value.reference;
            let ok = !reference.value.is_empty()
                && reference.value.len() <= 200
                && !reference.value.starts_with('-')
                && reference
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-^~@".contains(c));
            if !ok {
                return Err(at(
                    path,
                    reference.referenced,
                    format!(
                        "tier `{tier}`: git ref `{}` is not a ref name",
                        shown(&reference.value)
                    ),
                )
                .with_hint("a branch, tag or commit, e.g. `main`, `v1.4.0` or a commit id"));
            }
            ReleaseSource::Git {
                repo: base.join(&g.value.repo.value),
                reference: reference.value,
            }
        }
        (Some(s), Some(_)) => {
            return Err(at(path, s.referenced, format!("tier `{tier}`: release has both `source` and `git`"))
                .with_hint("a release comes from one place: a folder or archive (`source`), or a ref of a local repository (`git`)"));
        }
        (None, None) => {
            return Err(at(
                path,
                loc,
                format!(
                    "tier `{tier}`: release needs `source` (a folder or a .tar/.tar.gz archive) or `git: {{repo, ref}}`"
                ),
            ));
        }
    };
    let keep = match r.keep {
        None => 5,
        Some(k) => usize::try_from(k.value)
            .ok()
            .filter(|k| (1..=100).contains(k))
            .ok_or_else(|| {
                at(path, k.referenced, format!("tier `{tier}`: release keep {} is not from 1 to 100", k.value))
                    .with_hint("how many releases each host keeps, the current one included (2 or more to roll back)")
            })?,
    };
    let migrate = match r.migrate {
        Some(m) if m.value.trim().is_empty() || m.value.contains('\0') => {
            return Err(at(
                path,
                m.referenced,
                format!("tier `{tier}`: release migrate is empty"),
            ));
        }
        m => m.map(|m| m.value),
    };
    let mut packages = Vec::new();
    for p in r.packages {
        if !crate::role::is_package_name(&p.value) {
            return Err(at(
                path,
                p.referenced,
                format!(
                    "tier `{tier}`: `{}` is not a Debian package name",
                    shown(&p.value)
                ),
            ));
        }
        packages.push(p.value);
    }
    let pin = match r.pin {
        Some(p) if !is_release_id(&p.value) => {
            return Err(at(
                path,
                p.referenced,
                format!(
                    "tier `{tier}`: release pin `{}` is not a release id",
                    shown(&p.value)
                ),
            )
            .with_hint(format!(
                "a release id is {RELEASE_ID_LEN} lowercase hex digits, as `plan` shows it"
            )));
        }
        p => p.map(|p| p.value),
    };
    Ok(ReleaseSpec {
        source,
        keep,
        migrate,
        packages,
        pin,
        line: loc.line(),
        column: loc.column(),
    })
}

/// A release id: [`RELEASE_ID_LEN`] lowercase hex digits.
pub fn is_release_id(s: &str) -> bool {
    s.len() == RELEASE_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A tier's `rolling:`: a count from 1, or `all`; the VIP tier always rolls one at a time.
fn rolling(
    path: &Path,
    tier: &str,
    raw: Option<&Spanned<RawRolling>>,
    vip: bool,
) -> Result<Rolling, Diagnostic> {
    let Some(r) = raw else {
        return Ok(Rolling::Batch(1));
    };
    let value = match &r.value {
        RawRolling::Count(n) if (1..=10_000).contains(n) => {
            Rolling::Batch(usize::try_from(*n).unwrap_or(1))
        }
        RawRolling::Word(w) if w == "all" => Rolling::All,
        RawRolling::Count(n) => {
            return Err(at(
                path,
                r.referenced,
                format!("tier `{tier}`: rolling {n} is out of range"),
            )
            .with_hint("give how many hosts change at once (1 or more), or `all`"));
        }
        RawRolling::Word(w) => {
            return Err(at(
                path,
                r.referenced,
                format!(
                    "tier `{tier}`: rolling `{}` is not a number or `all`",
                    shown(w)
                ),
            )
            .with_hint("give how many hosts change at once (1 or more), or `all`"));
        }
    };
    if vip && value != Rolling::Batch(1) {
        return Err(at(
            path,
            r.referenced,
            format!("tier `{tier}` holds the VIP: it rolls one host at a time"),
        )
        .with_hint("remove `rolling:` from this tier (the VIP holder goes last, alone)"));
    }
    Ok(value)
}

/// A tier's `drain:`: through another declared tier, a backend name HAProxy accepts.
fn drain(path: &Path, tier: &str, d: RawDrain, declared: &[String]) -> Result<Drain, Diagnostic> {
    if d.via.value == tier || !declared.contains(&d.via.value) {
        let names: Vec<&str> = declared
            .iter()
            .map(String::as_str)
            .filter(|n| *n != tier)
            .collect();
        let mut e = at(
            path,
            d.via.referenced,
            format!(
                "tier `{tier}`: drain via `{}`: not another declared tier",
                shown(&d.via.value)
            ),
        );
        e.hint = Some(match nearest(&d.via.value, &names) {
            Some(n) => format!("did you mean `{n}`? (the tier whose HAProxy balances this one)"),
            None => "name the tier whose HAProxy balances this one".to_string(),
        });
        return Err(e);
    }
    let b = &d.backend.value;
    if b.is_empty()
        || b.len() > 64
        || !b
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(at(
            path,
            d.backend.referenced,
            format!(
                "tier `{tier}`: drain backend `{}` is not a backend name",
                shown(b)
            ),
        )
        .with_hint("the HAProxy backend's name: letters, digits, '-', '_' and '.' (e.g. web)"));
    }
    let timeout = seconds(
        path,
        d.timeout.as_ref(),
        &format!("tier `{tier}`: drain timeout"),
    )?;
    Ok(Drain {
        via: d.via.value,
        backend: b.clone(),
        timeout,
    })
}

/// A duration in seconds, above 0 and at most 600 (default 10); `what` names it in the error.
fn seconds(path: &Path, raw: Option<&Spanned<f64>>, what: &str) -> Result<Duration, Diagnostic> {
    match raw {
        None => Ok(Duration::from_secs(10)),
        Some(t) if t.value > 0.0 && t.value <= 600.0 => Ok(Duration::from_secs_f64(t.value)),
        Some(t) => Err(at(
            path,
            t.referenced,
            format!("{what} {} is out of range", t.value),
        )
        .with_hint("give seconds above 0 and at most 600, for example 10")),
    }
}

/// At most one tier holds the VIP; with a `vip:` one must, and without one none may.
fn check_vip_tier(
    path: &Path,
    vip: Option<&Spanned<RawVip>>,
    tiers: &[(Location, Tier)],
) -> Result<(), Diagnostic> {
    let holders: Vec<&(Location, Tier)> = tiers.iter().filter(|(_, t)| t.vip).collect();
    if let [(_, first), (loc, second), ..] = holders.as_slice() {
        return Err(at(
            path,
            *loc,
            format!(
                "tiers `{}` and `{}` both say `vip: true`: one tier holds the VIP",
                first.name, second.name
            ),
        )
        .with_hint("keep `vip: true` on the tier of the load balancers only"));
    }
    match (vip, holders.first()) {
        (Some(v), None) => Err(at(
            path,
            v.referenced,
            format!("vip {} is set but no tier holds it", vip_shown(&v.value)),
        )
        .with_hint(
            "add `vip: true` under the tier of the load balancers (e.g. `lb:`): it is rolled \
             one host at a time, the VIP holder last",
        )),
        (None, Some((loc, t))) => Err(at(
            path,
            *loc,
            format!(
                "tier `{}` says `vip: true` but the inventory has no `vip:`",
                t.name
            ),
        )
        .with_hint("add the virtual IP at the top (`vip: 192.0.2.10`), or remove `vip: true`")),
        _ => Ok(()),
    }
}

/// One tier's roles: each is a role under roles/ and is listed once.
fn check_tier_roles(
    path: &Path,
    tier: &str,
    raw: Vec<Spanned<String>>,
    known_roles: &[String],
) -> Result<Vec<String>, Diagnostic> {
    let mut roles = Vec::new();
    for r in raw {
        if !known_roles.contains(&r.value) {
            let names: Vec<&str> = known_roles.iter().map(String::as_str).collect();
            let mut d = at(
                path,
                r.referenced,
                format!("unknown role `{}`", shown(&r.value)),
            );
            d.hint = Some(match nearest(&r.value, &names) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("roles under roles/: {}", names.join(", ")),
            });
            return Err(d);
        }
        if roles.contains(&r.value) {
            return Err(at(
                path,
                r.referenced,
                format!("role `{}` is listed twice for tier `{tier}`", r.value),
            ));
        }
        roles.push(r.value);
    }
    Ok(roles)
}

/// `hosts:` in file order: valid names, one address each, declared tiers; at least one.
fn build_hosts(
    path: &Path,
    base: &Path,
    raw: OrderedMap<RawHost>,
    tiers: &[Tier],
    ssh: &SshSettings,
    var_at: &mut VarPlaces,
) -> Result<Vec<Host>, Diagnostic> {
    let mut hosts = Vec::new();
    let mut seen_addr: HashMap<String, String> = HashMap::new();
    for (name, mut h) in raw.0 {
        let (vars, places) = split_vars(std::mem::take(&mut h.vars));
        let host_identity = h.identity_file.take();
        let mut host = build_host(path, name, h, &seen_addr, tiers, ssh)?;
        host.vars = vars;
        host.identity_file = match host_identity {
            Some(f) => Some(identity_file(
                path,
                base,
                f,
                &format!("host `{}`", host.name),
            )?),
            None => tiers
                .iter()
                .find(|t| t.name == host.tier)
                .and_then(|t| t.identity_file.clone())
                .or_else(|| {
                    ssh.identity_file.clone().map(|p| IdentityFile {
                        path: p,
                        set_by: "ssh.identity_file".into(),
                        line: 0,
                        column: 0,
                    })
                }),
        };
        var_at.hosts.insert(host.name.clone(), places);
        seen_addr.insert(address_key(&host), host.name.clone());
        hosts.push(host);
    }
    if hosts.is_empty() {
        return Err(Diagnostic::new(path, 0, 0, "the inventory lists no hosts")
            .with_hint("add at least one host under `hosts:`"));
    }
    Ok(hosts)
}

/// What two hosts may not share: the IP address, or the name, as written.
fn address_key(h: &Host) -> String {
    h.hostname
        .as_ref()
        .map_or_else(|| h.address.to_string(), |n| n.to_ascii_lowercase())
}

/// A name written as a host's `address`: a DNS name, or an alias of the SSH
/// configuration (letters, digits, `.`, `-`, `_`; not starting with `-` or `.`; 253 at
/// most; not digits and dots only, which is a mistyped IPv4 address).
pub fn is_address_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// One host: its name, its address (an IP address or a name, not used by an earlier
/// host), its tier, its port.
fn build_host(
    path: &Path,
    name: Spanned<String>,
    h: RawHost,
    seen_addr: &HashMap<String, String>,
    tiers: &[Tier],
    ssh: &SshSettings,
) -> Result<Host, Diagnostic> {
    if !is_host_name(&name.value) {
        return Err(at(
            path,
            name.referenced,
            format!("host name `{}` is not valid", shown(&name.value)),
        )
        .with_hint("use letters, digits and '-', starting with a letter (e.g. web1)"));
    }
    let written = h.address.value.trim();
    let (address, hostname) = match written.parse::<IpAddr>() {
        Ok(ip) => (ip, None),
        Err(_) if is_address_name(written) => {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(written.to_string()))
        }
        Err(_) => {
            return Err(at(
                path,
                h.address.referenced,
                format!(
                    "host `{}`: address `{}` is not an IP address or a host name",
                    name.value,
                    shown(&h.address.value)
                ),
            )
            .with_hint(
                "write the host's IPv4 or IPv6 address (172.30.77.21), or its DNS name \
                 (web1.example.com) or an alias of your SSH configuration",
            ));
        }
    };
    let key = hostname
        .as_ref()
        .map_or_else(|| address.to_string(), |n| n.to_ascii_lowercase());
    if let Some(other) = seen_addr.get(&key) {
        return Err(at(
            path,
            h.address.referenced,
            format!(
                "host `{}`: address {} is already used by host `{}`",
                name.value,
                hostname
                    .as_deref()
                    .map_or_else(|| address.to_string(), str::to_string),
                other
            ),
        )
        .with_hint("each host needs its own address"));
    }
    if !tiers.iter().any(|t| t.name == h.tier.value) {
        let declared: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
        let mut d = at(
            path,
            h.tier.referenced,
            format!(
                "host `{}`: tier `{}` is not declared under `tiers:`",
                name.value,
                shown(&h.tier.value)
            ),
        );
        d.hint = Some(match nearest(&h.tier.value, &declared) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("declared tiers: {}", declared.join(", ")),
        });
        return Err(d);
    }
    Ok(Host {
        port: optional_port(path, h.port.as_ref(), ssh.port)?,
        port_set: h.port.is_some() || ssh.set.port,
        user_set: h.user.is_some() || ssh.set.user,
        name: name.value,
        address,
        hostname,
        address_at: (h.address.referenced.line(), h.address.referenced.column()),
        tier: h.tier.value,
        user: h.user.unwrap_or_else(|| ssh.user.clone()),
        identity_file: None,
        vars: Map::new(),
    })
}

/// The VIP as written, for messages.
fn vip_shown(v: &RawVip) -> String {
    match v {
        RawVip::One(a) => shown(a),
        RawVip::List(l) => format!(
            "[{}]",
            l.iter().map(|a| shown(a)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// No VIP may be a host's own address.
fn check_vips_unused(
    path: &Path,
    vips: &[Ipv4Addr],
    spanned: &Spanned<RawVip>,
    hosts: &[Host],
) -> Result<(), Diagnostic> {
    for &vip in vips {
        if let Some(h) = hosts
            .iter()
            .find(|h| h.hostname.is_none() && h.address == IpAddr::V4(vip))
        {
            return Err(at(
                path,
                spanned.referenced,
                format!("vip {vip} is also the address of host `{}`", h.name),
            )
            .with_hint("the VIP must be an unused address that keepalived moves between hosts"));
        }
    }
    Ok(())
}

/// Active-active (two VIPs) needs exactly two hosts in the VIP tier: each is master of one
/// VIP and backup of the other. (A third host would back up both and serve neither: not a
/// shape this setting describes.)
fn check_active_active(
    path: &Path,
    vips: &[Ipv4Addr],
    spanned: &Spanned<RawVip>,
    tiers: &[Tier],
    hosts: &[Host],
) -> Result<(), Diagnostic> {
    if vips.len() != 2 {
        return Ok(());
    }
    let Some(tier) = tiers.iter().find(|t| t.vip) else {
        return Ok(()); // check_vip_tier already refused this
    };
    let n = hosts.iter().filter(|h| h.tier == tier.name).count();
    if n == 2 {
        return Ok(());
    }
    Err(at(
        path,
        spanned.referenced,
        format!(
            "two VIPs (active-active) need exactly 2 hosts in tier `{}`, which has {n}",
            tier.name
        ),
    )
    .with_hint(
        "give the VIP tier two load balancers (each master of one VIP, backup of the other), \
         or list one VIP for active-passive",
    ))
}

/// Longest a secret's command may run, and its default.
const SECRET_COMMAND_MAX_SECONDS: f64 = 600.0;
const SECRET_COMMAND_DEFAULT: Duration = Duration::from_secs(30);

/// `secrets:`, each with exactly one source (`env`, `file` or `command`), never a value.
fn build_secrets(
    path: &Path,
    base: &Path,
    raw: OrderedMap<RawSecret>,
) -> Result<Vec<SecretSpec>, Diagnostic> {
    let mut secrets = Vec::new();
    for (name, s) in raw.0 {
        let timeout = s.timeout;
        let source = match (s.env, s.file, s.command) {
            (Some(e), None, None) if !e.is_empty() => SecretSource::Env(e),
            (None, Some(f), None) if !f.is_empty() => SecretSource::File(resolve(base, &f)),
            (None, None, Some(c)) => secret_command(path, base, &name.value, c, timeout.as_ref())?,
            _ => {
                return Err(at(
                    path,
                    name.referenced,
                    format!("secret `{}` needs exactly one of `env`, `file` or `command`", shown(&name.value)),
                )
                .with_hint("for example `env: FOOBAR_DB_PASSWORD`, `file: /etc/foobar/db_password` or `command: [pass, show, foobar/db]`; never the value itself"));
            }
        };
        if let (Some(t), false) = (&timeout, matches!(source, SecretSource::Command { .. })) {
            return Err(at(
                path,
                t.referenced,
                format!(
                    "secret `{}`: `timeout` is for `command` only",
                    shown(&name.value)
                ),
            ));
        }
        secrets.push(SecretSpec {
            name: name.value,
            source,
            line: name.referenced.line(),
            column: name.referenced.column(),
        });
    }
    Ok(secrets)
}

/// `command: [PROGRAM, ARG...]`: a program (no shell) and its arguments, and its time
/// limit (default 30 s, at most 600).
fn secret_command(
    path: &Path,
    base: &Path,
    name: &str,
    c: Spanned<Vec<String>>,
    timeout: Option<&Spanned<f64>>,
) -> Result<SecretSource, Diagnostic> {
    let ok = c.value.first().is_some_and(|p| !p.trim().is_empty())
        && c.value.iter().all(|a| !a.contains('\0'));
    if !ok {
        return Err(at(
            path,
            c.referenced,
            format!("secret `{}`: `command` needs a program and its arguments", shown(name)),
        )
        .with_hint(
            "a list, run without a shell: `command: [sops, -d, --extract, '[\"db\"]', secrets.enc.yml]`",
        ));
    }
    let timeout = match timeout {
        None => SECRET_COMMAND_DEFAULT,
        Some(t) if t.value > 0.0 && t.value <= SECRET_COMMAND_MAX_SECONDS => {
            Duration::from_secs_f64(t.value)
        }
        Some(t) => {
            return Err(at(
                path,
                t.referenced,
                format!(
                    "secret `{}`: timeout {} is out of range",
                    shown(name),
                    t.value
                ),
            )
            .with_hint("give seconds above 0 and at most 600 (default 30)"));
        }
    };
    Ok(SecretSource::Command {
        argv: c.value,
        timeout,
        dir: base.to_path_buf(),
    })
}

/// Vars as the templates see them, and where each key is written.
/// `db_primary` is the inventory's, never a tier's or a host's: every host must agree on
/// the database's primary (it is computed once for all of them, `replica::primary`).
fn check_db_primary_scope(path: &Path, var_at: &VarPlaces) -> Result<(), Diagnostic> {
    let var = crate::replica::VAR;
    let tiers = var_at.tiers.iter().map(|(t, p)| (format!("tier `{t}`"), p));
    let hosts = var_at.hosts.iter().map(|(h, p)| (format!("host `{h}`"), p));
    match tiers
        .chain(hosts)
        .find_map(|(scope, places)| places.get(var).map(|at| (scope, *at)))
    {
        None => Ok(()),
        Some((scope, at)) => Err(Diagnostic::at(
            path,
            at,
            format!(
                "var {var} is set for {scope}: set it in the top-level `vars:` (or with --var), where every host reads the same primary"
            ),
        )),
    }
}

fn split_vars(raw: OrderedMap<Value>) -> (Map<String, Value>, BTreeMap<String, Location>) {
    let mut vars = Map::new();
    let mut places = BTreeMap::new();
    for (k, v) in raw.0 {
        places.insert(k.value.clone(), k.referenced);
        vars.insert(k.value, v);
    }
    (vars, places)
}

/// A port when one is given (1 to 65535), else `default`.
fn optional_port(path: &Path, p: Option<&Spanned<i64>>, default: u16) -> Result<u16, Diagnostic> {
    match p {
        Some(p) => check_port(path, p),
        None => Ok(default),
    }
}

fn check_port(path: &Path, p: &Spanned<i64>) -> Result<u16, Diagnostic> {
    u16::try_from(p.value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            at(
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

/// Labels of letters, digits and `-` (not at either end), 1 to 63 characters each, at
/// least two of them, at most 253 characters in all, no trailing dot.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A tier name: it names template lists (`tiers.web`) and appears in messages.
fn is_tier_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_host_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `addr` or `addr/prefix`, IPv4 or IPv6.
fn is_cidr(s: &str) -> bool {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        ["nginx", "haproxy", "keepalived", "app", "mysql"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub(in crate::inventory) const GOOD: &str = "\
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
    vip: true
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

    pub(in crate::inventory) fn parse_str(text: &str) -> Result<Inventory, Diagnostic> {
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
        // tiers come out in the file's order (the rollout order), lb holding the VIP
        let names: Vec<&str> = inv.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["web", "lb"]);
        let vip: Vec<bool> = inv.tiers.iter().map(|t| t.vip).collect();
        assert_eq!(vip, [false, true]);
        assert!(
            inv.tiers
                .iter()
                .all(|t| t.rolling == Rolling::Batch(1) && t.drain.is_none())
        );
        assert_eq!(inv.secrets[0].source, SecretSource::Env("PW".into()));
    }

    fn err(text: &str) -> String {
        parse_str(text).expect_err("must fail").to_string()
    }

    /// GOOD with a second lb host and `vip:` as written here.
    fn two_lbs(vip: &str) -> String {
        GOOD.replace("vip: 172.30.77.10", &format!("vip: {vip}"))
            .replace(
                "  web1:\n",
                "  lb2:\n    address: 172.30.77.12\n    tier: lb\n  web1:\n",
            )
    }

    #[test]
    fn vip_is_one_address_or_a_list_of_one_or_two() {
        let one = parse_str(&two_lbs("172.30.77.10")).expect("one VIP");
        assert_eq!(one.vips, vec![Ipv4Addr::new(172, 30, 77, 10)]);
        assert!(!one.active_active());
        let listed = parse_str(&two_lbs("[172.30.77.10]")).expect("a list of one");
        assert_eq!(listed.vips, one.vips);
        assert!(!listed.active_active());
        let two = parse_str(&two_lbs("[172.30.77.10, 172.30.77.9]")).expect("two VIPs");
        assert_eq!(
            two.vips,
            vec![
                Ipv4Addr::new(172, 30, 77, 10),
                Ipv4Addr::new(172, 30, 77, 9)
            ]
        );
        assert!(two.active_active());
        assert_eq!(two.vip(), Some(Ipv4Addr::new(172, 30, 77, 10)));
        let block = parse_str(&two_lbs("\n  - 172.30.77.10\n  - 172.30.77.9")).expect("block list");
        assert_eq!(block.vips, two.vips);
        let none = parse_str(
            &GOOD
                .replace("vip: 172.30.77.10\n", "")
                .replace("    vip: true\n", ""),
        )
        .expect("no VIP");
        assert!(none.vips.is_empty());
        assert_eq!(none.vip(), None);
    }

    #[test]
    fn vip_list_rules_name_the_line() {
        for (vip, want) in [
            (
                "[172.30.77.10, 172.30.77.9, 172.30.77.8]",
                "vip lists 3 addresses: give one (active-passive) or two (active-active)",
            ),
            ("[]", "vip lists 0 addresses"),
            (
                "[172.30.77.10, 172.30.77.10]",
                "vip 172.30.77.10 is listed twice",
            ),
            (
                "[172.30.77.10, 172.30.77]",
                "vip `172.30.77` is not an IPv4 address",
            ),
            (
                "[172.30.77.10, 172.30.77.12]",
                "vip 172.30.77.12 is also the address of host `lb2`",
            ),
        ] {
            let e = err(&two_lbs(vip));
            assert!(e.contains("inv/test.yml:2:"), "{vip}: {e}");
            assert!(e.contains(want), "{vip}: {e}");
        }
        // Active-active needs exactly two hosts in the VIP tier.
        let e = err(&GOOD.replace("vip: 172.30.77.10", "vip: [172.30.77.10, 172.30.77.9]"));
        assert!(e.contains("inv/test.yml:2:"), "{e}");
        assert!(
            e.contains("two VIPs (active-active) need exactly 2 hosts in tier `lb`, which has 1"),
            "{e}"
        );
        assert!(e.contains("list one VIP for active-passive"), "{e}");
    }

    #[test]
    fn unknown_key_names_position_and_nearest_key() {
        let e = err(&GOOD.replace("    address: 172.30.77.21", "    adress: 172.30.77.21"));
        assert!(e.starts_with("inv/test.yml:19:"), "{e}");
        assert!(e.contains("did you mean `address`?"), "{e}");
    }

    #[test]
    fn duplicate_host_is_an_error_with_position() {
        let text = GOOD.replace("  web1:\n", "  lb1:\n");
        let e = err(&text);
        assert!(e.starts_with("inv/test.yml:18:"), "{e}");
        assert!(e.to_lowercase().contains("duplicate"), "{e}");
    }

    #[test]
    fn duplicate_address_names_both_hosts() {
        let e = err(&GOOD.replace("172.30.77.21", "172.30.77.11"));
        assert!(e.contains("inv/test.yml:19:14: host `web1`: address 172.30.77.11 is already used by host `lb1`"), "{e}");
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
        // A tier renamed: its hosts name a tier that is not declared.
        let e = err(&GOOD.replace("  web:\n", "  webs:\n"));
        assert!(
            e.contains("tier `web` is not declared") && e.contains("did you mean `webs`?"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_located() {
        let e = err(&GOOD.replace("172.30.77.21", "172.30.77.300"));
        assert!(
            e.contains("inv/test.yml:19:14:") && e.contains("not an IP address"),
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

    /// Issue 10, finding 2: `domain: "x.com';touch${IFS}/tmp/pwned;'"` passed `check` and
    /// reached the haproxy health check's `curl`, run as root. A domain is a DNS name.
    #[test]
    fn domain_must_be_a_dns_name() {
        let e = err(&GOOD.replace(
            "domain: www.foobar.com",
            "domain: \"x.com';touch${IFS}/tmp/pwned;'\"",
        ));
        assert!(
            e.starts_with(
                "inv/test.yml:1:9: `x.com';touch${IFS}/tmp/pwned;'` is not a domain name"
            ),
            "{e}"
        );
        for bad in [
            "-x.example.com",
            "a..b",
            "x.com.",
            "a_b.com",
            "$(id).com",
            "x.c\\u0000m",
        ] {
            let e = err(&GOOD.replace("www.foobar.com", &format!("\"{bad}\"")));
            assert!(e.contains("is not a domain name"), "{bad}: {e}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(err(&GOOD.replace("www.foobar.com", &long)).contains("is not a domain name"));
        for good in ["foobar.com", "a-b.example.co.uk", "x1.test"] {
            let inv = parse_str(&GOOD.replace("www.foobar.com", good)).expect(good);
            assert_eq!(inv.domain, good);
        }
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
    fn an_address_is_an_ip_or_a_name() {
        for (address, want) in [
            ("192.0.2.7", Ok(None)),
            ("2001:db8::7", Ok(None)),
            ("web1.example.com", Ok(Some("web1.example.com"))),
            ("web1", Ok(Some("web1"))),
            ("bastion_web-1", Ok(Some("bastion_web-1"))),
            ("172.30.77.300", Err("is not an IP address or a host name")),
            ("1234", Err("is not an IP address or a host name")),
            ("-web1", Err("is not an IP address or a host name")),
            ("\"web 1\"", Err("is not an IP address or a host name")),
            ("\"$(id)\"", Err("is not an IP address or a host name")),
        ] {
            let got = parse_str(&GOOD.replace("172.30.77.21", address))
                .map(|inv| inv.hosts[1].hostname.clone())
                .map_err(|e| e.message);
            match (got, want) {
                (Ok(h), Ok(w)) => assert_eq!(h.as_deref(), w, "{address}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{address}: {e}"),
                (got, want) => panic!("{address}: {got:?} vs {want:?}"),
            }
        }
        // A name twice is refused like an address twice.
        let text = GOOD
            .replace("172.30.77.11", "lb.example.com")
            .replace("172.30.77.21", "LB.example.com");
        assert!(verdict(&text).contains("address LB.example.com is already used by host `lb1`"));
    }

    #[test]
    fn identity_files_per_host_and_tier_and_who_sets_each() {
        let text = GOOD
            .replace(
                "    vip: true\n",
                "    vip: true\n    ssh:\n      identity_file: keys/lb\n",
            )
            .replace(
                "    tier: web\n",
                "    tier: web\n    identity_file: ~/web1-key\n",
            );
        let inv = parse_str(&text).expect("valid");
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        let lb1 = inv.hosts[0].identity_file.clone().expect("lb1's");
        assert_eq!(
            (lb1.path, lb1.set_by.as_str(), lb1.line),
            (PathBuf::from("inv/keys/lb"), "tier `lb`", 15)
        );
        let web1 = inv.hosts[1].identity_file.clone().expect("web1's");
        assert_eq!(
            (web1.path, web1.set_by.as_str()),
            (home.join("web1-key"), "host `web1`")
        );
        // Without either, `ssh.identity_file`.
        let inv = parse_str(GOOD).expect("valid");
        let f = inv.hosts[1].identity_file.clone().expect("inventory-wide");
        assert_eq!(
            (f.path, f.set_by.as_str()),
            (PathBuf::from("inv/keys/id"), "ssh.identity_file")
        );
        // The tier's `ssh:` takes an identity file only.
        let v = verdict(&GOOD.replace(
            "    vip: true\n",
            "    vip: true\n    ssh:\n      user: x\n",
        ));
        assert!(v.contains("unknown field `user`"), "{v}");
    }

    #[test]
    fn ssh_config_is_a_path_or_false() {
        let inv = parse_str(&with_ssh("  config: false\n")).expect("valid");
        assert_eq!(inv.ssh.config, SshConfigChoice::Ignore);
        let inv = parse_str(&with_ssh("  config: ssh/config\n")).expect("valid");
        assert_eq!(
            inv.ssh.config,
            SshConfigChoice::File(PathBuf::from("inv/ssh/config"))
        );
        let inv = parse_str(&with_ssh("")).expect("valid");
        assert_eq!(inv.ssh.config, SshConfigChoice::Default);
        let inv = parse_str(&with_ssh("  config: true\n")).expect("valid");
        assert_eq!(inv.ssh.config, SshConfigChoice::Default);
        assert!(verdict(&with_ssh("  config: \"\"\n")).contains("ssh.config is not a path"));
    }

    #[test]
    fn secret_commands_are_argv_lists_with_a_bounded_timeout() {
        let inv = parse_str(&GOOD.replace(
            "    env: PW",
            "    command: [pass, show, foobar/db]\n    timeout: 5",
        ))
        .expect("valid");
        assert_eq!(
            inv.secrets[0].source,
            SecretSource::Command {
                argv: vec!["pass".into(), "show".into(), "foobar/db".into()],
                timeout: Duration::from_secs(5),
                dir: PathBuf::from("inv"),
            }
        );
        for (secret, want) in [
            (
                "    command: []",
                "`command` needs a program and its arguments",
            ),
            (
                "    command: [\"\"]",
                "`command` needs a program and its arguments",
            ),
            (
                "    command: [a]\n    timeout: 0",
                "timeout 0 is out of range",
            ),
            (
                "    command: [a]\n    timeout: 601",
                "timeout 601 is out of range",
            ),
            (
                "    env: PW\n    timeout: 5",
                "`timeout` is for `command` only",
            ),
            (
                "    env: PW\n    command: [a]",
                "needs exactly one of `env`, `file` or `command`",
            ),
            ("    command: pass show x", "expected a list"),
        ] {
            let v = verdict(&GOOD.replace("    env: PW", secret));
            assert!(v.contains(want), "{secret}: {v}");
        }
    }

    #[test]
    fn cidr_check() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("172.30.77.1"));
        assert!(is_cidr("::1/128"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("banana"));
    }

    /// GOOD with its `ssh:` section replaced by `ssh` (indented lines, or empty).
    fn with_ssh(ssh: &str) -> String {
        GOOD.replace(
            "ssh:\n  user: deploy\n  identity_file: keys/id\n",
            &format!("ssh:\n{ssh}"),
        )
    }

    /// "ok" or the error message (without file and position).
    fn verdict(text: &str) -> String {
        match parse_str(text) {
            Ok(_) => "ok".into(),
            Err(e) => e.message,
        }
    }

    #[test]
    fn domain_vip_and_admin_networks_rules() {
        let rows: Vec<(String, &str)> = vec![
            (
                GOOD.replace("domain: www.foobar.com", "domain: \" a.b \""),
                "ok",
            ),
            (
                GOOD.replace("domain: www.foobar.com", "domain: \"\""),
                "`` is not a domain name",
            ),
            (
                GOOD.replace("domain: www.foobar.com", "domain: localhost"),
                "`localhost` is not a domain name",
            ),
            (
                GOOD.replace("domain: www.foobar.com", "domain: \"a .b\""),
                "`a .b` is not a domain name",
            ),
            (
                GOOD.replace("vip: 172.30.77.10", "vip: ::1"),
                "vip `::1` is not an IPv4 address",
            ),
            (
                GOOD.replace("vip: 172.30.77.10\n", "")
                    .replace("    vip: true\n", ""),
                "ok",
            ),
            (
                GOOD.replace("vip: 172.30.77.10\n", ""),
                "tier `lb` says `vip: true` but the inventory has no `vip:`",
            ),
            (
                GOOD.replace("    vip: true\n", ""),
                "vip 172.30.77.10 is set but no tier holds it",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    vip: true\n",
                ),
                "tiers `web` and `lb` both say `vip: true`: one tier holds the VIP",
            ),
            (
                GOOD.replace("    vip: true\n", "    vip: true\n    rolling: 2\n"),
                "tier `lb` holds the VIP: it rolls one host at a time",
            ),
            (
                GOOD.replace("    vip: true\n", "    vip: false\n")
                    .replace("vip: 172.30.77.10\n", ""),
                "ok",
            ),
            (
                GOOD.replace(
                    "tiers:",
                    "admin_networks: [10.0.0.0/8, 192.0.2.7, \"::/0\"]\ntiers:",
                ),
                "ok",
            ),
            (
                GOOD.replace("tiers:", "admin_networks: [10.0.0.0/x]\ntiers:"),
                "admin network `10.0.0.0/x` is not an address or CIDR",
            ),
        ];
        for (text, want) in rows {
            let v = verdict(&text);
            assert!(v.contains(want), "{want}: {v}");
        }
        assert_eq!(
            parse_str(&rows_domain(" a.b "))
                .map(|i| i.domain)
                .ok()
                .as_deref(),
            Some("a.b")
        );
        assert_eq!(
            parse_str(GOOD).ok().and_then(|i| i.vip()),
            Some(Ipv4Addr::new(172, 30, 77, 10))
        );
    }

    fn rows_domain(d: &str) -> String {
        GOOD.replace("domain: www.foobar.com", &format!("domain: \"{d}\""))
    }

    #[test]
    fn cidr_prefix_is_bounded_by_the_address_family() {
        for (s, ok) in [
            ("10.0.0.0/32", true),
            ("10.0.0.0/0", true),
            ("10.0.0.0/33", false),
            ("::/128", true),
            ("::/129", false),
            ("10.0.0.0/", false),
        ] {
            assert_eq!(is_cidr(s), ok, "{s}");
        }
    }

    #[test]
    fn ssh_defaults_root_port_22_agent_known_hosts_10s_no_sudo_for_root() {
        let inv = parse_str(&with_ssh("")).expect("valid");
        let ssh = &inv.ssh;
        assert_eq!((ssh.user.as_str(), ssh.port), ("root", 22));
        assert!(!ssh.sudo, "root needs no sudo");
        assert!(ssh.use_agent);
        assert_eq!(ssh.identity_file, None);
        assert!(
            ssh.known_hosts.ends_with(".ssh/known_hosts"),
            "{:?}",
            ssh.known_hosts
        );
        assert_eq!(ssh.connect_timeout, Duration::from_secs(10));
        assert!(ssh.jump_host.is_none());
        assert_eq!(inv.hosts[0].user, "root");
        assert_eq!(inv.hosts[0].port, 22);
    }

    #[test]
    fn ssh_settings_as_written() {
        let inv = parse_str(&with_ssh(
            "  user: ops\n  port: 2222\n  use_agent: false\n  sudo: false\n  known_hosts: /etc/kh\n  connect_timeout: 600\n  jump_host:\n    address: bastion\n",
        ))
        .expect("valid");
        let ssh = &inv.ssh;
        assert_eq!((ssh.user.as_str(), ssh.port), ("ops", 2222));
        assert!(!ssh.use_agent && !ssh.sudo);
        assert_eq!(ssh.known_hosts, PathBuf::from("/etc/kh"));
        assert_eq!(ssh.connect_timeout, Duration::from_secs(600));
        let j = ssh.jump_host.as_ref().expect("jump host");
        assert_eq!(
            (j.address.as_str(), j.port, j.user.as_str()),
            ("bastion", 22, "ops")
        );
        assert_eq!(
            (inv.hosts[0].user.as_str(), inv.hosts[0].port),
            ("ops", 2222)
        );
        let inv = parse_str(&with_ssh(
            "  user: root\n  sudo: true\n  jump_host:\n    address: b\n    port: 2200\n    user: j\n",
        ))
        .expect("valid");
        assert!(inv.ssh.sudo);
        let j = inv.ssh.jump_host.as_ref().expect("jump host");
        assert_eq!((j.port, j.user.as_str()), (2200, "j"));
    }

    #[test]
    fn connect_timeout_and_ports_are_bounded() {
        let rows = [
            ("  connect_timeout: 0.5\n", "ok"),
            (
                "  connect_timeout: 0\n",
                "connect_timeout 0 is out of range",
            ),
            (
                "  connect_timeout: -1\n",
                "connect_timeout -1 is out of range",
            ),
            (
                "  connect_timeout: 600.5\n",
                "connect_timeout 600.5 is out of range",
            ),
            ("  port: 1\n", "ok"),
            ("  port: 65535\n", "ok"),
            ("  port: 0\n", "port 0 is out of range"),
            ("  port: 65536\n", "port 65536 is out of range"),
            (
                "  jump_host:\n    address: b\n    port: 0\n",
                "port 0 is out of range",
            ),
        ];
        for (ssh, want) in rows {
            let v = verdict(&with_ssh(ssh));
            assert!(v.contains(want), "{ssh}: {v}");
        }
        let v = verdict(&GOOD.replace("    tier: lb\n", "    tier: lb\n    port: 0\n"));
        assert!(v.contains("port 0 is out of range"), "{v}");
        let inv = parse_str(&GOOD.replace(
            "    tier: lb\n",
            "    tier: lb\n    port: 2022\n    user: u\n",
        ))
        .expect("valid");
        assert_eq!((inv.hosts[0].port, inv.hosts[0].user.as_str()), (2022, "u"));
        assert_eq!(
            (inv.hosts[1].port, inv.hosts[1].user.as_str()),
            (22, "deploy")
        );
    }

    #[test]
    fn host_names_start_with_a_letter_and_fit_a_dns_label() {
        let long = format!("a{}", "b".repeat(62));
        let too_long = format!("a{}", "b".repeat(63));
        for (name, ok) in [
            ("web1", true),
            ("w-1", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("1web", false),
            ("-web", false),
            ("web_1", false),
            ("web.1", false),
            ("", false),
        ] {
            assert_eq!(is_host_name(name), ok, "{name}");
        }
        let v = verdict(&GOOD.replace("  web1:\n", "  web_1:\n"));
        assert!(v.contains("host name `web_1` is not valid"), "{v}");
    }

    #[test]
    fn hosts_tiers_roles_and_secrets_rules() {
        let rows: Vec<(String, &str)> = vec![
            (
                GOOD.split("hosts:").next().unwrap_or_default().to_string() + "hosts: {}\n",
                "the inventory lists no hosts",
            ),
            (
                GOOD.replace("roles: [nginx]", "roles: [nginx, nginx]"),
                "role `nginx` is listed twice for tier `web`",
            ),
            (
                GOOD.replace("roles: [nginx]", "roles: [zzzzzz]"),
                "unknown role `zzzzzz`",
            ),
            (
                GOOD.replace("  web:\n", "  9web:\n"),
                "tier name `9web` is not valid",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    rolling: all\n",
                ),
                "ok",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    rolling: 3\n",
                ),
                "ok",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    rolling: 0\n",
                ),
                "tier `web`: rolling 0 is out of range",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    rolling: half\n",
                ),
                "tier `web`: rolling `half` is not a number or `all`",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: lb, backend: web, timeout: 5}\n",
                ),
                "ok",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: lbb, backend: web}\n",
                ),
                "tier `web`: drain via `lbb`: not another declared tier",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: web, backend: web}\n",
                ),
                "tier `web`: drain via `web`: not another declared tier",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: lb, backend: \"web/x\"}\n",
                ),
                "tier `web`: drain backend `web/x` is not a backend name",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: lb, backend: web, timeout: 0}\n",
                ),
                "tier `web`: drain timeout 0 is out of range",
            ),
            (
                GOOD.replace(
                    "    roles: [nginx]\n",
                    "    roles: [nginx]\n    drain: {via: lb}\n",
                ),
                "missing field `backend`",
            ),
            (
                GOOD.replace("    env: PW", "    env: \"\""),
                "secret `pw` needs exactly one of",
            ),
            (
                GOOD.replace("    env: PW", "    file: \"\""),
                "secret `pw` needs exactly one of",
            ),
            (GOOD.replace("    env: PW", "    file: pw.txt"), "ok"),
        ];
        for (text, want) in rows {
            let v = verdict(&text);
            assert!(v.contains(want), "{want}: {v}");
        }
        let inv = parse_str(&GOOD.replace("    env: PW", "    file: pw.txt")).expect("valid");
        assert_eq!(
            inv.secrets[0].source,
            SecretSource::File(PathBuf::from("inv/pw.txt"))
        );
        assert_eq!((inv.secrets[0].line, inv.secrets[0].column), (24, 3));
        let inv = parse_str(&GOOD.replace("    env: PW", "    file: /etc/pw")).expect("valid");
        assert_eq!(
            inv.secrets[0].source,
            SecretSource::File(PathBuf::from("/etc/pw"))
        );
    }

    #[test]
    fn unknown_names_hint_the_nearest_or_list_them_all() {
        let hint = |text: &str| {
            parse_str(text)
                .err()
                .and_then(|d| d.hint)
                .unwrap_or_default()
        };
        assert_eq!(
            hint(&GOOD.replace(
                "    roles: [nginx]\n",
                "    roles: [nginx]\n    drain: {via: lbs, backend: web}\n"
            )),
            "did you mean `lb`? (the tier whose HAProxy balances this one)"
        );
        assert!(
            hint(&GOOD.replace("roles: [nginx]", "roles: [zzzzzz]"))
                .starts_with("roles under roles/: ")
        );
        assert_eq!(
            hint(&GOOD.replace("    tier: web", "    tier: zzzzzz")),
            "declared tiers: web, lb"
        );
    }

    #[test]
    fn tilde_paths_are_under_home_and_relative_ones_under_the_inventory() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("tests run with HOME set"));
        assert_eq!(expand_home("~/.ssh/id"), home.join(".ssh/id"));
        assert_eq!(expand_home("~user/id"), PathBuf::from("~user/id"));
        let inv = parse_str(&with_ssh("  identity_file: ~/k\n")).expect("valid");
        assert_eq!(inv.ssh.identity_file, Some(home.join("k")));
        assert_eq!(inv.ssh.known_hosts, home.join(".ssh/known_hosts"));
    }
}
