//! Facts about the paths a role manages besides files: its directories, links and absent
//! paths. In the same script as the rest, one line per path (one `readlink` per link; the
//! others join the managed files in the script's one `stat`):
//!
//! ```text
//! NODE none PATH                 nothing there
//! NODE link BASE64 PATH          a symbolic link; its target, base64 (at most 4096 bytes)
//! S HEXMODE OWNER GROUP PATH     anything else, from `stat -c 'S %f %U %G %n'` (lstat: the
//!                                raw mode in hex, its type bits say file, folder, fifo, ...)
//! NODE full PATH                 a folder with entries, where a link or nothing must be
//! ```
//!
//! Leftovers beside these paths (`.NAME.fp-XXXXXX`, `.NAME.fp-prev`) are reported with the
//! same `T` and `B` lines as beside files.

use super::{FactQuery, FactsReader};
use crate::role::MAX_LINK_TARGET;
use crate::shell::quote;

/// What a directory, link or absent path of a role is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFact {
    /// Nothing there.
    Missing,
    /// A symbolic link; its target as the host has it (bytes: not necessarily UTF-8).
    Link(Vec<u8>),
    /// A folder. `entries`: it holds something (only looked at where a link or nothing
    /// must be: such a folder is never deleted).
    Dir {
        mode: u32,
        owner: String,
        group: String,
        entries: bool,
    },
    /// A regular file.
    File,
    /// Anything else: `fifo`, `socket`, `block device`, `character device`, or a `link`
    /// that appeared between the script's test and its stat.
    Other(&'static str),
}

impl NodeFact {
    /// What it is, in a word or two, for the plan.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeFact::Missing => "nothing",
            NodeFact::Link(_) => "link",
            NodeFact::Dir { entries: true, .. } => "directory with entries",
            NodeFact::Dir { .. } => "empty directory",
            NodeFact::File => "file",
            NodeFact::Other(k) => k,
        }
    }
}

/// The part of the facts script about `q.dirs` (must be folders) and `q.nodes` (links and
/// absent paths: a folder there is also checked for entries, without a process: the
/// shell's globs). Each path that exists and is no link is added to `"$@"`, for the
/// script's one `stat` ([`super::script`]). Its output is read by [`FactsReader::node`].
pub(super) fn script(q: &FactQuery) -> String {
    if q.dirs.is_empty() && q.nodes.is_empty() {
        return String::new();
    }
    let words: Vec<String> = q
        .dirs
        .iter()
        .map(|p| quote(&format!("d:{p}")))
        .chain(q.nodes.iter().map(|p| quote(&format!("n:{p}"))))
        .collect();
    format!(
        "for p in {}; do k=${{p%%:*}}; p=${{p#?:}}; d=${{p%/*}}; b=${{p##*/}}; \
         if [ -e \"$d/.$b.fp-prev\" ] || [ -L \"$d/.$b.fp-prev\" ]; then echo \"B $p\"; fi; \
         for t in \"$d/.$b\".fp-??????; do if [ -f \"$t\" ] || [ -L \"$t\" ]; then echo \"T $t\"; fi; done; \
         if [ -L \"$p\" ]; then echo \"NODE link $(readlink -n -- \"$p\" | base64 -w0) $p\"; \
         elif [ -e \"$p\" ]; then set -- \"$@\" \"$p\"; \
         if [ \"$k\" = n ] && [ -d \"$p\" ]; then for e in \"$p\"/* \"$p\"/.[!.]* \"$p\"/..?*; do \
         if [ -e \"$e\" ] || [ -L \"$e\" ]; then echo \"NODE full $p\"; break; fi; done; fi; \
         else echo \"NODE none $p\"; fi; done\n",
        words.join(" ")
    )
}

/// What the `NODE` lines said so far.
#[derive(Debug, Default)]
pub(super) struct NodeLines {
    /// Path -> what it is (folders still without their `full` mark).
    seen: std::collections::BTreeMap<String, NodeFact>,
    /// Folders reported with entries (`NODE full`).
    full: std::collections::BTreeSet<String>,
}

impl NodeLines {
    /// Every path asked about, each with exactly one state; `Err(path)` names the first
    /// path the output does not tell about.
    pub(super) fn finish(
        mut self,
        q: &FactQuery,
    ) -> Result<std::collections::BTreeMap<String, NodeFact>, String> {
        let mut out = std::collections::BTreeMap::new();
        for p in q.dirs.iter().chain(q.nodes.iter()) {
            let mut fact = self.seen.remove(*p).ok_or_else(|| p.to_string())?;
            if let NodeFact::Dir { entries, .. } = &mut fact {
                *entries = self.full.contains(*p);
            }
            out.insert(p.to_string(), fact);
        }
        Ok(out)
    }
}

