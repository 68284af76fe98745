//! Rendering: roles + templates + inventory -> the desired state of each host.
//!
//! Pure: reads the project's files once ([`Project::load`]), then renders in memory.

use crate::desired::{
    DesiredAbsent, DesiredCert, DesiredDir, DesiredFile, DesiredHost, DesiredLink, DesiredRelease,
    DesiredRole,
};
use crate::diag::Diagnostic;
use crate::inventory::{Host, Inventory, Pki, Tier};
use crate::pki::{CertSpec, San};
use crate::release::Target;
use crate::role::{self, Role, RoleCertificate, RoleFile, Source, TreeValidate};
use crate::secrets::Secrets;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The project's roles and templates, loaded and parsed.
pub struct Project {
    roles: BTreeMap<String, Role>,
    templates_dir: PathBuf,
    tera: tera::Tera,
    /// The project folder (holding roles/ and templates/).
    root: PathBuf,
    /// Every template loaded, by name (relative to templates/).
    template_names: Vec<String>,
}

/// One file of the project a render reads: what it is and where (relative to the
/// project folder, and as opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    /// `role` (a role.yml), `template` or `static` (a file under roles/NAME/files/).
    pub kind: &'static str,
    /// Relative to the project folder, e.g. `templates/nginx/nginx.conf.tera`.
    pub relative: String,
    pub path: PathBuf,
}

/// Finds the project root for an inventory: the nearest folder, from the inventory's
/// own folder upwards, that holds both `roles/` and `templates/`.
pub fn find_root(inventory: &Path) -> Option<PathBuf> {
    let abs = std::fs::canonicalize(inventory).ok()?;
    abs.ancestors()
        .skip(1)
        .find(|d| d.join("roles").is_dir() && d.join("templates").is_dir())
        .map(Path::to_path_buf)
}

impl Project {
    /// Loads every role under `root/roles` and every template under `root/templates`.
    pub fn load(root: &Path) -> Result<Project, Diagnostic> {
        let roles_dir = root.join("roles");
        let templates_dir = root.join("templates");
        let mut tera = tera::Tera::default();
        tera.register_filter("shell_quote", shell_quote);
        let mut sources = Vec::new();
        collect_templates(&templates_dir, &templates_dir, &mut sources)?;
        tera.add_raw_templates(sources.iter().map(|(n, c)| (n.as_str(), c.as_str())))
            .map_err(|e| tera_diag(&templates_dir, &e, None))?;
        let mut roles = BTreeMap::new();
        for name in role::list(&roles_dir) {
            let r = role::load(&roles_dir, &name, &templates_dir)?;
            roles.insert(name, r);
        }
        Ok(Project {
            roles,
            templates_dir,
            tera,
            root: root.to_path_buf(),
            template_names: sources.into_iter().map(|(n, _)| n).collect(),
        })
    }

