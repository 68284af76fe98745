//! Reading one host, then planning it: the facts in one round trip (as root, under the
//! stall watchdog), the old contents of changed files in a second one only when a file's
//! content differs (for the diffs), then the pure [`plan::plan_host`].
//!
//! Generic over [`Transport`]; connecting is the caller's business.

use crate::apply::{
    HostLock, Limits, exec_bounded, lock_status_script as status_script, timed_out,
};
use crate::desired::DesiredHost;
use crate::facts::{self, FactQuery};
use crate::plan::{self, CertCheck, HostPlan};
use crate::report::{ErrorKind, Outcome};
use crate::secrets::Secrets;
use crate::shell::printable;
use crate::transport::{ExecOutput, Transport};

/// A host read and planned.
#[derive(Debug)]
pub struct Planned {
    pub plan: HostPlan,
    /// How many VIPs the host holds now (asked only of the VIP tier's hosts).
    pub vips_held: usize,
    /// SSH round trips it took: 1, or 2 when old contents were fetched.
    pub round_trips: u32,
    /// What the host was: a saved plan records what the plan rests on.
    pub facts: facts::Facts,
}

/// What reading a host needs besides the connection.
pub struct Reader<'a, T: Transport> {
    pub transport: &'a T,
    /// Inventory name, for messages.
    pub host: &'a str,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    /// The VIPs to look for on the host (none unless it is a VIP candidate).
    pub vips: Vec<String>,
    /// The apply lock to report in the facts (read only: planning never locks).
    pub lock: Option<HostLock>,
    /// What the host's certificates are checked against.
    pub certs: Option<&'a CertCheck<'a>>,
}

