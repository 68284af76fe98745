//! These tests run a real OpenSSH server on 127.0.0.1 (see `test_sshd.rs`), started for each
//! test with its own host keys and authorized_keys in a temporary directory, and killed (by
//! its pid) when the test ends. Each test walks through its steps in order; every step is a
//! function of its own below it.

use std::fmt;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::connect_with;
use super::identity::PASSPHRASE_ENV;
use super::test_sshd::{Lab, TempDir, free_port, keygen, public_key, run};
use super::{
    JumpHost, SshError, SshOptions, SshSession, connect, scan_host_key, scan_host_key_via_jump,
};
use crate::transport::{ExecOutput, Transport, known_hosts};

/// Sequential execs timed on a reused connection.
const ROUNDS: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_connect_exec_stdin_concurrency_and_jump() {
    let Some(lab) = Lab::start("exec") else {
        return;
    };
    let opts = lab.options(lab.trusting_known_hosts());
    let connect_times = connect_five_times(&lab, &opts).await;
    let session = connect(&opts).await.expect("connect");
    let (first_exec, per_exec) = exec_status_output_and_reuse(&session).await;
    let cat = exec_streams_stdin(&session).await;
    let concurrent = exec_fifty_at_once(session).await;
    let jump_opts = SshOptions {
        jumps: vec![JumpHost {
            address: "127.0.0.1".to_string(),
            port: lab.port,
            user: lab.user.clone(),
            identity_files: Vec::new(),
        }],
        ..opts.clone()
    };
    let (jump_connect, jump_per_exec) = exec_via_jump(&lab, &jump_opts).await;
    scan_via_jump_sees_the_direct_key(&lab, &jump_opts).await;
    let figures = Figures {
        connect_times,
        first_exec,
        per_exec,
        concurrent,
        cat,
        jump_connect,
        jump_per_exec,
    };
    println!("{figures}");
}

/// Connect + key exchange + auth, five times; the times sorted.
async fn connect_five_times(lab: &Lab, opts: &SshOptions) -> Vec<Duration> {
    let mut connect_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let session = connect(opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
        connect_times.push(started.elapsed());
        session.close().await;
    }
    connect_times.sort();
    connect_times
}

/// Exit status, stdout and stderr kept apart; sequential execs on the reused connection;
/// the Transport trait. Returns the first exec's time and the time per reused exec.
async fn exec_status_output_and_reuse(session: &SshSession) -> (Duration, Duration) {
    let started = Instant::now();
    let out = session
        .exec("echo hi; echo err >&2; exit 3", b"")
        .await
        .expect("exec");
    let first_exec = started.elapsed();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_ne!(out.status, 0);

    let started = Instant::now();
    for _ in 0..ROUNDS {
        let out = session.exec("true", b"").await.expect("exec true");
        assert_eq!(out.status, 0);
    }
    let per_exec = started.elapsed() / ROUNDS;

    assert_eq!(
        run_via_trait(session, "echo via-trait").await.stdout,
        b"via-trait\n"
    );
    (first_exec, per_exec)
}

async fn run_via_trait<T: Transport>(transport: &T, command: &str) -> ExecOutput {
    transport.exec(command, b"").await.expect("exec via trait")
}

/// 5 MB through `cat` and back (returns its time); a command that ignores a large stdin
/// ends; a command killed by a signal reports 128 + its number.
async fn exec_streams_stdin(session: &SshSession) -> Duration {
    let input = pattern(5 * 1024 * 1024);
    let started = Instant::now();
    let out = session.exec("cat", &input).await.expect("cat");
    let cat_time = started.elapsed();
    assert_eq!(out.status, 0);
    assert!(out.stdout == input, "stdout differs from stdin");
    assert!(out.stderr.is_empty());

    let out = tokio::time::timeout(Duration::from_secs(20), session.exec("exit 0", &input))
        .await
        .expect("exec with unread stdin must not hang")
        .expect("exec");
    assert_eq!(out.status, 0);

    let out = session.exec("kill -TERM $$", b"").await.expect("exec kill");
    assert_eq!(out.status, 143);
    cat_time
}

