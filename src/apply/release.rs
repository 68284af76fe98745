//! A role's release on one host: the archive unpacked into `ROOT/releases/<id>/` (one
//! stream, before the role's files are validated), the migration (before the switch, on
//! the one host the rollout chose), the switch (`current` renamed over), and, once the
//! role is healthy, the old releases removed. A failure after the switch switches back.

use super::remote::{Remote, StepError};
use crate::plan::{ReleaseChange, RolePlan};
use crate::release::HISTORY;
use crate::report::ErrorKind;
use crate::shell::{Init, quote};
use crate::transport::Transport;

/// Sends and unpacks the release when the host lacks it. Nothing serving changes.
pub(super) async fn stage<T: Transport>(
    r: &Remote<'_, T>,
    role: &RolePlan,
) -> Result<(), StepError> {
    let Some(rel) = role.release.as_ref().filter(|rel| rel.upload) else {
        return Ok(());
    };
    let Some(bundle) = &rel.desired.bundle else {
        return Err(StepError::failed(
            ErrorKind::Release,
            format!("release {}: its code was not loaded", rel.to),
        ));
    };
    let archive = bundle
        .archive()
        .map_err(|e| StepError::failed(ErrorKind::Release, e))?;
    r.step(&format!(
        "uploading release {} ({} files, {} bytes in one archive)",
        rel.to,
        rel.files,
        archive.len()
    ));
    let spec = &rel.desired.spec;
    let script = stage_script(&rel.root, &rel.to, &spec.owner, &spec.group);
    r.must_within(
        ErrorKind::Release,
        &format!("upload of release {}", rel.to),
        &script,
        &archive,
        r.limits.upload,
    )
    .await
    .map_err(|e| e.with_note("the release serving now was left as it was"))?;
    Ok(())
}

/// Runs the release's migration (when this host was chosen for it) from the new
/// release's folder, as the role's user with the service's environment, before any
/// traffic reaches the release.
pub(super) async fn migrate<T: Transport>(
    r: &Remote<'_, T>,
    init: Init,
    rel: &ReleaseChange,
) -> Result<(), StepError> {
    let Some(cmd) = &rel.migrate else {
        return Ok(());
    };
    if init != Init::Systemd {
        return Err(StepError::failed(
            ErrorKind::Release,
            "the migration runs under systemd-run (the service's user and environment): this host has no systemd",
        ));
    }
    r.step(&format!("migrating for release {} ({cmd})", rel.to));
    let spec = &rel.desired.spec;
    let script = migrate_script(
        &rel.root,
        &rel.to,
        &spec.run_as,
        spec.environment_file.as_deref(),
        cmd,
    );
    r.must_within(
        ErrorKind::Release,
        &format!("migration of release {} (`{cmd}`)", rel.to),
        &script,
        b"",
        r.limits.handler,
    )
    .await
    .map_err(|e| e.with_note("the release serving before was left serving"))?;
    Ok(())
}

/// Points `current` at release `id` (one rename) and records it in the history.
pub(super) async fn switch<T: Transport>(
    r: &Remote<'_, T>,
    rel: &ReleaseChange,
    id: &str,
) -> Result<(), StepError> {
    r.step(&format!("switching {}/current to release {id}", rel.root));
    r.must(
        ErrorKind::Release,
        &format!("switch to release {id}"),
        &switch_script(&rel.root, id),
        b"",
    )
    .await?;
    Ok(())
}

/// Removes the releases beyond `keep` (best kept: a failure here fails the host, the new
/// release serving).
pub(super) async fn prune<T: Transport>(
    r: &Remote<'_, T>,
    rel: &ReleaseChange,
) -> Result<(), StepError> {
    if rel.prune.is_empty() {
        return Ok(());
    }
    r.step(&format!("removing old releases {}", rel.prune.join(", ")));
    r.must(
        ErrorKind::Release,
        "removing old releases",
        &prune_script(&rel.root, &rel.prune),
        b"",
    )
    .await?;
    Ok(())
}

