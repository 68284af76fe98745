//! The operator's application, deployed as releases (Capistrano's layout): the code of a
//! release is read here from a folder, an archive or a git ref ([`load`]), identified by
//! the hash of its manifest (every path, mode and content: [`Bundle::id`]), sent as one
//! tar stream, unpacked under `ROOT/releases/<id>/`, and switched in by renaming the
//! `ROOT/current` symlink. What a host has is read with the facts ([`ReleaseFact`]);
//! [`decide`] says what to do. Pure, except reading the source on this machine.

use crate::inventory::{RELEASE_ID_LEN, ReleaseSource, is_release_id};
use crate::shell::printable;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path};
use std::process::Command;

/// Largest release (all files' bytes together) and most files in one.
pub const MAX_RELEASE_BYTES: u64 = 512 * 1024 * 1024;
pub const MAX_FILES: usize = 100_000;
/// Files the tool writes into each release folder (a source may not have them at its top).
pub const REVISION: &str = "REVISION";
pub const MANIFEST: &str = ".fp-manifest";
/// Under `ROOT/releases/`: one line `<unix time> <id>` per switch.
pub const HISTORY: &str = ".fp-history";
/// History lines the facts read (the newest).
pub const HISTORY_READ: usize = 50;
/// Folders never shipped: version control and Python's byte-code caches.
const SKIPPED_DIRS: [&str; 2] = [".git", "__pycache__"];
/// How long `git archive` may take.
const GIT_TIMEOUT_S: u32 = 120;

/// One regular file of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Relative, `/`-separated, printable.
    pub path: String,
    /// Executable by its owner in the source: 0755 on the host, else 0644.
    pub executable: bool,
    pub content: Vec<u8>,
}

/// A release's code, read and checked, with its id.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Sorted by path.
    pub files: Vec<BundleFile>,
    /// One line per file: `<sha256>  <mode> <path>`.
    pub manifest: String,
    pub id: String,
    /// What the source was, for the plan (e.g. `../app` or `git ../repo v1.2`).
    pub label: String,
}

impl Bundle {
    /// Builds a bundle from files (any order): checks paths, sorts, makes the manifest.
    pub fn new(mut files: Vec<BundleFile>, label: String) -> Result<Bundle, String> {
        if files.is_empty() {
            return Err(format!("release source {label} holds no file"));
        }
        if files.len() > MAX_FILES {
            return Err(format!(
                "release source {label} holds {} files, more than {MAX_FILES}",
                files.len()
            ));
        }
        let total: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        if total > MAX_RELEASE_BYTES {
            return Err(format!(
                "release source {label} is {total} bytes, more than {MAX_RELEASE_BYTES}"
            ));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for w in files.windows(2) {
            if w[0].path == w[1].path {
                return Err(format!(
                    "release source {label} holds `{}` twice",
                    w[0].path
                ));
            }
        }
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for f in &files {
            if f.path == REVISION || f.path == MANIFEST {
                return Err(format!(
                    "release source {label} has its own `{}`: the tool writes that file into each release",
                    f.path
                ));
            }
            // A file where another one needs a folder (`a` and `a/b`) cannot unpack. The
            // paths are sorted: the first one from `a/` on is the one to look at.
            let folder = format!("{}/", f.path);
            let next = paths.partition_point(|p| *p < folder.as_str());
            if paths.get(next).is_some_and(|p| p.starts_with(&folder)) {
                return Err(format!(
                    "release source {label}: `{}` is a file and a folder",
                    f.path
                ));
            }
        }
        let manifest = manifest(&files);
        let id = hex::encode(Sha256::digest(manifest.as_bytes()))[..RELEASE_ID_LEN].to_string();
        Ok(Bundle {
            files,
            manifest,
            id,
            label,
        })
    }

    /// The tar stream that unpacks to the release folder: its folders, its files, then
    /// `REVISION` (the id) and the manifest. Owners are root (the host sets the role's).
    pub fn archive(&self) -> Result<Vec<u8>, String> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        for f in &self.files {
            let mut p = f.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                dirs.insert(parent);
                p = parent;
            }
        }
        let err = |e: std::io::Error| format!("building the release archive: {e}");
        for d in dirs {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("{d}/"), std::io::empty())
                .map_err(err)?;
        }
        let extra = [
            (REVISION, format!("{}\n", self.id).into_bytes(), false),
            (MANIFEST, self.manifest.clone().into_bytes(), false),
        ];
        let files = self
            .files
            .iter()
            .map(|f| (f.path.as_str(), &f.content, f.executable));
        for (path, content, exec) in files.chain(extra.iter().map(|(p, c, x)| (*p, c, *x))) {
            let mode = if exec { 0o755 } else { 0o644 };
            let mut h = header(tar::EntryType::Regular, mode, content.len() as u64);
            b.append_data(&mut h, path, content.as_slice())
                .map_err(err)?;
        }
        b.into_inner().map_err(err)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    h
}