impl<T: Transport> Reader<'_, T> {
    /// Reads the host and plans it. A broken connection makes it unreachable; a facts
    /// script that fails or says something unreadable fails it.
    pub async fn plan(&self, desired: &DesiredHost) -> Result<Planned, Outcome> {
        let q = FactQuery {
            paths: desired.paths(),
            packages: desired.packages(),
            services: desired.services(),
            drift: desired.drift_checks(),
            vips: self.vips.clone(),
            certs: desired.certificates(),
            dirs: desired.directories(),
            nodes: desired.links_and_absent(),
            releases: desired.release_roots(),
        };
        let lock_status = self.lock.as_ref().map(status_script).unwrap_or_default();
        let out = self
            .read(&format!("{lock_status}{}", facts::script(&q)))
            .await?;
        if out.status != 0 {
            return Err(self.facts_failed(&out));
        }
        let facts = facts::parse(&String::from_utf8_lossy(&out.stdout), &q)
            .map_err(|e| self.unreadable(&e.to_string()))?;
        let manifests = plan::release_manifests(desired, &facts);
        let mut changed = plan::content_changed(desired, &facts);
        changed.extend(manifests.iter().map(String::as_str));
        let mut old = Default::default();
        let mut round_trips = 1;
        if !changed.is_empty() {
            round_trips += 1;
            let out = self.read(&facts::contents_script(&changed)).await?;
            old = facts::parse_contents(&String::from_utf8_lossy(&out.stdout))
                .map_err(|e| self.unreadable(&e.to_string()))?;
        }
        let plan = plan::plan_host(desired, &facts, &old, self.secrets, self.certs);
        if let Some((role, e)) = plan
            .roles
            .iter()
            .find_map(|r| r.release_error.as_ref().map(|e| (&r.role, e)))
        {
            return Err(Outcome::failed(
                ErrorKind::Release,
                format!("[{role}] {}", self.secrets.mask(&printable(e))),
            ));
        }
        let refused = plan.refusals();
        if !refused.is_empty() {
            // As a managed file that is a folder: the host is not changed at all.
            return Err(self.unreadable(&format!(
                "cannot be planned without deleting data (nothing was changed on this host):\n  {}",
                refused.join("\n  ")
            )));
        }
        Ok(Planned {
            plan,
            vips_held: facts.vips_held.unwrap_or(0),
            round_trips,
            facts,
        })
    }

    /// Runs a read-only script as root under the stall watchdog, bounded by
    /// [`Limits::facts`]: a hung drift check fails the host.
    async fn read(&self, script: &str) -> Result<ExecOutput, Outcome> {
        let limit = Limits::default().facts;
        let out = exec_bounded(self.transport, self.host, script, b"", self.sudo, limit)
            .await
            .map_err(|e| {
                Outcome::unreachable(ErrorKind::ConnectionLost, self.secrets.mask(&printable(&e)))
            })?;
        if timed_out(&out) {
            return Err(Outcome::failed(
                ErrorKind::Facts,
                format!(
                    "gathering facts timed out after {}s (stopped on the host): a drift check \
                     or the host hangs",
                    limit.as_secs()
                ),
            ));
        }
        Ok(out)
    }

    /// The facts script exited non-zero: its words, and a hint when sudo is the cause.
    fn facts_failed(&self, out: &ExecOutput) -> Outcome {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("sudo") {
            " (does the user have passwordless sudo? ssh.sudo in the inventory)"
        } else {
            ""
        };
        Outcome::failed(
            ErrorKind::Facts,
            format!(
                "gathering facts failed (exit {}){hint}: {}",
                out.status,
                self.secrets.mask(printable(err.trim()).as_str())
            ),
        )
    }

    /// The host's answer could not be read (it is untrusted: shown masked and printable).
    fn unreadable(&self, message: &str) -> Outcome {
        Outcome::failed(ErrorKind::Facts, self.secrets.mask(&printable(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{DesiredFile, DesiredRole};
    use crate::inventory::Host;
    use crate::role::Notify;
    use crate::transport::SshError;
    use crate::transport::local::Local;
    use std::future::Future;
    use std::sync::atomic::Ordering;

    /// Answers every command with the same output, or breaks.
    struct Canned(Option<ExecOutput>);

    impl Transport for Canned {
        fn exec(
            &self,
            _command: &str,
            _stdin: &[u8],
        ) -> impl Future<Output = Result<ExecOutput, SshError>> + Send {
            let answer = self.0.clone().ok_or(SshError::Channel {
                host: "web1".into(),
                reason: "connection reset".into(),
            });
            async move { answer }
        }
    }

    fn desired(path: &str, content: &str) -> DesiredHost {
        DesiredHost {
            host: Host {
                name: "web1".into(),
                address: "127.0.0.1".parse().expect("ip"),
                tier: "web".into(),
                port: 22,
                user: "deploy".into(),
                vars: Default::default(),
                hostname: None,
                address_at: (0, 0),
                port_set: false,
                user_set: false,
                identity_file: None,
            },
            roles: vec![DesiredRole {
                release: None,
                certificates: vec![],
                directories: vec![],
                links: vec![],
                absent: vec![],
                name: "site".into(),
                packages: vec![],
                service: None,
                files: vec![DesiredFile::new(
                    path.into(),
                    content.as_bytes().to_vec(),
                    String::from_utf8_lossy(&run("id -un")).trim().to_string(),
                    String::from_utf8_lossy(&run("id -gn")).trim().to_string(),
                    0o644,
                    Notify::None,
                    None,
                    false,
                )],
                validate: None,
                handlers: vec![],
                health: vec![],
                drift_check: None,
            }],
        }
    }

    fn run(cmd: &str) -> Vec<u8> {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    fn reader<'a, T: Transport>(t: &'a T, secrets: &'a Secrets) -> Reader<'a, T> {
        Reader {
            transport: t,
            host: "web1",
            sudo: false,
            secrets,
            vips: Vec::new(),
            lock: None,
            certs: None,
        }
    }

    static NO_SECRETS: std::sync::LazyLock<Secrets> = std::sync::LazyLock::new(Secrets::default);

    #[tokio::test]
    async fn one_round_trip_when_contents_match_two_when_a_diff_is_needed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("site.conf");
        let path_s = path.to_string_lossy().to_string();
        std::fs::write(&path, "listen 80;\n").expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");

        let local = Local::default();
        let p = reader(&local, &NO_SECRETS)
            .plan(&desired(&path_s, "listen 80;\n"))
            .await
            .expect("planned");
        assert!(p.plan.is_empty(), "{:?}", p.plan);
        assert_eq!((p.round_trips, local.execs.load(Ordering::SeqCst)), (1, 1));

        let local = Local::default();
        let p = reader(&local, &NO_SECRETS)
            .plan(&desired(&path_s, "listen 8080;\n"))
            .await
            .expect("planned");
        assert_eq!((p.round_trips, local.execs.load(Ordering::SeqCst)), (2, 2));
        let diff = p.plan.roles[0].files[0].diff.clone().unwrap_or_default();
        assert!(
            diff.contains("-listen 80;") && diff.contains("+listen 8080;"),
            "{diff}"
        );
        assert_eq!(p.vips_held, 0);
    }

    /// A role with a folder, a link and an absent path, read in the one facts round trip:
    /// converged, nothing to do; a folder with entries where the link must be fails the
    /// host, naming it, and nothing is planned.
    #[tokio::test]
    async fn directories_links_and_absent_paths_in_one_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::create_dir(p("www")).expect("mkdir");
        std::fs::set_permissions(
            p("www"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("www", p("current")).expect("ln");
        let mut d = desired(&p("site.conf"), "x");
        d.roles[0].files.clear();
        d.roles[0].directories = vec![crate::desired::DesiredDir {
            path: p("www"),
            owner: String::from_utf8_lossy(&run("id -un")).trim().to_string(),
            group: String::from_utf8_lossy(&run("id -gn")).trim().to_string(),
            mode: 0o755,
        }];
        d.roles[0].links = vec![crate::desired::DesiredLink {
            path: p("current"),
            target: "www".into(),
            notify: Notify::None,
        }];
        d.roles[0].absent = vec![crate::desired::DesiredAbsent {
            path: p("default"),
            notify: Notify::None,
        }];
        let local = Local::default();
        let planned = reader(&local, &NO_SECRETS).plan(&d).await.expect("planned");
        assert!(planned.plan.is_empty(), "{:?}", planned.plan);
        assert_eq!(local.execs.load(Ordering::SeqCst), 1);

        std::fs::remove_file(p("current")).expect("rm");
        std::fs::create_dir(p("current")).expect("mkdir");
        std::fs::write(p("current/data"), "keep").expect("w");
        let o = reader(&Local::default(), &NO_SECRETS)
            .plan(&d)
            .await
            .expect_err("refused");
        let Outcome::Failed(f) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(f.kind, ErrorKind::Facts);
        assert_eq!(
            f.message,
            format!(
                "cannot be planned without deleting data (nothing was changed on this host):\n  \
                 [site] {} is a directory with entries where the role wants a link: a folder's \
                 contents are never deleted; move them away on the host, then run again",
                p("current")
            )
        );
    }

    /// Issue 10, finding 4: a dest that exists as a folder was planned "create" forever;
    /// now planning fails the host and names it.
    #[tokio::test]
    async fn a_dest_that_is_a_folder_fails_the_plan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conf.d");
        std::fs::create_dir(&path).expect("mkdir");
        let path_s = path.to_string_lossy().to_string();
        let o = reader(&Local::default(), &NO_SECRETS)
            .plan(&desired(&path_s, "x"))
            .await
            .expect_err("fails");
        assert!(
            matches!(&o, Outcome::Failed(f) if f.kind == ErrorKind::Facts && f.message.contains("is not a regular file")),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_facts_script_fails_the_host_and_names_sudo() {
        let t = Canned(Some(ExecOutput {
            status: 1,
            stdout: vec![],
            stderr: b"sudo: a password is required\x1b[2J".to_vec(),
        }));
        let o = reader(&t, &NO_SECRETS)
            .plan(&desired("/etc/x", "x"))
            .await
            .expect_err("fails");
        let Outcome::Failed(f) = o else {
            panic!("{o:?}")
        };
        assert_eq!(f.kind, ErrorKind::Facts);
        assert!(f.message.contains("passwordless sudo"), "{}", f.message);
        assert!(
            f.message.contains("^[[2J") && !f.message.contains('\x1b'),
            "{}",
            f.message
        );
    }

    #[tokio::test]
    async fn garbled_facts_fail_the_host_and_a_broken_connection_makes_it_unreachable() {
        let t = Canned(Some(ExecOutput {
            status: 0,
            stdout: b"garbage\n".to_vec(),
            stderr: vec![],
        }));
        let o = reader(&t, &NO_SECRETS).plan(&desired("/etc/x", "x")).await;
        assert!(
            matches!(&o, Err(Outcome::Failed(f)) if f.kind == ErrorKind::Facts),
            "{o:?}"
        );
        let t = Canned(None);
        let o = reader(&t, &NO_SECRETS).plan(&desired("/etc/x", "x")).await;
        assert!(
            matches!(&o, Err(Outcome::Unreachable(f)) if f.kind == ErrorKind::ConnectionLost && f.message.contains("connection reset")),
            "{o:?}"
        );
    }
}
