//! The subcommands, one file each, from a parsed command line to an exit code.
//!
//! Every command returns `anyhow::Result<i32>`: the exit code it chose, or an error.
//! [`run`] is the one place that turns an error into exit code 1 and prints it (with
//! its causes). Errors inside the pipeline are typed per stage ([`Diagnostic`] for input,
//! `transport::SshError`, `report::Failure` per host); anyhow only
//! carries them to here.

mod check;
mod hosts;
mod interrupt;
mod live;
mod render;
mod status;
mod trust;

use crate::cli::{Cli, Command, Common};
use crate::desired::DesiredHost;
use crate::diag::Diagnostic;
use crate::inventory::{self, Host, Inventory};
use crate::pki::Ca;
use crate::release::{Bundle, Target};
use crate::render::{Project, find_root};
use crate::secrets::Secrets;
use crate::transport::{JumpHost, SshOptions};
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

/// Inventory + project, loaded and validated; no host touched.
struct Loaded {
    inv: Inventory,
    project: Project,
}

/// Loads the project (roles, templates) and the inventory.
fn load(c: &Common) -> Result<Loaded, Diagnostic> {
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
    Ok(Loaded { inv, project })
}

/// The hosts `--limit` and `--tier` select.
fn select<'a>(l: &'a Loaded, c: &Common) -> anyhow::Result<Vec<&'a Host>> {
    l.inv.select(&c.limit, &c.tier).map_err(anyhow::Error::msg)
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
        .collect()
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

/// How to reach a host, from the inventory's SSH settings.
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

fn ssh_options(inv: &Inventory, h: &Host) -> SshOptions {
    SshOptions {
        host_name: h.name.clone(),
        address: h.address.to_string(),
        port: h.port,
        user: h.user.clone(),
        identity_file: inv.ssh.identity_file.clone(),
        use_agent: inv.ssh.use_agent,
        known_hosts: inv.ssh.known_hosts.clone(),
        connect_timeout: inv.ssh.connect_timeout,
        jump: inv.ssh.jump_host.as_ref().map(|j| JumpHost {
            address: j.address.clone(),
            port: j.port,
            user: j.user.clone(),
        }),
    }
}
