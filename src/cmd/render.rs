//! `render --out DIR`: offline; each selected host's files under `DIR/<host>/<path>`, with
//! `<secret:NAME>` placeholders unless `--reveal-secrets`.
//!
//! DIR must be missing or empty, or hold an earlier render and `--replace` be given. Each
//! file is written as a new file with its final mode (0600 when sensitive or revealed) and
//! renamed into place; no symlink below DIR is ever followed ([`write_file`]).

use super::{EXIT_OK, load, render_all, select};
use crate::cli::Common;
use crate::secrets::Secrets;
use anyhow::Context;
use std::path::Path;

pub(super) fn render(c: &Common, out: &Path, reveal: bool, replace: bool) -> anyhow::Result<i32> {
    let l = load(c)?;
    let hosts = select(&l, c)?;
    let secrets = if reveal {
        Secrets::load(&l.inv)?
    } else {
        Secrets::default()
    };
    let desired = render_all(&l, &hosts, &secrets, reveal)?;
    let files: Vec<OutFile> = desired
        .iter()
        .flat_map(|d| {
            d.roles.iter().flat_map(move |r| {
                r.files.iter().map(move |f| OutFile {
                    host: &d.host.name,
                    dest: &f.dest,
                    content: &f.content,
                    private: f.sensitive || reveal,
                })
            })
        })
        .collect();
    let known: Vec<&str> = l.inv.hosts.iter().map(|h| h.name.as_str()).collect();
    let selected: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    write_tree(out, &files, &known, &selected, replace)?;
    println!(
        "wrote {} files for {} hosts under {}",
        files.len(),
        desired.len(),
        out.display()
    );
    Ok(EXIT_OK)
}

/// One file to write, as `OUT/host/dest`.
struct OutFile<'a> {
    host: &'a str,
    dest: &'a str,
    content: &'a [u8],
    /// Mode 0600 instead of 0644.
    private: bool,
}

/// Writes `files` under `out` (`known`: the inventory's host names; `selected`: the hosts
/// rendered now). `out` must be missing or empty; with `replace` it may hold an earlier
/// render, whose `selected` host folders are deleted first.
fn write_tree(
    out: &Path,
    files: &[OutFile],
    known: &[&str],
    selected: &[&str],
    replace: bool,
) -> anyhow::Result<()> {
    prepare_out(out, known, selected, replace)?;
    for f in files {
        write_file(out, f.host, f.dest, f.content, f.private)
            .with_context(|| format!("cannot write {}", out.join(f.host).join(f.dest).display()))?;
    }
    Ok(())
}

/// Creates `out`, or checks that it may be written into (see [`write_tree`]). Never deletes
/// anything unless every entry of `out` is a real folder named after an inventory host.
fn prepare_out(out: &Path, known: &[&str], selected: &[&str], replace: bool) -> anyhow::Result<()> {
    let shown = out.display();
    if !out.exists() {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {shown}"))?;
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot read {shown}"))? {
        let entry = entry.with_context(|| format!("cannot read {shown}"))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        entries.push((entry.file_name(), is_dir));
    }
    if entries.is_empty() {
        return Ok(());
    }
    if !replace {
        anyhow::bail!(
            "{shown} is not empty; pass --replace to replace an earlier render there, \
             or choose a new or empty folder"
        );
    }
    for (name, is_dir) in &entries {
        let is_host = name.to_str().is_some_and(|n| known.contains(&n));
        if !(*is_dir && is_host) {
            anyhow::bail!(
                "{shown} does not look like an earlier render: {} is not a folder named after \
                 a host of the inventory (symlinks are not); refusing to replace it. \
                 Choose a new or empty folder, or move that entry away",
                out.join(name).display()
            );
        }
    }
    for host in selected {
        let single_name = matches!(
            Path::new(host).components().collect::<Vec<_>>().as_slice(),
            [std::path::Component::Normal(_)]
        );
        if !single_name {
            anyhow::bail!("host name `{host}` cannot name a folder");
        }
        let dir = out.join(host);
        // A real folder (checked above, not a symlink): remove_dir_all does not follow
        // symlinks inside it.
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot delete the earlier render {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes `OUT/host/dest` without following any symlink below `out`: each folder is
/// checked with `symlink_metadata` (and created if missing), the content goes to a new
/// temporary file in the target's folder, created exclusively (`O_CREAT|O_EXCL`, which
/// never follows a symlink) and given its final mode explicitly (the umask does not
/// matter), then renamed over the target (a symlink there is replaced, not followed).
fn write_file(
    out: &Path,
    host: &str,
    dest: &str,
    content: &[u8],
    private: bool,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::path::Component;
    let invalid = |why: String| Error::new(ErrorKind::InvalidInput, why);
    let relative = Path::new(host).join(dest.trim_start_matches('/'));
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            _ => {
                return Err(invalid(format!(
                    "{dest}: only plain names, no `..`, in a path"
                )));
            }
        }
    }
    let Some((file_name, folders)) = parts.split_last() else {
        return Err(invalid(format!("{dest}: no file name")));
    };
    let mut dir = out.to_path_buf();
    for part in folders {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} is a symlink or not a folder; refusing to write through it \
                         (delete it, or render into a new folder)",
                        dir.display()
                    ),
                ));
            }
            // create_dir does not follow a symlink put there meanwhile: it fails.
            Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    let target = dir.join(file_name);
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = write_new(&temp, content, if private { 0o600 } else { 0o644 })
        .and_then(|()| std::fs::rename(&temp, &target));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Creates `path` (which must not exist, not even as a symlink) with `mode`, and writes it.
