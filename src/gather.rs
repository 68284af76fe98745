//! Reading one host, then planning it: the facts in one round trip (as root, under the
//! stall watchdog), the old contents of changed files in a second one only when a file's
//! content differs (for the diffs), then the pure [`plan::plan_host`].
//!
//! Generic over [`Transport`]; connecting is the caller's business.

use crate::apply::{exec_watched, printable};
use crate::desired::DesiredHost;
use crate::facts::{self, FactQuery};
use crate::plan::{self, HostPlan};
use crate::report::{ErrorKind, Outcome};
use crate::secrets::Secrets;
use crate::shell;
use crate::transport::{ExecOutput, Transport};

/// A host read and planned.
#[derive(Debug)]
pub struct Planned {
    pub plan: HostPlan,
    /// The host holds the VIP now (asked only of lb hosts).
    pub holds_vip: bool,
    /// SSH round trips it took: 1, or 2 when old contents were fetched.
    pub round_trips: u32,
}

/// What reading a host needs besides the connection.
pub struct Reader<'a, T: Transport> {
    pub transport: &'a T,
    /// Inventory name, for messages.
    pub host: &'a str,
    pub sudo: bool,
    pub secrets: &'a Secrets,
    /// The VIP to look for on the host, if it is a VIP candidate.
    pub vip: Option<String>,
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
            vip: self.vip.clone(),
        };
        let out = self.read(&facts::script(&q)).await?;
        if out.status != 0 {
            return Err(self.facts_failed(&out));
        }
        let facts = facts::parse(&String::from_utf8_lossy(&out.stdout), &q)
            .map_err(|e| self.unreadable(&e.to_string()))?;
        let changed = plan::content_changed(desired, &facts);
        let mut old = Default::default();
        let mut round_trips = 1;
        if !changed.is_empty() {
            round_trips += 1;
            let out = self.read(&facts::contents_script(&changed)).await?;
            old = facts::parse_contents(&String::from_utf8_lossy(&out.stdout))
                .map_err(|e| self.unreadable(&e.to_string()))?;
        }
        Ok(Planned {
            plan: plan::plan_host(desired, &facts, &old, self.secrets),
            holds_vip: facts.holds_vip.unwrap_or(false),
            round_trips,
        })
    }

    /// Runs a read-only script as root under the stall watchdog.
    async fn read(&self, script: &str) -> Result<ExecOutput, Outcome> {
        let command = shell::wrap(script, self.sudo);
        exec_watched(self.transport, self.host, &command, b"")
            .await
            .map_err(|e| Outcome::unreachable(ErrorKind::ConnectionLost, self.secrets.mask(&e)))
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