/// Whether `path` is one of the directories, links or absent paths asked about.
pub(super) fn asked(q: &FactQuery, path: &str) -> bool {
    q.dirs.contains(&path) || q.nodes.contains(&path)
}

impl FactsReader {
    /// A `NODE` line (see the module's doc); `None` when it is not what the script prints
    /// about a path asked about, or tells about a path twice.
    pub(super) fn node(&mut self, rest: &str, q: &FactQuery) -> Option<()> {
        let (first, tail) = rest.split_once(' ')?;
        let (path, fact) = match first {
            "none" => (tail, NodeFact::Missing),
            "link" => {
                let (b64, path) = tail.split_once(' ')?;
                (path, NodeFact::Link(decode_target(b64)?))
            }
            // Printed before the path's stat line; a mark on anything but a folder (it
            // was replaced in between) is dropped by `finish`.
            "full" if q.nodes.contains(&tail) => {
                return self.nodes.full.insert(tail.to_string()).then_some(());
            }
            _ => return None,
        };
        self.seen_node(path, fact, q)
    }

    /// A path of `q.dirs` or `q.nodes` in the `S` line of the script's one `stat` (its
    /// raw mode, owner and group). `file`: the path is a managed file too, so it was
    /// stat'ed twice: its second line is no news.
    pub(super) fn stat_node(
        &mut self,
        path: &str,
        raw: u32,
        (owner, group): (&str, &str),
        (q, file): (&FactQuery, bool),
    ) -> Option<()> {
        if file && self.nodes.seen.contains_key(path) {
            return Some(());
        }
        self.seen_node(path, of_mode(raw, owner, group), q)
    }

    /// Records what `path` is; `None` when it was not asked about or was told already.
    fn seen_node(&mut self, path: &str, fact: NodeFact, q: &FactQuery) -> Option<()> {
        if !asked(q, path) || self.nodes.seen.contains_key(path) {
            return None;
        }
        self.nodes.seen.insert(path.to_string(), fact);
        Some(())
    }
}

/// A link's target: base64 of at most [`MAX_LINK_TARGET`] bytes, never empty.
fn decode_target(b64: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if b64.is_empty() || b64.len() > MAX_LINK_TARGET.div_ceil(3) * 4 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (!bytes.is_empty() && bytes.len() <= MAX_LINK_TARGET).then_some(bytes)
}