pub(super) fn write_new(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    std::io::Write::write_all(&mut f, content)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::PathBuf;

    const HOSTS: &[&str] = &["lb1", "app1"];

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn env_file<'a>(content: &'a str, private: bool) -> OutFile<'a> {
        OutFile {
            host: "app1",
            dest: "/etc/foobar-app/env",
            content: content.as_bytes(),
            private,
        }
    }

    fn write(out: &Path, files: &[OutFile], replace: bool) -> anyhow::Result<()> {
        write_tree(out, files, HOSTS, &["app1"], replace)
    }

    /// Review finding 1, reproduction: `render INV --out o`, then
    /// `render INV --out o --reveal-secrets`: `o/app1/etc/foobar-app/env` stayed 0644 and
    /// held the real password (the mode was set only when the file was created).
    #[test]
    fn a_revealing_render_over_an_earlier_one_leaves_only_private_files() {
        let dir = tempdir();
        let out = dir.path().join("o");
        write(&out, &[env_file("DB_PASSWORD=<secret:db>\n", false)], false)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let env = out.join("app1/etc/foobar-app/env");
        assert_eq!(mode(&env), 0o644);
        write(
            &out,
            &[env_file("DB_PASSWORD=hunter2hunter2\n", true)],
            true,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(read(&env), "DB_PASSWORD=hunter2hunter2\n");
        assert_eq!(
            mode(&env),
            0o600,
            "a revealed secret must not stay world-readable"
        );
    }

    /// Review finding 1, reproduction: a symlink planted in OUT
    /// (`o/app1/etc/foobar-app/env -> victim`) was followed: the render wrote the victim.
    #[test]
    fn a_symlinked_file_in_out_is_replaced_not_followed() {
        let dir = tempdir();
        let out = dir.path().join("o");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched\n").unwrap_or_else(|e| panic!("{e}"));
        let link = out.join("app1/etc/foobar-app/env");
        std::fs::create_dir_all(out.join("app1/etc/foobar-app")).unwrap_or_else(|e| panic!("{e}"));
        symlink(&victim, &link).unwrap_or_else(|e| panic!("{e}"));
        write_file(&out, "app1", "/etc/foobar-app/env", b"secret\n", true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&victim), "untouched\n");
        let meta = std::fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            meta.file_type().is_file(),
            "the link is replaced by the file"
        );
        assert_eq!(read(&link), "secret\n");
        assert_eq!(mode(&link), 0o600);
    }

    /// Review finding 1, reproduction: a symlinked folder planted in OUT
    /// (`o/app1/etc -> elsewhere`) was written through.
    #[test]
    fn a_symlinked_folder_in_out_is_refused() {
        let dir = tempdir();
        let out = dir.path().join("o");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(out.join("app1")).unwrap_or_else(|e| panic!("{e}"));
        symlink(&elsewhere, out.join("app1/etc")).unwrap_or_else(|e| panic!("{e}"));
        let err = write_file(&out, "app1", "/etc/foobar-app/env", b"secret\n", true)
            .expect_err("writing through a symlinked folder must fail");
        assert!(err.to_string().contains("symlink"), "{err}");
        let entries: Vec<PathBuf> = std::fs::read_dir(&elsewhere)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        assert!(entries.is_empty(), "{entries:?}");
    }

    /// Review finding 1: a non-empty OUT is refused unless `--replace`, and even then only
    /// when it looks like an earlier render (folders named after inventory hosts).
    #[test]
    fn a_non_empty_out_needs_replace_and_must_look_like_a_render() {
        let dir = tempdir();
        let out = dir.path().join("o");
        std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(out.join("notes.txt"), "mine\n").unwrap_or_else(|e| panic!("{e}"));
        let files = [env_file("x\n", false)];
        let err = write(&out, &files, false).expect_err("non-empty OUT without --replace");
        assert!(format!("{err:#}").contains("--replace"), "{err:#}");
        let err = write(&out, &files, true).expect_err("OUT that is not a render");
        assert!(format!("{err:#}").contains("notes.txt"), "{err:#}");
        assert_eq!(read(&out.join("notes.txt")), "mine\n");
        assert!(!out.join("app1").exists());

        // A symlinked host folder is not an earlier render either.
        std::fs::remove_file(out.join("notes.txt")).unwrap_or_else(|e| panic!("{e}"));
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
        symlink(&elsewhere, out.join("app1")).unwrap_or_else(|e| panic!("{e}"));
        let err = write(&out, &files, true).expect_err("symlinked host folder");
        assert!(format!("{err:#}").contains("app1"), "{err:#}");
        assert!(!elsewhere.join("etc").exists());

        // An earlier render is replaced: the selected hosts' folders are written anew
        // (a stale file goes), other hosts' folders stay.
        std::fs::remove_file(out.join("app1")).unwrap_or_else(|e| panic!("{e}"));
        write(&out, &files, false).unwrap_or_else(|e| panic!("{e:#}"));
        std::fs::write(out.join("app1/stale"), "old\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(out.join("lb1/etc")).unwrap_or_else(|e| panic!("{e}"));
        let err = write(&out, &files, false).expect_err("earlier render without --replace");
        assert!(format!("{err:#}").contains("--replace"), "{err:#}");
        write(&out, &files, true).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!out.join("app1/stale").exists());
        assert!(out.join("lb1/etc").is_dir());
        assert_eq!(read(&out.join("app1/etc/foobar-app/env")), "x\n");
    }

    /// A destination that climbs out of its host folder is refused.
    #[test]
    fn a_destination_with_dot_dot_is_refused() {
        let dir = tempdir();
        let out = dir.path().join("o");
        let err = write_file(&out, "app1", "/etc/../../escaped", b"x", false)
            .expect_err("`..` in a destination");
        assert!(err.to_string().contains(".."), "{err}");
        assert!(!dir.path().join("o/escaped").exists());
        assert!(!dir.path().join("escaped").exists());
    }
}
