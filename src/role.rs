//! Roles are data: `roles/<name>/role.yml` says which templates render to which remote
//! paths, how they are validated, what each change notifies, packages, the service and
//! health checks. Adding a role needs no Rust change.

use crate::diag::{Diagnostic, from_yaml_error};
use crate::inventory::{read_yaml_text, shown, yaml_options};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};
use std::path::{Path, PathBuf};

mod paths;
pub use paths::{MAX_LINK_TARGET, RoleAbsent, RoleDirectory, RoleLink};

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    pub packages: Vec<String>,
    pub service: Option<Service>,
    pub defaults: Map<String, Value>,
    pub files: Vec<RoleFile>,
    pub validate: Option<TreeValidate>,
    pub handlers: Vec<(String, String)>,
    pub health: Vec<HealthCheck>,
    /// Run with the facts: when it fails, the live state drifted from the files (rules
    /// edited by hand, ...), and the service is reloaded (or restarted) to re-apply them.
    pub drift_check: Option<String>,
    /// Vars the role uses as identifiers (SQL names, unit or user names...): each must be
    /// letters, digits and `_`, checked for every host before it renders.
    pub identifiers: Vec<String>,
    /// Certificates of the internal CA (`certificates:`): the private key is made on the
    /// host and never leaves it; the tool signs the host's CSR. Issued before the role's
    /// files are validated, so a config that names them checks against them.
    pub certificates: Vec<RoleCertificate>,
    /// Folders the role makes and keeps at their owner, group and mode (`directories:`),
    /// made before its files are uploaded.
    pub directories: Vec<RoleDirectory>,
    /// Symbolic links (`links:`), renamed into place like files.
    pub links: Vec<RoleLink>,
    /// Paths that must not exist (`absent:`): a file, link or empty folder there is moved
    /// to its backup name and deleted once the role is healthy.
    pub absent: Vec<RoleAbsent>,
    /// `release:`: the role serves the operator's application, deployed as releases
    /// (which code: the tier's `release:` in the inventory).
    pub release: Option<RoleRelease>,
}

/// A role's `release:`: where releases live on the host and how they are switched in.
#[derive(Debug, Clone)]
pub struct RoleRelease {
    /// Folder holding `releases/<id>/` and the `current` symlink.
    pub root: String,
    /// Owner and group of the release's files (default root:root, readable by all).
    pub owner: String,
    pub group: String,
    /// The user a release's migration runs as (default root).
    pub run_as: String,
    /// The migration's environment: the service's `EnvironmentFile` (secrets stay on the
    /// host, read by systemd).
    pub environment_file: Option<String>,
    /// What switching `current` triggers (default: reload of the role's service).
    pub notify: Notify,
    /// Proves the new release serves (after the notify): `{release}` in the command is
    /// replaced by the release's id.
    pub health: Option<HealthCheck>,
    /// Where `release:` is written, for messages.
    pub at: Location,
}

/// One `certificates:` entry.
#[derive(Debug, Clone)]
pub struct RoleCertificate {
    /// Where the certificate goes (PEM, mode 0644, root's).
    pub cert: String,
    /// Where the private key is made (mode 0600, `owner`:`group`).
    pub key: String,
    pub owner: String,
    pub group: String,
    /// Subject alternative names, Tera expressions rendered per host (the first is also
    /// the common name): DNS names or IP addresses.
    pub names: Vec<String>,
    /// What a new certificate triggers (the service reads it on reload).
    pub notify: Notify,
    /// Where the entry is written, for messages.
    pub at: Location,
}

/// The names a certificate gets when its entry lists none: the host's name, its tier's
/// name (what a client of the tier verifies, e.g. `proxy_ssl_name app`) and its address.
pub const DEFAULT_CERT_NAMES: [&str; 3] =
    ["{{ host.name }}", "{{ host.tier }}", "{{ host.address }}"];

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub enabled: bool,
    /// Whether the service supports reload; if not, a reload is a restart.
    pub reload: bool,
    /// What a restart of the running service interrupts (`interrupts:`): the plan warns
    /// with it, e.g. "the database: the app answers 503 until it is back".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<String>,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Tera template, by name relative to `templates/`.
    Template(String),
    /// A file copied verbatim, relative to `roles/<name>/files/`.
    Static(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    Reload,
    Restart,
}

/// What a changed file triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    None,
    Service(NotifyKind),
    /// A named handler of the role.
    Handler(String),
}

