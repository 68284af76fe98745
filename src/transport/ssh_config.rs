//! The OpenSSH client configuration (`~/.ssh/config`, or the inventory's `ssh.config`):
//! the part of it foobar-provision honours, read the way ssh(1) reads it.
//!
//! Honoured: `Host` (aliases, `*` and `?` patterns, `!negation`, several per line),
//! `Match all|host|originalhost`, `Include` (paths and `*`/`?` patterns in the file name,
//! relative to `~/.ssh`), `HostName` (with `%h`), `User`, `Port`, `IdentityFile` (several,
//! tried in order; `~`, `%d`, `%u`, `%h`, `%r`), `ProxyJump` (chains `a,b`,
//! `user@host:port`, `ssh://` forms, `none`), `IdentitiesOnly`, `UserKnownHostsFile` (the
//! first file), `ConnectTimeout`. As in OpenSSH the first value obtained for a host wins
//! (`IdentityFile`s add up). `ProxyCommand` is refused with the line that sets it; other
//! keywords are ignored.
//!
//! Pure: [`SshConfig::parse`] reads files through a closure, so tests run on recorded
//! configs; [`SshConfig::lookup`] answers for one host.

use crate::diag::Diagnostic;
pub use crate::pattern::glob_matches;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How deep `Include`s may nest (OpenSSH's limit too).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Jump hosts in one chain, their own `ProxyJump`s included.
pub const MAX_JUMPS: usize = 8;

/// Where a value was written: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: Arc<Path>,
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

impl Place {
    fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.file, self.line, 1, message)
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub at: Place,
}

/// One hop of a `ProxyJump` as written: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// What the configuration says about one host. `None`: it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`, `%h` expanded.
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every `IdentityFile`, in order, as written (tokens expanded by [`expand_path`]).
    pub identity_files: Vec<Sourced<String>>,
    /// `ProxyJump`: the hops in order; empty for `none`.
    pub proxy_jump: Option<Sourced<Vec<JumpSpec>>>,
    pub identities_only: Option<bool>,
    /// The first file of `UserKnownHostsFile`, as written.
    pub user_known_hosts_file: Option<Sourced<String>>,
    pub connect_timeout: Option<Duration>,
}

/// A `Host` or `Match` condition.
#[derive(Debug, Clone)]
enum Condition {
    /// `Host PATTERN...`: one pattern matches the host and no `!pattern` does.
    Host(Vec<Pattern>),
    /// `Match all`.
    All,
    /// `Match host LIST` (against the `HostName` obtained so far, else the name) or
    /// `Match originalhost LIST` (against the name); `negated` for `!host`.
    MatchHost {
        original: bool,
        negated: bool,
        list: Vec<Pattern>,
    },
}

#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    /// Lowercase: host names compare without case.
    glob: String,
}

/// One line that matters, in reading order, `Include`d files spliced in.
#[derive(Debug, Clone)]
enum Item {
    /// `Host` or `Match`: the lines after it apply when it matches.
    Condition(Vec<Condition>),
    /// Start of an included file: the current condition is kept and put back at its end.
    Enter,
    Leave,
    Set(Setting, Place),
}

#[derive(Debug, Clone)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    ProxyJump(Vec<JumpSpec>),
    ProxyCommand,
    IdentitiesOnly(bool),
    UserKnownHostsFile(String),
    ConnectTimeout(Duration),
}

impl Setting {
    fn key(&self) -> &'static str {
        match self {
            Setting::HostName(_) => "hostname",
            Setting::User(_) => "user",
            Setting::Port(_) => "port",
            Setting::IdentityFile(_) => "identityfile",
            // One of the two: the first obtained wins, as in OpenSSH.
            Setting::ProxyJump(_) | Setting::ProxyCommand => "proxy",
            Setting::IdentitiesOnly(_) => "identitiesonly",
            Setting::UserKnownHostsFile(_) => "userknownhostsfile",
            Setting::ConnectTimeout(_) => "connecttimeout",
        }
    }
}

/// A parsed configuration: every line that matters, in reading order.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
}

/// How files are read: the text of a file (`NotFound` for a missing one), and the
/// entries of a folder (for `Include` patterns).
pub trait Files {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>>;
}

