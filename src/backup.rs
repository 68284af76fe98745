//! Database backups' pure half (`db backup`, `db list`, `db restore`): the scripts run on
//! the db host and on the backup store, and the parsers of what they send back. A backup
//! is `NAME.sql.gz` (a mariadb-dump, one INSERT per row) and `NAME.manifest` (written by
//! the db_backup role's script: name, created, host, database, file, size, sha256, and
//! `table NAME ROWS` lines); both come from hosts: untrusted, bounded, checked.

use crate::role::is_identifier;
use crate::shell::{printable, quote};
use sha2::{Digest, Sha256};

/// Where the backup store keeps them (the backup_store role).
pub const STORE_DIR: &str = "/var/backups/foobar/data";
/// The db host's copy of the last backup's manifest (the db_backup role's script).
pub const LAST_MANIFEST: &str = "/var/lib/foobar-backup/last";
/// Largest manifest read back.
pub const MAX_MANIFEST_BYTES: usize = 65_536;
/// Largest backup restored (it passes through this machine's memory).
pub const MAX_RESTORE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Most manifests `db list` reads.
pub const MAX_LISTED: usize = 1000;

/// One backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub created: String,
    pub host: String,
    pub database: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// (table, rows), in the dump's order.
    pub tables: Vec<(String, u64)>,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// A backup's name: `DB-YYYYMMDDTHHMMSSZ` (letters, digits, `_`, `-`, `T`, `Z`).
pub fn is_backup_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Reads a manifest (host text). Every field must be there, names must be what the
/// script writes, numbers numbers.
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        ));
    }
    let mut m = Manifest {
        name: String::new(),
        created: String::new(),
        host: String::new(),
        database: String::new(),
        file: String::new(),
        size: 0,
        sha256: String::new(),
        tables: Vec::new(),
    };
    let mut size = None;
    for (n, line) in text.lines().enumerate() {
        let bad = || format!("manifest line {}: cannot read `{}`", n + 1, printable(line));
        let (key, value) = line.split_once(' ').ok_or_else(bad)?;
        match key {
            "name" if is_backup_name(value) => m.name = value.into(),
            "created"
                if value.len() <= 32
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-:".contains(c)) =>
            {
                m.created = value.into()
            }
            "host"
                if value.len() <= 64
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                m.host = value.into()
            }
            "database" if is_identifier(value) => m.database = value.into(),
            "file" => m.file = value.into(),
            "size" => size = Some(value.parse::<u64>().map_err(|_| bad())?),
            "sha256"
                if value.len() == 64
                    && value
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                m.sha256 = value.into()
            }
            "table" => {
                let (t, rows) = value.split_once(' ').ok_or_else(bad)?;
                if !is_identifier(t) {
                    return Err(bad());
                }
                m.tables.push((t.into(), rows.parse().map_err(|_| bad())?));
            }
            _ => return Err(bad()),
        }
    }
    m.size = size.ok_or("the manifest has no size")?;
    for (field, v) in [
        ("name", &m.name),
        ("created", &m.created),
        ("host", &m.host),
        ("database", &m.database),
        ("sha256", &m.sha256),
    ] {
        if v.is_empty() {
            return Err(format!("the manifest has no {field}"));
        }
    }
    if m.file != format!("{}.sql.gz", m.name) {
        return Err(format!(
            "the manifest names the file `{}`, not {}.sql.gz",
            printable(&m.file),
            m.name
        ));
    }
    Ok(m)
}

/// Checks a backup's bytes against its manifest (size and sha256).
pub fn verify(data: &[u8], m: &Manifest) -> Result<(), String> {
    let sha = hex::encode(Sha256::digest(data));
    if data.len() as u64 != m.size || sha != m.sha256 {
        return Err(format!(
            "backup {} is damaged: it is {} bytes with sha256 {sha}, its manifest says {} bytes with sha256 {}",
            m.name,
            data.len(),
            m.size,
            m.sha256
        ));
    }
    Ok(())
}

/// Runs the db host's backup now (the unit waits for the oneshot service) and prints
/// the manifest it left, or the unit's last log lines.
pub fn backup_script() -> String {
    format!(
        "if systemctl start foobar-backup.service; then cat {LAST_MANIFEST}; \
         else rc=$?; journalctl -u foobar-backup.service -n 30 --no-pager -o cat 2>&1 | tail -c 8000; exit $rc; fi\n"
    )
}

/// Prints every manifest of the store, each after a `=== NAME` line.
pub fn list_script() -> String {
    format!(
        "cd {STORE_DIR} 2>/dev/null || exit 0\n\
         for m in $(ls -1 | grep '\\.manifest$' | sort -r | head -n {MAX_LISTED}); do echo \"=== $m\"; head -c {MAX_MANIFEST_BYTES} -- \"$m\"; echo; done\n"
    )
}

