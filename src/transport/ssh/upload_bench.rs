//! The upload benchmark (issue 12, part 5): a 40 MB file written to a private loopback
//! sshd ([`Lab`]) through the tool's transport (one exec, the file on its stdin: how apply
//! uploads, `cat > TEMP` on the host), then with `scp` to the same sshd, same key. Prints
//! both throughputs and their ratio; asserts nothing. Run by `bench/upload` (release
//! build).

use super::test_sshd::{Lab, run_command};
use crate::transport::connect;
use std::process::Command;
use std::time::{Duration, Instant};

/// The file's size: 40 MB.
const SIZE: usize = 40 * 1024 * 1024;
const RUNS: usize = 3;

/// Bytes that do not compress (xorshift), so neither side gains from compression.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(SIZE);
    out
}

fn mb_per_s(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/upload runs it (release build); it prints figures"]
async fn upload_40_mb_versus_scp() {
    let Some(lab) = Lab::start("upload") else {
        return;
    };
    let known = lab.trusting_known_hosts();
    let data = payload();
    let source = lab.dir.join("payload.bin");
    std::fs::write(&source, &data).expect("write the payload");
    let session = connect(&lab.options(known.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
    let tool_dest = lab.dir.join("tool.bin");
    let command = format!(
        "cat > {}",
        crate::shell::quote(&tool_dest.to_string_lossy())
    );
    let mut tool = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(300), session.exec(&command, &data))
            .await
            .expect("the upload ends within 300 s")
            .expect("the upload runs");
        tool.push(started.elapsed());
        assert_eq!(out.status, 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    let arrived = std::fs::metadata(&tool_dest).map(|m| m.len()).unwrap_or(0);
    session.close().await;
    // As scp pays for its connection, key exchange and authentication each time: the
    // tool's upload with its own connection too.
    let mut tool_connect = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let session = connect(&lab.options(known.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.sshd_log()));
        let out = tokio::time::timeout(Duration::from_secs(300), session.exec(&command, &data))
            .await
            .expect("the upload ends within 300 s")
            .expect("the upload runs");
        session.close().await;
        tool_connect.push(started.elapsed());
        assert_eq!(out.status, 0, "{}", String::from_utf8_lossy(&out.stderr));
    }

    let scp_dest = format!(
        "{}@127.0.0.1:{}",
        lab.user,
        lab.dir.join("scp.bin").display()
    );
    let mut scp = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        run_command(
            Command::new("timeout")
                .args(["300", "scp", "-q", "-O", "-P", &lab.port.to_string()])
                .arg("-i")
                .arg(&lab.user_key)
                .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "HostKeyAlgorithms=ssh-ed25519",
                ])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known.display()))
                .arg(&source)
                .arg(&scp_dest),
        );
        scp.push(started.elapsed());
    }
    let (tool, tool_connect, scp) = (median(tool), median(tool_connect), median(scp));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\nupload of 40 MiB ({SIZE} bytes) to a loopback sshd, median of {RUNS} runs:\n  \
         tool, on its open connection (one exec, the file on stdin): {:>5.0} ms {:>6.1} MB/s ({arrived} bytes arrived)\n  \
         tool, connecting first (as scp does):                      {:>5.0} ms {:>6.1} MB/s\n  \
         scp -O (OpenSSH, connects each time):                      {:>5.0} ms {:>6.1} MB/s\n  \
         tool / scp time: {:.2}x on an open connection, {:.2}x connecting first",
        ms(tool),
        mb_per_s(tool),
        ms(tool_connect),
        mb_per_s(tool_connect),
        ms(scp),
        mb_per_s(scp),
        tool.as_secs_f64() / scp.as_secs_f64(),
        tool_connect.as_secs_f64() / scp.as_secs_f64(),
    );
}
