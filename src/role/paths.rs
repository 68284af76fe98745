//! `directories:`, `links:` and `absent:` of a role.yml: the paths a role manages besides
//! its files. Each path is absolute and normalised, printable, and appears once among the
//! role's files, certificates, directories, links and absent paths; nothing is managed
//! under a link or an absent path of the same role.

use super::{FileChecks, Notify, Role, RoleCertificate, RoleFile, parse_mode};
use crate::diag::Diagnostic;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// One `directories:` entry: a folder with this owner, group and mode.
#[derive(Debug, Clone)]
pub struct RoleDirectory {
    pub path: String,
    /// Where role.yml gives `path`, for messages.
    pub at: Location,
    pub owner: String,
    pub group: String,
    /// Permission bits, e.g. 0o755.
    pub mode: u32,
}

/// One `links:` entry: a symbolic link at `path` pointing to `target` (absolute or
/// relative to the link's folder, as `ln -s` writes it).
#[derive(Debug, Clone)]
pub struct RoleLink {
    pub path: String,
    pub at: Location,
    pub target: String,
    /// What a new or changed link triggers, as a file's `notify`.
    pub notify: Notify,
}

/// One `absent:` entry: a file, link or empty folder that must not exist.
#[derive(Debug, Clone)]
pub struct RoleAbsent {
    pub path: String,
    pub at: Location,
    /// What its removal triggers, as a file's `notify`.
    pub notify: Notify,
}