/// Splits [`list_script`]'s output into manifests; unreadable ones are reported by name.
pub fn parse_list(out: &str) -> (Vec<Manifest>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for block in out.split("=== ").filter(|b| !b.trim().is_empty()) {
        let (name, text) = block.split_once('\n').unwrap_or((block, ""));
        match parse_manifest(text.trim_end()) {
            Ok(m) => good.push(m),
            Err(e) => bad.push(format!("{}: {e}", printable(name))),
        }
    }
    (good, bad)
}

/// One stored file, whole (bounded).
pub fn read_script(file: &str, max: u64) -> String {
    format!(
        "f={}/{}; [ -f \"$f\" ] || {{ echo \"no such backup file: $f\" >&2; exit 3; }}; head -c {max} -- \"$f\"\n",
        STORE_DIR,
        quote(file)
    )
}

/// Each table of `db` with its exact row count (`table NAME ROWS`), after checking that
/// MariaDB runs. Table names the host sends that are not identifiers are skipped.
pub fn counts_script(db: &str) -> String {
    format!(
        "systemctl is-active -q mariadb || {{ echo 'MariaDB is not running on this host' >&2; exit 3; }}\n\
         mariadb -N -B -e \"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE'\" | \
         while read -r t; do case $t in ''|*[!A-Za-z0-9_]*) continue ;; esac; \
         printf 'table %s %s\\n' \"$t\" \"$(mariadb -N -B -e \"SELECT COUNT(*) FROM \\`{db}\\`.\\`$t\\`\")\"; done\n"
    )
}

/// Reads [`counts_script`]'s output.
pub fn parse_counts(out: &str) -> Result<Vec<(String, u64)>, String> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let bad = || format!("cannot read `{}`", printable(l));
            let rest = l.strip_prefix("table ").ok_or_else(bad)?;
            let (t, n) = rest.split_once(' ').ok_or_else(bad)?;
            if !is_identifier(t) {
                return Err(bad());
            }
            Ok((t.to_string(), n.trim().parse().map_err(|_| bad())?))
        })
        .collect()
}

/// Loads the dump on stdin (gzip) into MariaDB as root over its socket.
pub fn restore_script() -> String {
    "gzip -dc | mariadb --batch\n".to_string()
}

/// What a restore would overwrite: the tables that hold rows.
pub fn holding_data(counts: &[(String, u64)]) -> Vec<String> {
    counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t}: {n} rows"))
        .collect()
}

