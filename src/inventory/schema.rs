//! The inventory file as written: serde types that mirror the YAML, before any check.

use crate::ordered_map::OrderedMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    pub(super) domain: Spanned<String>,
    /// One address (active-passive) or a list of one or two (two: active-active).
    #[serde(default)]
    pub(super) vip: Option<Spanned<RawVip>>,
    #[serde(default)]
    pub(super) ssh: Option<RawSsh>,
    #[serde(default)]
    pub(super) admin_networks: Vec<Spanned<String>>,
    pub(super) tiers: OrderedMap<RawTier>,
    pub(super) hosts: OrderedMap<RawHost>,
    #[serde(default)]
    pub(super) vars: OrderedMap<Value>,
    #[serde(default)]
    pub(super) secrets: OrderedMap<RawSecret>,
    #[serde(default)]
    pub(super) pki: Option<Spanned<RawPki>>,
}

/// `pki:`, the internal CA that signs the hosts' certificates.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPki {
    pub(super) ca: Spanned<String>,
    pub(super) ca_key: Spanned<String>,
    #[serde(default)]
    pub(super) renew_within: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) validity: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    #[serde(default)]
    pub(super) user: Option<String>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) identity_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) use_agent: Option<bool>,
    #[serde(default)]
    pub(super) known_hosts: Option<String>,
    #[serde(default)]
    pub(super) connect_timeout: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) jump_host: Option<RawJump>,
    #[serde(default)]
    pub(super) sudo: Option<bool>,
    /// The OpenSSH client configuration to honour: a path, or `false` (default: ~/.ssh/config
    /// when it exists).
    #[serde(default)]
    pub(super) config: Option<Spanned<RawSshConfig>>,
}

/// `ssh.config: PATH`, `false` (ignore ~/.ssh/config) or `true` (the default).
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "ssh.config must be a path (`ssh.config: ~/.ssh/config.work`) or false"
)]
pub(super) enum RawSshConfig {
    Use(bool),
    Path(String),
}

/// A tier's `ssh:`: what its hosts log in with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTierSsh {
    #[serde(default)]
    pub(super) identity_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJump {
    pub(super) address: String,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) roles: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) vars: OrderedMap<Value>,
    /// Holds the VIP pair: one host at a time, the VIP holder last.
    #[serde(default)]
    pub(super) vip: Option<Spanned<bool>>,
    /// Hosts changed at once when their change interrupts a serving service: a count,
    /// or `all`.
    #[serde(default)]
    pub(super) rolling: Option<Spanned<RawRolling>>,
    /// Taken out of a load balancer's backend before a restart.
    #[serde(default)]
    pub(super) drain: Option<RawDrain>,
    /// The operator's application the tier's release role deploys.
    #[serde(default)]
    pub(super) release: Option<Spanned<RawRelease>>,
    /// SSH settings of the tier's hosts (an identity file).
    #[serde(default)]
    pub(super) ssh: Option<RawTierSsh>,
}

/// A tier's `release:`: which code (a folder or archive, or a git ref), how many
/// releases each host keeps, the migration, Debian packages it needs, a pin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelease {
    #[serde(default)]
    pub(super) source: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) git: Option<Spanned<RawGit>>,
    #[serde(default)]
    pub(super) keep: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) migrate: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) packages: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) pin: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGit {
    pub(super) repo: Spanned<String>,
    #[serde(rename = "ref")]
    pub(super) reference: Spanned<String>,
}

/// `vip: ADDR` or `vip: [ADDR, ADDR]`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "vip must be an IPv4 address (`vip: 192.0.2.10`) or a list of one or two \
                 (`vip: [192.0.2.10, 192.0.2.9]`: active-active)"
)]
pub(super) enum RawVip {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRolling {
    Count(i64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrain {
    pub(super) via: Spanned<String>,
    pub(super) backend: Spanned<String>,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) address: Spanned<String>,
    pub(super) tier: Spanned<String>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) user: Option<String>,
    /// The host's own private key (wins over its tier's and `ssh.identity_file`).
    #[serde(default)]
    pub(super) identity_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vars: OrderedMap<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    #[serde(default)]
    pub(super) env: Option<String>,
    #[serde(default)]
    pub(super) file: Option<String>,
    /// A program and its arguments, run here without a shell; its stdout is the value.
    #[serde(default)]
    pub(super) command: Option<Spanned<Vec<String>>>,
    /// Seconds the command may run (default 30).
    #[serde(default)]
    pub(super) timeout: Option<Spanned<f64>>,
}