fn manifest(files: &[BundleFile]) -> String {
    files
        .iter()
        .map(|f| {
            let mode = if f.executable { "755" } else { "644" };
            format!(
                "{}  {mode} {}\n",
                hex::encode(Sha256::digest(&f.content)),
                f.path
            )
        })
        .collect()
}

/// Reads a release's source: a folder, a `.tar`/`.tar.gz`/`.tgz` archive, or a git ref.
pub fn load(source: &ReleaseSource) -> Result<Bundle, String> {
    match source {
        ReleaseSource::Path(p) => {
            let label = p.display().to_string();
            let meta = std::fs::metadata(p).map_err(|e| format!("release source {label}: {e}"))?;
            if meta.is_dir() {
                let mut files = Vec::new();
                walk(p, p, &mut files, &label)?;
                Bundle::new(files, label)
            } else {
                let name = label.to_ascii_lowercase();
                let file =
                    std::fs::File::open(p).map_err(|e| format!("release source {label}: {e}"))?;
                let limited = file.take(MAX_RELEASE_BYTES + 1);
                let files = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                    read_tar(flate2::read::GzDecoder::new(limited), &label)?
                } else if name.ends_with(".tar") {
                    read_tar(limited, &label)?
                } else {
                    return Err(format!(
                        "release source {label} is neither a folder nor a .tar, .tar.gz or .tgz archive"
                    ));
                };
                Bundle::new(files, label)
            }
        }
        ReleaseSource::Git { repo, reference } => {
            let label = format!("git {} {reference}", repo.display());
            let out = Command::new("timeout")
                .arg(GIT_TIMEOUT_S.to_string())
                .arg("git")
                .arg("-C")
                .arg(repo)
                .args(["archive", "--format=tar", "--end-of-options", reference])
                .output()
                .map_err(|e| format!("release source {label}: cannot run git: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "release source {label}: git archive failed ({}): {}",
                    out.status,
                    printable(String::from_utf8_lossy(&out.stderr).trim())
                ));
            }
            let files = read_tar(out.stdout.as_slice(), &label)?;
            Bundle::new(files, label)
        }
    }
}

/// A relative path made of normal, printable components, `/`-separated.
fn clean_path(p: &Path, label: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                let s = s.to_str().ok_or_else(|| {
                    format!("release source {label}: `{}` is not UTF-8", p.display())
                })?;
                if s.contains(|c: char| c.is_control()) {
                    return Err(format!(
                        "release source {label}: {:?} holds a control character",
                        p.display()
                    ));
                }
                parts.push(s);
            }
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "release source {label}: `{}` leaves the release folder",
                    printable(&p.display().to_string())
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "release source {label}: an entry has an empty path"
        ));
    }
    Ok(parts.join("/"))
}

fn skipped(path: &str) -> bool {
    path.split('/').any(|c| SKIPPED_DIRS.contains(&c))
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<BundleFile>, label: &str) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("release source {label}: {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("release source {label}: {e}"))?;
        let path = entry.path();
        let rel = clean_path(path.strip_prefix(base).unwrap_or(&path), label)?;
        if skipped(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("release source {label}: {rel}: {e}"))?;
        if meta.is_dir() {
            walk(base, &path, out, label)?;
        } else if meta.is_file() {
            if out.len() >= MAX_FILES || meta.len() > MAX_RELEASE_BYTES {
                return Err(format!("release source {label} is too large ({rel})"));
            }
            use std::os::unix::fs::PermissionsExt;
            let content =
                std::fs::read(&path).map_err(|e| format!("release source {label}: {rel}: {e}"))?;
            out.push(BundleFile {
                path: rel,
                executable: meta.permissions().mode() & 0o100 != 0,
                content,
            });
        } else {
            return Err(format!(
                "release source {label}: `{rel}` is a link or a special file: a release holds folders and regular files only"
            ));
        }
    }
    Ok(())
}