/// The real file system.
pub struct RealFiles;

/// Largest configuration file read (bytes).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

impl Files for RealFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "{} bytes, more than the {MAX_FILE_BYTES} read",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path)?;
        String::from_utf8(bytes).map_err(|e| std::io::Error::other(format!("not UTF-8: {e}")))
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }
}

impl SshConfig {
    /// Reads `path` and what it includes. `home` is the folder `~` stands for (relative
    /// `Include`s are under `home/.ssh`, as for ssh's user configuration).
    ///
    /// # Errors
    /// A file that cannot be read (`path` itself must exist), a bad value, an
    /// unsupported `Match`, an `Include` loop or nesting too deep: file:line and a hint.
    pub fn parse(path: &Path, home: &Path, files: &dyn Files) -> Result<SshConfig, Diagnostic> {
        let text = files.read(path).map_err(|e| {
            Diagnostic::new(path, 0, 0, format!("cannot read the SSH configuration: {e}"))
                .with_hint("fix the path in the inventory's `ssh.config`, or set `ssh.config: false` to ignore it")
        })?;
        let mut reader = Reader {
            home,
            files,
            items: Vec::new(),
            open: Vec::new(),
        };
        reader.file(path, &text)?;
        Ok(SshConfig {
            items: reader.items,
        })
    }

    /// What the configuration says for `host` (the name as `ssh HOST` would get it).
    pub fn lookup(&self, host: &str) -> HostConfig {
        let host_lc = host.to_ascii_lowercase();
        let mut out = HostConfig::default();
        let mut seen: Vec<&'static str> = Vec::new();
        let mut active = true;
        // (active before the include, the never-match depth before it)
        let mut stack: Vec<bool> = Vec::new();
        let mut never = 0usize;
        for item in &self.items {
            match item {
                Item::Condition(conditions) => {
                    active = never == 0
                        && conditions.iter().all(|c| {
                            let current = out
                                .host_name
                                .as_deref()
                                .map_or_else(|| host_lc.clone(), str::to_ascii_lowercase);
                            c.matches(&host_lc, &current)
                        });
                }
                Item::Enter => {
                    stack.push(active);
                    if !active {
                        never += 1;
                    }
                }
                Item::Leave => {
                    let was = stack.pop().unwrap_or(true);
                    if !was {
                        never = never.saturating_sub(1);
                    }
                    active = was;
                }
                Item::Set(setting, at) => {
                    if !active {
                        continue;
                    }
                    let key = setting.key();
                    if key != "identityfile" {
                        if seen.contains(&key) {
                            continue;
                        }
                        seen.push(key);
                    }
                    out.take(setting, at, host);
                }
            }
        }
        out
    }

    /// Whether any `ProxyCommand` applies to `host`: refused (use `ProxyJump`).
    pub fn proxy_command(&self, host: &str) -> Option<Place> {
        let host_lc = host.to_ascii_lowercase();
        let mut active = true;
        let mut found = None;
        let mut stack: Vec<bool> = Vec::new();
        let mut never = 0usize;
        for item in &self.items {
            match item {
                Item::Condition(cs) => {
                    active = never == 0 && cs.iter().all(|c| c.matches(&host_lc, &host_lc));
                }
                Item::Enter => {
                    stack.push(active);
                    if !active {
                        never += 1;
                    }
                }
                Item::Leave => {
                    let was = stack.pop().unwrap_or(true);
                    if !was {
                        never = never.saturating_sub(1);
                    }
                    active = was;
                }
                Item::Set(Setting::ProxyJump(_), _) if active => return None,
                Item::Set(Setting::ProxyCommand, at) if active => {
                    found = Some(at.clone());
                    break;
                }
                Item::Set(..) => {}
            }
        }
        found
    }
}

