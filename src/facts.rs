//! Facts: what a host is now. One remote script gathers everything for a host in one
//! round trip ([`script`]); pure parsers turn its output into [`Facts`] ([`parse`]).

use crate::release::ReleaseFact;
use crate::shell::{Init, quote};
use std::collections::{BTreeMap, BTreeSet};

mod nodes;
pub use nodes::NodeFact;

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
    /// How many of the VIPs asked about this host holds now (`None` when none was asked
    /// about).
    pub vips_held: Option<usize>,
    /// Managed paths that still have an apply's backup beside them: that apply put the
    /// file in place but did not finish (handlers, health checks).
    pub unfinished: BTreeSet<String>,
    /// Roles whose drift check failed: the live state differs from the files.
    pub drifted: BTreeSet<String>,
    /// Temporary files an interrupted apply left beside managed paths (none while
    /// another apply holds the lock: they are its files in flight).
    pub stale_temps: BTreeSet<String>,
    /// Who holds the host's apply lock now (`LOCK` line, from `apply::HostLock`).
    pub locked_by: Option<String>,
    /// Each certificate asked about, in the query's order.
    pub certs: Vec<CertFact>,
    /// The roles' directories, links and absent paths: what each is now.
    pub nodes: BTreeMap<String, NodeFact>,
    /// Each release root asked about, in the query's order.
    pub releases: Vec<ReleaseFact>,
}

/// A certificate and its private key as found on the host. Only public data crosses:
/// the key's public half (`openssl pkey -pubout`), never the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertFact {
    /// The key file, when it exists as a regular file.
    pub key: Option<KeyFact>,
    /// The certificate file's text (at most [`MAX_CERT_BYTES`]), when it exists.
    pub cert_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFact {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Its public key, PEM; `None` when openssl could not read it (or is not installed).
    pub public_pem: Option<String>,
}

/// Largest certificate file read back (a leaf certificate is about 1 KB).
pub const MAX_CERT_BYTES: usize = 65536;

/// What the facts script must ask about.
#[derive(Debug, Clone, Default)]
pub struct FactQuery<'a> {
    pub paths: Vec<&'a str>,
    pub packages: Vec<&'a str>,
    pub services: Vec<&'a str>,
    /// The VIPs to look for on the host (each answered by one `VIP yes|no` line).
    pub vips: Vec<String>,
    /// (role, command): a role's drift check, run as root; failure = drifted.
    pub drift: Vec<(&'a str, &'a str)>,
    /// (certificate, key) paths of the internal CA's certificates.
    pub certs: Vec<(&'a str, &'a str)>,
    /// Paths that must be folders (`directories:`).
    pub dirs: Vec<&'a str>,
    /// Links and paths that must be absent: a folder found there is also checked for
    /// entries (it is never deleted).
    pub nodes: Vec<&'a str>,
    /// Roots of releases (`ROOT/current`, `ROOT/releases/`).
    pub releases: Vec<&'a str>,
}

/// The one script that gathers a host's facts. Its output is read by [`parse`].
///
/// Processes are what it costs a host (with a hundred hosts on a few cores, the hosts'
/// forks are the run's time): the loops and tests are the shell's builtins; one
/// `sha256sum` hashes every managed file, one `stat` covers them and every directory,
/// link or absent path that exists, one `dpkg-query` every package, one `systemctl show`
/// every unit, one `ip` every VIP. Their own output is read as it is (no `sed` to tag
/// it): a `sha256sum` line is 64 hex digits, two spaces and a path asked about; a
/// `systemctl show` line is `Id=`, `ActiveState=`, `UnitFileState=` or blank.
pub fn script(q: &FactQuery) -> String {
    let mut s = String::from(
        "if [ -d /run/systemd/system ]; then echo 'INIT systemd'; else echo 'INIT other'; fi\n",
    );
    let stats = !(q.paths.is_empty() && q.dirs.is_empty() && q.nodes.is_empty());
    if stats {
        s.push_str("set --\n");
    }
    if !q.paths.is_empty() {
        let paths: Vec<String> = q.paths.iter().map(|p| quote(p)).collect();
        s.push_str(&format!(
            // Existing files are collected in "$@" so that one sha256sum and one stat
            // cover them all (a fork per file per tool was most of a no-op's time). A
            // path that exists but is no regular file (a folder, a link) is `N PATH`.
            "for p in {}; do d=${{p%/*}}; [ -e \"$d/.${{p##*/}}.fp-prev\" ] && echo \"B $p\"; \
             for t in \"$d/.${{p##*/}}\".fp-??????; do [ -f \"$t\" ] && echo \"T $t\"; done; \
             if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then set -- \"$@\" \"$p\"; \
             elif [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"N $p\"; else echo \"F 0 $p\"; fi; done\n\
             if [ $# -gt 0 ]; then sha256sum -- \"$@\"; fi\n",
            paths.join(" ")
        ));
    }
    s.push_str(&nodes::script(q));
    if stats {
        s.push_str("if [ $# -gt 0 ]; then stat -c 'S %f %U %G %n' -- \"$@\"; fi\n");
    }
    if !q.packages.is_empty() {
        let pkgs: Vec<String> = q.packages.iter().map(|p| quote(p)).collect();
        s.push_str(&format!(
            "dpkg-query -W -f='P ${{Package}} ${{db:Status-Status}}\\n' -- {} 2>/dev/null || true\n",
            pkgs.join(" ")
        ));
    }
    if !q.services.is_empty() {
        // One systemctl call for every unit: blocks of Id=, ActiveState=, UnitFileState=.
        let units: Vec<String> = q.services.iter().map(|u| quote(&unit_name(u))).collect();
        s.push_str(&format!(
            "if command -v systemctl >/dev/null; then systemctl show -p Id -p ActiveState -p UnitFileState -- {} 2>/dev/null; fi\n",
            units.join(" ")
        ));
    }
    if !q.vips.is_empty() {
        // One `ip` for every VIP; each looked for in its output by the shell.
        s.push_str("a=$(ip -o -4 addr show 2>/dev/null)\n");
        for vip in &q.vips {
            s.push_str(&format!(
                "case \"$a\" in *{}*) echo 'VIP yes';; *) echo 'VIP no';; esac\n",
                quote(&format!(" {vip}/"))
            ));
        }
    }
    for (role, cmd) in &q.drift {
        // The command on lines of its own: a `#` in it cannot comment out the rest.
        s.push_str(&format!(
            "if (\n{cmd}\n) >/dev/null 2>&1; then echo {}; else echo {}; fi\n",
            quote(&format!("D ok {role}")),
            quote(&format!("D drift {role}"))
        ));
    }
    for (i, (cert, key)) in q.certs.iter().enumerate() {
        // The key's metadata and public half (openssl may not be installed yet: nothing
        // after the group); the certificate, base64 on one line. Written straight out,
        // not through `$(...)`: a subshell less each.
        s.push_str(&format!(
            "k={key}; if [ -f \"$k\" ] && [ ! -L \"$k\" ]; then printf 'KEY {i} %s ' \"$(stat -c '%a %U %G' -- \"$k\")\"; \
             openssl pkey -in \"$k\" -pubout 2>/dev/null | base64 -w0; echo; \
             else echo 'KEY {i} none'; fi\n\
             c={cert}; if [ -f \"$c\" ] && [ ! -L \"$c\" ]; then printf 'CERT {i} '; head -c {max} -- \"$c\" | base64 -w0; echo; \
             else echo 'CERT {i} none'; fi\n",
            key = quote(key),
            cert = quote(cert),
            max = MAX_CERT_BYTES,
        ));
    }
    for (i, root) in q.releases.iter().enumerate() {
        // `current` (its target, base64), the release folders (names that are release
        // ids only: nothing else is ours), the newest history lines.
        let id_glob = "[0-9a-f]".repeat(crate::inventory::RELEASE_ID_LEN);
        s.push_str(&format!(
            "r={root}; if [ -L \"$r/current\" ]; then t=$(readlink -- \"$r/current\" | head -c 4096 | base64 -w0); \
             echo \"R {i} cur ${{t:--}}\"; elif [ -e \"$r/current\" ]; then echo \"R {i} cur $(printf '(not a symlink)' | base64 -w0)\"; \
             else echo 'R {i} cur -'; fi\n\
             for d in \"$r\"/releases/*; do n=${{d##*/}}; case $n in {id_glob}) [ -d \"$d\" ] && [ ! -L \"$d\" ] && echo \"R {i} have $n\";; esac; done\n\
             tail -n {hist} -- \"$r/releases/{history}\" 2>/dev/null | sed 's/^/R {i} hist /'\n",
            root = quote(root),
            hist = crate::release::HISTORY_READ,
            history = crate::release::HISTORY,
        ));
    }
    s.push_str("echo END\n");
    s
}

