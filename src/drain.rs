//! Draining a host out of the load balancers around its restart, through HAProxy's
//! runtime API (the admin socket on each balancer, reached over the SSH connections the
//! run already has).
//!
//! Before: on every balancer, the host's server in the tier's backend is set to `drain`
//! (no new requests, sessions in progress finish), then the script waits until it has no
//! session left (bounded). It is left alone where draining it would empty the backend
//! (no other server is up there), where it is not in the backend (a new host), and where
//! HAProxy does not run. After the host's own health checks passed: `ready`, and wait until
//! HAProxy's checks see it up, so the next host is only taken out once this one serves.
//!
//! The scripts and the parsing of their one-line answers are pure (tested below); the
//! rollout ([`crate::rollout`]) runs them.

use crate::apply::exec_bounded;
use crate::inventory::Drain;
use crate::shell::{printable, quote};
use crate::transport::Transport;
use std::sync::Arc;
use std::time::Duration;

/// HAProxy's admin socket, as the haproxy role configures it.
const ADMIN_SOCKET: &str = "/run/haproxy/admin.sock";
/// How long HAProxy's checks may take to see a host up again after its restart.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack on the host over a script's own deadline.
const SLACK: Duration = Duration::from_secs(15);

/// The host-side limit of the drain script: its wait for sessions, plus slack.
fn drain_limit(d: &Drain) -> Duration {
    d.timeout + SLACK
}

/// The host-side limit of the ready script: its wait for HAProxy's checks, plus slack.
fn ready_limit() -> Duration {
    READY_TIMEOUT + SLACK
}

/// A balancer the drain goes through: its name and connection.
pub struct Balancer<T> {
    pub name: String,
    pub session: Arc<T>,
}

/// What draining did on one balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// In drain; this many sessions were still open when the wait ended (0: all ended).
    Yes { sessions_left: u32 },
    /// Not drained, and why (said to the user).
    Skipped(String),
}

/// What setting the host ready did on one balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Up,
    /// Not up within the wait: HAProxy's last status for it.
    NotUp(String),
    /// Nothing to do there (and why).
    Skipped(String),
}

/// The shell prelude of both scripts: `api CMD` talks to the admin socket; `row` prints
/// `SESSIONS STATUS` of the server (or `absent`); `others_up` counts the backend's other
/// servers whose status is UP. `show stat` is CSV: field 5 is scur, field 18 status.
fn prelude(backend: &str, server: &str, tag: &str) -> String {
    format!(
        r#"b={b}; s={s}; sock={sock}
if [ ! -S "$sock" ]; then echo '{tag} skip no-socket'; exit 0; fi
if ! command -v socat >/dev/null 2>&1; then echo '{tag} skip no-socat'; exit 0; fi
api() {{ printf '%s\n' "$1" | socat -t 5 - "UNIX-CONNECT:$sock"; }}
row() {{ api 'show stat' | awk -F, -v b="$b" -v s="$s" '$1 == b && $2 == s {{ print $5 " " $18; f = 1 }} END {{ if (!f) print "absent" }}'; }}
others_up() {{ api 'show stat' | awk -F, -v b="$b" -v s="$s" '$1 == b && $2 != s && $2 != "BACKEND" && $2 != "FRONTEND" && $18 ~ /^UP/ {{ n++ }} END {{ print n + 0 }}'; }}
if [ "$(row)" = absent ]; then echo '{tag} skip absent'; exit 0; fi
"#,
        b = quote(backend),
        s = quote(server),
        sock = ADMIN_SOCKET,
    )
}

/// Puts `server` of `backend` in drain and waits (at most `wait`) for its sessions to end.
/// Answers one line: `FP-DRAIN drained N` or `FP-DRAIN skip REASON`.
pub fn drain_script(backend: &str, server: &str, wait: Duration) -> String {
    format!(
        r#"{prelude}if [ "$(others_up)" = 0 ]; then echo 'FP-DRAIN skip alone'; exit 0; fi
out=$(api "set server $b/$s state drain")
if [ -n "$out" ]; then echo "FP-DRAIN error $out"; exit 1; fi
end=$(( $(date +%s) + {wait} ))
while :; do
  n=$(row | cut -d' ' -f1)
  if [ "$n" = 0 ] || [ "$(date +%s)" -ge "$end" ]; then echo "FP-DRAIN drained $n"; exit 0; fi
  sleep 0.2
done
"#,
        prelude = prelude(backend, server, "FP-DRAIN"),
        wait = wait.as_secs().max(1),
    )
}