#[derive(Debug, Clone)]
pub struct RoleFile {
    pub source: Source,
    pub dest: String,
    /// Where role.yml gives `dest`, for messages.
    pub dest_at: Location,
    pub owner: String,
    pub group: String,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    pub notify: Notify,
    /// Per-file validator; `{tmp}` is replaced by the uploaded temporary file.
    pub validate: Option<String>,
    /// `shared_dir: true`: the folder may be writable by others than root (e.g. a web root
    /// owned by www-data); without it such a folder is refused at upload.
    pub shared_dir: bool,
    /// `restart_if_changed: [listen]`: a file that notifies reload restarts the service
    /// instead when a changed line starts with one of these words (a reload cannot move
    /// nginx's listening sockets, for instance).
    pub restart_if_changed: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TreeValidate {
    /// Folder copied to a scratch folder, with the role's changed files laid over it.
    pub tree: String,
    /// Command; `{tree}` is replaced by the scratch copy.
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    pub name: String,
    pub command: String,
    pub retries: u32,
    pub interval_ms: u64,
}

// ---- role.yml as written ----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    description: String,
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    service: Option<RawService>,
    #[serde(default)]
    defaults: Map<String, Value>,
    #[serde(default)]
    files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    validate: Option<RawTreeValidate>,
    #[serde(default)]
    handlers: crate::ordered_map::OrderedMap<String>,
    #[serde(default)]
    health: Vec<RawHealth>,
    #[serde(default)]
    drift_check: Option<Spanned<String>>,
    #[serde(default)]
    identifiers: Vec<Spanned<String>>,
    #[serde(default)]
    certificates: Vec<Spanned<RawCertificate>>,
    #[serde(default)]
    directories: Vec<Spanned<paths::RawDirectory>>,
    #[serde(default)]
    links: Vec<Spanned<paths::RawLink>>,
    #[serde(default)]
    absent: Vec<Spanned<paths::RawAbsent>>,
    release: Option<Spanned<RawRelease>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    root: Spanned<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    run_as: Option<String>,
    #[serde(default)]
    environment_file: Option<Spanned<String>>,
    #[serde(default)]
    notify: Option<Spanned<String>>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: Spanned<String>,
    key: Spanned<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    names: Vec<Spanned<String>>,
    #[serde(default)]
    notify: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "yes")]
    reload: bool,
    #[serde(default)]
    interrupts: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    src: Option<String>,
    dest: Spanned<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    notify: Option<Spanned<String>>,
    #[serde(default)]
    validate: Option<Spanned<String>>,
    #[serde(default)]
    shared_dir: bool,
    #[serde(default)]
    restart_if_changed: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTreeValidate {
    tree: String,
    command: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    name: String,
    command: Spanned<String>,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_interval")]
    interval_ms: u64,
}

fn default_retries() -> u32 {
    10
}
fn default_interval() -> u64 {
    500
}

/// Names of the roles under `roles_dir` (folders holding a role.yml), sorted.
pub fn list(roles_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(roles_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("role.yml").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Parses a mode string such as "0644" or "644".
fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('0').filter(|r| r.len() == 3).unwrap_or(s);
    if digits.len() != 3 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Loads `roles/<name>/role.yml`; `templates_dir` is checked for the templates it names.
pub fn load(roles_dir: &Path, name: &str, templates_dir: &Path) -> Result<Role, Diagnostic> {
    let dir = roles_dir.join(name);
    let path = dir.join("role.yml");
    let text = read_yaml_text(&path)?;
    parse(&path, &text, name, templates_dir)
}

/// Parses and checks a role.yml; `path` is used for messages and to find `files/`.
pub fn parse(
    path: &Path,
    text: &str,
    name: &str,
    templates_dir: &Path,
) -> Result<Role, Diagnostic> {
    let raw: RawRole = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| from_yaml_error(path, &e))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for (k, v) in &raw.handlers.0 {
        check_command(path, k.referenced, &format!("handler `{}`", k.value), v)?;
    }
    let handlers: Vec<(String, String)> = raw
        .handlers
        .0
        .into_iter()
        .map(|(k, v)| (k.value, v))
        .collect();
    let service = raw.service.map(|s| check_service(path, s)).transpose()?;
    let packages = check_packages(path, raw.packages)?;
    let checks = FileChecks {
        path,
        dir: &dir,
        name,
        templates_dir,
        has_service: service.is_some(),
        handlers: &handlers,
    };
    let mut files: Vec<RoleFile> = Vec::new();
    for f in raw.files {
        let file = checks.file(f, &files)?;
        files.push(file);
    }
    let mut certificates: Vec<RoleCertificate> = Vec::new();
    for c in raw.certificates {
        let cert = checks.certificate(c, &files, &certificates)?;
        certificates.push(cert);
    }
    let other = checks.paths(
        raw.directories,
        raw.links,
        raw.absent,
        &files,
        &certificates,
    )?;
    let release = raw.release.map(|r| checks.release(r, &files)).transpose()?;
    let validate = check_tree_validate(path, raw.validate)?;
    if let Some(d) = &raw.drift_check {
        check_command(path, d.referenced, "drift_check", &d.value)?;
    }
    for h in &raw.health {
        let what = format!("health check `{}`", h.name);
        check_command(path, h.command.referenced, &what, &h.command.value)?;
    }
    if let Some(d) = &raw.drift_check
        && service.is_none()
    {
        return Err(Diagnostic::at(
            path,
            d.referenced,
            "drift_check needs a `service:` in this role (it is what re-applies the state)",
        ));
    }
    Ok(Role {
        drift_check: raw.drift_check.map(|d| d.value),
        name: name.to_string(),
        dir,
        description: raw.description,
        packages,
        service,
        defaults: raw.defaults,
        files,
        validate,
        handlers,
        health: raw.health.into_iter().map(health_check).collect(),
        identifiers: check_identifier_names(path, raw.identifiers)?,
        certificates,
        directories: other.directories,
        links: other.links,
        absent: other.absent,
        release,
    })
}

/// `service:`, a systemd unit name. `nginx.service` is kept as `nginx`, the name the facts
/// report the unit under (other suffixes, `.socket`..., stay as written).
fn check_service(path: &Path, s: RawService) -> Result<Service, Diagnostic> {
    if !is_unit_name(&s.name.value) {
        return Err(Diagnostic::at(
            path,
            s.name.referenced,
            format!("`{}` is not a service name", s.name.value),
        ));
    }
    // Never empty: a unit name starts with a letter or digit.
    let name = s
        .name
        .value
        .strip_suffix(".service")
        .unwrap_or(&s.name.value);
    Ok(Service {
        name: name.to_string(),
        enabled: s.enabled,
        reload: s.reload,
        interrupts: s
            .interrupts
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty()),
    })
}

/// `packages:`, Debian package names.
fn check_packages(path: &Path, raw: Vec<Spanned<String>>) -> Result<Vec<String>, Diagnostic> {
    check_names(path, raw, is_package_name, |p| {
        Diagnostic::new(path, 0, 0, format!("`{p}` is not a Debian package name"))
    })
}