/// `nginx` -> `nginx.service`; names with a unit suffix stay as they are.
fn unit_name(service: &str) -> String {
    if service.contains('.') {
        service.to_string()
    } else {
        format!("{service}.service")
    }
}

/// Why a host's facts (or contents) output cannot be read. The text is what the run
/// reports for the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// A line of the facts output that is not what the script prints.
    #[error("facts output line {line}: cannot read `{text}`")]
    Unreadable { line: usize, text: String },
    /// No `END` line: the script did not run to its end.
    #[error("facts output ended early (the connection dropped or the script failed)")]
    EndedEarly,
    /// A path asked about is neither reported missing nor hashed and stat'ed.
    #[error("facts output lacks the file {0}")]
    MissingFile(String),
    /// A directory, link or absent path asked about that no `NODE` line tells about.
    #[error("facts output lacks the path {0}")]
    MissingPath(String),
    #[error("facts output lacks the INIT line")]
    MissingInit,
    /// A `T` or `B` line that is not a leftover of this tool beside a path asked about
    /// (a crafted file name): never acted upon.
    #[error(
        "facts output line {line}: `{text}` is not a temporary file or backup beside a managed file \
         (.NAME.fp-XXXXXX, .NAME.fp-prev): remove it from the host by hand"
    )]
    UnexpectedLeftover { line: usize, text: String },
    /// A line of the contents output that is not `C <base64|-> <path>`.
    #[error("cannot read `{0}`")]
    UnreadableContent(String),
    #[error("bad base64 for {path}: {reason}")]
    BadBase64 {
        path: String,
        reason: base64::DecodeError,
    },
    /// A managed path that exists as a link, a folder or a device.
    #[error(
        "{0} exists but is not a regular file (a folder, a link, ...): it is never read or \
         replaced; move it away on the host"
    )]
    NotRegular(String),
    /// No `END` line in the contents output.
    #[error("content output ended early")]
    ContentEndedEarly,
}

/// Parses the facts script's output. Packages and services asked about but not
/// mentioned are missing / unknown.
pub fn parse(output: &str, q: &FactQuery) -> Result<Facts, FactsError> {
    let mut reader = FactsReader::new(q);
    for (n, line) in output.lines().enumerate() {
        if !is_expected_leftover(line, q) {
            return Err(FactsError::UnexpectedLeftover {
                line: n + 1,
                text: line.to_string(),
            });
        }
        reader.line(line, q).ok_or_else(|| FactsError::Unreadable {
            line: n + 1,
            text: line.to_string(),
        })?;
    }
    reader.finish(q)
}

/// A `T` (temporary file) line must name `DIR/.BASE.fp-XXXXXX` (mktemp's six letters or
/// digits) and a `B` (backup) line a path asked about (a file, directory, link or absent
/// path): apply removes the first and restores from `.BASE.fp-prev` beside the second.
/// Other lines pass.
fn is_expected_leftover(line: &str, q: &FactQuery) -> bool {
    if let Some(path) = line.strip_prefix("B ") {
        return q.paths.contains(&path) || nodes::asked(q, path);
    }
    let Some(tmp) = line.strip_prefix("T ") else {
        return true;
    };
    let Some((prefix, suffix)) = tmp.rsplit_once(".fp-") else {
        return false;
    };
    suffix.len() == 6
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
        && q.paths.iter().chain(&q.dirs).chain(&q.nodes).any(|p| {
            p.rsplit_once('/')
                .is_some_and(|(dir, base)| prefix == format!("{dir}/.{base}"))
        })
}