fn read_tar<R: Read>(reader: R, label: &str) -> Result<Vec<BundleFile>, String> {
    let mut a = tar::Archive::new(reader);
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let entries = a
        .entries()
        .map_err(|e| format!("release source {label}: not a tar archive: {e}"))?;
    for entry in entries {
        let mut e = entry.map_err(|e| format!("release source {label}: broken archive: {e}"))?;
        let path = e
            .path()
            .map_err(|e| format!("release source {label}: {e}"))?
            .into_owned();
        let kind = e.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::Directory
        ) {
            continue;
        }
        let rel = clean_path(&path, label)?;
        if skipped(&rel) {
            continue;
        }
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(format!(
                "release source {label}: `{rel}` is a link or a special file: a release holds folders and regular files only"
            ));
        }
        let size = e.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > MAX_RELEASE_BYTES || out.len() >= MAX_FILES {
            return Err(format!("release source {label} is too large (at `{rel}`)"));
        }
        let mode = e.header().mode().unwrap_or(0o644);
        let mut content = Vec::new();
        e.read_to_end(&mut content)
            .map_err(|err| format!("release source {label}: {rel}: {err}"))?;
        out.push(BundleFile {
            path: rel,
            executable: mode & 0o100 != 0,
            content,
        });
    }
    Ok(out)
}

/// What changed between two manifests, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Compares the manifest a host has (untrusted: unreadable lines are skipped, paths
/// made printable) with the new one.
pub fn compare(old: &str, new: &str) -> Summary {
    fn entries(text: &str) -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| {
                let (hash, rest) = l.split_once("  ")?;
                let (mode, path) = rest.split_once(' ')?;
                Some((printable(path), format!("{hash} {mode}")))
            })
            .collect()
    }
    let (old, new) = (entries(old), entries(new));
    let mut s = Summary::default();
    for (path, v) in &new {
        match old.get(path) {
            None => s.added.push(path.clone()),
            Some(o) if o != v => s.changed.push(path.clone()),
            Some(_) => {}
        }
    }
    s.removed = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .cloned()
        .collect();
    s
}

/// What a host's `ROOT/current` is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Current {
    /// No `current` yet.
    #[default]
    Missing,
    /// A link to `releases/<id>`.
    Release(String),
    /// Something else (shown printable): it is replaced by the switch.
    Other(String),
}

/// A host's releases, from the facts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReleaseFact {
    pub current: Current,
    /// Release folders present (`releases/<id>`).
    pub have: BTreeSet<String>,
    /// Ids switched to, oldest first (the history's last lines).
    pub history: Vec<String>,
}

/// Which release a host should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The source's (a deploy).
    Source,
    /// A given id (the inventory's `pin:`, or `rollback --to`).
    Pin(String),
    /// The one before the current (`rollback`).
    Previous,
}

/// Why a release is switched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Why {
    /// A deploy of the source.
    Deploy,
    /// The inventory pins it.
    Pin,
    /// `rollback`: the previous release.
    Rollback,
}

/// What to do with a host's releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The release serving now, when `current` links to one.
    pub from: Option<String>,
    pub to: String,
    /// `current` must be switched (else only old releases are removed).
    pub switch: bool,
    /// The release is not on the host: the archive is sent.
    pub upload: bool,
    pub why: Why,
    /// Release folders removed after a good switch (beyond `keep`), oldest first.
    pub prune: Vec<String>,
}