impl HostConfig {
    fn take(&mut self, setting: &Setting, at: &Place, host: &str) {
        let sourced = |value: String| Sourced {
            value,
            at: at.clone(),
        };
        match setting {
            Setting::HostName(h) => self.host_name = Some(expand_host_name(h, host)),
            Setting::User(u) => self.user = Some(u.clone()),
            Setting::Port(p) => self.port = Some(*p),
            Setting::IdentityFile(f) => self.identity_files.push(sourced(f.clone())),
            Setting::ProxyJump(j) => {
                self.proxy_jump = Some(Sourced {
                    value: j.clone(),
                    at: at.clone(),
                });
            }
            // Refused where it is used (see `SshConfig::proxy_command`).
            Setting::ProxyCommand => {}
            Setting::IdentitiesOnly(b) => self.identities_only = Some(*b),
            Setting::UserKnownHostsFile(f) => self.user_known_hosts_file = Some(sourced(f.clone())),
            Setting::ConnectTimeout(t) => self.connect_timeout = Some(*t),
        }
    }
}

impl Condition {
    fn matches(&self, original: &str, current: &str) -> bool {
        match self {
            Condition::All => true,
            Condition::Host(patterns) => host_matches(patterns, original),
            Condition::MatchHost {
                original: use_original,
                negated,
                list,
            } => {
                let name = if *use_original { original } else { current };
                host_matches(list, name) != *negated
            }
        }
    }
}

/// One pattern matches and no negated one does (OpenSSH's `Host` rule).
fn host_matches(patterns: &[Pattern], name: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if glob_matches(&p.glob, name) {
            if p.negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `%h` (the host as given) and `%%` in a `HostName`.
fn expand_host_name(value: &str, host: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// What `%` tokens and `~` in a path stand for.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    /// `~` and `%d`.
    pub home: &'a Path,
    /// `%u`.
    pub local_user: &'a str,
    /// `%h`: the host's name as configured (its `HostName`, else the name given).
    pub host: &'a str,
    /// `%r`.
    pub remote_user: &'a str,
}

/// A path with `~/`, `%d`, `%u`, `%h`, `%r` and `%%` expanded.
///
/// # Errors
/// Another `%` token (say which are known).
pub fn expand_path(raw: &str, t: &Tokens) -> Result<PathBuf, String> {
    let home = t.home.to_string_lossy();
    let mut out = String::new();
    let rest = if raw == "~" {
        out.push_str(&home);
        ""
    } else if let Some(rest) = raw.strip_prefix("~/") {
        out.push_str(&home);
        out.push('/');
        rest
    } else {
        raw
    };
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&home),
            Some('u') => out.push_str(t.local_user),
            Some('h') => out.push_str(t.host),
            Some('r') => out.push_str(t.remote_user),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "`%{other}` in `{raw}` is not a token foobar-provision knows (it knows %d, %u, %h, %r and %%)"
                ));
            }
            None => return Err(format!("`{raw}` ends with a lone `%`")),
        }
    }
    Ok(PathBuf::from(out))
}

/// Parses one `ProxyJump` hop: `[user@]host[:port]`, `[user@][v6]:port`, or
/// `ssh://[user@]host[:port]`.
///
/// # Errors
/// An empty host, a bad port.
pub fn parse_jump(hop: &str) -> Result<JumpSpec, String> {
    let text = hop.strip_prefix("ssh://").unwrap_or(hop);
    let text = text.strip_suffix('/').unwrap_or(text);
    let (user, rest) = match text.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("`{hop}`: empty user before `@`")),
        None => (None, text),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((h, after)) = inner.split_once(']') else {
            return Err(format!("`{hop}`: `[` without `]`"));
        };
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("`{hop}`: unexpected `{after}` after `]`")),
        }
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
        (h, Some(p))
    } else {
        (rest, None)
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{hop}`: no host name"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{hop}`: port `{p}` is not from 1 to 65535"))?,
        ),
    };
    Ok(JumpSpec {
        user,
        host: host.to_string(),
        port,
    })
}

struct Reader<'a> {
    home: &'a Path,
    files: &'a dyn Files,
    items: Vec<Item>,
    /// The files being read, outermost first (loops, depth).
    open: Vec<PathBuf>,
}