/// What the facts output has said so far, line by line.
struct FactsReader {
    init: Option<Init>,
    /// Paths reported missing (`F 0 PATH`); the others are assembled by [`Self::finish`].
    files: BTreeMap<String, Option<FileFact>>,
    /// The first path reported as existing but not a regular file (`N PATH`).
    not_regular: Option<String>,
    packages: BTreeMap<String, bool>,
    services: BTreeMap<String, ServiceFact>,
    vips_held: Option<usize>,
    ended: bool,
    /// The unit whose `systemctl show` block is being read.
    unit: Option<String>,
    hashes: BTreeMap<String, String>,
    metas: BTreeMap<String, (u32, String, String)>,
    unfinished: BTreeSet<String>,
    drifted: BTreeSet<String>,
    stale_temps: BTreeSet<String>,
    locked_by: Option<String>,
    certs: Vec<CertFact>,
    nodes: nodes::NodeLines,
    releases: Vec<ReleaseFact>,
}

/// Base64 text from the host, bounded; what it decodes to is made printable by whoever
/// shows it (certificates are parsed, never shown whole).
fn decode_text(b64: &str) -> Option<String> {
    use base64::Engine;
    if b64.len() > MAX_CERT_BYTES * 4 / 3 + 8 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

impl FactsReader {
    /// Every package asked about starts as not installed.
    fn new(q: &FactQuery) -> Self {
        FactsReader {
            init: None,
            files: BTreeMap::new(),
            not_regular: None,
            packages: q.packages.iter().map(|p| (p.to_string(), false)).collect(),
            services: BTreeMap::new(),
            vips_held: None,
            ended: false,
            unit: None,
            hashes: BTreeMap::new(),
            metas: BTreeMap::new(),
            unfinished: BTreeSet::new(),
            drifted: BTreeSet::new(),
            stale_temps: BTreeSet::new(),
            locked_by: None,
            certs: vec![CertFact::default(); q.certs.len()],
            nodes: nodes::NodeLines::default(),
            releases: vec![ReleaseFact::default(); q.releases.len()],
        }
    }

    /// Reads one line (`TAG REST`); `None` when it is not what the script prints.
    fn line(&mut self, line: &str, q: &FactQuery) -> Option<()> {
        // `systemctl show`'s and `sha256sum`'s own lines, untagged.
        if let Some((key @ ("Id" | "ActiveState" | "UnitFileState"), value)) = line.split_once('=')
        {
            return self.unit(key, value);
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "INIT" => {
                self.init = Some(if rest == "systemd" {
                    Init::Systemd
                } else {
                    Init::Other
                });
            }
            "F" => {
                let path = rest.strip_prefix("0 ")?;
                self.files.insert(path.to_string(), None);
            }
            "N" => {
                self.files.insert(rest.to_string(), None);
                self.not_regular.get_or_insert_with(|| rest.to_string());
            }
            hash if hash.len() == 64 => self.hash(line)?,
            "S" => self.stat(rest, q)?,
            "P" => self.package(rest)?,
            "VIP" => *self.vips_held.get_or_insert(0) += usize::from(rest == "yes"),
            "D" => match rest.split_once(' ') {
                Some(("drift", role)) => {
                    self.drifted.insert(role.to_string());
                }
                Some(("ok", _)) => {}
                _ => return None,
            },
            "T" => {
                self.stale_temps.insert(rest.to_string());
            }
            "B" => {
                self.unfinished.insert(rest.to_string());
            }
            "LOCK" => self.locked_by = Some(rest.to_string()),
            "KEY" => self.key(rest)?,
            "CERT" => self.cert(rest)?,
            "NODE" => self.node(rest, q)?,
            "R" => {
                let (i, rest) = rest.split_once(' ')?;
                let slot = self.releases.get_mut(i.parse::<usize>().ok()?)?;
                crate::release::read_fact_line(slot, rest)?;
            }
            "END" => self.ended = true,
            // The blank line between two units' `systemctl show` blocks.
            "" => self.unit = None,
            _ => return None,
        }
        Some(())
    }

    /// `HASH  PATH`, from sha256sum (64 hex digits, two spaces).
    fn hash(&mut self, line: &str) -> Option<()> {
        let (hash, path) = line.split_once("  ")?;
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.hashes.insert(path.to_string(), hash.to_string());
        Some(())
    }

    /// `S HEXMODE OWNER GROUP PATH`, from the script's one `stat -c '%f %U %G %n'`: the
    /// raw mode (type and permission bits) of a managed file, or of a directory, link or
    /// absent path ([`nodes`]). A path asked about as both is in `"$@"` twice: its
    /// second line is the same.
    fn stat(&mut self, rest: &str, q: &FactQuery) -> Option<()> {
        let f: Vec<&str> = rest.splitn(4, ' ').collect();
        let [hex, owner, group, path] = f[..] else {
            return None;
        };
        if hex.is_empty() || hex.len() > 4 {
            return None;
        }
        let raw = u32::from_str_radix(hex, 16).ok()?;
        let file = q.paths.contains(&path);
        if file {
            if raw & 0o170000 != 0o100000 {
                // Replaced by something else since the script's test.
                self.not_regular.get_or_insert_with(|| path.to_string());
            }
            self.metas.insert(
                path.to_string(),
                (raw & 0o7777, owner.to_string(), group.to_string()),
            );
        }
        if nodes::asked(q, path) {
            return self.stat_node(path, raw, (owner, group), (q, file));
        }
        file.then_some(())
    }

    /// The certificate fact for index `i` (as a string), when `i` was asked about.
    fn cert_slot(&mut self, i: &str) -> Option<&mut CertFact> {
        let i: usize = i.parse().ok()?;
        self.certs.get_mut(i)
    }

    /// `KEY I none` or `KEY I MODE OWNER GROUP BASE64-PUBLIC-PEM` (empty or `-`: unreadable).
    fn key(&mut self, rest: &str) -> Option<()> {
        let f: Vec<&str> = rest.split(' ').collect();
        let slot = self.cert_slot(f.first()?)?;
        match f[1..] {
            ["none"] => slot.key = None,
            [mode, owner, group, public] => {
                let public_pem = match public {
                    "" | "-" => None,
                    b64 => Some(decode_text(b64)?),
                };
                slot.key = Some(KeyFact {
                    mode: u32::from_str_radix(mode, 8).ok()?,
                    owner: owner.to_string(),
                    group: group.to_string(),
                    public_pem,
                });
            }
            _ => return None,
        }
        Some(())
    }

    /// `CERT I none`, `CERT I ` or `CERT I -` (empty) or `CERT I BASE64`.
    fn cert(&mut self, rest: &str) -> Option<()> {
        let (i, value) = rest.split_once(' ')?;
        let slot = self.cert_slot(i)?;
        slot.cert_pem = match value {
            "none" => None,
            "" | "-" => Some(String::new()),
            b64 => Some(decode_text(b64)?),
        };
        Some(())
    }

    /// `P NAME STATUS`, from dpkg-query.
    fn package(&mut self, rest: &str) -> Option<()> {
        let f: Vec<&str> = rest.split(' ').collect();
        if f.len() < 2 {
            return None;
        }
        // dpkg-query may print name:arch for multi-arch packages
        let name = f[0].split(':').next().unwrap_or(f[0]);
        self.packages.insert(name.to_string(), f[1] == "installed");
        Some(())
    }

    /// `KEY=VALUE`, from systemctl show: an `Id=` line starts a unit's block.
    fn unit(&mut self, key: &str, value: &str) -> Option<()> {
        if key == "Id" {
            let name = value.strip_suffix(".service").unwrap_or(value).to_string();
            self.services.insert(
                name.clone(),
                ServiceFact {
                    active: "unknown".into(),
                    enabled: "not-found".into(),
                },
            );
            self.unit = Some(name);
            return Some(());
        }
        let fact = self.unit.as_ref().and_then(|u| self.services.get_mut(u))?;
        let v = if value.is_empty() { "not-found" } else { value };
        if key == "ActiveState" {
            fact.active = v.to_string();
        } else {
            fact.enabled = v.to_string();
        }
        Some(())
    }

    /// The facts, once the output has ended: every path asked about is either missing
    /// or has both its hash and its metadata.
    fn finish(mut self, q: &FactQuery) -> Result<Facts, FactsError> {
        if !self.ended {
            return Err(FactsError::EndedEarly);
        }
        if let Some(path) = self.not_regular {
            return Err(FactsError::NotRegular(path));
        }
        for p in &q.paths {
            if self.files.contains_key(*p) {
                continue; // reported missing
            }
            match (self.hashes.remove(*p), self.metas.remove(*p)) {
                (Some(sha256), Some((mode, owner, group))) => {
                    self.files.insert(
                        p.to_string(),
                        Some(FileFact {
                            sha256,
                            mode,
                            owner,
                            group,
                        }),
                    );
                }
                _ => return Err(FactsError::MissingFile(p.to_string())),
            }
        }
        let nodes = self.nodes.finish(q).map_err(FactsError::MissingPath)?;
        Ok(Facts {
            nodes,
            init: self.init.ok_or(FactsError::MissingInit)?,
            files: self.files,
            packages: self.packages,
            services: self.services,
            vips_held: self.vips_held,
            unfinished: self.unfinished,
            drifted: self.drifted,
            // Another apply holds the lock: its temporary files are in flight.
            stale_temps: if self.locked_by.is_some() {
                BTreeSet::new()
            } else {
                self.stale_temps
            },
            locked_by: self.locked_by,
            certs: self.certs,
            releases: self.releases,
        })
    }
}

/// A second round trip, only when a plan has changed files to show: their current
/// content, base64-encoded, one per line (`C <base64|-> <path>`). Links are never
/// followed (`dd iflag=nofollow`): a path that is a link, a folder or anything but a
/// regular file is reported as `N <path>`, and refused by [`parse_contents`].
pub fn contents_script(paths: &[&str]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "for p in {}; do if [ -L \"$p\" ] || {{ [ -e \"$p\" ] && [ ! -f \"$p\" ]; }}; then echo \"N $p\"; \
         elif [ -f \"$p\" ]; then echo \"C $(dd if=\"$p\" iflag=nofollow,nonblock status=none | base64 -w0) $p\"; \
         else echo \"C - $p\"; fi; done; echo END\n",
        paths.join(" ")
    )
}