/// Unpacks the tar stream on stdin into a temporary folder beside the releases, sets
/// the owner, and renames it to `releases/<id>` (a release folder is whole or absent).
/// The root and `releases/` must be root's and writable by root only.
pub(super) fn stage_script(root: &str, id: &str, owner: &str, group: &str) -> String {
    format!(
        "set -e\n\
         r={root}; d=\"$r/releases\"; id={id}\n\
         if [ -L \"$r\" ] || [ -L \"$d\" ]; then echo \"$r or $d is a symbolic link: refused\"; exit 1; fi\n\
         mkdir -p -- \"$d\"\n\
         if [ -n \"$(find \"$r\" \"$d\" -maxdepth 0 \\( ! -user root -o -perm /022 \\) -print)\" ]; then \
         echo \"$r or $d is not root's, or others than root can write to it: refused (they could swap a release in)\"; exit 1; fi\n\
         rm -rf -- \"$d\"/.fp-stage-*\n\
         s=$(mktemp -d \"$d/.fp-stage-XXXXXX\")\n\
         trap 'rm -rf -- \"$s\"' EXIT\n\
         tar -x -f - -C \"$s\" --no-same-owner\n\
         chown -R -- {owner}:{group} \"$s\"\n\
         chmod 0755 -- \"$s\"\n\
         if [ -e \"$d/$id\" ]; then rm -rf -- \"$d/$id\"; fi\n\
         mv -T -- \"$s\" \"$d/$id\"\n\
         trap - EXIT\n\
         echo \"release $id unpacked\"\n",
        root = quote(root),
        id = quote(id),
        owner = quote(owner),
        group = quote(group),
    )
}

/// The migration under `systemd-run`: the role's user, the service's environment file,
/// the new release's folder, `FOOBAR_RELEASE` set; its output and exit status come back.
pub(super) fn migrate_script(
    root: &str,
    id: &str,
    user: &str,
    env_file: Option<&str>,
    cmd: &str,
) -> String {
    let env = env_file
        .map(|e| format!(" -p {}", quote(&format!("EnvironmentFile={e}"))))
        .unwrap_or_default();
    format!(
        "systemd-run --quiet --wait --pipe --collect --service-type=exec -p {user}{env} -p {wd} \
         --setenv={rel} -- /bin/sh -c {cmd} </dev/null 2>&1\n",
        user = quote(&format!("User={user}")),
        wd = quote(&format!("WorkingDirectory={root}/releases/{id}")),
        rel = quote(&format!("FOOBAR_RELEASE={id}")),
        cmd = quote(cmd),
    )
}

/// `current` -> `releases/<id>` by renaming a new link over it (atomic), then a history
/// line. The release must be there.
pub(super) fn switch_script(root: &str, id: &str) -> String {
    format!(
        "r={root}; id={id}\n\
         if [ ! -d \"$r/releases/$id\" ] || [ -L \"$r/releases/$id\" ]; then echo \"release $id is not on the host\"; exit 1; fi\n\
         ln -sfn -- \"releases/$id\" \"$r/.current.fp-next\" && mv -T -- \"$r/.current.fp-next\" \"$r/current\" \
         && printf '%s %s\\n' \"$(date +%s)\" \"$id\" >> \"$r/releases/{HISTORY}\"\n",
        root = quote(root),
        id = quote(id),
    )
}

/// Removes release folders (ids: hex, checked by the facts parser) and keeps the
/// history's last 200 lines.
pub(super) fn prune_script(root: &str, ids: &[String]) -> String {
    let ids: Vec<String> = ids.iter().map(|i| quote(i)).collect();
    format!(
        "cd -- {root}/releases && rm -rf -- {ids} && \
         if [ -f {HISTORY} ]; then tail -n 200 {HISTORY} > {HISTORY}.new && mv -T {HISTORY}.new {HISTORY}; fi\n",
        root = quote(root),
        ids = ids.join(" "),
    )
}