    /// The files rendering `roles` reads: each role's role.yml and static files, and every
    /// template (a template may include or import any other), sorted by path.
    pub fn inputs(&self, roles: &[&str]) -> Vec<ProjectFile> {
        let relative = |p: &Path| {
            p.strip_prefix(&self.root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        let mut out = Vec::new();
        for role in roles.iter().filter_map(|name| self.roles.get(*name)) {
            let yml = role.dir.join("role.yml");
            out.push(ProjectFile {
                kind: "role",
                relative: relative(&yml),
                path: yml,
            });
            for f in &role.files {
                if let Source::Static(p) = &f.source {
                    let path = role.dir.join("files").join(p);
                    out.push(ProjectFile {
                        kind: "static",
                        relative: relative(&path),
                        path,
                    });
                }
            }
        }
        for name in &self.template_names {
            let path = self.templates_dir.join(name);
            out.push(ProjectFile {
                kind: "template",
                relative: relative(&path),
                path,
            });
        }
        out.sort_by(|a, b| a.relative.cmp(&b.relative));
        out.dedup_by(|a, b| a.relative == b.relative);
        out
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Renders the desired state of `host`. `secrets` are the values templates see
    /// (real ones, or masked placeholders for `render` without `--reveal-secrets`).
    pub fn render_host(
        &self,
        inv: &Inventory,
        host: &Host,
        secrets: &BTreeMap<String, String>,
        real: &Secrets,
    ) -> Result<DesiredHost, Diagnostic> {
        let tier = inv.tier(&host.tier).ok_or_else(|| {
            Diagnostic::new(&inv.path, 0, 0, format!("host `{}` has no tier", host.name))
        })?;
        // The database's primary, as `db promote` and the rollout compute it: templates
        // read it as `db_primary_host`. (The var is the inventory's only: parse refuses it
        // for a tier or a host.)
        let db_primary = crate::replica::primary(inv).map_err(|e| {
            let msg = format!(
                "{e}: name one of the hosts with the mysql role, or remove the var (the first of them is the default)"
            );
            match inv.var_at.inventory.get(crate::replica::VAR) {
                _ if inv.cli_vars.contains_key(crate::replica::VAR) => {
                    Diagnostic::new(Path::new("--var"), 0, 0, msg)
                }
                Some(at) => Diagnostic::at(&inv.path, *at, msg),
                None => Diagnostic::new(&inv.path, 0, 0, msg),
            }
        })?;
        let mut roles = Vec::new();
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        for role_name in &tier.roles {
            let role = self.roles.get(role_name).ok_or_else(|| {
                Diagnostic::new(&inv.path, 0, 0, format!("unknown role `{role_name}`"))
            })?;
            claim_dests(&mut owners, role, host)?;
            let mut vars = merge_vars(&role.defaults, &inv.vars, &tier.vars, &host.vars);
            // `--var KEY=VALUE`: above every other layer.
            for (k, v) in &inv.cli_vars {
                vars.insert(k.clone(), v.clone());
            }
            check_identifiers(inv, host, role, &vars)?;
            let ctx = tera_context(inv, host, db_primary, vars, secrets)?;
            let rctx = RenderCtx {
                tera: &self.tera,
                ctx: &ctx,
                templates_dir: &self.templates_dir,
                role,
                host,
                pki: inv.pki.as_ref(),
            };
            let mut desired = rctx.role(real)?;
            desired.release = rctx.release(inv, tier)?;
            if let (Some(_), Some(t)) = (&desired.release, &tier.release) {
                for p in &t.packages {
                    if !desired.packages.contains(p) {
                        desired.packages.push(p.clone());
                    }
                }
            }
            roles.push(desired);
        }
        if let Some(spec) = &tier.release
            && !roles.iter().any(|r| r.release.is_some())
        {
            return Err(Diagnostic::new(
                &inv.path,
                spec.line,
                spec.column,
                format!(
                    "tier `{}` has a release, but none of its roles ({}) deploys releases",
                    tier.name,
                    tier.roles.join(", ")
                ),
            )
            .with_hint(
                "the role that serves the application says `release: {root: ...}` in its role.yml",
            ));
        }
        Ok(DesiredHost {
            host: host.clone(),
            roles,
        })
    }
}

/// `{{ value | shell_quote }}`: a string or number as one word for a POSIX shell.
fn shell_quote(v: tera::Value, _: tera::Kwargs, _: &tera::State) -> tera::TeraResult<String> {
    if v.is_undefined() {
        Err(tera::Error::message(
            "the value given to shell_quote is not defined",
        ))
    } else if let Some(s) = v.as_str() {
        Ok(crate::shell::quote(s))
    } else if v.is_number() || v.is_bool() {
        Ok(crate::shell::quote(&v.to_string()))
    } else {
        Err(tera::Error::message(
            "shell_quote takes a string or a number",
        ))
    }
}

/// The vars `role` lists under `identifiers:`, as `host` sees them, are identifiers; an
/// error names the inventory line that sets the value (or the role's role.yml).
fn check_identifiers(
    inv: &Inventory,
    host: &Host,
    role: &Role,
    vars: &Map<String, Value>,
) -> Result<(), Diagnostic> {
    for name in &role.identifiers {
        let Some(v) = vars.get(name) else {
            continue; // undefined: rendering says so where it is used
        };
        if v.as_str().is_some_and(role::is_identifier) {
            continue;
        }
        let value = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let msg = format!(
            "var `{name}` is `{}`, not an identifier (role `{}` uses it as a name; host `{}`)",
            crate::inventory::shown(&value),
            role.name,
            host.name
        );
        let d = match inv.var_at.of(host, name) {
            _ if inv.cli_vars.contains_key(name) => Diagnostic::new(Path::new("--var"), 0, 0, msg),
            Some(at) => Diagnostic::at(&inv.path, at, msg),
            None => Diagnostic::new(&role.dir.join("role.yml"), 0, 0, msg),
        };
        return Err(d.with_hint(
            "use letters, digits and `_`, starting with a letter or `_`, at most 64 (e.g. foo_bar)",
        ));
    }
    Ok(())
}

/// Records which role writes each of `role`'s dests (and manages each of its directories,
/// links and absent paths) on `host`; a path an earlier role of the host has too is refused (each apply would flip the file and run both roles'
/// handlers).
fn claim_dests<'a>(
    owners: &mut BTreeMap<&'a str, &'a str>,
    role: &'a Role,
    host: &Host,
) -> Result<(), Diagnostic> {
    for f in &role.files {
        if let Some(other) = owners.insert(&f.dest, &role.name) {
            return Err(Diagnostic::at(
                &role.dir.join("role.yml"),
                f.dest_at,
                format!(
                    "dest `{}` is also written by role `{other}` on host `{}` (tier `{}`)",
                    f.dest, host.name, host.tier
                ),
            )
            .with_hint("a path on a host belongs to one role: drop it from one role, or give it another path"));
        }
    }
    for (path, at) in role.other_paths() {
        if let Some(other) = owners.insert(path, &role.name) {
            return Err(Diagnostic::at(
                &role.dir.join("role.yml"),
                at,
                format!(
                    "path `{path}` is also managed by role `{other}` on host `{}` (tier `{}`)",
                    host.name, host.tier
                ),
            )
            .with_hint("a path on a host belongs to one role: drop it from one role, or give it another path"));
        }
    }
    Ok(())
}

/// The Tera context of one role on one host: its merged vars and the built-in names.
fn tera_context(
    inv: &Inventory,
    host: &Host,
    db_primary: Option<&Host>,
    vars: Map<String, Value>,
    secrets: &BTreeMap<String, String>,
) -> Result<tera::Context, Diagnostic> {
    let mut ctx_map = context(inv, host, vars, secrets);
    // The database's primary as a host (var db_primary, else the first host with the
    // mysql role; null when no host has it).
    ctx_map.insert(
        "db_primary_host".into(),
        db_primary.map_or(Value::Null, |h| host_json(inv, h)),
    );
    tera::Context::from_serialize(&ctx_map).map_err(|e| {
        Diagnostic::new(
            &inv.path,
            0,
            0,
            format!(
                "host `{}`: vars cannot be used in templates: {e}",
                host.name
            ),
        )
    })
}

/// One role being rendered for one host.
struct RenderCtx<'a> {
    tera: &'a tera::Tera,
    ctx: &'a tera::Context,
    templates_dir: &'a Path,
    role: &'a Role,
    host: &'a Host,
    pki: Option<&'a Pki>,
}

impl RenderCtx<'_> {
    /// The role's desired state: its files, then its templated commands (handlers,
    /// health checks, tree validation, drift check), in that order.
    fn role(&self, real: &Secrets) -> Result<DesiredRole, Diagnostic> {
        let role = self.role;
        let files = role
            .files
            .iter()
            .map(|f| self.file(f, real))
            .collect::<Result<Vec<_>, Diagnostic>>()?;
        let handlers = role
            .handlers
            .iter()
            .map(|(n, c)| Ok((n.clone(), self.command(c)?)))
            .collect::<Result<Vec<_>, Diagnostic>>()?;
        let mut health = Vec::new();
        for h in &role.health {
            let mut h = h.clone();
            h.command = self.command(&h.command)?;
            health.push(h);
        }
        let validate = match &role.validate {
            Some(v) => Some(TreeValidate {
                tree: v.tree.clone(),
                command: self.command(&v.command)?,
            }),
            None => None,
        };
        let drift_check = role
            .drift_check
            .as_deref()
            .map(|c| self.command(c))
            .transpose()?;
        let certificates = role
            .certificates
            .iter()
            .map(|c| self.certificate(c))
            .collect::<Result<Vec<_>, Diagnostic>>()?;
        Ok(DesiredRole {
            directories: role
                .directories
                .iter()
                .map(|d| DesiredDir {
                    path: d.path.clone(),
                    owner: d.owner.clone(),
                    group: d.group.clone(),
                    mode: d.mode,
                })
                .collect(),
            links: role
                .links
                .iter()
                .map(|l| DesiredLink {
                    path: l.path.clone(),
                    target: l.target.clone(),
                    notify: l.notify.clone(),
                })
                .collect(),
            absent: role
                .absent
                .iter()
                .map(|a| DesiredAbsent {
                    path: a.path.clone(),
                    notify: a.notify.clone(),
                })
                .collect(),
            certificates,
            drift_check,
            release: None,
            name: role.name.clone(),
            packages: role.packages.clone(),
            service: role.service.clone(),
            files,
            validate,
            handlers,
            health,
        })
    }