/// Parses [`contents_script`]'s output into path -> content (absent files are missing).
pub fn parse_contents(output: &str) -> Result<BTreeMap<String, Vec<u8>>, FactsError> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    let mut ended = false;
    for line in output.lines() {
        if line == "END" {
            ended = true;
            continue;
        }
        if let Some(path) = line.strip_prefix("N ") {
            return Err(FactsError::NotRegular(path.to_string()));
        }
        let unreadable = || FactsError::UnreadableContent(line.to_string());
        let rest = line.strip_prefix("C ").ok_or_else(unreadable)?;
        let (b64, path) = rest.split_once(' ').ok_or_else(unreadable)?;
        if b64 != "-" {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|reason| FactsError::BadBase64 {
                    path: path.to_string(),
                    reason,
                })?;
            out.insert(path.to_string(), data);
        }
    }
    if !ended {
        return Err(FactsError::ContentEndedEarly);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> FactQuery<'static> {
        FactQuery {
            releases: vec![],
            paths: vec!["/etc/nginx/nginx.conf", "/etc/foo bar"],
            packages: vec!["nginx", "haproxy"],
            services: vec!["nginx"],
            vips: vec!["172.30.77.10".into()],
            drift: vec![("firewall", "nft list table inet foobar")],
            certs: vec![],
            dirs: vec![],
            nodes: vec![],
        }
    }

    /// Recorded from a lab host (Debian 12, systemd) with nginx installed.
    const RECORDED: &str = "INIT systemd
F 0 /etc/foo bar
5b4c1fbf8d8f0c6bc4f8e1e5e7c4d0b6b2f8e2a1c9d3e4f5a6b7c8d9e0f1a2b3  /etc/nginx/nginx.conf
S 81a4 root root /etc/nginx/nginx.conf
B /etc/nginx/nginx.conf
T /etc/nginx/.nginx.conf.fp-Ab12Cd
D drift firewall
D ok nginx
P nginx installed
Id=nginx.service
ActiveState=active
UnitFileState=enabled