/// The release's health check command for release `id`.
pub(super) fn health_command(command: &str, id: &str) -> String {
    command.replace("{release}", &quote(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_every_value_and_say_what_they_do() {
        assert_eq!(
            switch_script("/opt/my app", "abcdef012345"),
            "r='/opt/my app'; id=abcdef012345\n\
             if [ ! -d \"$r/releases/$id\" ] || [ -L \"$r/releases/$id\" ]; then echo \"release $id is not on the host\"; exit 1; fi\n\
             ln -sfn -- \"releases/$id\" \"$r/.current.fp-next\" && mv -T -- \"$r/.current.fp-next\" \"$r/current\" \
             && printf '%s %s\\n' \"$(date +%s)\" \"$id\" >> \"$r/releases/.fp-history\"\n"
        );
        assert_eq!(
            migrate_script(
                "/opt/app",
                "abcdef012345",
                "www-data",
                Some("/etc/app/env"),
                "python3 m.py 'x'"
            ),
            "systemd-run --quiet --wait --pipe --collect --service-type=exec -p User=www-data \
             -p EnvironmentFile=/etc/app/env -p WorkingDirectory=/opt/app/releases/abcdef012345 \
             --setenv=FOOBAR_RELEASE=abcdef012345 -- /bin/sh -c 'python3 m.py '\\''x'\\''' </dev/null 2>&1\n"
        );
        assert!(
            !migrate_script("/r", "abcdef012345", "root", None, "true").contains("EnvironmentFile")
        );
        assert_eq!(
            prune_script("/opt/app", &["aaaaaaaaaaaa".into(), "bbbbbbbbbbbb".into()]),
            "cd -- /opt/app/releases && rm -rf -- aaaaaaaaaaaa bbbbbbbbbbbb && \
             if [ -f .fp-history ]; then tail -n 200 .fp-history > .fp-history.new && mv -T .fp-history.new .fp-history; fi\n"
        );
        assert_eq!(
            health_command("curl x | grep -qF {release}", "abc"),
            "curl x | grep -qF abc"
        );
        let stage = stage_script("/opt/app", "abcdef012345", "www-data", "www-data");
        assert!(stage.starts_with("set -e\nr=/opt/app; d=\"$r/releases\"; id=abcdef012345\n"));
        assert!(stage.contains("chown -R -- www-data:www-data \"$s\""));
    }

    /// Runs a script in a local shell (as this user: the root checks pass only as root,
    /// so the folder checks are exercised with a group-writable root).
    fn sh(script: &str, stdin: &[u8]) -> (i32, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    #[test]
    fn stage_switch_and_prune_work_in_a_real_shell() {
        use crate::release::{Bundle, BundleFile};
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("app");
        let root = root.to_str().expect("utf8");
        let b = Bundle::new(
            vec![BundleFile {
                path: "pkg/app.py".into(),
                executable: false,
                content: b"print(1)\n".to_vec(),
            }],
            "t".into(),
        )
        .expect("bundle");
        let archive = b.archive().expect("archive");
        let me = String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-un")
                .output()
                .expect("id")
                .stdout,
        )
        .trim()
        .to_string();
        let script = stage_script(root, &b.id, &me, &me);
        let (code, out) = sh(&script, &archive);
        let as_root = me == "root";
        if !as_root {
            // Not root: the owner check refuses, and nothing is left behind.
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("is not root's"), "{out}");
            return;
        }
        assert_eq!(code, 0, "{out}");
        let rel = format!("{root}/releases/{}", b.id);
        assert_eq!(
            std::fs::read_to_string(format!("{rel}/pkg/app.py")).expect("file"),
            "print(1)\n"
        );
        assert_eq!(
            std::fs::read_to_string(format!("{rel}/REVISION")).expect("rev"),
            format!("{}\n", b.id)
        );
        // No staging folder is left.
        let left: Vec<_> = std::fs::read_dir(format!("{root}/releases"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(left, std::slice::from_ref(&b.id));
        let (code, out) = sh(&switch_script(root, &b.id), b"");
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            std::fs::read_link(format!("{root}/current"))
                .expect("link")
                .display()
                .to_string(),
            format!("releases/{}", b.id)
        );
        let (code, out) = sh(&switch_script(root, "000000000000"), b"");
        assert_eq!(code, 1);
        assert!(out.contains("is not on the host"), "{out}");
        // The facts read it back.
        let q = crate::facts::FactQuery {
            releases: vec![root],
            ..Default::default()
        };
        let (_, facts_out) = sh(&crate::facts::script(&q), b"");
        let facts = crate::facts::parse(&facts_out, &q).expect("facts");
        assert_eq!(
            facts.releases[0].current,
            crate::release::Current::Release(b.id.clone())
        );
        assert_eq!(facts.releases[0].history, std::slice::from_ref(&b.id));
        let (code, out) = sh(&prune_script(root, std::slice::from_ref(&b.id)), b"");
        assert_eq!(code, 0, "{out}");
        assert!(!std::path::Path::new(&rel).exists());
        // A group-writable root is refused.
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o775))
            .expect("chmod");
        let (code, out) = sh(&script, &archive);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("others than root can write"), "{out}");
    }
}