/// Decides for one host. `None`: nothing to do (the wanted release is current and no
/// more than `keep` are on the host).
pub fn decide(
    source_id: &str,
    target: &Target,
    keep: usize,
    f: &ReleaseFact,
) -> Result<Option<Decision>, String> {
    let from = match &f.current {
        Current::Release(id) => Some(id.clone()),
        _ => None,
    };
    let (to, why) = match target {
        Target::Source => (source_id.to_string(), Why::Deploy),
        Target::Pin(id) => {
            if id != source_id && !f.have.contains(id) {
                return Err(format!(
                    "release {id} is not on the host and the source is release {source_id}: \
                     pin a release the host has ({}), or deploy it first",
                    list_or_none(&f.have)
                ));
            }
            (id.clone(), Why::Pin)
        }
        Target::Previous => {
            let prev = previous(f).ok_or_else(|| {
                format!(
                    "no previous release to roll back to (current {}, releases on the host: {})",
                    from.as_deref().unwrap_or("none"),
                    list_or_none(&f.have)
                )
            })?;
            (prev, Why::Rollback)
        }
    };
    let switch = from.as_deref() != Some(to.as_str());
    // Kept: the release switched to, the one it replaces, then the newest of the history.
    let mut kept: Vec<&str> = vec![to.as_str()];
    if let Some(f) = from.as_deref().filter(|f| *f != to) {
        kept.push(f);
    }
    for id in f.history.iter().rev() {
        if kept.len() >= keep.max(1) {
            break;
        }
        if !kept.contains(&id.as_str()) && f.have.contains(id) {
            kept.push(id);
        }
    }
    // The replaced release goes only after the switch succeeded (a failed health check
    // switches back to it first).
    kept.truncate(keep.max(1));
    // Oldest first: history order, then the ones the history does not name.
    let mut prune: Vec<String> = Vec::new();
    for id in f.history.iter().chain(f.have.iter()) {
        if f.have.contains(id) && !kept.contains(&id.as_str()) && !prune.contains(id) {
            prune.push(id.clone());
        }
    }
    if !switch && prune.is_empty() {
        return Ok(None);
    }
    Ok(Some(Decision {
        upload: !f.have.contains(&to),
        from,
        to,
        switch,
        why,
        prune,
    }))
}

/// The release before the current one: the newest id of the history that is not the
/// current one and is still on the host.
pub fn previous(f: &ReleaseFact) -> Option<String> {
    let current = match &f.current {
        Current::Release(id) => Some(id.as_str()),
        _ => None,
    };
    f.history
        .iter()
        .rev()
        .find(|id| Some(id.as_str()) != current && f.have.contains(*id))
        .cloned()
}

