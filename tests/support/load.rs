//! A load through the VIP: N clients, each sending one HTTPS request after another (a new
//! curl process, so a new TCP + TLS connection each time, as browsers arriving), counting
//! every answer that is not 2xx and every connection error. Bounded: each request by
//! curl's own `--max-time`, each client by a request count and by a wall-clock limit, and
//! everything stops when the load is stopped (or dropped).
//!
//! Talks only to the lab's VIP (172.30.77.10), for the lab's domain.

use super::lab::state;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VIP: &str = "172.30.77.10";
const DOMAIN: &str = "www.foobar.com";
/// Longest a single request may take (curl's --max-time), seconds.
pub const REQUEST_LIMIT_S: u64 = 15;
/// Most requests one client sends.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

/// One request's result.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it started, since the load started.
    pub at: Duration,
    pub took: Duration,
    /// HTTP status; 0 when there was no HTTP answer (connection refused, reset, timeout).
    pub code: u16,
    /// The Retry-After header of the answer, if any.
    pub retry_after: Option<String>,
    /// curl's exit code (0: an HTTP answer came).
    pub curl_exit: i32,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.curl_exit == 0 && (200..300).contains(&self.code)
    }
}

/// A load in progress.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Sample>>>,
    started: Instant,
}

impl Load {
    /// Starts `clients` clients requesting `path` through the VIP, for at most `limit`.
    pub fn start(path: &str, clients: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let ca = state().join("tls/ca.pem").to_string_lossy().to_string();
        let url = format!("https://{DOMAIN}{path}");
        let clients = (0..clients)
            .map(|_| {
                let (stop, ca, url) = (stop.clone(), ca.clone(), url.clone());
                std::thread::spawn(move || client(&stop, started, limit, &ca, &url))
            })
            .collect();
        Load {
            stop,
            clients,
            started,
        }
    }

    /// Time since the load started (the samples' clock).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every client (each finishes its request in flight) and gathers the results.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut samples: Vec<Sample> = std::mem::take(&mut self.clients)
            .into_iter()
            .filter_map(|h| h.join().ok())
            .flatten()
            .collect();
        samples.sort_by_key(|s| s.at);
        LoadReport {
            samples,
            wall: self.started.elapsed(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that panicked: the clients stop by themselves after their request.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client(
    stop: &AtomicBool,
    started: Instant,
    limit: Duration,
    ca: &str,
    url: &str,
) -> Vec<Sample> {
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < limit
        && out.len() < MAX_REQUESTS_PER_CLIENT
    {
        let t0 = Instant::now();
        let res = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{retry-after}",
            ])
            .args(["--connect-timeout", "5", "--max-time"])
            .arg(REQUEST_LIMIT_S.to_string())
            .arg("--resolve")
            .arg(format!("{DOMAIN}:443:{VIP}"))
            .args(["--cacert", ca])
            .arg(url)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let took = t0.elapsed();
        let (code, retry_after, curl_exit) = match res {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                let mut words = text.split_whitespace();
                let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                let retry = words.next().map(str::to_string);
                (code, retry, o.status.code().unwrap_or(-1))
            }
            Err(_) => (0, None, -1),
        };
        out.push(Sample {
            at: t0 - started,
            took,
            code,
            retry_after,
            curl_exit,
        });
    }
    out
}

/// What a load saw.
pub struct LoadReport {
    pub samples: Vec<Sample>,
    pub wall: Duration,
}

impl LoadReport {
    pub fn total(&self) -> usize {
        self.samples.len()
    }

    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok()).count()
    }

    /// "N failed of M (K non-2xx, J connection errors), slowest X s".
    pub fn summary(&self) -> String {
        let non2xx = self
            .samples
            .iter()
            .filter(|s| s.curl_exit == 0 && !s.ok())
            .count();
        let conn = self.samples.iter().filter(|s| s.curl_exit != 0).count();
        let slowest = self
            .samples
            .iter()
            .map(|s| s.took)
            .max()
            .unwrap_or_default();
        format!(
            "{} failed of {} ({non2xx} non-2xx, {conn} connection errors) in {:.1}s, slowest {:.2}s",
            self.failed(),
            self.total(),
            self.wall.as_secs_f64(),
            slowest.as_secs_f64()
        )
    }

    /// The first few failures, for a test's message.
    pub fn first_failures(&self, n: usize) -> String {
        self.samples
            .iter()
            .filter(|s| !s.ok())
            .take(n)
            .map(|s| {
                format!(
                    "  at {:.2}s: HTTP {} (curl exit {}), took {:.2}s",
                    s.at.as_secs_f64(),
                    s.code,
                    s.curl_exit,
                    s.took.as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