/// 50 execs at once on one connection (sshd allows 10 sessions per connection), each with
/// its own stdin; returns the time for all of them. Closes the session.
async fn exec_fifty_at_once(session: SshSession) -> Duration {
    let session = Arc::new(session);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let session = Arc::clone(&session);
        tasks.spawn(async move {
            let out = session
                .exec(&format!("echo {i}; read line; echo \"$line\""), b"in\n")
                .await;
            (i, out)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, out) = joined.expect("task");
        let out = out.unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(out.status, 0, "exec {i}");
        assert_eq!(out.stdout, format!("{i}\nin\n").as_bytes());
    }
    let concurrent = started.elapsed();
    match Arc::try_unwrap(session) {
        Ok(session) => session.close().await,
        Err(_) => panic!("session still shared"),
    }
    concurrent
}

/// Through a jump host (the same sshd forwarding to itself): returns the connect time and
/// the time per exec.
async fn exec_via_jump(lab: &Lab, jump_opts: &SshOptions) -> (Duration, Duration) {
    let started = Instant::now();
    let session = connect(jump_opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
    let jump_connect = started.elapsed();
    let out = session
        .exec("echo jumped", b"")
        .await
        .expect("exec via jump");
    assert_eq!(out.stdout, b"jumped\n");
    let started = Instant::now();
    for _ in 0..ROUNDS {
        session.exec("true", b"").await.expect("exec via jump");
    }
    let jump_per_exec = started.elapsed() / ROUNDS;
    session.close().await;
    (jump_connect, jump_per_exec)
}

/// Scanning through the jump host sees the same key as a direct scan.
async fn scan_via_jump_sees_the_direct_key(lab: &Lab, jump_opts: &SshOptions) {
    let direct = scan_host_key("127.0.0.1", lab.port, Duration::from_secs(5))
        .await
        .expect("scan");
    let via = scan_host_key_via_jump(jump_opts)
        .await
        .expect("scan via jump");
    assert_eq!(direct.key_data(), lab.host_ed25519.key_data());
    assert_eq!(via.key_data(), lab.host_ed25519.key_data());
}

/// Loopback timings of the exec test, printed at its end.
struct Figures {
    /// Five connects, sorted.
    connect_times: Vec<Duration>,
    first_exec: Duration,
    per_exec: Duration,
    concurrent: Duration,
    cat: Duration,
    jump_connect: Duration,
    jump_per_exec: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loopback figures: connect+kex+auth min {} / median {} / max {}; first exec {}; \
             exec on reused connection {} each; 50 concurrent execs {} in all; 5 MB cat round \
             trip {}; connect via jump host {}; exec via jump host {} each",
            ms(self.connect_times[0]),
            ms(self.connect_times[2]),
            ms(self.connect_times[4]),
            ms(self.first_exec),
            ms(self.per_exec),
            ms(self.concurrent),
            ms(self.cat),
            ms(self.jump_connect),
            ms(self.jump_per_exec),
        )
    }
}

/// Deterministic bytes covering every byte value.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_host_key_checks_are_strict() {
    let Some(lab) = Lab::start("hostkey") else {
        return;
    };
    let ed_line = known_hosts::entry_line("127.0.0.1", lab.port, &lab.host_ed25519);
    let ed_fp = known_hosts::fingerprint(&lab.host_ed25519);
    unknown_key_is_refused(&lab, &ed_fp).await;
    revoked_key_is_refused(&lab, &ed_line).await;
    changed_key_is_refused(&lab, &ed_fp).await;
    host_known_by_rsa_key_is_verified(&lab).await;
    hashed_tab_separated_entry_is_trusted(&lab, &ed_line).await;

    // The scan sees the key that connect verifies.
    let scanned = scan_host_key("127.0.0.1", lab.port, Duration::from_secs(5))
        .await
        .expect("scan");
    assert_eq!(known_hosts::fingerprint(&scanned), ed_fp);
}

