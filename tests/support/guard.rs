//! Guards that put the lab back when a test ends, passed or failed. A guard never
//! panics: a panic in a destructor while a failed test unwinds aborts the whole test
//! binary (and hides every later test); what a guard cannot undo, it logs.

use super::command::*;
use super::lab::try_lab_up;
use std::process::Command;
use std::time::Duration;

/// On drop: runs `undo`, brings the lab up and converges it with the repository's
/// inventory, so the next test finds it as it should be.
pub struct Restore<F: FnMut() -> Result<(), String>>(pub F);

impl<F: FnMut() -> Result<(), String>> Drop for Restore<F> {
    fn drop(&mut self) {
        let undo = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut self.0));
        match undo {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("restoring the lab: could not undo the test's change: {e}"),
            Err(_) => eprintln!("restoring the lab: the undo step panicked (message above)"),
        }
        let converged = try_lab_up(None).and_then(|()| {
            let r = try_tool(&["apply", "--yes", "inventories/lab.yml", "--format", "json"])?;
            match r.code {
                0 => Ok(()),
                n => Err(format!("apply exited {n}:\n{}", r.all())),
            }
        });
        if let Err(e) = converged {
            eprintln!("restoring the lab: {e}");
        }
    }
}

/// Restore with nothing to undo but the lab's convergence.
pub fn restore() -> Restore<fn() -> Result<(), String>> {
    Restore(|| Ok(()))
}

/// The comment that marks the tests' fault-injection rules (tests/lab/up removes any left).
pub const CUT_TAG: &str = "foobar-e2e-cut";

/// This machine's traffic to one lab host cut: an iptables rule drops every packet sent
/// to it (the tool's SSH connection stalls mid-transfer); the container itself is not
/// touched, so `docker` keeps working on it. Healed by [`NetCut::heal`] or on drop.
pub struct NetCut {
    addr: String,
}

fn rule(op: &str, addr: &str) -> Vec<String> {
    [
        "-w",
        "10",
        op,
        "OUTPUT",
        "-d",
        addr,
        "-m",
        "comment",
        "--comment",
        CUT_TAG,
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn iptables(args: &[String]) -> Result<Out, String> {
    run_within(Command::new("iptables").args(args), Duration::from_secs(30))
}

impl NetCut {
    pub fn start(addr: &str) -> NetCut {
        assert!(
            addr.starts_with("172.30.77."),
            "only lab addresses are cut: {addr}"
        );
        let out = iptables(&rule("-I", addr)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.code, 0, "iptables -I OUTPUT: {}", out.all());
        NetCut {
            addr: addr.to_string(),
        }
    }

    /// Removes the rule (every copy of it); Err says what is left.
    pub fn heal(&self) -> Result<(), String> {
        for _ in 0..10 {
            if iptables(&rule("-C", &self.addr))?.code != 0 {
                return Ok(());
            }
            let out = iptables(&rule("-D", &self.addr))?;
            if out.code != 0 {
                return Err(format!("iptables -D OUTPUT: {}", out.all()));
            }
        }
        Err(format!(
            "the rule dropping {} stays after 10 deletions",
            self.addr
        ))
    }
}

impl Drop for NetCut {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!(
                "could not heal the cut to {}: {e}\nremove it by hand: iptables {}",
                self.addr,
                rule("-D", &self.addr).join(" ")
            );
        }
    }
}