Id=haproxy.service
ActiveState=inactive
UnitFileState=
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
        assert_eq!(f.vips_held, Some(0));
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
                &RECORDED.replace("S 81a4 root root /etc/nginx/nginx.conf\n", ""),
                &q()
            )
            .is_err()
        );
        assert!(parse("INIT systemd\nH zz  /etc/x\nEND\n", &q()).is_err());
        assert!(parse("garbage\n", &q()).is_err());
    }

    #[test]
    fn error_messages_say_which_line_and_what() {
        let e = |out: &str| parse(out, &q()).expect_err("must fail").to_string();
        assert_eq!(
            e("INIT systemd\nwhat\nEND\n"),
            "facts output line 2: cannot read `what`"
        );
        assert_eq!(
            e("INIT systemd\n"),
            "facts output ended early (the connection dropped or the script failed)"
        );
        assert_eq!(
            e(&RECORDED.replace("F 0 /etc/foo bar\n", "")),
            "facts output lacks the file /etc/foo bar"
        );
        assert_eq!(
            e(&RECORDED.replace("INIT systemd\n", "")),
            "facts output lacks the INIT line"
        );
        let c = |out: &str| parse_contents(out).expect_err("must fail").to_string();
        assert_eq!(c("X y\nEND\n"), "cannot read `X y`");
        assert_eq!(c("C abc\nEND\n"), "cannot read `C abc`");
        assert!(c("C !! /etc/x\nEND\n").starts_with("bad base64 for /etc/x: "));
        assert_eq!(c("C - /etc/x\n"), "content output ended early");
    }

    #[test]
    fn script_quotes_paths_and_asks_everything() {
        let s = script(&q());
        assert!(
            s.contains("for p in /etc/nginx/nginx.conf '/etc/foo bar'; do"),
            "{s}"
        );
        assert!(
            s.contains("dpkg-query -W -f='P ${Package} ${db:Status-Status}\\n' -- nginx haproxy"),
            "{s}"
        );
        assert!(
            s.contains("if [ $# -gt 0 ]; then sha256sum -- \"$@\"; fi\nif [ $# -gt 0 ]; then stat -c 'S %f %U %G %n' -- \"$@\"; fi\n"),
            "{s}"
        );
        assert!(s.contains("a=$(ip -o -4 addr show 2>/dev/null)\ncase \"$a\" in *' 172.30.77.10/'*) echo 'VIP yes';; *) echo 'VIP no';; esac\n"), "{s}");
        assert!(s.contains("systemctl show -p Id -p ActiveState -p UnitFileState -- nginx.service 2>/dev/null; fi\n"), "{s}");
        assert!(s.contains("if (\nnft list table inet foobar\n) >/dev/null 2>&1; then echo 'D ok firewall'; else echo 'D drift firewall'; fi\n"), "{s}");
        assert!(s.ends_with("echo END\n"));
    }

    /// Issue 10, finding 13: `drift_check: "true # comment"` commented out the rest of the
    /// generated line (`) >/dev/null 2>&1; then ...`): the whole facts script failed.
    #[test]
    fn drift_check_with_a_comment_keeps_the_script_whole() {
        let query = FactQuery {
            drift: vec![("ok", "true # a comment"), ("bad", "false # another")],
            ..Default::default()
        };
        let facts = gather_locally(&query);
        assert_eq!(facts.drifted.iter().collect::<Vec<_>>(), vec!["bad"]);
    }

    /// Issue 10, finding 14: a file named `.nginx.conf.fp-\nT abc` (six characters after
    /// `fp-`, so the script's glob lists it) printed `T abc` on a line of its own, and facts
    /// reported a stale temporary file `abc` that apply then removed relative to the login
    /// user's home. Every reported temporary file and backup must be the exact pattern
    /// beside a path asked about.
    #[test]
    fn crafted_leftover_names_are_refused() {
        let crafted = RECORDED.replace(
            "T /etc/nginx/.nginx.conf.fp-Ab12Cd\n",
            "T /etc/nginx/.nginx.conf.fp-\nT abc\n",
        );
        let e = parse(&crafted, &q()).expect_err("must be refused");
        assert_eq!(
            e.to_string(),
            "facts output line 6: `T /etc/nginx/.nginx.conf.fp-` is not a temporary file or backup \
             beside a managed file (.NAME.fp-XXXXXX, .NAME.fp-prev): remove it from the host by hand"
        );
        for bad in [
            "T abc",
            "T /etc/.nginx.conf.fp-Ab12Cd",
            "T /etc/nginx/.nginx.conf.fp-Ab12C",
            "T /etc/nginx/.nginx.conf.fp-Ab 2Cd",
            "T /etc/nginx/.other.fp-Ab12Cd",
            "B /etc/shadow",
        ] {
            let out = RECORDED.replace("T /etc/nginx/.nginx.conf.fp-Ab12Cd", bad);
            assert!(parse(&out, &q()).is_err(), "{bad}");
        }
    }

    /// The same crafted name, made on a real filesystem and read by the real script.
    #[test]
    fn a_crafted_temp_name_on_disk_fails_the_facts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf").to_string_lossy().into_owned();
        std::fs::write(&path, "x").expect("w");
        std::fs::write(dir.path().join(".a.conf.fp-\nT abc"), "x").expect("w");
        let query = FactQuery {
            paths: vec![&path],
            ..Default::default()
        };
        let r = facts_locally(&query);
        assert!(
            matches!(r, Err(FactsError::UnexpectedLeftover { .. })),
            "{r:?}"
        );
    }

    /// Issue 10, finding 4, found in the facts' one round trip: a managed path that is a
    /// folder or a link fails the host, naming it (without a second round trip).
    #[test]
    fn a_managed_path_that_is_no_regular_file_fails_the_facts() {
        let out = RECORDED.replace("F 0 /etc/foo bar\n", "N /etc/foo bar\n");
        let e = parse(&out, &q()).expect_err("must be refused");
        assert_eq!(
            e.to_string(),
            "/etc/foo bar exists but is not a regular file (a folder, a link, ...): it is never \
             read or replaced; move it away on the host"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("ln");
        let missing = dir.path().join("missing.conf");
        for (p, refused) in [
            (&link, true),
            (&dir.path().to_path_buf(), true),
            (&missing, false),
        ] {
            let p = p.to_string_lossy().into_owned();
            let query = FactQuery {
                paths: vec![&p],
                ..Default::default()
            };
            let r = facts_locally(&query);
            assert_eq!(
                matches!(r, Err(FactsError::NotRegular(_))),
                refused,
                "{p}: {r:?}"
            );
        }
    }

    /// Issue 10, finding 4: the contents read for the diff followed links, so a user who
    /// can write the folder could link a root-only file there and have it printed in the
    /// plan. A managed path that is a link, a folder or anything but a regular file is
    /// now an error naming it, and its target is never read.
    #[test]
    fn contents_never_follow_links_and_refuse_non_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret").expect("w");
        let link = dir.path().join("index.html");
        std::os::unix::fs::symlink(&secret, &link).expect("ln");
        let folder = dir.path().join("conf.d");
        std::fs::create_dir(&folder).expect("mkdir");
        for p in [link, folder] {
            let p = p.to_string_lossy().into_owned();
            let out = std::process::Command::new("timeout")
                .args(["20", "sh", "-c", &contents_script(&[&p])])
                .output()
                .expect("sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let e = parse_contents(&stdout).expect_err("must be refused");
            assert_eq!(
                e.to_string(),
                format!(
                    "{p} exists but is not a regular file (a folder, a link, ...): it is never \
                     read or replaced; move it away on the host"
                )
            );
        }
    }

    /// Issue 10, finding 5: while another apply holds the host's lock, its in-flight
    /// temporary files are not stale: facts must not plan their removal.
    #[test]
    fn temp_files_of_an_apply_holding_the_lock_are_not_stale() {
        let out = format!("LOCK tester@ci pid 7 since 2026-12-01T10:00:00Z\n{RECORDED}");
        let f = parse(&out, &q()).expect("parses");
        assert!(f.stale_temps.is_empty(), "{:?}", f.stale_temps);
        assert_eq!(
            f.locked_by.as_deref(),
            Some("tester@ci pid 7 since 2026-12-01T10:00:00Z")
        );
    }

    /// Runs the facts script with a local shell (bounded) and parses its output.
    fn facts_locally(query: &FactQuery) -> Result<Facts, FactsError> {
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", &script(query)])
            .output()
            .expect("sh");
        parse(&String::from_utf8_lossy(&out.stdout), query)
    }

    /// [`facts_locally`], which must parse.
    fn gather_locally(query: &FactQuery) -> Facts {
        facts_locally(query).expect("parses")
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

    /// Issue 12 (fewer processes on the hosts): every tool the script runs is counted
    /// through shims on PATH; the batched ones run once for all paths, units, packages and
    /// VIPs, and nothing re-tags their output (no `sed`).
    #[test]
    fn script_runs_each_batched_tool_once_for_the_whole_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let (bin, log) = (p("bin"), p("calls.log"));
        std::fs::create_dir(&bin).expect("mkdir");
        let shim = |name: &str, body: &str| {
            let path = format!("{bin}/{name}");
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho {name} >> '{log}'\n{body}\n"),
            )
            .expect("shim");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        let real_path = std::env::var("PATH").unwrap_or_default();
        for tool in [
            "sha256sum",
            "stat",
            "head",
            "base64",
            "readlink",
            "sed",
            "grep",
            "cat",
        ] {
            shim(tool, &format!("PATH='{real_path}' exec {tool} \"$@\""));
        }
        shim(
            "systemctl",
            "printf 'Id=nginx.service\\nActiveState=active\\nUnitFileState=enabled\\n\\nId=haproxy.service\\nActiveState=inactive\\nUnitFileState=disabled\\n'",
        );
        shim(
            "dpkg-query",
            "echo 'P nginx installed'; echo 'P haproxy config-files'",
        );
        shim(
            "ip",
            "echo '2: eth0    inet 10.9.8.7/24 brd 10.9.8.255 scope global eth0'",
        );
        shim("openssl", "exit 1");
        for f in ["a.conf", "b.conf", "c.conf", "cert.pem", "key.pem"] {
            std::fs::write(p(f), f).expect("write");
        }
        std::fs::create_dir(p("www")).expect("mkdir");
        std::os::unix::fs::symlink("www", p("link")).expect("ln");
        let (a, b, c, missing, www, link, gone) = (
            p("a.conf"),
            p("b.conf"),
            p("c.conf"),
            p("missing.conf"),
            p("www"),
            p("link"),
            p("gone"),
        );
        let (cert, key) = (p("cert.pem"), p("key.pem"));
        let query = FactQuery {
            paths: vec![&a, &b, &c, &missing],
            packages: vec!["nginx", "haproxy"],
            services: vec!["nginx", "haproxy"],
            vips: vec!["10.9.8.7".into(), "10.9.8.70".into()],
            certs: vec![(&cert, &key)],
            dirs: vec![&www],
            nodes: vec![&link, &gone],
            ..Default::default()
        };
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", &script(&query)])
            .env("PATH", format!("{bin}:{real_path}"))
            .output()
            .expect("sh");
        let f = parse(&String::from_utf8_lossy(&out.stdout), &query).expect("parses");
        assert_eq!(
            f.files[&a].as_ref().map(|x| x.sha256.clone()),
            Some(crate::desired::sha256_hex(b"a.conf"))
        );
        assert_eq!(f.files[&missing], None);
        assert!(
            matches!(f.nodes[&www], NodeFact::Dir { .. }),
            "{:?}",
            f.nodes
        );
        assert_eq!(f.nodes[&link], NodeFact::Link(b"www".to_vec()));
        assert_eq!(f.nodes[&gone], NodeFact::Missing);
        assert_eq!(f.services["nginx"].active, "active");
        assert_eq!(f.services["haproxy"].enabled, "disabled");
        assert_eq!((f.packages["nginx"], f.packages["haproxy"]), (true, false));
        assert_eq!(f.vips_held, Some(1), "one of the two VIPs");
        let key_fact = f.certs[0].key.as_ref().expect("the key is there");
        assert_eq!(key_fact.public_pem, None, "openssl could not read it");
        assert_eq!(f.certs[0].cert_pem.as_deref(), Some("cert.pem"));
        let calls = std::fs::read_to_string(&log).expect("calls");
        let count = |tool: &str| calls.lines().filter(|l| *l == tool).count();
        for (tool, n) in [
            ("sha256sum", 1),
            // the files and the nodes together; the key's metadata
            ("stat", 2),
            ("systemctl", 1),
            ("dpkg-query", 1),
            ("ip", 1),
            ("sed", 0),
            ("grep", 0),
            ("cat", 0),
        ] {
            assert_eq!(count(tool), n, "{tool} in {calls}");
        }
        // and a readlink, openssl, head and base64 per link, key and certificate
        assert_eq!(calls.lines().count(), 12, "{calls}");
    }

    /// A path that is a managed file and a node of another role is in the one `stat`
    /// twice: both lines say the same, neither is refused.
    #[test]
    fn a_path_both_file_and_node_is_stat_ed_twice_and_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf").to_string_lossy().into_owned();
        std::fs::write(&path, "x").expect("write");
        let query = FactQuery {
            paths: vec![&path],
            nodes: vec![&path],
            ..Default::default()
        };
        let f = gather_locally(&query);
        assert!(f.files[&path].is_some());
        assert_eq!(f.nodes[&path], NodeFact::File);
    }

    const HASH: &str = "5b4c1fbf8d8f0c6bc4f8e1e5e7c4d0b6b2f8e2a1c9d3e4f5a6b7c8d9e0f1a2b3";

    /// Parses `lines` (INIT and END added) for a query of one path `/x`, packages `a` and
    /// `b`, and service `s`.
    fn parse_lines(lines: &str) -> Result<Facts, FactsError> {
        let q = FactQuery {
            paths: vec!["/x"],
            packages: vec!["a", "b"],
            services: vec!["s"],
            ..Default::default()
        };
        parse(&format!("INIT systemd\n{lines}END\n"), &q)
    }

    fn file_lines(hash: &str, meta: &str) -> String {
        format!("{hash}  /x\nS {meta} /x\n")
    }

    #[test]
    fn init_line_names_systemd_or_other() {
        let q = FactQuery::default();
        for (line, init) in [
            ("INIT systemd", Init::Systemd),
            ("INIT other", Init::Other),
            ("INIT", Init::Other),
        ] {
            let f = parse(&format!("{line}\nEND\n"), &q).expect("parses");
            assert_eq!(f.init, init, "{line}");
        }
    }

    #[test]
    fn hash_lines_need_64_hex_digits_and_two_spaces() {
        let upper = HASH.to_uppercase();
        let rows = [
            (HASH.to_string(), true),
            (upper, true),
            (HASH[..63].to_string(), false),
            (format!("{HASH}0"), false),
            (HASH.replacen('5', "g", 1), false),
        ];
        for (hash, ok) in rows {
            let r = parse_lines(&file_lines(&hash, "81a4 root root"));
            assert_eq!(r.is_ok(), ok, "{hash}");
            if let Ok(f) = r {
                assert_eq!(
                    f.files["/x"].as_ref().map(|x| x.sha256.as_str()),
                    Some(hash.as_str())
                );
            }
        }
        assert!(parse_lines(&format!("{HASH} /x\nS 81a4 root root /x\n")).is_err());
        assert!(parse_lines(&format!("H {HASH}  /x\nS 81a4 root root /x\n")).is_err());
    }

    #[test]
    fn stat_lines_are_raw_hex_mode_owner_group_path() {
        let f = parse_lines(&file_lines(HASH, "89e8 www adm")).expect("parses");
        let x = f.files["/x"].clone().expect("exists");
        assert_eq!(
            (x.mode, x.owner.as_str(), x.group.as_str()),
            (0o4750, "www", "adm")
        );
        // A path with spaces stays whole.
        let q = FactQuery {
            paths: vec!["/a b"],
            ..Default::default()
        };
        let f = parse(
            &format!("INIT other\n{HASH}  /a b\nS 8180 root root /a b\nEND\n"),
            &q,
        )
        .expect("parses");
        assert_eq!(f.files["/a b"].as_ref().map(|x| x.mode), Some(0o600));
        for bad in [
            "81a4 root root",
            "81g4 root root /x",
            "root root root /x",
            "1081a4 root root /x",
            "81a4 root root /y",
        ] {
            assert!(
                parse_lines(&format!("{HASH}  /x\nS {bad}\n")).is_err(),
                "{bad}"
            );
        }
        // A managed file that became a folder between the script's test and its stat.
        assert_eq!(
            parse_lines(&file_lines(HASH, "41ed root root")).map(|_| ()),
            Err(FactsError::NotRegular("/x".into()))
        );
    }

    #[test]
    fn packages_are_installed_only_when_dpkg_says_installed() {
        let rows = [
            ("P a installed\n", true, false),
            ("P a:amd64 installed\n", true, false),
            ("P a config-files\nP b installed\n", false, true),
            ("P a not-installed\n", false, false),
            ("", false, false),
        ];
        for (lines, a, b) in rows {
            let f = parse_lines(&format!("F 0 /x\n{lines}")).expect("parses");
            assert_eq!((f.packages["a"], f.packages["b"]), (a, b), "{lines}");
        }
        assert!(parse_lines("F 0 /x\nP a\n").is_err());
    }

    #[test]
    fn units_are_read_block_by_block() {
        let f = parse_lines(
            "F 0 /x\nId=s.service\nActiveState=failed\nUnitFileState=disabled\n\nId=t.socket\nActiveState=\n",
        )
        .expect("parses");
        assert_eq!(f.services["s"].active, "failed");
        assert_eq!(f.services["s"].enabled, "disabled");
        assert_eq!(f.services["t.socket"].active, "not-found");
        assert_eq!(f.services["t.socket"].enabled, "not-found");
        // A state before any Id= line belongs to no unit.
        assert!(parse_lines("F 0 /x\nActiveState=active\n").is_err());
        // ... and after a blank line, to none either; nor does a key not asked for.
        assert!(parse_lines("F 0 /x\nId=s.service\n\nActiveState=active\n").is_err());
        assert!(parse_lines("F 0 /x\nId=s.service\nOther=x\n").is_err());
        assert!(parse_lines("F 0 /x\nU Id=s.service\n").is_err());
    }

    #[test]
    fn script_asks_about_each_vip() {
        let mut q = q();
        q.vips = vec!["172.30.77.10".into(), "172.30.77.9".into()];
        let s = script(&q);
        assert_eq!(s.matches("ip -o -4 addr show").count(), 1, "{s}");
        assert!(
            s.contains("case \"$a\" in *' 172.30.77.10/'*) echo 'VIP yes'"),
            "{s}"
        );
        assert!(
            s.contains("case \"$a\" in *' 172.30.77.9/'*) echo 'VIP yes'"),
            "{s}"
        );
        q.vips.clear();
        assert!(!script(&q).contains("VIP"), "no VIP asked about");
    }

    #[test]
    fn vip_drift_and_blank_lines() {
        let f = parse_lines("F 0 /x\nVIP yes\nD ok web\nD drift fw\n\n").expect("parses");
        assert_eq!(f.vips_held, Some(1));
        assert_eq!(f.drifted.iter().collect::<Vec<_>>(), vec!["fw"]);
        let f = parse_lines("F 0 /x\n").expect("parses");
        assert_eq!(f.vips_held, None);
        // Active-active: one line per VIP, counted.
        let f = parse_lines("F 0 /x\nVIP yes\nVIP no\n").expect("parses");
        assert_eq!(f.vips_held, Some(1));
        let f = parse_lines("F 0 /x\nVIP yes\nVIP yes\n").expect("parses");
        assert_eq!(f.vips_held, Some(2));
        for bad in ["D maybe fw\n", "D\n", "F 1 /x\n"] {
            assert!(parse_lines(&format!("F 0 /x\n{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_asks_only_what_the_query_needs() {
        let s = script(&FactQuery::default());
        assert_eq!(
            s,
            "if [ -d /run/systemd/system ]; then echo 'INIT systemd'; else echo 'INIT other'; fi\necho END\n"
        );
        let s = script(&FactQuery {
            services: vec!["nginx", "foo.socket"],
            ..Default::default()
        });
        assert!(s.contains("-- nginx.service foo.socket 2>/dev/null"), "{s}");
        assert!(!s.contains("dpkg-query") && !s.contains("sha256sum") && !s.contains("VIP"));
    }

    #[test]
    fn contents_skip_missing_files_and_decode_the_others() {
        let c = parse_contents("C aGk= /a\nC - /b\nEND\n").expect("parses");
        assert_eq!(c.get("/a").map(Vec::as_slice), Some(&b"hi"[..]));
        assert!(!c.contains_key("/b"));
        assert_eq!(
            contents_script(&["/a b"]),
            "for p in '/a b'; do if [ -L \"$p\" ] || { [ -e \"$p\" ] && [ ! -f \"$p\" ]; }; then echo \"N $p\"; elif [ -f \"$p\" ]; then echo \"C $(dd if=\"$p\" iflag=nofollow,nonblock status=none | base64 -w0) $p\"; else echo \"C - $p\"; fi; done; echo END\n"
        );
    }

    // ---- certificates ---------------------------------------------------------------

    fn cert_query() -> FactQuery<'static> {
        FactQuery {
            certs: vec![
                ("/etc/nginx/internal/web.crt", "/etc/nginx/internal/web.key"),
                ("/etc/it's/a.crt", "/etc/it's/a.key"),
            ],
            ..FactQuery::default()
        }
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn certificates_and_keys_are_read_by_index_and_only_public_halves_cross() {
        let q = cert_query();
        let script = script(&q);
        assert!(script.contains("k='/etc/it'\\''s/a.key'"), "{script}");
        assert!(
            script.contains("openssl pkey -in \"$k\" -pubout"),
            "{script}"
        );
        assert!(
            !script.contains("cat \"$k\""),
            "the key itself is never read out"
        );
        let out = format!(
            "INIT systemd\nKEY 0 600 root root {}\nCERT 0 {}\nKEY 1 none\nCERT 1 none\nEND\n",
            b64("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            b64("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"),
        );
        let f = parse(&out, &q).expect("parses");
        let k = f.certs[0].key.as_ref().expect("key");
        assert_eq!(
            (k.mode, k.owner.as_str(), k.group.as_str()),
            (0o600, "root", "root")
        );
        assert!(k.public_pem.as_deref().is_some_and(|p| p.contains("AAAA")));
        assert!(
            f.certs[0]
                .cert_pem
                .as_deref()
                .is_some_and(|p| p.contains("BBBB"))
        );
        assert_eq!(f.certs[1], CertFact::default());

        // openssl not installed yet: the key is there, its public half unknown.
        let out = "INIT systemd\nKEY 0 640 root ssl-cert -\nCERT 0 -\nEND\n";
        let f = parse(out, &q).expect("parses");
        assert_eq!(
            f.certs[0].key.as_ref().map(|k| k.public_pem.clone()),
            Some(None)
        );
        assert_eq!(f.certs[0].cert_pem.as_deref(), Some(""));
        // Not asked about, or no lines at all: missing.
        assert_eq!(
            parse("INIT systemd\nEND\n", &q)
                .expect("parses")
                .certs
                .len(),
            2
        );
    }

    #[test]
    fn certificate_lines_that_are_not_what_the_script_prints_are_refused() {
        let q = cert_query();
        for bad in [
            "KEY 2 none",
            "KEY x none",
            "CERT 7 none",
            "KEY 0 600 root",
            "KEY 0 9z9 root root -",
            "CERT 0 %%%not-base64%%%",
            "KEY 0 600 root root @@@",
        ] {
            let out = format!("INIT systemd\n{bad}\nEND\n");
            assert!(
                matches!(parse(&out, &q), Err(FactsError::Unreadable { .. })),
                "{bad}"
            );
        }
        let huge = format!(
            "INIT systemd\nCERT 0 {}\nEND\n",
            "A".repeat(MAX_CERT_BYTES * 2)
        );
        assert!(
            parse(&huge, &q).is_err(),
            "an oversized certificate is refused"
        );
    }
}
