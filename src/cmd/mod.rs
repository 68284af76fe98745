//! The subcommands, one file each, from a parsed command line to an exit code.
//!
//! Every command returns `anyhow::Result<i32>`: the exit code it chose, or an error.
//! [`run`] is the one place that turns an error into exit code 1 and prints it (with
//! its causes). Errors inside the pipeline are typed per stage ([`Diagnostic`] for input,
//! `transport::SshError`, `report::Failure` per host); anyhow only
//! carries them to here.

mod check;
mod db;
mod hosts;
mod interrupt;
mod live;
mod reach;
mod render;
mod roles;
mod shell_help;
mod status;
mod trust;
mod vars;

use crate::cli::{Cli, Command, Common, DbCommand};
use crate::desired::DesiredHost;
use crate::diag::Diagnostic;
use crate::inventory::{self, Host, Inventory};
use crate::pki::Ca;
use crate::release::{Bundle, Target};
use crate::render::{Project, find_root};
use crate::secrets::Secrets;
use crate::transport::SshOptions;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Success: nothing to change (plan), converged (apply), done (offline commands).
pub const EXIT_OK: i32 = 0;
/// Any failure: bad input, unreachable host, failed validation or health check.
pub const EXIT_FAIL: i32 = 1;
/// `plan` found changes.
pub const EXIT_CHANGES: i32 = 2;
/// A second Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_ABORTED: i32 = 130;

/// Runs the command; returns the process's exit code.
pub async fn run(cli: Cli) -> i32 {
    crate::progress::set_color(cli.color);
    if let Err(e) = markdown_only_for_plan(&cli.command) {
        eprintln!("error: {e:#}");
        return EXIT_FAIL;
    }
    let result = match cli.command {
        Command::Check(c) => check::check(&c),
        Command::Render {
            common,
            out,
            reveal_secrets,
            replace,
        } => render::render(&common, &out, reveal_secrets, replace),
        Command::Hosts(c) => hosts::hosts(&c),
        Command::Status(c) => status::status(&c).await,
        Command::Trust {
            common,
            fingerprint,
        } => trust::trust(&common, fingerprint.as_deref()).await,
        Command::Plan(p) => live::plan(&p).await,
        Command::Apply(a) => live::apply(&a).await,
        Command::Rollback(r) => live::rollback(&r).await,
        Command::Db(d) => db::db(&d).await,
        Command::Completions { shell } => shell_help::completions(shell),
        Command::Man { out } => shell_help::man(out.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            annotate(&e);
            eprintln!("error: {e:#}");
            EXIT_FAIL
        }
    }
}

/// `--format markdown` is a pull-request comment of a plan: other commands refuse it.
fn markdown_only_for_plan(command: &Command) -> anyhow::Result<()> {
    let (name, common) = match command {
        Command::Plan(_) => return Ok(()),
        Command::Check(c) => ("check", c),
        Command::Hosts(c) => ("hosts", c),
        Command::Status(c) => ("status", c),
        Command::Render { common, .. } => ("render", common),
        Command::Trust { common, .. } => ("trust", common),
        Command::Apply(a) => ("apply", &a.live.common),
        Command::Rollback(r) => ("rollback", &r.live.common),
        Command::Db(DbCommand::Backup(d) | DbCommand::List(d)) => ("db", &d.common),
        Command::Db(DbCommand::Restore(r)) => ("db", &r.db.common),
        Command::Db(DbCommand::Promote(p)) => ("db", &p.common),
        Command::Db(DbCommand::Reseed(r)) => ("db", &r.common),
        Command::Completions { .. } | Command::Man { .. } => return Ok(()),
    };
    if common.format == crate::progress::Format::Markdown {
        anyhow::bail!(
            "--format markdown is for `plan` (a pull-request comment); `{name}` writes text or \
             json (apply and rollback append Markdown to the job summary when \
             GITHUB_STEP_SUMMARY is set)"
        );
    }
    Ok(())
}