/// Compares the restored counts with the manifest's: every table of the backup must be
/// there with exactly its rows.
pub fn check_counts(m: &Manifest, now: &[(String, u64)]) -> Result<(), String> {
    let mut wrong = Vec::new();
    for (t, want) in &m.tables {
        match now.iter().find(|(n, _)| n == t) {
            None => wrong.push(format!("{t}: missing (backup: {want} rows)")),
            Some((_, got)) if got != want => wrong.push(format!("{t}: {got} rows, backup: {want}")),
            Some(_) => {}
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "restored {} but the database does not match it: {}",
            m.name,
            wrong.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn text() -> String {
        format!(
            "name foobar-20261201T200102Z\ncreated 2026-12-01T20:01:02Z\nhost db1\ndatabase foobar\n\
             file foobar-20261201T200102Z.sql.gz\nsize 1234\nsha256 {SHA}\ntable visits 14198\ntable schema_migrations 1\n"
        )
    }

    #[test]
    fn a_manifest_reads_back_every_field() {
        let m = parse_manifest(&text()).expect("manifest");
        assert_eq!(m.name, "foobar-20261201T200102Z");
        assert_eq!(m.host, "db1");
        assert_eq!(m.database, "foobar");
        assert_eq!(m.size, 1234);
        assert_eq!(
            m.tables,
            [
                ("visits".to_string(), 14198),
                ("schema_migrations".to_string(), 1)
            ]
        );
        assert_eq!(m.rows(), 14199);
    }

    #[test]
    fn a_manifest_with_a_bad_or_missing_field_is_refused_saying_which() {
        let cases = [
            ("size 1234\n", "size x\n", "line 6"),
            ("database foobar", "database foo-bar", "line 4"),
            ("table visits 14198", "table `x` 1", "line 8"),
            ("table visits 14198", "table visits many", "line 8"),
            ("host db1\n", "", "no host"),
            ("size 1234\n", "", "no size"),
            (
                "file foobar-20261201T200102Z.sql.gz",
                "file ../../etc/passwd",
                "names the file",
            ),
            ("name foobar-20261201T200102Z", "name ../x", "line 1"),
            (SHA, "abc", "line 7"),
            ("created 2026-12-01T20:01:02Z", "whatever 1", "line 2"),
        ];
        for (from, to, says) in cases {
            let t = text().replacen(from, to, 1);
            let e = parse_manifest(&t).unwrap_err();
            assert!(e.contains(says), "{from} -> {to}: {e}");
        }
        let e = parse_manifest(&"x".repeat(MAX_MANIFEST_BYTES + 1)).unwrap_err();
        assert!(e.contains("larger"), "{e}");
        let e = parse_manifest(&text().replace("db1", "db1\u{1b}[2J")).unwrap_err();
        assert!(!e.contains('\u{1b}'), "printable: {e}");
    }

    #[test]
    fn verify_refuses_a_flipped_byte_or_a_cut_file() {
        let data = b"the dump".to_vec();
        let mut m = parse_manifest(&text()).expect("manifest");
        m.size = data.len() as u64;
        m.sha256 = hex::encode(Sha256::digest(&data));
        assert_eq!(verify(&data, &m), Ok(()));
        let mut flipped = data.clone();
        flipped[3] ^= 1;
        let e = verify(&flipped, &m).unwrap_err();
        assert!(e.contains("is damaged") && e.contains(&m.sha256), "{e}");
        assert!(verify(&data[..4], &m).unwrap_err().contains("4 bytes"));
    }

    #[test]
    fn counts_are_read_strictly_and_compared_table_by_table() {
        let now = parse_counts("table visits 14198\ntable schema_migrations 1\n").expect("counts");
        let m = parse_manifest(&text()).expect("manifest");
        assert_eq!(check_counts(&m, &now), Ok(()));
        let fewer = parse_counts("table visits 14000\n").expect("counts");
        let e = check_counts(&m, &fewer).unwrap_err();
        assert!(e.contains("visits: 14000 rows, backup: 14198"), "{e}");
        assert!(e.contains("schema_migrations: missing"), "{e}");
        for bad in [
            "visits 1",
            "table visits",
            "table vi`sits 1",
            "table visits -1",
        ] {
            assert!(parse_counts(bad).is_err(), "{bad}");
        }
        assert_eq!(
            holding_data(&now),
            ["visits: 14198 rows", "schema_migrations: 1 rows"]
        );
        assert!(holding_data(&[("visits".into(), 0)]).is_empty());
    }

    #[test]
    fn the_list_keeps_good_manifests_and_names_the_others() {
        let out = format!(
            "=== a.manifest\n{}\n=== b.manifest\nnot a manifest\n",
            text()
        );
        let (good, bad) = parse_list(&out);
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("b.manifest: manifest line 1"), "{bad:?}");
        assert_eq!(parse_list(""), (vec![], vec![]));
    }

    #[test]
    fn names_and_scripts() {
        assert!(is_backup_name("foobar-20261201T200102Z"));
        for bad in ["", "-x", ".x", "a/b", "a b", "a;b"] {
            assert!(!is_backup_name(bad), "{bad}");
        }
        assert_eq!(
            read_script("x y.sql.gz", 10),
            "f=/var/backups/foobar/data/'x y.sql.gz'; [ -f \"$f\" ] || { echo \"no such backup file: $f\" >&2; exit 3; }; head -c 10 -- \"$f\"\n"
        );
        assert!(counts_script("foobar").contains("TABLE_SCHEMA = 'foobar'"));
        assert!(backup_script().starts_with(
            "if systemctl start foobar-backup.service; then cat /var/lib/foobar-backup/last;"
        ));
    }

    /// The scripts in a real shell on local files: the list, a read, the count parser on a
    /// fake mariadb.
    #[test]
    fn list_and_read_scripts_run_in_a_real_shell() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().to_string_lossy().to_string();
        std::fs::write(dir.path().join("foobar-1.manifest"), text()).expect("w");
        std::fs::write(dir.path().join("foobar-1.sql.gz"), b"\x1f\x8b\x00binary").expect("w");
        let run = |s: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(s.replace(STORE_DIR, &d))
                .output()
                .expect("sh");
            (out.status.code(), out.stdout)
        };
        let (code, out) = run(&list_script());
        assert_eq!(code, Some(0));
        let (good, bad) = parse_list(&String::from_utf8_lossy(&out));
        assert_eq!(
            (good.len(), bad.len()),
            (1, 0),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let (code, out) = run(&read_script("foobar-1.sql.gz", 1000));
        assert_eq!(code, Some(0));
        assert_eq!(out, b"\x1f\x8b\x00binary");
        let (code, _) = run(&read_script("nope.sql.gz", 1000));
        assert_eq!(code, Some(3));
    }
}