    /// The role's release on this host: its role.yml's `release:` with the tier's (the
    /// source's code is attached later, once per run). Its packages join the role's.
    fn release(&self, inv: &Inventory, tier: &Tier) -> Result<Option<DesiredRelease>, Diagnostic> {
        let Some(spec) = &self.role.release else {
            return Ok(None);
        };
        let Some(tier_release) = &tier.release else {
            return Err(Diagnostic::at(
                &self.role.dir.join("role.yml"),
                spec.at,
                format!(
                    "role `{}` deploys releases, but tier `{}` has no `release:` saying which code",
                    self.role.name, tier.name
                ),
            )
            .with_hint(format!(
                "add to tier `{}` in {}: `release: {{source: path/to/app}}`",
                tier.name,
                inv.path.display()
            )));
        };
        let health = match &spec.health {
            Some(h) => {
                let mut h = h.clone();
                h.command = self.command(&h.command)?;
                Some(h)
            }
            None => None,
        };
        Ok(Some(DesiredRelease {
            spec: spec.clone(),
            health,
            keep: tier_release.keep,
            migrate: tier_release.migrate.clone(),
            target: match &tier_release.pin {
                Some(id) => Target::Pin(id.clone()),
                None => Target::Source,
            },
            bundle: None,
        }))
    }

    /// One file: its content (a rendered template or a static file), then its validator.
    /// It is sensitive when its template (or one it includes or extends) reads `secrets`
    /// (whatever filters changed the value on its way), when it holds a secret's value,
    /// or is not text.
    fn file(&self, f: &RoleFile, real: &Secrets) -> Result<DesiredFile, Diagnostic> {
        let mut reads_secrets = false;
        let content = match &f.source {
            Source::Template(name) => {
                let text = self
                    .tera
                    .render(name, self.ctx)
                    .map_err(|e| tera_diag(self.templates_dir, &e, Some(&self.host.name)))?;
                reads_secrets = self.reads_secrets(name);
                text.into_bytes()
            }
            Source::Static(p) => {
                let path = self.role.dir.join("files").join(p);
                std::fs::read(&path)
                    .map_err(|e| Diagnostic::new(&path, 0, 0, format!("cannot read: {e}")))?
            }
        };
        let sensitive = reads_secrets
            || std::str::from_utf8(&content)
                .map(|t| real.appears_in(t))
                .unwrap_or(true);
        let mut file = DesiredFile::new(
            f.dest.clone(),
            content,
            f.owner.clone(),
            f.group.clone(),
            f.mode,
            f.notify.clone(),
            f.validate.as_deref().map(|v| self.command(v)).transpose()?,
            sensitive,
        );
        file.shared_dir = f.shared_dir;
        file.restart_if_changed = f.restart_if_changed.clone();
        Ok(file)
    }

    /// Whether template `name`, its includes or its parents read `secrets` (or the whole
    /// context); when Tera cannot tell, it is taken to.
    fn reads_secrets(&self, name: &str) -> bool {
        self.tera
            .get_template_variables(name)
            .map(|vars| vars.contains("secrets") || vars.contains("__tera_context"))
            .unwrap_or(true)
    }