/// Sets `server` of `backend` ready and waits (at most `wait`) until HAProxy sees it UP.
/// Answers one line: `FP-READY up`, `FP-READY down STATUS` or `FP-READY skip REASON`.
pub fn ready_script(backend: &str, server: &str, wait: Duration) -> String {
    format!(
        r#"{prelude}out=$(api "set server $b/$s state ready")
if [ -n "$out" ]; then echo "FP-READY error $out"; exit 1; fi
end=$(( $(date +%s) + {wait} ))
while :; do
  st=$(row | cut -d' ' -f2-)
  case $st in UP*|'no check') echo 'FP-READY up'; exit 0 ;; esac
  if [ "$(date +%s)" -ge "$end" ]; then echo "FP-READY down $st"; exit 0; fi
  sleep 0.2
done
"#,
        prelude = prelude(backend, server, "FP-READY"),
        wait = wait.as_secs().max(1),
    )
}

/// Why a balancer was skipped, in words.
fn skip_reason(word: &str, balancer: &str, server: &str) -> String {
    match word {
        "no-socket" => format!("HAProxy's admin socket is not on {balancer} (not running)"),
        "no-socat" => format!("socat is missing on {balancer} (the haproxy role installs it)"),
        "absent" => format!("{server} is not in {balancer}'s backend yet"),
        "alone" => format!(
            "no other server is up in {balancer}'s backend: draining {server} would leave it empty"
        ),
        other => format!("{balancer}: {}", printable(other)),
    }
}

/// Reads the drain script's answer (untrusted: from the host).
pub fn parse_drained(stdout: &str, balancer: &str, server: &str) -> Result<Drained, String> {
    let line = last_tagged(stdout, "FP-DRAIN ")
        .ok_or_else(|| format!("{balancer}: the drain script gave no answer"))?;
    let mut words = line.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("drained"), Some(n)) => Ok(Drained::Yes {
            sessions_left: n.trim().parse().unwrap_or(0),
        }),
        (Some("skip"), Some(why)) => {
            Ok(Drained::Skipped(skip_reason(why.trim(), balancer, server)))
        }
        _ => Err(format!(
            "{balancer}: HAProxy refused to drain {server}: {}",
            printable(line)
        )),
    }
}

/// Reads the ready script's answer (untrusted: from the host).
pub fn parse_ready(stdout: &str, balancer: &str, server: &str) -> Result<Ready, String> {
    let line = last_tagged(stdout, "FP-READY ")
        .ok_or_else(|| format!("{balancer}: the ready script gave no answer"))?;
    let mut words = line.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("up"), _) => Ok(Ready::Up),
        (Some("down"), st) => Ok(Ready::NotUp(printable(st.unwrap_or("").trim()))),
        (Some("skip"), Some(why)) => Ok(Ready::Skipped(skip_reason(why.trim(), balancer, server))),
        _ => Err(format!(
            "{balancer}: HAProxy refused to set {server} ready: {}",
            printable(line)
        )),
    }
}

/// The text after `tag` on the last line that starts with it, bounded.
fn last_tagged<'a>(stdout: &'a str, tag: &str) -> Option<&'a str> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(tag))
        .map(|l| &l[..l.len().min(400)])
        .map(str::trim)
}