/// A list of names, each valid by `valid`; else `error` for the first one that is not,
/// at its position.
fn check_names(
    path: &Path,
    raw: Vec<Spanned<String>>,
    valid: fn(&str) -> bool,
    error: impl Fn(&str) -> Diagnostic,
) -> Result<Vec<String>, Diagnostic> {
    let mut out = Vec::new();
    for n in raw {
        if !valid(&n.value) {
            let d = error(&n.value);
            return Err(Diagnostic {
                line: n.referenced.line(),
                column: n.referenced.column(),
                file: path.to_path_buf(),
                ..d
            });
        }
        out.push(n.value);
    }
    Ok(out)
}

/// `validate:`, a whole-tree validator: an absolute folder and a command using `{tree}`.
fn check_tree_validate(
    path: &Path,
    raw: Option<RawTreeValidate>,
) -> Result<Option<TreeValidate>, Diagnostic> {
    if let Some(v) = &raw {
        check_command(path, v.command.referenced, "validate", &v.command.value)?;
    }
    let validate = raw.map(|v| TreeValidate {
        tree: v.tree,
        command: v.command.value,
    });
    if let Some(v) = &validate
        && (!v.tree.starts_with('/') || !v.command.contains("{tree}"))
    {
        return Err(Diagnostic::new(
            path,
            0,
            0,
            "validate: `tree` must be an absolute folder and `command` must use {tree}",
        ));
    }
    Ok(validate)
}

/// A command of role.yml (handler, validator, health or drift check), checked where it is
/// written: it must not read `secrets` (the value would be in the host's process list and
/// sudo's log), every value it prints is shell-quoted, and no tag prints one otherwise.
fn check_command(path: &Path, loc: Location, what: &str, cmd: &str) -> Result<(), Diagnostic> {
    let problem = if command_reads_secrets(cmd) {
        Some((
            "the command reads `secrets`, which would show its value in `ps` on the host and in sudo's log".to_string(),
            "write the secret into a root-only file the role manages (a template, mode \"0600\") and have the command read that file",
        ))
    } else if let Some(tag) = unquoted_output(cmd) {
        Some((
            format!("`{}` is not shell-quoted", shown(tag)),
            "a value in a command ends with `| shell_quote`, e.g. curl -H 'Host: '{{ domain | shell_quote }}",
        ))
    } else {
        forbidden_tag(cmd).map(|tag| {
            (
                format!("`{}` is not allowed in a command", shown(tag)),
                "commands may use {{ value | shell_quote }}, {% if %}, {% for %} and {% set %}",
            )
        })
    };
    match problem {
        None => Ok(()),
        Some((msg, hint)) => {
            Err(Diagnostic::at(path, loc, format!("{what}: {msg}")).with_hint(hint))
        }
    }
}

/// The tags `open ... close` of `cmd`, whole.
fn tags<'a>(cmd: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = cmd;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let len = after.find(close).map_or(after.len(), |e| e + close.len());
        out.push(&rest[start..start + open.len() + len]);
        rest = &after[len..];
    }
    out
}

/// The first `{{ ... }}` of a command whose last filter is not `shell_quote`: every value
/// that reaches a root shell is quoted as one word.
fn unquoted_output(cmd: &str) -> Option<&str> {
    tags(cmd, "{{", "}}").into_iter().find(|tag| {
        let inner = tag
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim_matches('-');
        inner
            .rsplit_once('|')
            .is_none_or(|(_, last)| last.trim() != "shell_quote")
    })
}

/// The first `{% ... %}` of a command that could print a value unquoted (include, macro,
/// filter, ...): only control flow and `set` are allowed.
fn forbidden_tag(cmd: &str) -> Option<&str> {
    const ALLOWED: [&str; 9] = [
        "if", "elif", "else", "endif", "for", "endfor", "set", "break", "continue",
    ];
    tags(cmd, "{%", "%}").into_iter().find(|tag| {
        let word = tag
            .trim_start_matches("{%")
            .trim_start_matches('-')
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .find(|w| !w.is_empty())
            .unwrap_or("");
        !ALLOWED.contains(&word)
    })
}

/// `identifiers:`, names of vars.
fn check_identifier_names(
    path: &Path,
    raw: Vec<Spanned<String>>,
) -> Result<Vec<String>, Diagnostic> {
    check_names(path, raw, is_identifier, |n| {
        Diagnostic::new(path, 0, 0, format!("identifiers: `{n}` is not a var name"))
            .with_hint("list the names of vars, e.g. [db_name, db_user]")
    })
}

/// Letters, digits and `_`, starting with a letter or `_`, at most 64 characters: a name
/// that is the same word in SQL, a shell and a config file.
pub fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a command's template reads `secrets` (or the whole context). A command Tera
/// cannot parse is left to rendering, which reports it.
fn command_reads_secrets(cmd: &str) -> bool {
    if !cmd.contains("{{") && !cmd.contains("{%") {
        return false;
    }
    let mut t = tera::Tera::default();
    if t.add_raw_template("command", cmd).is_err() {
        return false;
    }
    t.get_template_variables("command")
        .map(|v| v.contains("secrets") || v.contains("__tera_context"))
        .unwrap_or(true)
}

/// A health check with its retries (1 to 600) and interval (at most a minute) bounded.
fn health_check(h: RawHealth) -> HealthCheck {
    HealthCheck {
        name: h.name,
        command: h.command.value,
        retries: h.retries.clamp(1, 600),
        interval_ms: h.interval_ms.min(60_000),
    }
}