    /// A certificate for this host: its names rendered and checked (DNS names or IP
    /// addresses, duplicates dropped; the first is the common name), the lifetime from the
    /// inventory's `pki:`.
    fn certificate(&self, c: &RoleCertificate) -> Result<DesiredCert, Diagnostic> {
        let role_yml = self.role.dir.join("role.yml");
        let Some(pki) = self.pki else {
            return Err(Diagnostic::at(
                &role_yml,
                c.at,
                format!(
                    "role `{}` issues the certificate {} (host `{}`), but the inventory has no `pki:`",
                    self.role.name, c.cert, self.host.name
                ),
            )
            .with_hint(
                "add `pki: {ca: internal_ca, ca_key: internal_ca_key}` to the inventory, both declared under `secrets:`",
            ));
        };
        let mut sans: Vec<San> = Vec::new();
        for n in &c.names {
            let text = self
                .tera
                .render_str(n, self.ctx, false)
                .map_err(|e| tera_diag(self.templates_dir, &e, Some(&self.host.name)))?;
            let san = San::parse(text.trim()).map_err(|e| {
                Diagnostic::at(
                    &role_yml,
                    c.at,
                    format!(
                        "certificate {} (host `{}`): name `{n}`: {e}",
                        c.cert, self.host.name
                    ),
                )
            })?;
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let common_name = match sans.first() {
            Some(San::Dns(d)) => d.clone(),
            Some(San::Ip(ip)) => ip.to_string(),
            None => {
                return Err(Diagnostic::at(
                    &role_yml,
                    c.at,
                    format!("certificate {}: `names` is empty", c.cert),
                ));
            }
        };
        Ok(DesiredCert {
            cert: c.cert.clone(),
            key: c.key.clone(),
            owner: c.owner.clone(),
            group: c.group.clone(),
            spec: CertSpec {
                common_name,
                sans,
                validity_days: pki.validity_days,
            },
            notify: c.notify.clone(),
        })
    }

    /// Commands in role.yml (validators, handlers, health checks) may use vars too.
    fn command(&self, cmd: &str) -> Result<String, Diagnostic> {
        if !cmd.contains("{{") && !cmd.contains("{%") {
            return Ok(cmd.to_string());
        }
        self.tera.render_str(cmd, self.ctx, false).map_err(|e| {
            let d = tera_diag(self.templates_dir, &e, Some(&self.host.name));
            Diagnostic::new(
                &self.role.dir.join("role.yml"),
                0,
                0,
                format!("in command `{cmd}`: {}", d.message),
            )
        })
    }
}

/// Variable precedence, lowest first: role defaults < inventory vars < tier vars < host vars.
fn merge_vars(
    role_defaults: &Map<String, Value>,
    inventory: &Map<String, Value>,
    tier: &Map<String, Value>,
    host: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for layer in [role_defaults, inventory, tier, host] {
        for (k, v) in layer {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// A host as templates see it. `roles` are its tier's roles, in order: templates derive
/// from them what runs where (which exporters Prometheus scrapes, which ports a firewall
/// opens to the monitoring hosts). `address` is always an IP address (a name written in
/// the inventory is resolved once per run); `hostname` is that name, or none.
fn host_json(inv: &Inventory, h: &Host) -> Value {
    let roles = inv.tier(&h.tier).map_or(&[][..], |t| t.roles.as_slice());
    json!({
        "name": h.name,
        "address": h.address.to_string(),
        "hostname": h.hostname,
        "tier": h.tier,
        "roles": roles,
        "ssh_port": h.port,
        "vars": h.vars,
    })
}

/// The template context: merged vars at the top level plus the built-in names.
fn context(
    inv: &Inventory,
    host: &Host,
    vars: Map<String, Value>,
    secrets: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut ctx = vars;
    ctx.insert("domain".into(), json!(inv.domain));
    // `vip`: the first VIP (the only one when active-passive); `vips`: every VIP, in the
    // inventory's order (two when active-active).
    ctx.insert("vip".into(), json!(inv.vip().map(|v| v.to_string())));
    ctx.insert(
        "vips".into(),
        json!(inv.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
    );
    // The internal CA's secret's name (`secrets[pki.ca]` is its certificate bundle).
    ctx.insert(
        "pki".into(),
        json!(inv.pki.as_ref().map(|p| json!({"ca": p.ca}))),
    );
    ctx.insert("host".into(), host_json(inv, host));
    ctx.insert(
        "hosts".into(),
        Value::Array(inv.hosts.iter().map(|h| host_json(inv, h)).collect()),
    );
    let mut tiers = Map::new();
    for t in &inv.tiers {
        tiers.insert(
            t.name.clone(),
            Value::Array(inv.hosts_of(&t.name).map(|h| host_json(inv, h)).collect()),
        );
    }
    ctx.insert("tiers".into(), Value::Object(tiers));
    ctx.insert("admin_networks".into(), json!(inv.admin_networks));
    ctx.insert("secrets".into(), json!(secrets));
    ctx
}

fn collect_templates(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, String)>,
) -> Result<(), Diagnostic> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(dir, 0, 0, format!("cannot read templates folder: {e}")))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_templates(base, &p, out)?;
        } else if p.is_file() {
            let name = p
                .strip_prefix(base)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Diagnostic::new(&p, 0, 0, format!("cannot read template: {e}")))?;
            out.push((name, text));
        }
    }
    Ok(())
}

/// A Tera error as a located diagnostic: templates/NAME:LINE:COL: message.
fn tera_diag(templates_dir: &Path, e: &tera::Error, host: Option<&str>) -> Diagnostic {
    let for_host = host
        .map(|h| format!(" (rendering for host `{h}`)"))
        .unwrap_or_default();
    match e.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            let file = if r.filename().is_empty() {
                templates_dir.to_path_buf()
            } else {
                templates_dir.join(r.filename())
            };
            let span = r.span();
            let mut d = Diagnostic::new(
                &file,
                span.start_line as u64,
                span.start_col as u64 + 1,
                format!("{}{for_host}", r.message()),
            );
            if r.message().contains("is not defined") || r.message().contains("undefined") {
                d.hint = Some("define the variable in the inventory (vars, tier vars or host vars) or in the role's defaults".into());
            }
            d
        }
        tera::ErrorKind::CircularInclude { tpl, include_chain } => Diagnostic::new(
            &templates_dir.join(tpl),
            0,
            0,
            format!("include loop: {}", include_chain.join(" -> ")),
        )
        .with_hint("break the cycle of {% include %} between these templates"),
        tera::ErrorKind::CircularExtend {
            tpl,
            inheritance_chain,
        } => Diagnostic::new(
            &templates_dir.join(tpl),
            0,
            0,
            format!("extends loop: {}", inheritance_chain.join(" -> ")),
        ),
        tera::ErrorKind::MissingParent { current, parent } => Diagnostic::new(
            &templates_dir.join(current),
            0,
            0,
            format!("extends `{parent}`, which does not exist under templates/"),
        ),
        _ => report_diag(templates_dir, e, &for_host),
    }
}

/// Any other Tera error. Tera renders some (unknown filter, missing include) as a
/// report: "error: MESSAGE\n --> NAME:LINE:COL\n ...": the position is taken from it;
/// else the whole chain of causes, without a position.
fn report_diag(templates_dir: &Path, e: &tera::Error, for_host: &str) -> Diagnostic {
    let text = e.to_string();
    if let Some(pos) = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
    {
        let mut parts = pos.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.trim().parse::<u64>().ok());
        let line = parts.next().and_then(|l| l.trim().parse::<u64>().ok());
        if let (Some(col), Some(line), Some(name)) = (col, line, parts.next()) {
            let first = text.lines().next().unwrap_or("template error");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return Diagnostic::new(
                &templates_dir.join(name.trim()),
                line,
                col,
                format!("{first}{for_host}"),
            );
        }
    }
    let mut msg = text;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Diagnostic::new(templates_dir, 0, 0, format!("{msg}{for_host}"))
}