fn list_or_none(ids: &BTreeSet<String>) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Reads one `R` facts line's rest (`cur B64|-`, `have NAME`, `hist TIME NAME`) into
/// `f`. Names that are not release ids are not ours: ignored. `None`: malformed.
pub fn read_fact_line(f: &mut ReleaseFact, rest: &str) -> Option<()> {
    let (kind, value) = rest.split_once(' ')?;
    match kind {
        "cur" => {
            f.current = if value == "-" {
                Current::Missing
            } else {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .ok()?;
                let target = String::from_utf8_lossy(&raw)
                    .trim_end_matches('\n')
                    .to_string();
                match target.strip_prefix("releases/") {
                    Some(id) if is_release_id(id) => Current::Release(id.to_string()),
                    _ => Current::Other(printable(&target)),
                }
            };
        }
        "have" => {
            if is_release_id(value) {
                f.have.insert(value.to_string());
            }
        }
        "hist" => {
            let (time, id) = value.split_once(' ')?;
            time.parse::<u64>().ok()?;
            if is_release_id(id) {
                f.history.retain(|h| h != id);
                f.history.push(id.to_string());
            }
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> BundleFile {
        BundleFile {
            path: path.into(),
            executable: false,
            content: content.as_bytes().to_vec(),
        }
    }

    fn bundle(files: Vec<BundleFile>) -> Bundle {
        Bundle::new(files, "src".into()).expect("bundle")
    }

    #[test]
    fn the_id_is_the_content_paths_and_modes_in_any_order() {
        let a = bundle(vec![file("app.py", "A"), file("lib/x.py", "X")]);
        let b = bundle(vec![file("lib/x.py", "X"), file("app.py", "A")]);
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), RELEASE_ID_LEN);
        assert!(is_release_id(&a.id));
        let content = bundle(vec![file("app.py", "B"), file("lib/x.py", "X")]);
        let renamed = bundle(vec![file("main.py", "A"), file("lib/x.py", "X")]);
        let mut exec = file("app.py", "A");
        exec.executable = true;
        let mode = bundle(vec![exec, file("lib/x.py", "X")]);
        for other in [content, renamed, mode] {
            assert_ne!(a.id, other.id);
        }
        assert_eq!(
            a.manifest,
            format!(
                "{}  644 app.py\n{}  644 lib/x.py\n",
                hex::encode(Sha256::digest(b"A")),
                hex::encode(Sha256::digest(b"X"))
            )
        );
    }

    #[test]
    fn bundles_refuse_what_cannot_unpack_or_clashes_with_the_tool() {
        let err = |files: Vec<BundleFile>| Bundle::new(files, "src".into()).unwrap_err();
        assert!(err(vec![]).contains("no file"));
        assert!(err(vec![file("a", "1"), file("a", "2")]).contains("twice"));
        assert!(err(vec![file("a", "1"), file("a/b", "2")]).contains("a file and a folder"));
        // `a-x` sorts between `a` and `a/b`.
        assert!(
            err(vec![file("a", "1"), file("a-x", "3"), file("a/b", "2")])
                .contains("a file and a folder")
        );
        assert!(Bundle::new(vec![file("a", "1"), file("ab/c", "2")], "s".into()).is_ok());
        assert!(err(vec![file("REVISION", "x")]).contains("writes that file"));
        assert!(err(vec![file(MANIFEST, "x")]).contains("writes that file"));
        // Below the top, the names are the app's own.
        assert!(Bundle::new(vec![file("doc/REVISION", "x")], "s".into()).is_ok());
    }

    #[test]
    fn the_archive_unpacks_to_the_files_plus_revision_and_manifest() {
        let mut run = file("bin/run", "#!/bin/sh\n");
        run.executable = true;
        let b = bundle(vec![file("app.py", "print(1)\n"), run]);
        let tar = b.archive().expect("archive");
        let mut a = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let mode = e.header().mode().expect("mode");
            let uid = e.header().uid().expect("uid");
            let mut content = String::new();
            e.read_to_string(&mut content).expect("read");
            seen.push((path, mode, uid, content));
        }
        let names: Vec<(&str, u32)> = seen.iter().map(|s| (s.0.as_str(), s.1)).collect();
        assert_eq!(
            names,
            [
                ("bin/", 0o755),
                ("app.py", 0o644),
                ("bin/run", 0o755),
                ("REVISION", 0o644),
                (MANIFEST, 0o644)
            ]
        );
        assert!(seen.iter().all(|s| s.2 == 0));
        assert_eq!(seen[3].3, format!("{}\n", b.id));
        assert_eq!(seen[4].3, b.manifest);
        // What the archive unpacks to reads back as the same release.
        let back: Vec<BundleFile> = read_tar(tar.as_slice(), "t")
            .expect("read")
            .into_iter()
            .filter(|f| f.path != REVISION && f.path != MANIFEST)
            .collect();
        assert_eq!(bundle(back).id, b.id);
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, content) in entries {
            let mut h = header(*kind, 0o644, content.len() as u64);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").expect("link");
            }
            // set_path refuses `..`; write the raw name as a hostile archive would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, content.as_bytes()).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn archives_that_leave_the_folder_or_hold_links_are_refused() {
        let ok = tar_of(&[
            ("./app.py", tar::EntryType::Regular, "x"),
            ("app/__pycache__/a.pyc", tar::EntryType::Regular, "x"),
            (".git/HEAD", tar::EntryType::Regular, "x"),
        ]);
        let files = read_tar(ok.as_slice(), "t").expect("ok");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "app.py");
        let up = tar_of(&[("../evil", tar::EntryType::Regular, "x")]);
        assert!(read_tar(up.as_slice(), "t").unwrap_err().contains("leaves"));
        let abs = tar_of(&[("/etc/evil", tar::EntryType::Regular, "x")]);
        assert!(
            read_tar(abs.as_slice(), "t")
                .unwrap_err()
                .contains("leaves")
        );
        let link = tar_of(&[("l", tar::EntryType::Symlink, "")]);
        assert!(read_tar(link.as_slice(), "t").unwrap_err().contains("link"));
        assert!(
            read_tar(&b"not a tar at all"[..], "t").is_err() || {
                // tar reads a short garbage block as the end: no files, refused by Bundle::new.
                read_tar(&b"not a tar at all"[..], "t")
                    .map(|f| f.is_empty())
                    .unwrap_or(true)
            }
        );
    }

    #[test]
    fn a_folder_a_tarball_and_a_git_ref_of_the_same_code_are_the_same_release() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = dir.path().join("app");
        std::fs::create_dir_all(src.join("lib/__pycache__")).expect("mkdir");
        std::fs::write(src.join("app.py"), "print('hi')\n").expect("w");
        std::fs::write(src.join("lib/util.py"), "X = 1\n").expect("w");
        std::fs::write(src.join("lib/__pycache__/util.pyc"), "junk").expect("w");
        let folder = load(&ReleaseSource::Path(src.clone())).expect("folder");
        assert_eq!(folder.files.len(), 2);
        // A tarball of it.
        let tgz = dir.path().join("app.tar.gz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .args(["app.py", "lib/util.py"])
            .status()
            .expect("tar");
        assert!(status.success());
        let archive = load(&ReleaseSource::Path(tgz)).expect("tgz");
        assert_eq!(archive.id, folder.id);
        // A git ref of it.
        let git = |args: &[&str]| {
            let st = Command::new("git")
                .arg("-C")
                .arg(&src)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .expect("git");
            assert!(st.status.success(), "{st:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "app.py", "lib/util.py"]);
        git(&["commit", "-qm", "one"]);
        git(&["tag", "v1"]);
        let from_git = load(&ReleaseSource::Git {
            repo: src.clone(),
            reference: "v1".into(),
        })
        .expect("git");
        assert_eq!(from_git.id, folder.id);
        let missing = load(&ReleaseSource::Git {
            repo: src.clone(),
            reference: "v9".into(),
        })
        .unwrap_err();
        assert!(missing.contains("git archive failed"), "{missing}");
        // A link in a folder is refused, naming it.
        std::os::unix::fs::symlink("/etc/passwd", src.join("passwd")).expect("link");
        let e = load(&ReleaseSource::Path(src)).unwrap_err();
        assert!(e.contains("`passwd` is a link"), "{e}");
        let other = dir.path().join("app.zip");
        std::fs::write(&other, "x").expect("w");
        assert!(
            load(&ReleaseSource::Path(other))
                .unwrap_err()
                .contains("neither")
        );
    }

    #[test]
    fn compare_names_added_changed_and_removed_files() {
        let old = bundle(vec![file("a", "1"), file("b", "2"), file("c", "3")]);
        let new = bundle(vec![file("a", "1"), file("b", "9"), file("d", "4")]);
        let s = compare(&old.manifest, &new.manifest);
        assert_eq!(s.added, ["d"]);
        assert_eq!(s.changed, ["b"]);
        assert_eq!(s.removed, ["c"]);
        let garbage = compare("no manifest here\n\u{1b}[31m", &new.manifest);
        assert_eq!(garbage.added.len(), 3);
        assert_eq!(compare(&new.manifest, &new.manifest), Summary::default());
    }

    const A: &str = "aaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbb";
    const C: &str = "cccccccccccc";
    const D: &str = "dddddddddddd";

    fn host(current: Option<&str>, have: &[&str], history: &[&str]) -> ReleaseFact {
        ReleaseFact {
            current: current.map_or(Current::Missing, |c| Current::Release(c.into())),
            have: have.iter().map(|s| s.to_string()).collect(),
            history: history.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_new_source_is_uploaded_and_switched_an_unchanged_one_is_left_alone() {
        let fresh = decide(A, &Target::Source, 5, &ReleaseFact::default())
            .expect("ok")
            .expect("change");
        assert_eq!(
            fresh,
            Decision {
                from: None,
                to: A.into(),
                switch: true,
                upload: true,
                why: Why::Deploy,
                prune: vec![]
            }
        );
        let same = host(Some(A), &[A], &[A]);
        assert_eq!(decide(A, &Target::Source, 5, &same), Ok(None));
        let next = decide(B, &Target::Source, 5, &same)
            .expect("ok")
            .expect("change");
        assert_eq!(
            (next.from.as_deref(), next.upload, next.switch),
            (Some(A), true, true)
        );
        // Already on the host (deployed before, rolled back since): switched, not sent.
        let back = host(Some(A), &[A, B], &[B, A]);
        let d = decide(B, &Target::Source, 5, &back)
            .expect("ok")
            .expect("change");
        assert!(!d.upload && d.switch);
        // `current` is something else: switched.
        let mut other = same.clone();
        other.current = Current::Other("/tmp/x".into());
        let d = decide(A, &Target::Source, 5, &other)
            .expect("ok")
            .expect("change");
        assert!(d.switch && !d.upload && d.from.is_none());
    }

    #[test]
    fn keep_prunes_the_oldest_but_never_the_new_or_the_replaced_release() {
        let h = host(Some(C), &[A, B, C], &[A, B, C]);
        let d = decide(D, &Target::Source, 3, &h)
            .expect("ok")
            .expect("change");
        assert_eq!(d.prune, [A]);
        let d = decide(D, &Target::Source, 2, &h)
            .expect("ok")
            .expect("change");
        assert_eq!(d.prune, [A, B]);
        // keep 1: the replaced release goes too, once the switch is healthy.
        let d = decide(D, &Target::Source, 1, &h)
            .expect("ok")
            .expect("change");
        assert_eq!(d.prune, [A, B, C]);
        // Too many on a converged host: only pruning.
        let d = decide(C, &Target::Source, 2, &h)
            .expect("ok")
            .expect("change");
        assert!(!d.switch && !d.upload);
        assert_eq!(d.prune, [A]);
        assert_eq!(decide(C, &Target::Source, 3, &h), Ok(None));
        // Folders the history does not name (never switched to) are not kept.
        let h = host(Some(C), &[A, B, C], &[C]);
        let d = decide(C, &Target::Source, 2, &h)
            .expect("ok")
            .expect("change");
        assert_eq!(d.prune, [A, B]);
    }

    #[test]
    fn rollback_goes_to_the_newest_other_release_still_there() {
        let h = host(Some(C), &[A, B, C], &[A, B, C]);
        assert_eq!(previous(&h).as_deref(), Some(B));
        let d = decide(D, &Target::Previous, 5, &h)
            .expect("ok")
            .expect("change");
        assert_eq!((d.to.as_str(), d.upload, d.why), (B, false, Why::Rollback));
        // B was removed by hand: A.
        let h2 = host(Some(C), &[A, C], &[A, B, C]);
        assert_eq!(previous(&h2).as_deref(), Some(A));
        // Twice in a row toggles back (the history records each switch).
        let h3 = host(Some(B), &[A, B, C], &[A, C, B]);
        assert_eq!(previous(&h3).as_deref(), Some(C));
        let none = decide(A, &Target::Previous, 5, &host(Some(A), &[A], &[A])).unwrap_err();
        assert!(none.contains("no previous release"), "{none}");
    }

    #[test]
    fn a_pin_must_be_on_the_host_or_the_source() {
        let h = host(Some(B), &[A, B], &[A, B]);
        let d = decide(C, &Target::Pin(A.into()), 5, &h)
            .expect("ok")
            .expect("change");
        assert_eq!((d.to.as_str(), d.upload, d.why), (A, false, Why::Pin));
        let d = decide(C, &Target::Pin(C.into()), 5, &h)
            .expect("ok")
            .expect("change");
        assert!(d.upload);
        let e = decide(C, &Target::Pin(D.into()), 5, &h).unwrap_err();
        assert!(e.contains("is not on the host") && e.contains(A), "{e}");
    }

    #[test]
    fn fact_lines_read_the_link_the_folders_and_the_history() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut f = ReleaseFact::default();
        for line in [
            format!("cur {}", b64(&format!("releases/{A}\n"))),
            format!("have {A}"),
            format!("have {B}"),
            "have .fp-stage-x1".to_string(),
            "have not-a-release".to_string(),
            format!("hist 1700000000 {A}"),
            format!("hist 1700000001 {B}"),
            format!("hist 1700000002 {A}"),
        ] {
            assert_eq!(read_fact_line(&mut f, &line), Some(()), "{line}");
        }
        assert_eq!(f.current, Current::Release(A.into()));
        assert_eq!(f.have.len(), 2);
        assert_eq!(f.history, [B, A]);
        let mut g = ReleaseFact::default();
        read_fact_line(&mut g, &format!("cur {}", b64("/srv/\u{1b}[2Jx"))).expect("ok");
        assert_eq!(g.current, Current::Other("/srv/^[[2Jx".into()));
        read_fact_line(&mut g, "cur -").expect("ok");
        assert_eq!(g.current, Current::Missing);
        for bad in ["cur", "cur !!!", "hist x y", "hist 12", "what 1", ""] {
            assert_eq!(read_fact_line(&mut g, bad), None, "{bad}");
        }
    }
}