/// What the checks of one `files:` entry need to know about the role.
struct FileChecks<'a> {
    /// role.yml, for messages.
    path: &'a Path,
    /// The role's folder (`files/` is under it).
    dir: &'a Path,
    name: &'a str,
    templates_dir: &'a Path,
    has_service: bool,
    handlers: &'a [(String, String)],
}

impl FileChecks<'_> {
    fn at(&self, loc: Location, msg: String) -> Diagnostic {
        Diagnostic::at(self.path, loc, msg)
    }

    /// One `files:` entry, checked in order: source, dest (and not twice), mode, notify,
    /// owner and group. `earlier` are the role's entries before it.
    fn file(&self, f: Spanned<RawFile>, earlier: &[RoleFile]) -> Result<RoleFile, Diagnostic> {
        let loc = f.referenced;
        let f = f.value;
        let source = self.source(loc, f.template, f.src)?;
        let dest = self.dest(&f.dest, earlier)?;
        let mode = match &f.mode {
            None => 0o644,
            Some(m) => parse_mode(&m.value).ok_or_else(|| {
                self.at(
                    m.referenced,
                    format!("mode `{}` is not an octal mode", m.value),
                )
                .with_hint("write it as a quoted string such as \"0644\" or \"0640\"")
            })?,
        };
        if let Some(v) = &f.validate {
            check_command(self.path, v.referenced, "validate", &v.value)?;
        }
        let notify = match &f.notify {
            None => Notify::None,
            Some(n) => self.notify(n)?,
        };
        let mut restart_if_changed = Vec::new();
        for w in f.restart_if_changed {
            if notify != Notify::Service(NotifyKind::Reload) {
                return Err(self
                    .at(
                        w.referenced,
                        "restart_if_changed applies to a file that notifies reload".into(),
                    )
                    .with_hint("add `notify: reload`, or remove restart_if_changed"));
            }
            if w.value.is_empty()
                || w.value.len() > 64
                || !w
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            {
                return Err(self
                    .at(
                        w.referenced,
                        format!("restart_if_changed `{}` is not a word", shown(&w.value)),
                    )
                    .with_hint(
                        "list the first words of lines a reload cannot apply, e.g. [listen]",
                    ));
            }
            restart_if_changed.push(w.value);
        }
        self.owner_group(loc, &f.owner, &f.group)?;
        Ok(RoleFile {
            source,
            dest,
            dest_at: f.dest.referenced,
            owner: f.owner.unwrap_or_else(|| "root".into()),
            group: f.group.unwrap_or_else(|| "root".into()),
            mode,
            notify,
            validate: f.validate.map(|v| v.value),
            shared_dir: f.shared_dir,
            restart_if_changed,
        })
    }

    /// Exactly one of `template` (found under templates/) or `src` (under files/).
    fn source(
        &self,
        loc: Location,
        template: Option<String>,
        src: Option<String>,
    ) -> Result<Source, Diagnostic> {
        match (template, src) {
            (Some(t), None) => {
                if !is_relative_inside(&t) {
                    return Err(self.at(
                        loc,
                        format!(
                            "template `{t}` must be a name under templates/ (no leading `/`, no `..`)"
                        ),
                    ));
                }
                if !self.templates_dir.join(&t).is_file() {
                    return Err(self
                        .at(
                            loc,
                            format!(
                                "template `{t}` not found under {}",
                                self.templates_dir.display()
                            ),
                        )
                        .with_hint("template names are relative to templates/"));
                }
                Ok(Source::Template(t))
            }
            (None, Some(s)) => {
                if !is_relative_inside(&s) {
                    return Err(self.at(
                        loc,
                        format!(
                            "src `{s}` must be a path under roles/{}/files/ (no leading `/`, no `..`)",
                            self.name
                        ),
                    ));
                }
                let files = self.dir.join("files");
                if !files.join(&s).is_file() {
                    return Err(self.at(
                        loc,
                        format!("file `{s}` not found under {}", files.display()),
                    ));
                }
                Ok(Source::Static(PathBuf::from(s)))
            }
            _ => Err(self.at(
                loc,
                "a file needs exactly one of `template` or `src`".into(),
            )),
        }
    }

    /// An absolute file path, not already a dest of this role.
    fn dest(&self, dest: &Spanned<String>, earlier: &[RoleFile]) -> Result<String, Diagnostic> {
        let d = dest.value.clone();
        if !d.starts_with('/') || d.ends_with('/') || d.contains("/../") || d.contains('\\') {
            return Err(self.at(
                dest.referenced,
                format!("dest `{d}` must be an absolute file path"),
            ));
        }
        if d.contains(char::is_control) {
            return Err(self
                .at(
                    dest.referenced,
                    format!("dest {d:?} holds a control character"),
                )
                .with_hint("a path is printable text: remove the line break, tab or \\r"));
        }
        if earlier.iter().any(|o| o.dest == d) {
            return Err(self.at(
                dest.referenced,
                format!("dest `{d}` is listed twice in this role"),
            ));
        }
        Ok(d)
    }

    /// One `certificates:` entry: two paths no file or other certificate of the role
    /// uses, the key's owner and group, names (templated: checked at render), notify.
    fn certificate(
        &self,
        c: Spanned<RawCertificate>,
        files: &[RoleFile],
        earlier: &[RoleCertificate],
    ) -> Result<RoleCertificate, Diagnostic> {
        let loc = c.referenced;
        let c = c.value;
        let cert = self.dest(&c.cert, files)?;
        let key = self.dest(&c.key, files)?;
        for p in [&c.cert, &c.key] {
            let taken = earlier
                .iter()
                .any(|e| e.cert == p.value || e.key == p.value);
            if taken || c.cert.value == c.key.value {
                return Err(self.at(
                    p.referenced,
                    format!(
                        "`{}` is used by two certificates or keys of this role",
                        p.value
                    ),
                ));
            }
        }
        self.owner_group(loc, &c.owner, &c.group)?;
        let notify = match &c.notify {
            None => Notify::None,
            Some(n) => self.notify(n)?,
        };
        let names = if c.names.is_empty() {
            DEFAULT_CERT_NAMES.iter().map(|n| n.to_string()).collect()
        } else {
            c.names.into_iter().map(|n| n.value).collect()
        };
        Ok(RoleCertificate {
            cert,
            key,
            owner: c.owner.unwrap_or_else(|| "root".into()),
            group: c.group.unwrap_or_else(|| "root".into()),
            names,
            notify,
            at: loc,
        })
    }

    /// `release:`: an absolute root no file of the role is under, names, an absolute
    /// environment file, notify (default reload, which needs the role's service), and a
    /// health check.
    fn release(
        &self,
        r: Spanned<RawRelease>,
        files: &[RoleFile],
    ) -> Result<RoleRelease, Diagnostic> {
        let at = r.referenced;
        let r = r.value;
        let root = self.dest(&r.root, &[])?;
        if let Some(f) = files
            .iter()
            .find(|f| f.dest.starts_with(&format!("{root}/")))
        {
            return Err(self
                .at(
                    r.root.referenced,
                    format!(
                        "release root `{root}` holds the role's file `{}`: releases and files would mix",
                        f.dest
                    ),
                )
                .with_hint("give the releases a folder of their own (e.g. /opt/APP), and the files another"));
        }
        self.owner_group(at, &r.owner, &r.group)?;
        self.owner_group(at, &r.run_as, &None)?;
        let environment_file = match r.environment_file {
            Some(e) => Some(self.dest(&e, &[])?),
            None => None,
        };
        let notify = match &r.notify {
            Some(n) => self.notify(n)?,
            None if self.has_service => Notify::Service(NotifyKind::Reload),
            None => Notify::None,
        };
        let health = match r.health {
            Some(h) => {
                let what = format!("release health check `{}`", h.name);
                check_command(self.path, h.command.referenced, &what, &h.command.value)?;
                Some(health_check(h))
            }
            None => None,
        };
        Ok(RoleRelease {
            root,
            owner: r.owner.unwrap_or_else(|| "root".into()),
            group: r.group.unwrap_or_else(|| "root".into()),
            run_as: r.run_as.unwrap_or_else(|| "root".into()),
            environment_file,
            notify,
            health,
            at,
        })
    }

    /// `owner:` and `group:`, when given, are user or group names.
    fn owner_group(
        &self,
        loc: Location,
        owner: &Option<String>,
        group: &Option<String>,
    ) -> Result<(), Diagnostic> {
        for (field, v) in [("owner", owner), ("group", group)] {
            if let Some(v) = v
                && !is_user_name(v)
            {
                return Err(self.at(
                    loc,
                    format!("{field} `{v}` is not a valid user or group name"),
                ));
            }
        }
        Ok(())
    }

    /// `notify:` none, reload or restart (which need the role's service), or a handler.
    fn notify(&self, n: &Spanned<String>) -> Result<Notify, Diagnostic> {
        Ok(match n.value.as_str() {
            "none" => Notify::None,
            "reload" | "restart" if !self.has_service => {
                return Err(self.at(
                    n.referenced,
                    format!("notify `{}` needs a `service:` in this role", n.value),
                ));
            }
            "reload" => Notify::Service(NotifyKind::Reload),
            "restart" => Notify::Service(NotifyKind::Restart),
            other if self.handlers.iter().any(|(h, _)| h == other) => {
                Notify::Handler(other.to_string())
            }
            other => {
                let mut names: Vec<&str> = vec!["none", "reload", "restart"];
                names.extend(self.handlers.iter().map(|(h, _)| h.as_str()));
                let mut d = self.at(
                    n.referenced,
                    format!(
                        "notify `{other}` is not reload, restart, none or a handler of this role"
                    ),
                );
                if let Some(near) = crate::suggest::nearest(other, &names) {
                    d.hint = Some(format!("did you mean `{near}`?"));
                }
                return Err(d);
            }
        })
    }
}