/// The fact for a raw `st_mode` (type bits and permission bits).
fn of_mode(raw: u32, owner: &str, group: &str) -> NodeFact {
    match raw & 0o170000 {
        0o040000 => NodeFact::Dir {
            mode: raw & 0o7777,
            owner: owner.to_string(),
            group: group.to_string(),
            entries: false,
        },
        0o100000 => NodeFact::File,
        0o120000 => NodeFact::Other("link"),
        0o010000 => NodeFact::Other("fifo"),
        0o140000 => NodeFact::Other("socket"),
        0o060000 => NodeFact::Other("block device"),
        0o020000 => NodeFact::Other("character device"),
        _ => NodeFact::Other("unknown kind of file"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Facts, FactsError, parse};
    use super::*;

    fn q<'a>(dirs: &[&'a str], nodes: &[&'a str]) -> FactQuery<'a> {
        FactQuery {
            dirs: dirs.to_vec(),
            nodes: nodes.to_vec(),
            ..Default::default()
        }
    }

    fn b64(s: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// Recorded from a Debian 12 host (a web root, the enabled site, Debian's default
    /// site, a folder with entries and nothing).
    fn recorded() -> String {
        format!(
            "INIT systemd\n\
             NODE link {} /etc/nginx/sites-enabled/foobar.conf\n\
             NODE none /srv/gone\n\
             NODE full /etc/nginx/conf.d\n\
             S 41ed root root /var/www/foobar\n\
             S 81a4 root root /etc/nginx/sites-enabled/default\n\
             S 43e8 www-data adm /etc/nginx/conf.d\n\
             END\n",
            b64(b"/etc/nginx/sites-available/foobar.conf")
        )
    }

    fn recorded_query() -> FactQuery<'static> {
        q(
            &["/var/www/foobar"],
            &[
                "/etc/nginx/sites-enabled/foobar.conf",
                "/etc/nginx/sites-enabled/default",
                "/etc/nginx/conf.d",
                "/srv/gone",
            ],
        )
    }

    #[test]
    fn recorded_node_lines_parse() {
        let f = parse(&recorded(), &recorded_query()).expect("parses");
        assert_eq!(
            f.nodes["/etc/nginx/sites-enabled/foobar.conf"],
            NodeFact::Link(b"/etc/nginx/sites-available/foobar.conf".to_vec())
        );
        assert_eq!(f.nodes["/srv/gone"], NodeFact::Missing);
        assert_eq!(
            f.nodes["/var/www/foobar"],
            NodeFact::Dir {
                mode: 0o755,
                owner: "root".into(),
                group: "root".into(),
                entries: false
            }
        );
        assert_eq!(f.nodes["/etc/nginx/sites-enabled/default"], NodeFact::File);
        assert_eq!(
            f.nodes["/etc/nginx/conf.d"],
            NodeFact::Dir {
                mode: 0o1750,
                owner: "www-data".into(),
                group: "adm".into(),
                entries: true
            }
        );
        assert_eq!(
            f.nodes["/etc/nginx/conf.d"].kind(),
            "directory with entries"
        );
    }

    #[test]
    fn node_lines_that_are_not_what_the_script_prints_are_refused_with_their_line() {
        let query = recorded_query();
        for (bad, line) in [
            ("NODE none /etc/shadow", 2),
            ("NODE link %%% /srv/gone", 2),
            ("NODE link  /srv/gone", 2),
            ("S 41ed root /srv/gone", 2),
            ("S 4zed root root /srv/gone", 2),
            ("S 1041ed root root /srv/gone", 2),
            ("NODE full /var/www/foobar", 2),
            ("NODE what", 2),
        ] {
            let out = format!("INIT systemd\n{bad}\nEND\n");
            let e = parse(&out, &query).expect_err(bad);
            assert!(
                matches!(&e, FactsError::Unreadable { line: l, .. } if *l == line),
                "{bad}: {e:?}"
            );
        }
        // A path told about twice, a `full` before its folder's stat line.
        let twice = recorded().replace(
            "NODE none /srv/gone\n",
            "NODE none /srv/gone\nNODE none /srv/gone\n",
        );
        assert!(parse(&twice, &query).is_err());
        let early = recorded().replace(
            "NODE full /etc/nginx/conf.d\nS 41ed root root /var/www/foobar\n",
            "S 41ed root root /var/www/foobar\nNODE full /var/www/foobar\n",
        );
        assert!(
            parse(&early, &query).is_err(),
            "a wanted folder is never checked for entries"
        );
        // A link target over 4096 bytes.
        let long = format!(
            "INIT systemd\nNODE link {} /srv/gone\nEND\n",
            b64(&[b'a'; MAX_LINK_TARGET + 1])
        );
        assert!(parse(&long, &query).is_err());
        let max = format!(
            "INIT systemd\nNODE link {} /srv/gone\nEND\n",
            b64(&[b'a'; MAX_LINK_TARGET])
        );
        let q1 = q(&[], &["/srv/gone"]);
        assert!(parse(&max, &q1).is_ok());
    }

    #[test]
    fn a_path_the_output_does_not_tell_about_fails_the_facts() {
        let out = recorded().replace("NODE none /srv/gone\n", "");
        let e = parse(&out, &recorded_query()).expect_err("missing");
        assert_eq!(e.to_string(), "facts output lacks the path /srv/gone");
    }

    #[test]
    fn leftovers_beside_these_paths_are_expected_and_others_refused() {
        let query = recorded_query();
        let with = |lines: &str| {
            parse(
                &recorded().replace("END\n", &format!("{lines}END\n")),
                &query,
            )
        };
        let f = with(
            "B /etc/nginx/sites-enabled/default\nT /etc/nginx/sites-enabled/.foobar.conf.fp-Ab12Cd\nT /var/www/.foobar.fp-000001\n",
        )
        .expect("parses");
        assert!(f.unfinished.contains("/etc/nginx/sites-enabled/default"));
        assert_eq!(f.stale_temps.len(), 2);
        for bad in [
            "B /etc/nginx/sites-enabled/other",
            "T /etc/nginx/sites-enabled/.default.fp-Ab12C",
            "T /etc/nginx/.conf.d.fp-Ab12Cd/x",
        ] {
            assert!(
                matches!(
                    with(&format!("{bad}\n")),
                    Err(FactsError::UnexpectedLeftover { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn script_is_one_loop_feeding_the_one_stat() {
        let s = script(&q(&["/var/www/foobar"], &["/etc/it's"]));
        assert_eq!(
            s,
            "for p in d:/var/www/foobar 'n:/etc/it'\\''s'; do k=${p%%:*}; p=${p#?:}; d=${p%/*}; b=${p##*/}; \
             if [ -e \"$d/.$b.fp-prev\" ] || [ -L \"$d/.$b.fp-prev\" ]; then echo \"B $p\"; fi; \
             for t in \"$d/.$b\".fp-??????; do if [ -f \"$t\" ] || [ -L \"$t\" ]; then echo \"T $t\"; fi; done; \
             if [ -L \"$p\" ]; then echo \"NODE link $(readlink -n -- \"$p\" | base64 -w0) $p\"; \
             elif [ -e \"$p\" ]; then set -- \"$@\" \"$p\"; \
             if [ \"$k\" = n ] && [ -d \"$p\" ]; then for e in \"$p\"/* \"$p\"/.[!.]* \"$p\"/..?*; do \
             if [ -e \"$e\" ] || [ -L \"$e\" ]; then echo \"NODE full $p\"; break; fi; done; fi; \
             else echo \"NODE none $p\"; fi; done\n"
        );
        assert_eq!(script(&FactQuery::default()), "");
    }

    /// Runs the whole facts script with a local shell on a temp folder and parses it.
    fn facts_here(query: &FactQuery) -> Facts {
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", &super::super::script(query)])
            .output()
            .expect("sh");
        parse(&String::from_utf8_lossy(&out.stdout), query).expect("parses")
    }

    #[test]
    fn script_runs_in_a_real_shell_on_temp_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::create_dir(p("www")).expect("mkdir");
        std::fs::set_permissions(p("www"), std::fs::Permissions::from_mode(0o2750)).expect("chmod");
        std::fs::create_dir(p("empty")).expect("mkdir");
        std::fs::create_dir(p("hidden")).expect("mkdir");
        std::fs::write(p("hidden/.only-a-dotfile"), "x").expect("w");
        std::fs::create_dir(p("dotdot")).expect("mkdir");
        std::fs::write(p("dotdot/..x"), "x").expect("w");
        std::fs::write(p("file"), "x").expect("w");
        let target = "../it's a \"target\"\twith\nnewline";
        std::os::unix::fs::symlink(target, p("link")).expect("ln");
        std::os::unix::fs::symlink(p("nowhere"), p("dangling")).expect("ln");
        std::os::unix::fs::symlink(p("www"), p("dirlink")).expect("ln");
        std::fs::write(p(".file.fp-prev"), "old").expect("w");
        std::os::unix::fs::symlink("x", p(".link.fp-Zz09aB")).expect("ln");
        let (www, empty, hidden, dotdot, file, link, dangling, dirlink, none) = (
            p("www"),
            p("empty"),
            p("hidden"),
            p("dotdot"),
            p("file"),
            p("link"),
            p("dangling"),
            p("dirlink"),
            p("none"),
        );
        let query = q(
            &[&www, &dirlink],
            &[&empty, &hidden, &dotdot, &file, &link, &dangling, &none],
        );
        let f = facts_here(&query);
        let (owner, group) = match &f.nodes[&www] {
            NodeFact::Dir {
                mode,
                owner,
                group,
                entries,
            } => {
                assert_eq!((*mode, *entries), (0o2750, false));
                (owner.clone(), group.clone())
            }
            other => panic!("{other:?}"),
        };
        assert!(!owner.is_empty() && !group.is_empty());
        let dir_of = |entries| NodeFact::Dir {
            mode: 0o755,
            owner: owner.clone(),
            group: group.clone(),
            entries,
        };
        let mode_of = |p: &str| match &f.nodes[p] {
            NodeFact::Dir { mode, .. } => *mode,
            _ => 0,
        };
        // The umask decides the mode of the folders made here: compare the rest.
        let strip = |fact: &NodeFact| match fact {
            NodeFact::Dir {
                owner,
                group,
                entries,
                ..
            } => NodeFact::Dir {
                mode: 0o755,
                owner: owner.clone(),
                group: group.clone(),
                entries: *entries,
            },
            other => other.clone(),
        };
        assert!(mode_of(&empty) > 0);
        assert_eq!(strip(&f.nodes[&empty]), dir_of(false));
        assert_eq!(strip(&f.nodes[&hidden]), dir_of(true), "a dotfile counts");
        assert_eq!(strip(&f.nodes[&dotdot]), dir_of(true), "..x counts");
        assert_eq!(f.nodes[&file], NodeFact::File);
        assert_eq!(f.nodes[&link], NodeFact::Link(target.as_bytes().to_vec()));
        assert!(matches!(&f.nodes[&dangling], NodeFact::Link(t) if t.ends_with(b"/nowhere")));
        assert!(
            matches!(&f.nodes[&dirlink], NodeFact::Link(_)),
            "never followed"
        );
        assert_eq!(f.nodes[&none], NodeFact::Missing);
        assert!(f.unfinished.contains(&file));
        assert_eq!(
            f.stale_temps.iter().collect::<Vec<_>>(),
            vec![&p(".link.fp-Zz09aB")],
            "a temporary link counts"
        );
    }
}