/// Runs one of the scripts on a balancer (bounded there and here); its output as text.
async fn answer<T: Transport>(
    b: &Balancer<T>,
    script: &str,
    sudo: bool,
    limit: Duration,
) -> Result<String, String> {
    let out = exec_bounded(b.session.as_ref(), &b.name, script, b"", sudo, limit).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drains `server` on every balancer. Errors name the balancer; what was skipped and why
/// comes back as notes for the progress lines.
pub async fn drain<T: Transport>(
    balancers: &[Balancer<T>],
    server: &str,
    d: &Drain,
    sudo: bool,
) -> Result<Vec<String>, String> {
    let script = drain_script(&d.backend, server, d.timeout);
    let runs = balancers.iter().map(|b| {
        let script = &script;
        async move {
            let stdout = answer(b, script, sudo, drain_limit(d)).await?;
            match parse_drained(&stdout, &b.name, server)? {
                Drained::Yes { sessions_left: 0 } => {
                    Ok(format!("drained from {} ({})", b.name, d.backend))
                }
                Drained::Yes { sessions_left } => Ok(format!(
                    "drained from {} ({}); {sessions_left} session(s) still open after {}s",
                    b.name,
                    d.backend,
                    d.timeout.as_secs()
                )),
                Drained::Skipped(why) => Ok(format!("not drained: {why}")),
            }
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// Sets `server` ready on every balancer and waits until each sees it up. Every balancer
/// is asked even when one fails; the errors are joined.
pub async fn ready<T: Transport>(
    balancers: &[Balancer<T>],
    server: &str,
    d: &Drain,
    sudo: bool,
) -> Result<Vec<String>, String> {
    let script = ready_script(&d.backend, server, READY_TIMEOUT);
    let runs = balancers.iter().map(|b| {
        let script = &script;
        async move {
            let stdout = answer(b, script, sudo, ready_limit()).await?;
            match parse_ready(&stdout, &b.name, server)? {
                Ready::Up => Ok(format!("up again on {}", b.name)),
                Ready::Skipped(why) => Ok(format!("not set ready: {why}")),
                Ready::NotUp(status) => Err(format!(
                    "{}: HAProxy does not see {server} up in backend {} after {}s (status `{status}`): \
                     check that {} reaches it",
                    b.name,
                    d.backend,
                    READY_TIMEOUT.as_secs(),
                    b.name
                )),
            }
        }
    });
    let results = futures::future::join_all(runs).await;
    let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    if errors.is_empty() {
        Ok(ok.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(errors
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_answers_are_read_strictly() {
        let d = |s: &str| parse_drained(s, "lb1", "web1");
        assert_eq!(
            d("noise\nFP-DRAIN drained 0\n"),
            Ok(Drained::Yes { sessions_left: 0 })
        );
        assert_eq!(
            d("FP-DRAIN drained 3"),
            Ok(Drained::Yes { sessions_left: 3 })
        );
        assert!(
            matches!(d("FP-DRAIN skip alone"), Ok(Drained::Skipped(w)) if w.contains("leave it empty"))
        );
        assert!(
            matches!(d("FP-DRAIN skip absent"), Ok(Drained::Skipped(w)) if w.contains("not in lb1's backend"))
        );
        assert!(
            matches!(d("FP-DRAIN skip no-socket"), Ok(Drained::Skipped(w)) if w.contains("not running"))
        );
        assert!(
            matches!(d("FP-DRAIN skip no-socat"), Ok(Drained::Skipped(w)) if w.contains("socat"))
        );
        let e = d("FP-DRAIN error No such server.\n").expect_err("refused");
        assert!(e.contains("lb1") && e.contains("No such server"), "{e}");
        assert!(d("").expect_err("silent").contains("no answer"));
        // Untrusted bytes are made printable.
        let e = d("FP-DRAIN error \u{1b}[31mred").expect_err("refused");
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn ready_answers_are_read_strictly() {
        let r = |s: &str| parse_ready(s, "lb2", "web2");
        assert_eq!(r("FP-READY up\n"), Ok(Ready::Up));
        assert_eq!(
            r("FP-READY down DOWN 1/2"),
            Ok(Ready::NotUp("DOWN 1/2".into()))
        );
        assert!(matches!(r("FP-READY skip absent"), Ok(Ready::Skipped(w)) if w.contains("web2")));
        assert!(r("FP-READY error Unknown command").is_err());
        assert!(r("FP-DRAIN drained 0").is_err());
    }

    #[test]
    fn scripts_quote_the_names_and_use_the_admin_socket() {
        let s = drain_script("web", "web-1", Duration::from_secs(7));
        assert!(s.contains("b=web; s=web-1;"), "{s}");
        let odd = drain_script("web", "a b", Duration::from_secs(7));
        assert!(odd.contains("s='a b';"), "{odd}");
        assert!(s.contains(ADMIN_SOCKET));
        assert!(s.contains("state drain"));
        assert!(s.contains("+ 7 ))"), "{s}");
        assert!(s.contains("FP-DRAIN skip alone"));
        let r = ready_script("web", "web1", Duration::from_secs(30));
        assert!(r.contains("state ready") && r.contains("+ 30 ))"), "{r}");
        assert!(!r.contains("state drain"));
    }

    /// Each script's own wait ends well before the host-side limit kills it, so its answer
    /// (drained, down, ...) always comes back.
    #[test]
    fn the_scripts_end_before_their_time_limits() {
        let d = Drain {
            via: "lb".into(),
            backend: "web".into(),
            timeout: Duration::from_secs(10),
        };
        assert_eq!(drain_limit(&d), Duration::from_secs(25));
        assert_eq!(ready_limit(), Duration::from_secs(45));
    }

    /// The scripts run under sh as written: checked with `sh -n` when sh is here.
    #[test]
    fn scripts_are_valid_sh() {
        for script in [
            drain_script("web", "web1", Duration::from_secs(10)),
            ready_script("web", "web1", Duration::from_secs(30)),
        ] {
            let Ok(out) = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
            else {
                return;
            };
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