/// Missing file, or another host's line only: unknown; the message says how to trust it.
async fn unknown_key_is_refused(lab: &Lab, ed_fp: &str) {
    let opts = lab.options(lab.dir.join("no_such_known_hosts"));
    let err = connect(&opts)
        .await
        .expect_err("unknown key must be refused");
    assert!(matches!(err, SshError::UnknownHostKey(_)), "{err:?}");
    let text = err.to_string();
    for needle in [
        "lab1",
        "127.0.0.1",
        ed_fp,
        "foobar-provision trust INVENTORY --limit lab1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }

    let other = known_hosts::entry_line("10.9.9.9", 22, &lab.host_ed25519);
    let opts = lab.options(lab.known_hosts("kh_other", &[other]));
    let err = connect(&opts).await.expect_err("unknown");
    assert!(matches!(err, SshError::UnknownHostKey(_)), "{err:?}");
}

/// Revoked, even with a line that trusts the key.
async fn revoked_key_is_refused(lab: &Lab, ed_line: &str) {
    let opts = lab.options(lab.known_hosts(
        "kh_revoked",
        &[ed_line.to_string(), format!("@revoked {ed_line}")],
    ));
    let err = connect(&opts)
        .await
        .expect_err("revoked key must be refused");
    assert!(
        matches!(&err, SshError::HostKeyRevoked(r) if r.line == 2),
        "{err:?}"
    );
    assert!(err.to_string().contains("@revoked"), "{err}");
}

/// Changed: known_hosts holds some other ed25519 key for the host.
async fn changed_key_is_refused(lab: &Lab, ed_fp: &str) {
    let pattern = known_hosts::host_pattern("127.0.0.1", lab.port);
    let stranger = public_key(&keygen(&lab.dir, "stranger", "ed25519", ""));
    let opts = lab.options(lab.known_hosts(
        "kh_changed",
        &[
            "# comment".to_string(),
            known_hosts::entry_line("127.0.0.1", lab.port, &stranger),
        ],
    ));
    let err = connect(&opts)
        .await
        .expect_err("changed key must be refused");
    assert!(
        matches!(&err, SshError::HostKeyChanged(r) if r.line == 2),
        "{err:?}"
    );
    let text = err.to_string();
    for needle in [
        "lab1",
        "line 2",
        ed_fp,
        "man-in-the-middle",
        &format!("ssh-keygen -R '{pattern}' -f"),
        "foobar-provision trust INVENTORY --limit lab1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}

/// Known by its RSA key only: the client asks for RSA and the host is verified.
async fn host_known_by_rsa_key_is_verified(lab: &Lab) {
    let rsa_line = known_hosts::entry_line("127.0.0.1", lab.port, &lab.host_rsa);
    let opts = lab.options(lab.known_hosts("kh_rsa", &[rsa_line]));
    let session = connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("host known by RSA key: {e}"));
    echoes_then_close(session, "rsa").await;
}

/// Runs `echo WORD` on `session`, checks what it printed, and closes the session.
async fn echoes_then_close(session: SshSession, word: &str) {
    let out = session
        .exec(&format!("echo {word}"), b"")
        .await
        .expect("exec");
    assert_eq!(out.stdout, format!("{word}\n").as_bytes());
    session.close().await;
}

/// Hashed entry (as `ssh-keygen -H` writes), tab separated.
async fn hashed_tab_separated_entry_is_trusted(lab: &Lab, ed_line: &str) {
    let hashed_file = lab.known_hosts("kh_hashed", &[ed_line.to_string()]);
    run(
        "ssh-keygen",
        &["-q", "-H", "-f", &hashed_file.to_string_lossy()],
    );
    let hashed = std::fs::read_to_string(&hashed_file).expect("read hashed");
    assert!(hashed.starts_with("|1|"), "{hashed}");
    std::fs::write(&hashed_file, hashed.replace(' ', "\t")).expect("write");
    let session = connect(&lab.options(hashed_file))
        .await
        .unwrap_or_else(|e| panic!("hashed entry: {e}"));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_authentication_paths() {
    let Some(lab) = Lab::start("auth") else {
        return;
    };
    let known = lab.trusting_known_hosts();
    unknown_user_key_is_named(&lab, &known).await;
    let rsa = keygen(&lab.dir, "user_rsa", "rsa", "");
    let encrypted = keygen(&lab.dir, "user_encrypted", "ed25519", "sesame");
    lab.authorize(&[&rsa, &encrypted]);
    let opts = SshOptions {
        identity_files: vec![rsa],
        ..lab.options(known.clone())
    };
    connect(&opts).await.expect("RSA user key").close().await;
    encrypted_key_needs_its_passphrase(&lab, &known, &encrypted).await;

    // Nothing to authenticate with.
    let opts = SshOptions {
        identity_files: Vec::new(),
        use_agent: false,
        ..lab.options(known.clone())
    };
    let err = connect(&opts).await.expect_err("no method");
    assert!(matches!(err, SshError::NoAuthMethod { .. }), "{err:?}");

    agent_keys_authenticate(&lab, &known).await;
}

/// A key the server does not know: the message names the user and the key file.
async fn unknown_user_key_is_named(lab: &Lab, known: &Path) {
    let stranger = keygen(&lab.dir, "stranger_key", "ed25519", "");
    let opts = SshOptions {
        identity_files: vec![stranger.clone()],
        ..lab.options(known.to_path_buf())
    };
    let err = connect(&opts).await.expect_err("unknown user key");
    let text = err.to_string();
    assert!(matches!(err, SshError::AuthFailed { .. }), "{err:?}");
    assert!(text.contains(&format!("as user {}", lab.user)), "{text}");
    assert!(text.contains(&stranger.display().to_string()), "{text}");
}

/// Encrypted key: needs the passphrase, refuses a wrong one, works with the right one.
async fn encrypted_key_needs_its_passphrase(lab: &Lab, known: &Path, encrypted: &Path) {
    let opts = SshOptions {
        identity_files: vec![encrypted.to_path_buf()],
        ..lab.options(known.to_path_buf())
    };
    let err = connect_with(&opts, None, None)
        .await
        .expect_err("no passphrase");
    assert!(
        matches!(err, SshError::PassphraseRequired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(PASSPHRASE_ENV), "{err}");
    let err = connect_with(&opts, Some("wrong"), None)
        .await
        .expect_err("wrong passphrase");
    assert!(matches!(err, SshError::BadPassphrase { .. }), "{err:?}");
    connect_with(&opts, Some("sesame"), None)
        .await
        .expect("encrypted key with passphrase")
        .close()
        .await;
}

/// Only the agent holds the key: it authenticates. Without an agent socket the failure
/// says so.
async fn agent_keys_authenticate(lab: &Lab, known: &Path) {
    let (agent, socket) = lab.start_agent();
    let opts = SshOptions {
        identity_files: Vec::new(),
        use_agent: true,
        ..lab.options(known.to_path_buf())
    };
    let session = connect_with(&opts, None, Some(Ok(socket.clone())))
        .await
        .unwrap_or_else(|e| panic!("agent auth: {e}"));
    echoes_then_close(session, "agent").await;

    let err = connect_with(
        &opts,
        None,
        Some(Err("ssh-agent: SSH_AUTH_SOCK is not set".into())),
    )
    .await
    .expect_err("no agent");
    assert!(err.to_string().contains("SSH_AUTH_SOCK"), "{err}");
    drop(agent);
}

#[tokio::test]
async fn connect_timeout_names_address_and_seconds() {
    // Accepts TCP connections (the kernel does) but never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let dir = TempDir::new("timeout");
    let key = keygen(&dir, "key", "ed25519", "");
    let opts = SshOptions {
        port,
        identity_files: vec![key],
        use_agent: false,
        connect_timeout: Duration::from_millis(300),
        ..SshOptions::new("web9", "127.0.0.1", "deploy", dir.join("known_hosts"))
    };
    let started = Instant::now();
    let err = connect(&opts).await.expect_err("must time out");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("connect timed out after 0.3 s to 127.0.0.1:") && text.contains("web9"),
        "{text}"
    );
    let err = scan_host_key("127.0.0.1", port, Duration::from_millis(200))
        .await
        .expect_err("scan must time out");
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    drop(silent);

    // Nothing listening: a connect error naming the host.
    let closed = free_port();
    let opts = SshOptions {
        port: closed,
        ..opts
    };
    let err = connect(&opts).await.expect_err("refused");
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("web9 (127.0.0.1:{closed})")),
        "{err}"
    );
}
