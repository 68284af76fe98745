//! `check`: offline; the inventory, roles and templates are valid and every selected
//! host renders (with placeholders for secrets, which need not be available).

use super::{EXIT_OK, load, render_all, select};
use crate::cli::Common;
use crate::progress::Format;
use crate::secrets::Secrets;
use serde_json::json;

pub(super) fn check(c: &Common) -> anyhow::Result<i32> {
    let l = load(c)?;
    let hosts = select(&l, c)?;
    let desired = render_all(&l, &hosts, &Secrets::default(), false)?;
    let files: usize = desired.iter().map(|d| d.paths().len()).sum();
    if c.format == Format::Json {
        println!(
            "{}",
            json!({"ok": true, "hosts": hosts.len(), "files": files})
        );
    } else {
        println!(
            "ok: {} ({} hosts, {} roles, {} files rendered)",
            c.inventory.display(),
            hosts.len(),
            l.inv.roles_used().len(),
            files
        );
    }
    Ok(EXIT_OK)
}