/// A relative path that stays inside its base folder: no root, no `..`.
fn is_relative_inside(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// A systemd unit name: starts with a letter or digit (a leading `-` would be an option).
fn is_unit_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// A user or group name: starts with a letter, digit or `_` (Debian's `_apt`), never `-`.
fn is_user_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A Debian package name (policy 5.6.1): starts with a lowercase letter or digit.
pub(crate) fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn fixture() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    pub(super) mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "fp-role-test-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                ));
                std::fs::create_dir_all(p.join("templates/web")).expect("mkdir");
                std::fs::write(p.join("templates/web/site.conf.tera"), "x").expect("write");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const ROLE: &str = "\
packages: [nginx]
service:
  name: nginx
files:
  - template: web/site.conf.tera
    dest: /etc/nginx/site.conf
    mode: \"0640\"
    notify: reload
health:
  - name: up
    command: curl -fsS http://127.0.0.1/
";

    pub(super) fn parse_role(dir: &tempdir::Dir, text: &str) -> Result<Role, Diagnostic> {
        parse(
            &dir.0.join("roles/web/role.yml"),
            text,
            "web",
            &dir.0.join("templates"),
        )
    }

    /// The error for ROLE with `from` replaced by `to` (which must change it).
    fn edited_role_error(d: &tempdir::Dir, from: &str, to: &str) -> String {
        let text = ROLE.replace(from, to);
        assert_ne!(text, ROLE, "{from}");
        parse_role(d, &text).expect_err(to).to_string()
    }

    #[test]
    fn parses_a_role() {
        let d = fixture();
        let r = parse_role(&d, ROLE).expect("valid");
        assert_eq!(r.files[0].mode, 0o640);
        assert_eq!(r.files[0].notify, Notify::Service(NotifyKind::Reload));
        assert_eq!(r.health[0].retries, 10);
        assert!(r.service.as_ref().is_some_and(|s| s.reload && s.enabled));
    }

    #[test]
    fn certificates_get_default_names_and_their_errors_are_located() {
        let d = fixture();
        let with = |entry: &str| ROLE.replace("health:", &format!("certificates:\n{entry}health:"));
        let r = parse_role(
            &d,
            &with(
                "  - cert: /etc/nginx/web.crt\n    key: /etc/nginx/web.key\n    notify: reload\n",
            ),
        )
        .expect("valid");
        let c = &r.certificates[0];
        assert_eq!((c.owner.as_str(), c.group.as_str()), ("root", "root"));
        assert_eq!(c.names, DEFAULT_CERT_NAMES);
        assert_eq!(c.notify, Notify::Service(NotifyKind::Reload));
        for (entry, error) in [
            (
                "  - cert: /etc/nginx/site.conf\n    key: /etc/k\n",
                "dest `/etc/nginx/site.conf` is listed twice in this role",
            ),
            (
                "  - cert: /etc/a.crt\n    key: /etc/a.crt\n",
                "is used by two certificates or keys",
            ),
            (
                "  - cert: /etc/a.crt\n    key: /etc/a.key\n  - cert: /etc/b.crt\n    key: /etc/a.key\n",
                "`/etc/a.key` is used by two certificates or keys",
            ),
            (
                "  - cert: etc/a.crt\n    key: /etc/a.key\n",
                "must be an absolute file path",
            ),
            (
                "  - cert: /etc/a.crt\n    key: /etc/a.key\n    owner: \"r oot\"\n",
                "owner `r oot` is not a valid user or group name",
            ),
            (
                "  - cert: /etc/a.crt\n    key: /etc/a.key\n    notify: relaod\n",
                "notify `relaod` is not reload",
            ),
        ] {
            let e = parse_role(&d, &with(entry)).expect_err(entry).to_string();
            assert!(e.contains(error) && e.contains("role.yml:"), "{entry}: {e}");
        }
    }

    /// Review finding 4: a folder others can write to is refused at upload unless the
    /// file says `shared_dir: true`; the flag is off unless written.
    #[test]
    fn shared_dir_is_off_unless_the_file_says_so() {
        let d = fixture();
        let r = parse_role(&d, ROLE).expect("valid");
        assert!(!r.files[0].shared_dir);
        let shared = ROLE.replace("notify: reload", "notify: reload\n    shared_dir: true");
        let r = parse_role(&d, &shared).expect("valid");
        assert!(r.files[0].shared_dir);
    }

    #[test]
    fn role_errors_are_located() {
        let d = fixture();
        let e = parse_role(&d, &ROLE.replace("\"0640\"", "\"0999\""))
            .expect_err("bad mode")
            .to_string();
        assert!(
            e.contains("role.yml:7:11: mode `0999` is not an octal mode"),
            "{e}"
        );
        let e = parse_role(&d, &ROLE.replace("notify: reload", "notify: relaod"))
            .expect_err("bad notify")
            .to_string();
        assert!(e.contains("did you mean `reload`?"), "{e}");
        let e = parse_role(&d, &ROLE.replace("site.conf.tera", "nope.tera"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("template `web/nope.tera` not found"), "{e}");
        let e = parse_role(&d, &ROLE.replace("dest: /etc", "dest: etc"))
            .expect_err("relative")
            .to_string();
        assert!(e.contains("must be an absolute file path"), "{e}");
        let e = parse_role(&d, &ROLE.replace("packages:", "pakages:"))
            .expect_err("typo")
            .to_string();
        assert!(e.contains("did you mean `packages`?"), "{e}");
    }

    /// Issue 10, finding 15: `packages: [--allow-unauthenticated]` passed the name check and
    /// became an apt option; a service or owner starting with `-` likewise; a `\r` in a dest.
    #[test]
    fn names_starting_with_a_dash_and_control_characters_are_refused() {
        let d = fixture();
        for (from, to, want) in [
            (
                "packages: [nginx]",
                "packages: [nginx, --allow-unauthenticated]",
                "`--allow-unauthenticated` is not a Debian package name",
            ),
            (
                "name: nginx",
                "name: -nginx",
                "`-nginx` is not a service name",
            ),
            (
                "    notify: reload",
                "    notify: reload\n    owner: -R",
                "owner `-R` is not a valid user or group name",
            ),
            (
                "dest: /etc/nginx/site.conf",
                "dest: \"/etc/nginx/site\\r.conf\"",
                "dest \"/etc/nginx/site\\r.conf\" holds a control character",
            ),
        ] {
            let e = edited_role_error(&d, from, to);
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    /// Issue 10, finding 12: `service: name: nginx.service` was kept as written while the
    /// facts store the unit as `nginx`: a converged host planned start+enable forever.
    #[test]
    fn service_name_with_the_unit_suffix_matches_the_facts() {
        let d = fixture();
        let r = parse_role(&d, &ROLE.replace("name: nginx", "name: nginx.service")).expect("valid");
        let name = r.service.map(|s| s.name).unwrap_or_default();
        let q = crate::facts::FactQuery {
            services: vec![&name],
            ..Default::default()
        };
        let out =
            "INIT systemd\nId=nginx.service\nActiveState=active\nUnitFileState=enabled\nEND\n";
        let facts = crate::facts::parse(out, &q).expect("parses");
        assert!(facts.services.contains_key(&name), "{name}: {facts:?}");
    }

    /// Issue 10, finding 17: a role command reading `secrets.*` put the value in the remote
    /// argv (`ps` on the host, sudo's log). Every kind of command is checked, at its line.
    #[test]
    fn commands_that_read_secrets_are_refused() {
        let d = fixture();
        for (from, to, line) in [
            (
                "    command: curl -fsS http://127.0.0.1/",
                "    command: \"mysql -p{{ secrets.pw }} -e 'SELECT 1'\"",
                11,
            ),
            (
                "    notify: reload\n",
                "    notify: reload\n    validate: \"check --key {{ secrets.pw | upper }} {tmp}\"\n",
                9,
            ),
            (
                "health:",
                "handlers:\n  h: \"{% set p = secrets.pw %}echo {{ p }}\"\nhealth:",
                10,
            ),
            (
                "health:",
                "validate:\n  tree: /etc/nginx\n  command: \"x {tree} {{ secrets.pw }}\"\nhealth:",
                11,
            ),
            (
                "health:",
                "drift_check: \"test {{ secrets['pw'] }}\"\nhealth:",
                9,
            ),
        ] {
            let e = edited_role_error(&d, from, to);
            assert!(e.contains(&format!("role.yml:{line}:")), "{to}: {e}");
            assert!(e.contains("reads `secrets`"), "{to}: {e}");
            assert!(e.contains("hint: "), "{to}: {e}");
        }
    }

    /// Issue 10, finding 2: a var reached a role command unquoted (`curl ... '{{ domain }}'`,
    /// run as root). Every `{{ ... }}` in a command must end with `| shell_quote`.
    #[test]
    fn command_values_must_be_shell_quoted() {
        let d = fixture();
        let cmd = "    command: curl -fsS http://127.0.0.1/";
        for (to, want) in [
            (
                "    command: \"curl -H 'Host: {{ domain }}' http://127.0.0.1/\"",
                "health check `up`: `{{ domain }}` is not shell-quoted",
            ),
            (
                "    command: \"curl {{ domain | shell_quote | upper }}\"",
                "`{{ domain | shell_quote | upper }}` is not shell-quoted",
            ),
            (
                "    command: \"{% include 'x' %}\"",
                "`{% include 'x' %}` is not allowed in a command",
            ),
        ] {
            let e = edited_role_error(&d, cmd, to);
            assert!(e.contains("role.yml:11:") && e.contains(want), "{to}: {e}");
            assert!(e.contains("hint: "), "{to}: {e}");
        }
        let ok = "    command: \"curl -H 'Host: '{{- domain | shell_quote -}} {% if x %}{{ x|shell_quote }}{% endif %}\"";
        parse_role(&d, &ROLE.replace(cmd, ok)).expect("quoted");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o644"), None);
        assert_eq!(parse_mode("0888"), None);
        assert_eq!(parse_mode("12345"), None);
    }

    /// A role.yml with one file entry `file` (indented as a list item's fields) and `extra`
    /// top-level lines.
    fn role_with(file: &str, extra: &str) -> String {
        format!(
            "service:\n  name: nginx\nhandlers:\n  hup: kill -HUP 1\nfiles:\n  - {file}\n{extra}"
        )
    }

    /// The error of a role.yml, or "ok".
    fn verdict(text: &str) -> String {
        let d = fixture();
        std::fs::create_dir_all(d.0.join("roles/web/files/sub")).expect("mkdir");
        std::fs::write(d.0.join("roles/web/files/sub/a.txt"), "a").expect("write");
        match parse_role(&d, text) {
            Ok(_) => "ok".into(),
            Err(e) => e.message,
        }
    }

    #[test]
    fn file_entries_are_checked_rule_by_rule() {
        let t = "template: web/site.conf.tera\n    ";
        let rows: Vec<(String, &str)> = vec![
            (format!("{t}dest: /etc/a"), "ok"),
            ("src: sub/a.txt\n    dest: /etc/a".into(), "ok"),
            ("src: ./sub/a.txt\n    dest: /etc/a".into(), "ok"),
            (
                "src: sub/missing\n    dest: /etc/a".into(),
                "file `sub/missing` not found",
            ),
            (
                "src: ../web/files/sub/a.txt\n    dest: /etc/a".into(),
                "src `../web/files/sub/a.txt` must be a path under roles/web/files/",
            ),
            (
                "src: /etc/passwd\n    dest: /etc/a".into(),
                "src `/etc/passwd` must be a path",
            ),
            (
                "template: ../templates/web/site.conf.tera\n    dest: /etc/a".into(),
                "must be a name under templates/",
            ),
            (
                "template: \"\"\n    dest: /etc/a".into(),
                "template `` must be a name under templates/",
            ),
            (
                "template: web/site.conf.tera\n    src: sub/a.txt\n    dest: /etc/a".into(),
                "exactly one of",
            ),
            ("dest: /etc/a".into(), "exactly one of"),
            (format!("{t}dest: /etc/a/"), "must be an absolute file path"),
            (
                format!("{t}dest: /etc/../a"),
                "must be an absolute file path",
            ),
            (
                format!("{t}dest: /etc/a\\\\b"),
                "must be an absolute file path",
            ),
            (format!("{t}dest: /etc/a\n    notify: none"), "ok"),
            (format!("{t}dest: /etc/a\n    notify: restart"), "ok"),
            (format!("{t}dest: /etc/a\n    notify: hup"), "ok"),
            (
                format!("{t}dest: /etc/a\n    notify: hupp"),
                "notify `hupp` is not reload, restart, none or a handler",
            ),
            (
                format!("{t}dest: /etc/a\n    owner: www-data\n    group: adm"),
                "ok",
            ),
            (
                format!("{t}dest: /etc/a\n    owner: \"bad name\""),
                "owner `bad name` is not a valid user or group name",
            ),
            (
                format!("{t}dest: /etc/a\n    group: \"\""),
                "group `` is not a valid user or group name",
            ),
        ];
        for (file, want) in rows {
            let v = verdict(&role_with(&file, ""));
            assert!(v.contains(want), "{file}: {v}");
        }
        let twice = role_with(&format!("{t}dest: /etc/a\n  - {t}dest: /etc/a"), "");
        assert!(verdict(&twice).contains("dest `/etc/a` is listed twice"));
    }

    #[test]
    fn file_defaults_are_root_root_0644_and_no_notify() {
        let d = fixture();
        let r = parse_role(
            &d,
            &role_with("template: web/site.conf.tera\n    dest: /etc/a", ""),
        )
        .expect("valid");
        let f = &r.files[0];
        assert_eq!(
            (f.owner.as_str(), f.group.as_str(), f.mode),
            ("root", "root", 0o644)
        );
        assert_eq!(f.notify, Notify::None);
        assert_eq!(f.source, Source::Template("web/site.conf.tera".into()));
        let r = parse_role(
            &d,
            &role_with(
                "template: web/site.conf.tera\n    dest: /etc/a\n    owner: www\n    group: adm\n    notify: hup",
                "",
            ),
        )
        .expect("valid");
        let f = &r.files[0];
        assert_eq!((f.owner.as_str(), f.group.as_str()), ("www", "adm"));
        assert_eq!(f.notify, Notify::Handler("hup".into()));
    }

    #[test]
    fn reload_and_restart_need_a_service() {
        for n in ["reload", "restart"] {
            let text = format!(
                "files:\n  - template: web/site.conf.tera\n    dest: /etc/a\n    notify: {n}\n"
            );
            assert_eq!(
                verdict(&text),
                format!("notify `{n}` needs a `service:` in this role")
            );
        }
    }

    #[test]
    fn service_packages_validate_and_drift_check_rules() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let rows: Vec<(String, &str)> = vec![
            ("service:\n  name: nginx.service\n".into(), "ok"),
            ("service:\n  name: getty@tty1\n".into(), "ok"),
            (format!("service:\n  name: {long}\n"), "ok"),
            (
                format!("service:\n  name: {too_long}\n"),
                "is not a service name",
            ),
            ("service:\n  name: \"\"\n".into(), "is not a service name"),
            (
                "service:\n  name: \"a b\"\n".into(),
                "is not a service name",
            ),
            ("packages: [nginx, lib++, python3.11, g-c]\n".into(), "ok"),
            ("packages: [ab]\n".into(), "ok"),
            ("packages: [a]\n".into(), "`a` is not a Debian package name"),
            (
                "packages: [Nginx]\n".into(),
                "`Nginx` is not a Debian package name",
            ),
            (
                "packages: [\"ng inx\"]\n".into(),
                "is not a Debian package name",
            ),
            (
                "validate:\n  tree: /etc/nginx\n  command: nginx -t -p {tree}\n".into(),
                "ok",
            ),
            (
                "validate:\n  tree: etc/nginx\n  command: nginx -t -p {tree}\n".into(),
                "validate: `tree` must be an absolute folder",
            ),
            (
                "validate:\n  tree: /etc/nginx\n  command: nginx -t\n".into(),
                "validate: `tree` must be an absolute folder",
            ),
            (
                "service:\n  name: nginx\ndrift_check: \"true\"\n".into(),
                "ok",
            ),
            (
                "drift_check: \"true\"\n".into(),
                "drift_check needs a `service:`",
            ),
        ];
        for (text, want) in rows {
            let v = verdict(&text);
            assert!(v.contains(want), "{text}: {v}");
        }
    }

    #[test]
    fn service_flags_and_health_bounds() {
        let d = fixture();
        let r = parse_role(
            &d,
            "service:\n  name: a\n  enabled: false\n  reload: false\nhealth:\n  - name: h\n    command: x\n  - name: lo\n    command: x\n    retries: 0\n    interval_ms: 100000\n  - name: hi\n    command: x\n    retries: 1000\n    interval_ms: 7\n",
        )
        .expect("valid");
        let s = r.service.expect("service");
        assert!(!s.enabled && !s.reload);
        let h: Vec<(u32, u64)> = r
            .health
            .iter()
            .map(|h| (h.retries, h.interval_ms))
            .collect();
        assert_eq!(h, [(10, 500), (1, 60_000), (600, 7)]);
    }

    #[test]
    fn relative_paths_stay_inside() {
        for (p, ok) in [
            ("a", true),
            ("a/b", true),
            ("./a", true),
            ("", false),
            ("/a", false),
            ("../a", false),
            ("a/../../b", false),
        ] {
            assert_eq!(is_relative_inside(p), ok, "{p}");
        }
        assert_eq!(parse_mode("064"), Some(0o64));
        assert_eq!(parse_mode("00644"), None);
    }

    #[test]
    fn list_names_the_folders_holding_a_role_yml_sorted() {
        let d = fixture();
        for name in ["b", "a"] {
            std::fs::create_dir_all(d.0.join("roles").join(name)).expect("mkdir");
            std::fs::write(d.0.join("roles").join(name).join("role.yml"), "").expect("write");
        }
        std::fs::create_dir_all(d.0.join("roles/empty")).expect("mkdir");
        assert_eq!(list(&d.0.join("roles")), ["a", "b"]);
        assert!(list(&d.0.join("nowhere")).is_empty());
    }
}