/// Under GitHub Actions (`GITHUB_ACTIONS=true`), an input error also becomes an annotation
/// on its file and line (stdout, where the runner reads workflow commands).
fn annotate(e: &anyhow::Error) {
    if std::env::var("GITHUB_ACTIONS").as_deref() != Ok("true") {
        return;
    }
    let Some(d) = e.chain().find_map(|c| c.downcast_ref::<Diagnostic>()) else {
        return;
    };
    let file = workspace_relative(&d.file);
    println!("{}", crate::report::error_annotation(d, &file));
}

/// `path` as the repository names it: relative to `GITHUB_WORKSPACE` (or the current
/// folder) when it lies below it, else as it is.
fn workspace_relative(path: &std::path::Path) -> String {
    let bases = [
        std::env::var_os("GITHUB_WORKSPACE").map(std::path::PathBuf::from),
        std::env::current_dir().ok(),
    ];
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for base in bases.into_iter().flatten() {
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        if let Ok(rel) = absolute.strip_prefix(&base) {
            return rel.to_string_lossy().into_owned();
        }
    }
    path.to_string_lossy().into_owned()
}

/// Inventory + project, loaded and validated, and how each host is reached (names
/// resolved once, the SSH configuration applied); no host touched.
struct Loaded {
    inv: Inventory,
    project: Project,
    routes: reach::Routes,
    /// `--role`/`--skip-role`: which roles run (`None`: every one).
    role_filter: Option<roles::Filter>,
}

impl Loaded {
    /// How to reach `h` (settled by [`load`]).
    fn route(&self, h: &Host) -> anyhow::Result<SshOptions> {
        self.routes
            .by_host
            .get(&h.name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("host `{}`: no SSH settings (internal error)", h.name))
    }
}

/// Loads the project and the inventory, applies the SSH configuration and resolves the
/// hosts' names (once per run: templates see the addresses); `--var` is in the inventory.
fn load(c: &Common) -> anyhow::Result<Loaded> {
    let mut l = load_files(c)?;
    l.inv.cli_vars = vars::parse_all(&c.var)?;
    l.role_filter = roles::Filter::new(c);
    let env = reach::Env::from_process();
    let config = reach::load_config(&l.inv, &env)?;
    l.routes = reach::settle(
        &mut l.inv,
        config.as_ref(),
        &env,
        &reach::SystemResolver,
        &reach::RealExists,
    )?;
    for w in &l.routes.warnings {
        eprintln!("{w}");
    }
    Ok(l)
}

/// Loads the project (roles, templates) and the inventory, as written.
fn load_files(c: &Common) -> Result<Loaded, Diagnostic> {
    if !c.inventory.is_file() {
        return Err(
            Diagnostic::new(&c.inventory, 0, 0, "inventory file not found")
                .with_hint("give the path of an inventory YAML file, e.g. inventories/lab.yml"),
        );
    }
    let root = match &c.root {
        Some(r) => r.clone(),
        None => find_root(&c.inventory).ok_or_else(|| {
            Diagnostic::new(
                &c.inventory,
                0,
                0,
                "no folder with roles/ and templates/ found above the inventory",
            )
            .with_hint("run from the project, or pass --root DIR")
        })?,
    };
    let project = Project::load(&root)?;
    let inv = inventory::load(&c.inventory, &project.role_names())?;
    Ok(Loaded {
        inv,
        project,
        routes: reach::Routes::default(),
        role_filter: None,
    })
}

/// The hosts `--limit` and `--tier` select, less those `--role`/`--skip-role` leave with
/// no role.
fn select<'a>(l: &'a Loaded, c: &Common) -> anyhow::Result<Vec<&'a Host>> {
    let hosts = l
        .inv
        .select(&c.limit, &c.tier)
        .map_err(anyhow::Error::msg)?;
    roles::select(&l.inv, &l.project.role_names(), hosts, c)
}

/// Refuses the options that choose what runs for a command that runs nothing.
fn refuse_run_options(c: &Common, command: &str) -> anyhow::Result<()> {
    let given: Vec<&str> = [
        (!c.roles.is_empty(), "--role"),
        (!c.skip_roles.is_empty(), "--skip-role"),
        (!c.var.is_empty(), "--var"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} has no effect on `{command}`: it chooses what check, render, plan, apply and rollback do",
        given.join(", ")
    )
}

