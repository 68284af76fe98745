//! Shell command strings, built by pure functions with exact-string tests beside them.

/// Quotes `s` as one word for a POSIX shell: safe for any input, including quotes,
/// newlines, `$`, backticks and leading dashes.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command line (its words already quoted) run as root through `sudo -n` when `sudo`
/// is set, else as it is by the login shell. `-n` makes sudo fail at once instead of
/// waiting for a password nobody will type. sudo runs the command itself: no `sh -c`
/// in between (a process less on the host for every command).
pub fn as_root(command: &str, sudo: bool) -> String {
    if sudo {
        format!("sudo -n -- {command}")
    } else {
        command.to_string()
    }
}

/// The init system a host runs, as found by facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    /// SysV init scripts (`service NAME ACTION`).
    Other,
}

/// The command that performs `action` (start, reload, restart, enable) on `service`.
/// `--` ends systemctl's options (role.yml names also start with a letter or digit:
/// `service` and `update-rc.d` know no `--`).
///
/// A start or restart clears the unit's failed state first: a package's postinst starts
/// its service with the package's default config, which may crash-loop until systemd's
/// start limit refuses any further start ("start request repeated too quickly"), even
/// the restart with the config this tool just put in place. Its status is the start's.
pub fn service_command(init: Init, action: &str, service: &str) -> String {
    let s = quote(service);
    match (init, action) {
        (Init::Systemd, "enable") => format!(
            "[ \"$(systemctl is-enabled -- {s} 2>/dev/null)\" = enabled ] || systemctl enable --quiet -- {s}"
        ),
        (Init::Systemd, a @ ("start" | "restart")) => {
            format!("systemctl reset-failed -- {s} 2>/dev/null; systemctl {a} -- {s}")
        }
        (Init::Systemd, a) => format!("systemctl {a} -- {s}"),
        (Init::Other, "enable") => format!("update-rc.d {s} defaults >/dev/null"),
        (Init::Other, a) => format!("service {s} {a}"),
    }
}

/// Installs Debian packages without questions, keeping config files already in place;
/// `--` ends apt-get's options, so no name can be read as one.
pub fn apt_install(packages: &[&str]) -> String {
    let pkgs: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- {}",
        pkgs.join(" ")
    )
}

/// Text from a host made safe for a terminal (the counterpart of [`quote`]): control characters other than newline and
/// tab are shown in caret notation (`^G`), so no host can ring bells or send escape
/// sequences to the operator's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_plain_and_hostile() {
        assert_eq!(quote("/etc/nginx/nginx.conf"), "/etc/nginx/nginx.conf");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("`id`;\nx"), "'`id`;\nx'");
        assert_eq!(quote("'"), r"''\'''");
    }

    #[test]
    fn hostile_strings_survive_a_real_shell() {
        for s in [
            "it's",
            "$(echo pwned)",
            "a\nb",
            "`id`",
            "\\",
            "'\"'",
            "-n",
            "*",
            "~",
            "!x",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(s)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    /// Issue 10, finding 15: options end before the names (`--`), so a name that starts
    /// with `-` can never be read as an option by apt-get or systemctl.
    #[test]
    fn names_follow_an_end_of_options_marker() {
        assert!(apt_install(&["nginx"]).ends_with(" -- nginx"));
        assert_eq!(
            service_command(Init::Systemd, "restart", "nginx"),
            "systemctl reset-failed -- nginx 2>/dev/null; systemctl restart -- nginx"
        );
    }

    #[test]
    fn as_root_with_and_without_sudo() {
        assert_eq!(
            as_root("timeout 9 sh -c 'id -u'", false),
            "timeout 9 sh -c 'id -u'"
        );
        assert_eq!(
            as_root("timeout 9 sh -c 'id -u'", true),
            "sudo -n -- timeout 9 sh -c 'id -u'"
        );
    }

    #[test]
    fn service_commands() {
        assert_eq!(
            service_command(Init::Systemd, "reload", "nginx"),
            "systemctl reload -- nginx"
        );
        assert_eq!(
            service_command(Init::Systemd, "enable", "nginx"),
            "[ \"$(systemctl is-enabled -- nginx 2>/dev/null)\" = enabled ] || systemctl enable --quiet -- nginx"
        );
        assert_eq!(
            service_command(Init::Other, "restart", "haproxy"),
            "service haproxy restart"
        );
        assert_eq!(
            apt_install(&["nginx", "curl"]),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
             -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- nginx curl"
        );
    }

    #[test]
    fn every_safe_character_is_left_bare_and_others_are_quoted() {
        for c in "-_./:=@%+,"
            .chars()
            .chain('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
        {
            let s = format!("x{c}");
            assert_eq!(quote(&s), s, "{c:?} needs no quotes");
        }
        for c in " \t\n'\"$`\\;&|<>()*?[]{}~!#^".chars() {
            let s = format!("x{c}");
            assert_ne!(quote(&s), s, "{c:?} must be quoted");
        }
        // One unsafe character anywhere quotes the whole word.
        assert_eq!(quote("a b c"), "'a b c'");
        assert_eq!(quote("abc;"), "'abc;'");
    }

    #[test]
    fn service_commands_per_init_and_action() {
        let rows = [
            (
                Init::Systemd,
                "start",
                "systemctl reset-failed -- 'my app' 2>/dev/null; systemctl start -- 'my app'",
            ),
            (
                Init::Systemd,
                "restart",
                "systemctl reset-failed -- 'my app' 2>/dev/null; systemctl restart -- 'my app'",
            ),
            (Init::Systemd, "reload", "systemctl reload -- 'my app'"),
            (
                Init::Systemd,
                "enable",
                "[ \"$(systemctl is-enabled -- 'my app' 2>/dev/null)\" = enabled ] || systemctl enable --quiet -- 'my app'",
            ),
            (Init::Other, "reload", "service 'my app' reload"),
            (Init::Other, "start", "service 'my app' start"),
            (
                Init::Other,
                "enable",
                "update-rc.d 'my app' defaults >/dev/null",
            ),
        ];
        for (init, action, want) in rows {
            assert_eq!(service_command(init, action, "my app"), want);
        }
    }

    #[test]
    fn apt_install_quotes_each_package() {
        assert!(apt_install(&["a b", "c"]).ends_with(" 'a b' c"));
    }

    #[test]
    fn remote_output_is_made_printable() {
        assert_eq!(
            printable("\u{7}mariadbd: Can't\tx\r\n\u{1b}[31mred\u{9b}"),
            "^Gmariadbd: Can't\tx^M\n^[[31mred\u{fffd}"
        );
    }
}