impl Reader<'_> {
    fn file(&mut self, path: &Path, text: &str) -> Result<(), Diagnostic> {
        if self.open.iter().any(|p| p == path) {
            return Err(Diagnostic::new(
                path,
                0,
                0,
                "SSH configuration: Include loop (this file includes itself)",
            ));
        }
        if self.open.len() >= MAX_INCLUDE_DEPTH {
            return Err(Diagnostic::new(
                path,
                0,
                0,
                format!("SSH configuration: Includes nest deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        self.open.push(path.to_path_buf());
        let file: Arc<Path> = Arc::from(path);
        for (i, line) in text.lines().enumerate() {
            let at = Place {
                file: Arc::clone(&file),
                line: i as u64 + 1,
            };
            self.line(line, &at)?;
        }
        self.open.pop();
        Ok(())
    }

    fn line(&mut self, line: &str, at: &Place) -> Result<(), Diagnostic> {
        let Some((keyword, args)) = split_line(line).map_err(|e| at.error(e))? else {
            return Ok(());
        };
        let one = |what: &str| -> Result<String, Diagnostic> {
            match args.as_slice() {
                [v] => Ok(v.clone()),
                [] => Err(at.error(format!("`{what}` needs a value"))),
                _ => Err(at.error(format!("`{what}` takes one value, not {}", args.len()))),
            }
        };
        let setting = match keyword.to_ascii_lowercase().as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(at.error("`Host` needs at least one pattern"));
                }
                let patterns = args.iter().map(|a| pattern(a)).collect();
                self.items
                    .push(Item::Condition(vec![Condition::Host(patterns)]));
                return Ok(());
            }
            "match" => {
                let c = match_conditions(&args).map_err(|e| {
                    at.error(format!("SSH configuration: {e}")).with_hint(
                        "foobar-provision reads `Match all`, `Match host` and `Match originalhost`; \
                         write the settings under a `Host` line, or set `ssh.config: false` in the \
                         inventory and put them there",
                    )
                })?;
                self.items.push(Item::Condition(c));
                return Ok(());
            }
            "include" => {
                if args.is_empty() {
                    return Err(at.error("`Include` needs a path"));
                }
                for a in &args {
                    self.include(a, at)?;
                }
                return Ok(());
            }
            "hostname" => Setting::HostName(one("HostName")?),
            "user" => Setting::User(one("User")?),
            "port" => {
                let v = one("Port")?;
                Setting::Port(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| at.error(format!("Port `{v}` is not from 1 to 65535")))?,
                )
            }
            "identityfile" => Setting::IdentityFile(one("IdentityFile")?),
            "proxyjump" => {
                let v = one("ProxyJump")?;
                if v.eq_ignore_ascii_case("none") {
                    Setting::ProxyJump(Vec::new())
                } else {
                    let hops = v
                        .split(',')
                        .map(parse_jump)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| at.error(format!("ProxyJump {e}")))?;
                    Setting::ProxyJump(hops)
                }
            }
            "proxycommand" => {
                let joined = args.join(" ");
                if joined.eq_ignore_ascii_case("none") {
                    return Ok(());
                }
                Setting::ProxyCommand
            }
            "identitiesonly" => Setting::IdentitiesOnly(yes_no(&one("IdentitiesOnly")?, at)?),
            "userknownhostsfile" => match args.first() {
                Some(f) => Setting::UserKnownHostsFile(f.clone()),
                None => return Err(at.error("`UserKnownHostsFile` needs a path")),
            },
            "connecttimeout" => {
                let v = one("ConnectTimeout")?;
                let secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=600).contains(s))
                    .ok_or_else(|| {
                        at.error(format!(
                            "ConnectTimeout `{v}` is not a number of seconds from 1 to 600"
                        ))
                    })?;
                Setting::ConnectTimeout(Duration::from_secs(secs))
            }
            _ => return Ok(()),
        };
        self.items.push(Item::Set(setting, at.clone()));
        Ok(())
    }

    /// `Include PATH`: `~` expanded, relative to `~/.ssh`; `*` and `?` in the file name
    /// (not in folders); a missing file is skipped, as ssh does.
    fn include(&mut self, arg: &str, at: &Place) -> Result<(), Diagnostic> {
        let home = self.home.to_path_buf();
        let path = if arg == "~" {
            home.clone()
        } else if let Some(rest) = arg.strip_prefix("~/") {
            home.join(rest)
        } else if Path::new(arg).is_absolute() {
            PathBuf::from(arg)
        } else {
            home.join(".ssh").join(arg)
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.to_string_lossy().contains(['*', '?', '[']) {
            return Err(at
                .error(format!(
                    "Include `{arg}`: patterns in folder names are not supported"
                ))
                .with_hint("use a pattern in the file name only (e.g. `Include config.d/*`)"));
        }
        let paths: Vec<PathBuf> = if name.contains(['*', '?']) {
            match self.files.list(&dir) {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            !n.starts_with('.') && glob_matches(&name, &n)
                        })
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(at.error(format!(
                        "Include `{arg}`: cannot list {}: {e}",
                        dir.display()
                    )));
                }
            }
        } else {
            vec![path]
        };
        for p in paths {
            let text = match self.files.read(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(
                        at.error(format!("Include `{arg}`: cannot read {}: {e}", p.display()))
                    );
                }
            };
            self.items.push(Item::Enter);
            self.file(&p, &text)?;
            self.items.push(Item::Leave);
        }
        Ok(())
    }
}