/// Renders every selected host. With `reveal`, templates see the real secret values;
/// otherwise `<secret:NAME>` placeholders. Error messages are masked either way.
fn render_all(
    l: &Loaded,
    hosts: &[&Host],
    secrets: &Secrets,
    reveal: bool,
) -> Result<Vec<DesiredHost>, Diagnostic> {
    let values = if reveal {
        secrets.values().clone()
    } else {
        secrets_placeholders(&l.inv)
    };
    hosts
        .iter()
        .map(|h| {
            l.project
                .render_host(&l.inv, h, &values, secrets)
                .map_err(|mut d| {
                    d.message = secrets.mask(&d.message);
                    d.hint = d.hint.map(|h| secrets.mask(&h));
                    d
                })
        })
        .collect::<Result<Vec<DesiredHost>, Diagnostic>>()
        .map(|mut desired| {
            if let Some(keep) = &l.role_filter {
                roles::keep(&mut desired, keep);
            }
            desired
        })
}

/// Reads each tier's release source once, before any host is touched, and gives it to
/// the hosts' release roles. `target` replaces the inventory's (rollback).
fn attach_releases(
    inv: &Inventory,
    desired: &mut [DesiredHost],
    target: Option<&Target>,
) -> Result<(), Diagnostic> {
    let mut loaded: BTreeMap<String, Arc<Bundle>> = BTreeMap::new();
    for d in desired.iter_mut() {
        let Some(spec) = inv.tier(&d.host.tier).and_then(|t| t.release.as_ref()) else {
            continue;
        };
        for rel in d.roles.iter_mut().filter_map(|r| r.release.as_mut()) {
            let bundle = match loaded.get(&d.host.tier) {
                Some(b) => b.clone(),
                None => {
                    let b = crate::release::load(&spec.source).map_err(|e| {
                        Diagnostic::new(&inv.path, spec.line, spec.column, e).with_hint(
                            "`source:` is a folder or a .tar/.tar.gz archive, relative to the inventory's folder; `git: {repo, ref}` a local repository",
                        )
                    })?;
                    let b = Arc::new(b);
                    loaded.insert(d.host.tier.clone(), b.clone());
                    b
                }
            };
            rel.bundle = Some(bundle);
            if let Some(t) = target {
                rel.target = t.clone();
            }
        }
    }
    Ok(())
}

/// The internal CA of the inventory's `pki:` (none without one): checked before any host
/// is touched.
fn load_ca(inv: &Inventory, secrets: &Secrets) -> Result<Option<Ca>, Diagnostic> {
    let Some(pki) = &inv.pki else {
        return Ok(None);
    };
    let get = |name: &str| secrets.values().get(name).map(String::as_str).unwrap_or("");
    Ca::load(get(&pki.ca), get(&pki.ca_key))
        .map(Some)
        .map_err(|e| {
            Diagnostic::new(
                &inv.path,
                pki.line,
                pki.column,
                secrets.mask(&format!(
                    "pki: the CA (secrets `{}` and `{}`) cannot sign: {e}",
                    pki.ca, pki.ca_key
                )),
            )
            .with_hint(
                "`ca` holds the CA certificate(s) in PEM, `ca_key` the private key of one of them (PKCS#8 PEM)",
            )
        })
}

fn secrets_placeholders(inv: &Inventory) -> BTreeMap<String, String> {
    inv.secrets
        .iter()
        .map(|s| (s.name.clone(), format!("<secret:{}>", s.name)))
        .collect()
}

/// How long closing a session may take at the end of a command.
const SESSION_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Says goodbye on every session at once, each bounded by [`SESSION_CLOSE_TIMEOUT`] (a
/// connection that broke can wait forever: callers drop those instead).
async fn close_sessions(sessions: impl IntoIterator<Item = crate::transport::SshSession>) {
    let closing = sessions
        .into_iter()
        .map(|s| async move { tokio::time::timeout(SESSION_CLOSE_TIMEOUT, s.close()).await });
    futures::future::join_all(closing).await;
}