#[cfg(test)]
mod hostile_values;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// inventories/lab.yml and the repository's roles: its inventory and every host
    /// rendered with placeholder secrets (the in-process benchmark's hosts).
    pub(crate) fn lab_rendered() -> (Inventory, Vec<DesiredHost>) {
        let (project, inv) = lab(str::to_string).expect("the lab loads");
        let hosts = render_all(&project, &inv).expect("the lab renders");
        (inv, hosts)
    }

    /// A project on disk: `files` are (path under the root, content); the inventory is
    /// one `web` tier with host web1 running role `web`, plus `inventory_extra`.
    struct TestProject {
        _dir: tempfile::TempDir,
        project: Project,
        inv: Inventory,
    }

    fn test_project(
        files: &[(&str, &str)],
        inventory_extra: &str,
    ) -> Result<TestProject, Diagnostic> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (p, content) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, content).expect("write");
        }
        std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
        let project = Project::load(dir.path())?;
        let text = format!(
            "domain: www.example.test\ntiers:\n  web:\n    roles: [web]\nhosts:\n  web1:\n    address: 127.0.0.1\n    tier: web\nsecrets:\n  pw:\n    env: PW\n{inventory_extra}"
        );
        let inv =
            crate::inventory::parse(&dir.path().join("inv.yml"), &text, &project.role_names())?;
        Ok(TestProject {
            _dir: dir,
            project,
            inv,
        })
    }

    impl TestProject {
        /// web1's desired state with `secret` as the value of `secrets.pw`.
        fn render(&self, secret: &str) -> Result<DesiredHost, Diagnostic> {
            let real = Secrets::from_pairs(&[("pw", secret)]);
            self.project
                .render_host(&self.inv, &self.inv.hosts[0], real.values(), &real)
        }
    }

    /// Issue 10, finding 6: with the secret `p<w"d&secret99`, a template using
    /// `| escape_xml`, `| upper`, `| replace(...)` or `| truncate` made a file that was not
    /// marked sensitive, and its diff was printed.
    #[test]
    fn a_file_whose_template_reads_secrets_is_sensitive_whatever_the_filters() {
        for expr in [
            "secrets.pw | escape_xml",
            "secrets.pw | upper",
            "secrets.pw | replace(from=\"&\", to=\"and\")",
            "secrets.pw | truncate(length=4)",
        ] {
            let role = "files:\n  - template: web/a.tera\n    dest: /etc/a\n";
            let t = test_project(
                &[
                    ("roles/web/role.yml", role),
                    ("templates/web/a.tera", &format!("pw {{{{ {expr} }}}}\n")),
                ],
                "",
            )
            .expect("loads");
            let d = t.render("p<w\"d&secret99").expect("renders");
            let f = &d.roles[0].files[0];
            assert!(
                f.sensitive,
                "{expr}: {}",
                String::from_utf8_lossy(&f.content)
            );
        }
        // Through an include too; a template that reads no secret is not sensitive.
        let role = "files:\n  - template: web/a.tera\n    dest: /etc/a\n  - template: web/c.tera\n    dest: /etc/c\n";
        let t = test_project(
            &[
                ("roles/web/role.yml", role),
                ("templates/web/a.tera", "{% include \"web/b.tera\" %}"),
                ("templates/web/b.tera", "{{ secrets.pw | lower }}"),
                ("templates/web/c.tera", "{{ domain }}"),
            ],
            "",
        )
        .expect("loads");
        let d = t.render("p<w\"d&secret99").expect("renders");
        let sensitive: Vec<bool> = d.roles[0].files.iter().map(|f| f.sensitive).collect();
        assert_eq!(sensitive, vec![true, false]);
    }

    fn m(pairs: &[(&str, i64)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }

    /// The repository's own project (roles/, templates/) and inventories/lab.yml with
    /// `edit` applied to its text.
    fn lab(edit: impl Fn(&str) -> String) -> Result<(Project, Inventory), Diagnostic> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = Project::load(root)?;
        let path = root.join("inventories/lab.yml");
        let text = std::fs::read_to_string(&path).expect("lab.yml");
        let inv = crate::inventory::parse(&path, &edit(&text), &project.role_names())?;
        Ok((project, inv))
    }

    /// Every host of `inv` rendered with placeholder secrets, as `check` does.
    pub(super) fn render_all(
        project: &Project,
        inv: &Inventory,
    ) -> Result<Vec<DesiredHost>, Diagnostic> {
        let values = inv
            .secrets
            .iter()
            .map(|s| (s.name.clone(), format!("<secret:{}>", s.name)))
            .collect();
        let real = Secrets::default();
        inv.hosts
            .iter()
            .map(|h| project.render_host(inv, h, &values, &real))
            .collect()
    }

    /// Every lab host's certificates carry its name, its tier's name and its address, for
    /// the inventory's lifetime; without `pki:` the roles that issue certificates refuse to
    /// render, naming the role and what to add.
    #[test]
    fn certificates_render_with_the_hosts_names_and_need_a_pki() {
        let (project, inv) =
            lab(|t| t.replace("  validity: 90 ", "  validity: 45 ")).expect("loads");
        let hosts = render_all(&project, &inv).expect("renders");
        let web1 = hosts.iter().find(|h| h.host.name == "web1").expect("web1");
        let nginx = web1
            .roles
            .iter()
            .find(|r| r.name == "nginx")
            .expect("nginx");
        let spec = &nginx.certificates[0].spec;
        let names: Vec<String> = spec.sans.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["DNS:web1", "DNS:web", "IP:172.30.77.21"]);
        assert_eq!(
            (spec.common_name.as_str(), spec.validity_days),
            ("web1", 45)
        );

        let without = |t: &str| {
            let start = t.find("\npki:\n").expect("pki");
            let end = t[start + 1..].find("\n\n").expect("end") + start + 1;
            format!("{}{}", &t[..start], &t[end..])
        };
        let (project, inv) = lab(without).expect("loads");
        let e = render_all(&project, &inv)
            .map(|_| ())
            .expect_err("no pki")
            .to_string();
        assert!(
            e.contains("the pki role needs the inventory's `pki:`"),
            "{e}"
        );
        // Without the pki role too: the first role issuing a certificate says it.
        let (project, inv) =
            lab(|t| without(t).replace("firewall, pki, ", "firewall, ")).expect("loads");
        let e = render_all(&project, &inv)
            .map(|_| ())
            .expect_err("no pki")
            .to_string();
        assert!(
            e.contains("role `haproxy` issues the certificate /etc/haproxy/internal/client.crt (host `lb1`), but the inventory has no `pki:`"),
            "{e}"
        );
    }

    /// Issue 10, finding 2: `db_name: foo-bar` passed `check` and rendered
    /// `FROM foo-bar.visits`: the mysql health check failed and the role was rolled back on
    /// every apply. An identifier var is refused at the inventory line that sets it.
    #[test]
    fn identifier_vars_are_identifiers() {
        let (project, inv) =
            lab(|t| t.replace("  db_name: foobar ", "  db_name: foo-bar")).expect("loads");
        let e = render_all(&project, &inv)
            .map(|_| ())
            .expect_err("foo-bar is refused")
            .to_string();
        // The line that sets db_name, wherever the lab puts it.
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/lab.yml"),
        )
        .expect("lab.yml");
        let line = text
            .lines()
            .position(|l| l.starts_with("  db_name: foobar "))
            .expect("lab.yml sets db_name")
            + 1;
        let want =
            format!("inventories/lab.yml:{line}:3: var `db_name` is `foo-bar`, not an identifier");
        assert!(e.contains(&want), "{e}");
        assert!(e.contains("hint: "), "{e}");
        let (project, inv) = lab(|t| t.to_string()).expect("loads");
        render_all(&project, &inv).expect("the lab renders");
    }

    /// keepalived.conf of `host` in the lab with `edit` applied, or the rendering error.
    fn keepalived_conf(edit: impl Fn(&str) -> String, host: &str) -> Result<String, String> {
        let (project, inv) = lab(edit).map_err(|e| e.to_string())?;
        let hosts = render_all(&project, &inv).map_err(|e| e.to_string())?;
        let h = hosts
            .iter()
            .find(|d| d.host.name == host)
            .ok_or("no such host")?;
        let file = h
            .roles
            .iter()
            .flat_map(|r| &r.files)
            .find(|f| f.dest == "/etc/keepalived/keepalived.conf")
            .ok_or("no keepalived.conf")?;
        Ok(String::from_utf8_lossy(&file.content).into_owned())
    }

    /// Active-active: one vrrp_instance per VIP, router ids 51 and 52, lb1 (150) master of
    /// the first and lb2 of the second (priorities swapped); the lab's default is one VIP,
    /// VRRPv3 without authentication.
    #[test]
    fn keepalived_renders_one_instance_per_vip_with_swapped_priorities() {
        let aa = |t: &str| t.replace("vip: 172.30.77.10\n", "vip: [172.30.77.10, 172.30.77.9]\n");
        let instances = |conf: &str| -> Vec<(String, String, String)> {
            conf.split("vrrp_instance ")
                .skip(1)
                .map(|block| {
                    let field = |k: &str| {
                        block
                            .lines()
                            .find_map(|l| l.trim().strip_prefix(k))
                            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                            .unwrap_or_default()
                    };
                    let vip = block
                        .lines()
                        .find(|l| l.contains("/24 dev"))
                        .map(|l| l.trim().to_string())
                        .unwrap_or_default();
                    (field("virtual_router_id "), field("priority "), vip)
                })
                .collect()
        };
        let lb1 = keepalived_conf(aa, "lb1").expect("lb1 renders");
        let lb2 = keepalived_conf(aa, "lb2").expect("lb2 renders");
        let inst = |id: &str, prio: &str, vip: &str| {
            (
                id.to_string(),
                prio.to_string(),
                format!("{vip}/24 dev eth0"),
            )
        };
        assert_eq!(
            instances(&lb1),
            [
                inst("51", "150", "172.30.77.10"),
                inst("52", "100", "172.30.77.9")
            ],
            "{lb1}"
        );
        assert_eq!(
            instances(&lb2),
            [
                inst("51", "100", "172.30.77.10"),
                inst("52", "150", "172.30.77.9")
            ],
            "{lb2}"
        );
        // Only the first instance notifies the VIP metric (one state file).
        assert_eq!(
            lb1.matches("notify /usr/local/sbin/foobar-vip-metric")
                .count(),
            1
        );

        let one = keepalived_conf(|t| t.to_string(), "lb1").expect("the lab renders");
        assert_eq!(instances(&one), [inst("51", "150", "172.30.77.10")]);
        assert!(one.contains("vrrp_version 3"), "{one}");
        assert!(one.contains("advert_int 0.2"), "{one}");
        assert!(!one.contains("authentication"), "VRRPv3 has none: {one}");

        // Equal priorities cannot say who is master of which VIP.
        let same = |t: &str| aa(t).replace("vrrp_priority: 100", "vrrp_priority: 150");
        let e = keepalived_conf(same, "lb1").expect_err("refused");
        assert!(e.contains("vrrp_priority must differ"), "{e}");
    }

    /// VRRPv2 keeps PASS authentication and whole-second adverts.
    #[test]
    fn keepalived_version_2_authenticates_and_wants_whole_seconds() {
        // The lab runs VRRPv3 and declares no vrrp_auth: version 2 adds it.
        let v2 = |extra: &'static str| {
            move |t: &str| {
                t.replace("\nvars:\n", &format!("\nvars:\n  vrrp_version: 2\n{extra}"))
                    .replace(
                        "\nsecrets:\n",
                        "\nsecrets:\n  vrrp_auth:\n    env: VRRP_AUTH\n",
                    )
            }
        };
        let conf = keepalived_conf(v2("  vrrp_advert_int: 1\n"), "lb2").expect("renders");
        assert!(conf.contains("vrrp_version 2"), "{conf}");
        assert!(conf.contains("auth_type PASS"), "{conf}");
        assert!(conf.contains("auth_pass <secret:vrrp_auth>"), "{conf}");
        let e = keepalived_conf(v2("  vrrp_advert_int: 0.5\n"), "lb2").expect_err("refused");
        assert!(e.contains("whole seconds with vrrp_version 2"), "{e}");
        let no_secret = |t: &str| {
            t.replace(
                "\nvars:\n",
                "\nvars:\n  vrrp_version: 2\n  vrrp_advert_int: 1\n",
            )
        };
        let e = keepalived_conf(no_secret, "lb2").expect_err("refused");
        assert!(
            e.contains("vrrp_version 2 authenticates with the secret vrrp_auth"),
            "{e}"
        );
        let e = keepalived_conf(
            |t: &str| t.replace("\nvars:\n", "\nvars:\n  vrrp_version: 4\n"),
            "lb2",
        )
        .expect_err("refused");
        assert!(e.contains("vrrp_version must be 2 or 3"), "{e}");
    }

    #[test]
    fn precedence_is_role_inventory_tier_host() {
        let merged = merge_vars(
            &m(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]),
            &m(&[("b", 2), ("c", 2), ("d", 2)]),
            &m(&[("c", 3), ("d", 3)]),
            &m(&[("d", 4)]),
        );
        assert_eq!(merged, m(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]));
    }

    #[test]
    fn tera_errors_carry_file_line_and_column() {
        let mut t = tera::Tera::default();
        let e = t
            .add_raw_templates(vec![("web/x.conf.tera", "line one\n  {{ oops ")])
            .expect_err("syntax error");
        let d = tera_diag(Path::new("templates"), &e, None);
        assert_eq!(d.file, Path::new("templates/web/x.conf.tera"));
        assert_eq!(d.line, 2, "{d}");

        let mut t = tera::Tera::default();
        t.add_raw_templates(vec![("a.tera", "ok\n{{ missing_var }}\n")])
            .expect("parses");
        let e = t
            .render("a.tera", &tera::Context::new())
            .expect_err("undefined");
        let d = tera_diag(Path::new("templates"), &e, Some("web1"));
        assert_eq!(
            (d.line, d.file.clone()),
            (2, PathBuf::from("templates/a.tera")),
            "{d}"
        );
        assert!(d.message.contains("web1"), "{d}");
    }

    const INVENTORY: &str = "\
domain: www.example.org
vip: 10.0.0.10
ssh:
  user: deploy