fn pattern(a: &str) -> Pattern {
    let (negated, glob) = match a.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, a),
    };
    Pattern {
        negated,
        glob: glob.to_ascii_lowercase(),
    }
}

/// `Match` criteria: `all` alone, or `host`/`originalhost` (each optionally `!`) with a
/// comma-separated list.
fn match_conditions(args: &[String]) -> Result<Vec<Condition>, String> {
    if args.is_empty() {
        return Err("`Match` needs criteria".into());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let raw = &args[i];
        let (negated, word) = match raw.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, raw.as_str()),
        };
        match word.to_ascii_lowercase().as_str() {
            "all" if !negated => {
                out.push(Condition::All);
                i += 1;
            }
            w @ ("host" | "originalhost") => {
                let Some(list) = args.get(i + 1) else {
                    return Err(format!("`Match {word}` needs a list of patterns"));
                };
                out.push(Condition::MatchHost {
                    original: w == "originalhost",
                    negated,
                    list: list.split(',').map(pattern).collect(),
                });
                i += 2;
            }
            _ => return Err(format!("`Match {raw}` is not supported")),
        }
    }
    Ok(out)
}

fn yes_no(v: &str, at: &Place) -> Result<bool, Diagnostic> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(at.error(format!("`{v}` is not yes or no"))),
    }
}