/// Longest link target accepted (Linux's PATH_MAX); the facts refuse longer ones too.
pub const MAX_LINK_TARGET: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectory {
    path: Spanned<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    path: Spanned<String>,
    target: Spanned<String>,
    #[serde(default)]
    notify: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbsent {
    path: Spanned<String>,
    #[serde(default)]
    notify: Option<Spanned<String>>,
}

/// A role's `directories:`, `links:` and `absent:`, checked.
pub(super) struct Paths {
    pub directories: Vec<RoleDirectory>,
    pub links: Vec<RoleLink>,
    pub absent: Vec<RoleAbsent>,
}

impl Role {
    /// Every path of `directories:`, `links:` and `absent:`, with where role.yml gives it.
    pub fn other_paths(&self) -> impl Iterator<Item = (&str, Location)> {
        let dirs = self.directories.iter().map(|d| (d.path.as_str(), d.at));
        let links = self.links.iter().map(|l| (l.path.as_str(), l.at));
        let absent = self.absent.iter().map(|a| (a.path.as_str(), a.at));
        dirs.chain(links).chain(absent)
    }
}

impl FileChecks<'_> {
    /// The three lists, in that order; each path is checked against the role's files and
    /// certificates and every path before it.
    pub(super) fn paths(
        &self,
        directories: Vec<Spanned<RawDirectory>>,
        links: Vec<Spanned<RawLink>>,
        absent: Vec<Spanned<RawAbsent>>,
        files: &[RoleFile],
        certificates: &[RoleCertificate],
    ) -> Result<Paths, Diagnostic> {
        let mut taken: Vec<String> = files.iter().map(|f| f.dest.clone()).collect();
        taken.extend(
            certificates
                .iter()
                .flat_map(|c| [c.cert.clone(), c.key.clone()]),
        );
        // (path, what it is) of the links and absent paths: nothing goes under them.
        let mut covering: Vec<(String, &str, Location)> = Vec::new();
        let mut out = Paths {
            directories: Vec::new(),
            links: Vec::new(),
            absent: Vec::new(),
        };
        for d in directories {
            let loc = d.referenced;
            let d = d.value;
            let path = self.managed_path(&d.path, "directory", &taken)?;
            let mode = match &d.mode {
                None => 0o755,
                Some(m) => parse_mode(&m.value).ok_or_else(|| {
                    self.at(
                        m.referenced,
                        format!("mode `{}` is not an octal mode", m.value),
                    )
                    .with_hint("write it as a quoted string such as \"0755\" or \"0750\"")
                })?,
            };
            self.owner_group(loc, &d.owner, &d.group)?;
            taken.push(path.clone());
            out.directories.push(RoleDirectory {
                path,
                at: d.path.referenced,
                owner: d.owner.unwrap_or_else(|| "root".into()),
                group: d.group.unwrap_or_else(|| "root".into()),
                mode,
            });
        }
        for l in links {
            let l = l.value;
            let path = self.managed_path(&l.path, "link", &taken)?;
            let target = self.link_target(&l.target)?;
            let notify = match &l.notify {
                None => Notify::None,
                Some(n) => self.notify(n)?,
            };
            taken.push(path.clone());
            covering.push((path.clone(), "a link", l.path.referenced));
            out.links.push(RoleLink {
                path,
                at: l.path.referenced,
                target,
                notify,
            });
        }
        for a in absent {
            let a = a.value;
            let path = self.managed_path(&a.path, "absent", &taken)?;
            if path.split('/').filter(|c| !c.is_empty()).count() < 2 {
                return Err(self
                    .at(
                        a.path.referenced,
                        format!("absent path `{path}` is too close to the root"),
                    )
                    .with_hint(
                        "absent: removes a file, link or empty folder at least two levels deep, \
                         e.g. /etc/nginx/sites-enabled/default",
                    ));
            }
            let notify = match &a.notify {
                None => Notify::None,
                Some(n) => self.notify(n)?,
            };
            taken.push(path.clone());
            covering.push((path.clone(), "absent", a.path.referenced));
            out.absent.push(RoleAbsent {
                path,
                at: a.path.referenced,
                notify,
            });
        }
        for (top, what, at) in &covering {
            let prefix = format!("{top}/");
            if let Some(under) = taken.iter().find(|p| p.starts_with(&prefix)) {
                return Err(self
                    .at(
                        *at,
                        format!("`{top}` is {what} in this role, yet `{under}` is managed under it"),
                    )
                    .with_hint("manage the paths inside a folder, not under a link or a path that must be absent"));
            }
        }
        Ok(out)
    }

    /// An absolute, normalised path (no `.`, `..`, `//`, trailing `/` or `\`), printable,
    /// not listed before in this role. `what` names the list, for messages.
    fn managed_path(
        &self,
        p: &Spanned<String>,
        what: &str,
        taken: &[String],
    ) -> Result<String, Diagnostic> {
        let path = p.value.clone();
        if path.contains(char::is_control) {
            return Err(self
                .at(
                    p.referenced,
                    format!("{what} path {path:?} holds a control character"),
                )
                .with_hint("a path is printable text: remove the line break, tab or \\r"));
        }
        let normal = path.len() > 1
            && path.starts_with('/')
            && !path.contains('\\')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !normal {
            return Err(self
                .at(
                    p.referenced,
                    format!("{what} path `{path}` must be an absolute, normalised path"),
                )
                .with_hint("e.g. /var/www/foobar: no `.`, `..`, `//`, `\\` or trailing `/`; not `/` itself"));
        }
        if taken.contains(&path) {
            return Err(self.at(
                p.referenced,
                format!("path `{path}` is listed twice in this role"),
            ));
        }
        Ok(path)
    }

    /// A link's target: not empty, at most [`MAX_LINK_TARGET`] bytes, printable.
    fn link_target(&self, t: &Spanned<String>) -> Result<String, Diagnostic> {
        let v = &t.value;
        let problem = if v.is_empty() {
            Some("link target is empty".to_string())
        } else if v.len() > MAX_LINK_TARGET {
            Some(format!(
                "link target is longer than {MAX_LINK_TARGET} bytes"
            ))
        } else if v.contains(char::is_control) {
            Some(format!("link target {v:?} holds a control character"))
        } else {
            None
        };
        match problem {
            Some(m) => Err(self.at(t.referenced, m).with_hint(
                "a target is a printable path, absolute or relative to the link's folder",
            )),
            None => Ok(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, parse_role};
    use super::*;
    use crate::role::NotifyKind;

    const BASE: &str = "service:\n  name: nginx\nhandlers:\n  hup: kill -HUP 1\nfiles:\n  - template: web/site.conf.tera\n    dest: /etc/nginx/site.conf\n";

    /// The error of BASE with `extra` appended, or "ok".
    fn verdict(extra: &str) -> String {
        let d = fixture();
        match parse_role(&d, &format!("{BASE}{extra}")) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn directories_links_and_absent_parse_with_defaults() {
        let d = fixture();
        let r = parse_role(
            &d,
            &format!(
                "{BASE}directories:\n  - path: /var/www/foobar\n  - path: /srv/x\n    owner: www-data\n    group: adm\n    mode: \"0750\"\n\
                 links:\n  - path: /etc/nginx/sites-enabled/foobar.conf\n    target: ../sites-available/foobar.conf\n    notify: reload\n\
                 absent:\n  - path: /etc/nginx/sites-enabled/default\n    notify: hup\n  - path: /etc/cron.d/old\n"
            ),
        )
        .expect("valid");
        let dirs: Vec<(&str, &str, &str, u32)> = r
            .directories
            .iter()
            .map(|d| (d.path.as_str(), d.owner.as_str(), d.group.as_str(), d.mode))
            .collect();
        assert_eq!(
            dirs,
            [
                ("/var/www/foobar", "root", "root", 0o755),
                ("/srv/x", "www-data", "adm", 0o750)
            ]
        );
        assert_eq!(r.links[0].target, "../sites-available/foobar.conf");
        assert_eq!(r.links[0].notify, Notify::Service(NotifyKind::Reload));
        assert_eq!(r.absent[0].notify, Notify::Handler("hup".into()));
        assert_eq!(r.absent[1].notify, Notify::None);
        let all: Vec<&str> = r.other_paths().map(|(p, _)| p).collect();
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn path_entries_are_checked_rule_by_rule() {
        let rows: Vec<(String, &str)> = vec![
            ("directories:\n  - path: /var/www\n".into(), "ok"),
            (
                "directories:\n  - path: var/www\n".into(),
                "role.yml:9:11: directory path `var/www` must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: /var/www/\n".into(),
                "must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: /var//www\n".into(),
                "must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: /var/./www\n".into(),
                "must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: /var/www/..\n".into(),
                "must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: /\n".into(),
                "must be an absolute, normalised path",
            ),
            (
                "directories:\n  - path: \"/var/w\\tww\"\n".into(),
                "directory path \"/var/w\\tww\" holds a control character",
            ),
            (
                "directories:\n  - path: /srv/x\n    mode: \"0855\"\n".into(),
                "mode `0855` is not an octal mode",
            ),
            (
                "directories:\n  - path: /srv/x\n    owner: \"-R\"\n".into(),
                "owner `-R` is not a valid user or group name",
            ),
            (
                "directories:\n  - path: /srv/x\n    mdoe: \"0755\"\n".into(),
                "unknown field",
            ),
            (
                "directories:\n  - path: /etc/nginx/site.conf\n".into(),
                "path `/etc/nginx/site.conf` is listed twice in this role",
            ),
            (
                "directories:\n  - path: /srv/x\nabsent:\n  - path: /srv/x\n".into(),
                "path `/srv/x` is listed twice in this role",
            ),
            (
                "links:\n  - path: /etc/a\n    target: /etc/b\n".into(),
                "ok",
            ),
            (
                "links:\n  - path: /etc/a\n    target: \"\"\n".into(),
                "link target is empty",
            ),
            (
                "links:\n  - path: /etc/a\n    target: \"b\\nc\"\n".into(),
                "link target \"b\\nc\" holds a control character",
            ),
            (
                format!(
                    "links:\n  - path: /etc/a\n    target: {}\n",
                    "a".repeat(MAX_LINK_TARGET + 1)
                ),
                "link target is longer than 4096 bytes",
            ),
            (
                "links:\n  - path: /etc/a\n".into(),
                "missing field `target`",
            ),
            (
                "links:\n  - path: /etc/a\n    target: b\n    notify: relaod\n".into(),
                "notify `relaod` is not reload, restart, none or a handler",
            ),
            (
                "absent:\n  - path: /etc/a\n    notify: restart\n".into(),
                "ok",
            ),
            (
                "absent:\n  - path: /etc\n".into(),
                "absent path `/etc` is too close to the root",
            ),
            (
                "absent:\n  - path: /etc/nginx\n".into(),
                "`/etc/nginx` is absent in this role, yet `/etc/nginx/site.conf` is managed under it",
            ),
            (
                "links:\n  - path: /srv/l\n    target: /x\ndirectories:\n  - path: /srv/l/d\n"
                    .into(),
                "`/srv/l` is a link in this role, yet `/srv/l/d` is managed under it",
            ),
            ("absent:\n  - path: /etc/nginx-old\n".into(), "ok"),
        ];
        for (extra, want) in rows {
            let v = verdict(&extra);
            assert!(v.contains(want), "{extra}: {v}");
        }
    }

    #[test]
    fn reload_on_a_link_needs_a_service() {
        let d = fixture();
        let e = parse_role(
            &d,
            "links:\n  - path: /etc/a\n    target: b\n    notify: reload\n",
        )
        .expect_err("no service");
        assert!(
            e.to_string()
                .contains("notify `reload` needs a `service:` in this role"),
            "{e}"
        );
    }
}