admin_networks: [10.9.0.0/16]
vars:
  a: inventory
  domain: shadowed
tiers:
  web:
    roles: [nginx]
    vars:
      a: tier
  lb:
    roles: [haproxy]
    vip: true
hosts:
  lb1:
    address: 10.0.0.11
    tier: lb
  web1:
    address: 10.0.0.21
    tier: web
    port: 2222
  web2:
    address: 10.0.0.22
    tier: web
    vars:
      a: host
";

    fn inventory() -> Inventory {
        let roles = vec!["nginx".to_string(), "haproxy".to_string()];
        crate::inventory::parse(Path::new("inv.yml"), INVENTORY, &roles).expect("valid")
    }

    /// A host written as a name: templates see its resolved IP as `address` and the name
    /// as `hostname`.
    #[test]
    fn a_host_written_as_a_name_shows_its_ip_as_address_and_the_name_as_hostname() {
        let mut inv = inventory();
        inv.hosts[1].hostname = Some("web1.example.org".into());
        let vars = merge_vars(&Map::new(), &inv.vars, &Map::new(), &Map::new());
        let ctx = context(&inv, &inv.hosts[1], vars, &BTreeMap::new());
        assert_eq!(ctx["host"]["address"], json!("10.0.0.21"));
        assert_eq!(ctx["host"]["hostname"], json!("web1.example.org"));
        assert_eq!(
            ctx["tiers"]["web"][0]["hostname"],
            json!("web1.example.org")
        );
        assert_eq!(ctx["hosts"][2]["hostname"], json!(null));
    }

    #[test]
    fn context_has_the_built_in_names_and_they_win_over_vars() {
        let inv = inventory();
        let secrets: BTreeMap<String, String> = [("pw".to_string(), "s".to_string())].into();
        let vars = merge_vars(&Map::new(), &inv.vars, &Map::new(), &Map::new());
        let ctx = context(&inv, &inv.hosts[1], vars, &secrets);
        assert_eq!(ctx["a"], json!("inventory"));
        assert_eq!(ctx["domain"], json!("www.example.org"));
        assert_eq!(ctx["vip"], json!("10.0.0.10"));
        assert_eq!(ctx["vips"], json!(["10.0.0.10"]));
        assert_eq!(ctx["admin_networks"], json!(["10.9.0.0/16"]));
        assert_eq!(ctx["secrets"], json!({"pw": "s"}));
        assert_eq!(
            ctx["host"],
            json!({"name": "web1", "address": "10.0.0.21", "hostname": null, "tier": "web", "roles": ["nginx"], "ssh_port": 2222, "vars": {}})
        );
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|h| h["name"].to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(names(&ctx["hosts"]), ["\"lb1\"", "\"web1\"", "\"web2\""]);
        assert_eq!(names(&ctx["tiers"]["web"]), ["\"web1\"", "\"web2\""]);
        assert_eq!(names(&ctx["tiers"]["lb"]), ["\"lb1\""]);
        // Each host carries its tier's roles (what runs where: Prometheus's scrape jobs,
        // the exporter ports a firewall opens to the monitoring hosts).
        assert_eq!(ctx["hosts"][0]["roles"], json!(["haproxy"]));
        assert_eq!(ctx["tiers"]["web"][1]["roles"], json!(["nginx"]));
    }

    #[test]
    fn each_layer_wins_over_the_ones_below_it() {
        let inv = inventory();
        let role = m(&[("a", 0)]);
        let web = inv.tier("web").expect("tier").vars.clone();
        // (host, value of `a`)
        for (host, want) in [(0, json!(0)), (1, json!("tier")), (2, json!("host"))] {
            let h = &inv.hosts[host];
            let tier = if h.tier == "web" {
                web.clone()
            } else {
                Map::new()
            };
            let role = if host == 0 { role.clone() } else { m(&[]) };
            let inv_vars = if host == 0 {
                Map::new()
            } else {
                inv.vars.clone()
            };
            let merged = merge_vars(&role, &inv_vars, &tier, &h.vars);
            assert_eq!(merged["a"], want, "{}", h.name);
        }
    }

    #[test]
    fn the_project_root_holds_roles_and_templates() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = find_root(&here.join("inventories/lab.yml")).expect("found");
        assert_eq!(root, std::fs::canonicalize(here).expect("canonical"));
        // A folder with roles/ but no templates/ is not a root.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("roles")).expect("mkdir");
        std::fs::write(dir.path().join("inv.yml"), "").expect("write");
        let found = find_root(&dir.path().join("inv.yml"));
        assert_ne!(found.as_deref(), Some(dir.path()));
        assert_eq!(find_root(&dir.path().join("missing.yml")), None);
    }

    /// What a saved plan hashes: the roles' role.yml and static files of the roles used
    /// only, every template (any may be included by another), sorted, relative to the
    /// project folder.
    #[test]
    fn inputs_are_the_roles_files_used_and_every_template() {
        let t = test_project(
            &[
                (
                    "roles/web/role.yml",
                    "files:\n  - template: web/site.conf.tera\n    dest: /etc/site.conf\n  - src: index.html\n    dest: /var/www/index.html\n",
                ),
                ("roles/web/files/index.html", "<p>hi</p>\n"),
                ("roles/other/role.yml", "files:\n  - src: x\n    dest: /etc/x\n"),
                ("roles/other/files/x", "x\n"),
                ("templates/web/site.conf.tera", "{% include \"common/part.tera\" %}\n"),
                ("templates/common/part.tera", "part\n"),
            ],
            "",
        )
        .expect("loads");
        let inputs: Vec<(&str, String)> = t
            .project
            .inputs(&["web"])
            .into_iter()
            .map(|f| (f.kind, f.relative))
            .collect();
        assert_eq!(
            inputs,
            [
                ("static", "roles/web/files/index.html".to_string()),
                ("role", "roles/web/role.yml".to_string()),
                ("template", "templates/common/part.tera".to_string()),
                ("template", "templates/web/site.conf.tera".to_string()),
            ]
        );
    }

    /// A project with one role `web` on disk: a template under a sub-folder, role
    /// defaults, and handlers with and without template syntax.
    fn project_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("roles/web")).expect("mkdir");
        std::fs::create_dir_all(root.join("templates/web/sub")).expect("mkdir");
        std::fs::write(
            root.join("roles/web/role.yml"),
            "defaults:\n  a: role\n  b: role\nfiles:\n  - template: web/sub/site.conf.tera\n    dest: /etc/site.conf\n    notify: verbatim\nhandlers:\n  verbatim: echo ${#x}\n  expr: echo {{ a | shell_quote }}\n  tag: \"{% if b == 'role' %}echo b{% endif %}\"\n",
        )
        .expect("write");
        std::fs::write(
            root.join("templates/web/sub/site.conf.tera"),
            "a={{ a }} b={{ b }} host={{ host.name }} tier={{ tiers.web | length }}\n",
        )
        .expect("write");
        dir
    }

    #[test]
    fn a_project_renders_templates_and_templated_commands() {
        let dir = project_dir();
        let project = Project::load(dir.path()).expect("loads");
        assert_eq!(project.role_names(), ["web"]);
        let inv = crate::inventory::parse(
            Path::new("inv.yml"),
            "domain: a.example\ntiers:\n  web:\n    roles: [web]\nhosts:\n  web1:\n    address: 10.0.0.1\n    tier: web\n    vars:\n      a: host\n",
            &["web".to_string()],
        )
        .expect("valid");
        let d = project
            .render_host(&inv, &inv.hosts[0], &BTreeMap::new(), &Secrets::default())
            .expect("renders");
        let role = &d.roles[0];
        assert_eq!(
            String::from_utf8_lossy(&role.files[0].content),
            "a=host b=role host=web1 tier=1\n"
        );
        // Without `{{` or `{%` a command is kept as written (`${#x}` is not a Tera comment).
        assert_eq!(
            role.handlers,
            [
                ("verbatim".to_string(), "echo ${#x}".to_string()),
                ("expr".to_string(), "echo host".to_string()),
                ("tag".to_string(), "echo b".to_string()),
            ]
        );
    }

    #[test]
    fn undefined_variables_get_a_hint_and_a_1_based_column() {
        for (template, line, column) in [
            ("ok\n  {{ missing_var }}\n", 2, 6),
            ("{% for x in nope %}{% endfor %}", 1, 13),
        ] {
            let mut t = tera::Tera::default();
            t.add_raw_templates(vec![("a.tera", template)])
                .expect("parses");
            let e = t
                .render("a.tera", &tera::Context::new())
                .expect_err("undefined");
            let d = tera_diag(Path::new("templates"), &e, None);
            assert_eq!((d.line, d.column), (line, column), "{template}: {d}");
            assert!(d.hint.is_some(), "{template}: {d}");
        }
    }

    #[test]
    fn inheritance_and_include_errors_name_the_template() {
        let load = |templates: Vec<(&str, &str)>| {
            let mut t = tera::Tera::default();
            let e = match t.add_raw_templates(templates) {
                Err(e) => e,
                Ok(()) => t
                    .render("a.tera", &tera::Context::new())
                    .expect_err("fails"),
            };
            tera_diag(Path::new("templates"), &e, None)
        };
        let d = load(vec![("a.tera", "{% extends \"nope.tera\" %}")]);
        assert_eq!(d.file, Path::new("templates/a.tera"));
        assert!(d.message.contains("extends `nope.tera`"), "{d}");
        let d = load(vec![
            ("a.tera", "{% extends \"b.tera\" %}"),
            ("b.tera", "{% extends \"a.tera\" %}"),
        ]);
        assert!(d.message.starts_with("extends loop: "), "{d}");
        let d = load(vec![
            ("a.tera", "{% include \"b.tera\" %}"),
            ("b.tera", "{% include \"a.tera\" %}"),
        ]);
        assert!(d.message.starts_with("include loop: "), "{d}");
    }
}