/// A line as keyword and arguments (`Keyword value`, `Keyword=value`, `"quoted args"`);
/// `None` for a blank or comment line.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_string();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                arg.push(c);
            }
            if !closed {
                return Err(format!("`{keyword}`: a quote is not closed"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    Ok(Some((keyword, args)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files in memory.
    struct Mem(BTreeMap<PathBuf, String>);

    impl Files for Mem {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
            Ok(self
                .0
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .cloned()
                .collect())
        }
    }

    fn parse(files: &[(&str, &str)]) -> Result<SshConfig, Diagnostic> {
        let mem = Mem(files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect());
        SshConfig::parse(Path::new(files[0].0), Path::new("/home/op"), &mem)
    }

    fn config(text: &str) -> SshConfig {
        parse(&[("/home/op/.ssh/config", text)]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A configuration of the kind operators keep, recorded from a workstation.
    const RECORDED: &str = "\
# Work
Host bastion bastion.corp
    HostName 203.0.113.7
    User jump
    Port 2222
    IdentityFile ~/.ssh/id_jump

Host web? !web9 db*
    User deploy
    ProxyJump bastion
    IdentityFile ~/.ssh/id_%h
    IdentityFile=\"~/.ssh/id with space\"

Host web1
    HostName 10.0.0.11
    User ignored-because-the-first-wins
    Port 2201

Host *.corp
    HostName %h.example.net

Host *
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts_work ~/.ssh/known_hosts2
    ConnectTimeout 7
    ServerAliveInterval 30
";

    #[test]
    fn first_value_wins_and_identity_files_add_up() {
        let c = config(RECORDED).lookup("web1");
        assert_eq!(c.user.as_deref(), Some("deploy"));
        assert_eq!(c.host_name.as_deref(), Some("10.0.0.11"));
        assert_eq!(c.port, Some(2201));
        let files: Vec<&str> = c.identity_files.iter().map(|f| f.value.as_str()).collect();
        assert_eq!(files, ["~/.ssh/id_%h", "~/.ssh/id with space"]);
        assert_eq!(
            c.identity_files[0].at.to_string(),
            "/home/op/.ssh/config:11"
        );
        let jump = c.proxy_jump.as_ref().map(|j| j.value.clone());
        assert_eq!(
            jump,
            Some(vec![JumpSpec {
                user: None,
                host: "bastion".into(),
                port: None
            }])
        );
        assert_eq!(c.identities_only, Some(true));
        assert_eq!(
            c.user_known_hosts_file.map(|f| f.value).as_deref(),
            Some("~/.ssh/known_hosts_work")
        );
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn patterns_negations_and_aliases() {
        let cfg = config(RECORDED);
        // `web?` matches web2 but not web10; `!web9` excludes web9 from the whole line.
        assert_eq!(cfg.lookup("web2").user.as_deref(), Some("deploy"));
        assert_eq!(cfg.lookup("web10").user, None);
        assert_eq!(cfg.lookup("web9").user, None);
        assert_eq!(cfg.lookup("dbmain").user.as_deref(), Some("deploy"));
        // Names compare without case.
        assert_eq!(cfg.lookup("WEB2").user.as_deref(), Some("deploy"));
        // An alias on the same line as another name.
        let b = cfg.lookup("bastion.corp");
        assert_eq!(b.host_name.as_deref(), Some("203.0.113.7"));
        assert_eq!((b.user.as_deref(), b.port), (Some("jump"), Some(2222)));
        // %h in HostName is the name given.
        let other = cfg.lookup("mail.corp");
        assert_eq!(other.host_name.as_deref(), Some("mail.corp.example.net"));
        // `Host *` applies to every name; nothing else does for an unknown one.
        let any = cfg.lookup("10.9.9.9");
        assert_eq!(any.identities_only, Some(true));
        assert_eq!((any.user, any.host_name, any.port), (None, None, None));
    }

    #[test]
    fn options_before_any_host_line_apply_to_every_host() {
        let c = config("User early\nHost x\n  User late\n");
        assert_eq!(c.lookup("x").user.as_deref(), Some("early"));
        assert_eq!(c.lookup("y").user.as_deref(), Some("early"));
    }

    #[test]
    fn match_all_host_and_originalhost() {
        let cfg = config(
            "Host alias\n  HostName real.example\nMatch host real.example\n  User via-match-host\n\
             Match originalhost alias\n  Port 2022\nMatch !host *.example\n  IdentityFile k\nMatch all\n  ConnectTimeout 3\n",
        );
        let c = cfg.lookup("alias");
        assert_eq!(c.user.as_deref(), Some("via-match-host"));
        assert_eq!(c.port, Some(2022));
        assert!(c.identity_files.is_empty());
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
        let other = cfg.lookup("other");
        assert_eq!(other.identity_files.len(), 1);
        assert_eq!(other.user, None);
    }

    #[test]
    fn unsupported_match_and_bad_values_name_the_line() {
        for (text, want) in [
            (
                "Host a\n  Port 0\n",
                "/home/op/.ssh/config:2:1: Port `0` is not from 1 to 65535",
            ),
            (
                "Match exec \"true\"\n",
                "/home/op/.ssh/config:1:1: SSH configuration: `Match exec` is not supported",
            ),
            (
                "ConnectTimeout soon\n",
                "ConnectTimeout `soon` is not a number of seconds",
            ),
            ("IdentitiesOnly maybe\n", "`maybe` is not yes or no"),
            (
                "ProxyJump a:99999\n",
                "ProxyJump `a:99999`: port `99999` is not from 1 to 65535",
            ),
            ("Host\n", "`Host` needs at least one pattern"),
            ("User \"open\n", "a quote is not closed"),
            ("User a b\n", "`User` takes one value, not 2"),
        ] {
            let e = parse(&[("/home/op/.ssh/config", text)])
                .expect_err(text)
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn proxy_jump_forms() {
        let rows = [
            ("h", (None, "h", None)),
            ("u@h", (Some("u"), "h", None)),
            ("u@h:2200", (Some("u"), "h", Some(2200))),
            ("ssh://u@h:2200", (Some("u"), "h", Some(2200))),
            ("[2001:db8::1]:2200", (None, "2001:db8::1", Some(2200))),
            ("2001:db8::1", (None, "2001:db8::1", None)),
            ("a@b@h", (Some("a@b"), "h", None)),
        ];
        for (text, (user, host, port)) in rows {
            let j = parse_jump(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (j.user.as_deref(), j.host.as_str(), j.port),
                (user, host, port),
                "{text}"
            );
        }
        for bad in ["", "u@", "@h", "h:", "[::1", "h:x"] {
            assert!(parse_jump(bad).is_err(), "{bad}");
        }
        let c = config("Host t\n  ProxyJump a@one:2201,two\n").lookup("t");
        let hops = c.proxy_jump.map(|j| j.value).unwrap_or_default();
        assert_eq!(hops.len(), 2);
        assert_eq!(hops[1].host, "two");
        let none = config("Host t\n  ProxyJump none\nHost *\n  ProxyJump x\n").lookup("t");
        assert_eq!(none.proxy_jump.map(|j| j.value), Some(Vec::new()));
    }

    #[test]
    fn include_plain_paths_patterns_and_the_condition_around_them() {
        let cfg = parse(&[
            (
                "/home/op/.ssh/config",
                "Include conf.d/*.conf\nHost other\n  Include /etc/ssh/extra\nHost *\n  User fallback\n",
            ),
            ("/home/op/.ssh/conf.d/a.conf", "Host a\n  User from-a\n"),
            ("/home/op/.ssh/conf.d/b.conf", "Host b\n  User from-b\n"),
            ("/home/op/.ssh/conf.d/skip.txt", "Host a\n  User not-included\n"),
            ("/etc/ssh/extra", "Port 2200\n"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.lookup("a").user.as_deref(), Some("from-a"));
        assert_eq!(cfg.lookup("b").user.as_deref(), Some("from-b"));
        assert_eq!(cfg.lookup("c").user.as_deref(), Some("fallback"));
        // An include inside `Host other` applies to `other` only.
        assert_eq!(cfg.lookup("other").port, Some(2200));
        assert_eq!(cfg.lookup("a").port, None);
        // A missing include is skipped, as ssh does.
        assert!(parse(&[("/c", "Include /nowhere\n")]).is_ok());
        let e = parse(&[("/c", "Include /c\n")])
            .expect_err("loop")
            .to_string();
        assert!(e.contains("Include loop"), "{e}");
        let e = parse(&[("/c", "Include /x*/y\n")])
            .expect_err("glob dir")
            .to_string();
        assert!(e.contains("patterns in folder names"), "{e}");
    }

    #[test]
    fn proxy_command_is_found_unless_a_proxy_jump_came_first() {
        let cfg = config(
            "Host a\n  ProxyCommand nc %h %p\nHost b\n  ProxyJump j\nHost *\n  ProxyCommand x\n",
        );
        assert_eq!(cfg.proxy_command("a").map(|p| p.line), Some(2));
        assert_eq!(cfg.proxy_command("b"), None);
        assert_eq!(cfg.proxy_command("c").map(|p| p.line), Some(6));
        assert_eq!(config("ProxyCommand none\n").proxy_command("x"), None);
    }

    #[test]
    fn paths_expand_home_and_tokens() {
        let t = Tokens {
            home: Path::new("/home/op"),
            local_user: "op",
            host: "10.0.0.11",
            remote_user: "deploy",
        };
        assert_eq!(
            expand_path("~/.ssh/id_%h_%r", &t),
            Ok(PathBuf::from("/home/op/.ssh/id_10.0.0.11_deploy"))
        );
        assert_eq!(
            expand_path("%d/k-%u%%", &t),
            Ok(PathBuf::from("/home/op/k-op%"))
        );
        assert_eq!(expand_path("rel/k", &t), Ok(PathBuf::from("rel/k")));
        assert!(expand_path("%C", &t).unwrap_err().contains("%C"));
    }

    #[test]
    fn keywords_are_case_insensitive_and_equals_is_allowed() {
        let c = config("HOST x\n  hostname = 1.2.3.4\n  PORT=2222\n  user\tme\n").lookup("x");
        assert_eq!(c.host_name.as_deref(), Some("1.2.3.4"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.user.as_deref(), Some("me"));
    }
}
