//! `trust`: show each selected host's key fingerprint and record it in the inventory's
//! known_hosts file. Refuses a changed or revoked key; trusting is always this explicit act.

use super::{EXIT_FAIL, EXIT_OK, load, select, ssh_options};
use crate::cli::Common;
use crate::inventory::{Host, Inventory};
use crate::transport::{self, known_hosts};
use std::path::Path;

pub(super) async fn trust(c: &Common) -> anyhow::Result<i32> {
    let l = load(c)?;
    let mut code = EXIT_OK;
    for h in select(&l, c)? {
        if let Err(message) = trust_host(&l.inv, h).await {
            eprintln!("{message}");
            code = EXIT_FAIL;
        }
    }
    Ok(code)
}

/// Scans one host's key and records it when it is new; the error says what to do.
async fn trust_host(inv: &Inventory, h: &Host) -> Result<(), String> {
    let path = &inv.ssh.known_hosts;
    let addr = h.address.to_string();
    let scanned = if inv.ssh.jump_host.is_some() {
        transport::scan_host_key_via_jump(&ssh_options(inv, h)).await
    } else {
        transport::scan_host_key(&addr, h.port, inv.ssh.connect_timeout).await
    };
    let key = scanned.map_err(|e| format!("{}: {e}", h.name))?;
    let fp = known_hosts::fingerprint(&key);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match known_hosts::check(&text, &addr, h.port, &key) {
        known_hosts::HostKeyStatus::Trusted => {
            println!("{} ({addr}): already trusted, {fp}", h.name);
            Ok(())
        }
        known_hosts::HostKeyStatus::Unknown => {
            let line = known_hosts::entry_line(&addr, h.port, &key);
            append_line(path, &line)
                .map_err(|e| format!("{}: cannot write {}: {e}", h.name, path.display()))?;
            println!(
                "{} ({addr}): trusted {fp}, recorded in {}",
                h.name,
                path.display()
            );
            Ok(())
        }
        known_hosts::HostKeyStatus::Changed { line, .. } => Err(format!(
            "{} ({addr}): the host now offers {fp}, but {}:{line} holds another key for it. \
             If the host was rebuilt, remove the old entry with `ssh-keygen -R {} -f {}` and run trust again; \
             otherwise this may be an attack: do not proceed.",
            h.name,
            path.display(),
            known_hosts::host_pattern(&addr, h.port),
            path.display()
        )),
        known_hosts::HostKeyStatus::Revoked { line } => Err(format!(
            "{} ({addr}): the key it offers ({fp}) is marked @revoked at {}:{line}; refusing to trust it",
            h.name,
            path.display()
        )),
    }
}

/// Appends `line` to the file, after a newline if the file does not end with one.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let existing = std::fs::read(path).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")
}
