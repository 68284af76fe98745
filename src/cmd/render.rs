//! `render --out DIR`: offline; each selected host's files under `DIR/<host>/<path>`, with
//! `<secret:NAME>` placeholders unless `--reveal-secrets`.

use super::{EXIT_OK, load, render_all, select};
use crate::cli::Common;
use crate::secrets::Secrets;
use anyhow::Context;
use std::path::Path;

pub(super) fn render(c: &Common, out: &Path, reveal: bool) -> anyhow::Result<i32> {
    let l = load(c)?;
    let hosts = select(&l, c)?;
    let secrets = if reveal {
        Secrets::load(&l.inv)?
    } else {
        Secrets::default()
    };
    let desired = render_all(&l, &hosts, &secrets, reveal)?;
    let mut written = 0;
    for d in &desired {
        for r in &d.roles {
            for f in &r.files {
                let path = out.join(&d.host.name).join(f.dest.trim_start_matches('/'));
                write_local(&path, &f.content, f.sensitive || reveal)
                    .with_context(|| path.display().to_string())?;
                written += 1;
            }
        }
    }
    println!(
        "wrote {written} files for {} hosts under {}",
        desired.len(),
        out.display()
    );
    Ok(EXIT_OK)
}

fn write_local(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)?;
    std::io::Write::write_all(&mut f, content)
}
