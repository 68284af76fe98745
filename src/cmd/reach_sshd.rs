//! The SSH configuration against real OpenSSH servers: private sshd processes on loopback
//! (the transport's test harness), one of them a jump host. An inventory that names its
//! host by an alias of an ssh_config file reaches it with the file's HostName, Port,
//! User, IdentityFile (each hop its own key), ProxyJump (a chain too), IdentitiesOnly,
//! UserKnownHostsFile and ConnectTimeout. Skipped (passing, saying so) without
//! /usr/sbin/sshd.

use super::*;
use crate::transport::known_hosts;
use crate::transport::test_sshd::Lab;

/// Two private sshd: `jump` forwards, `target` is the host. Each authorizes only its own
/// user key, so a connection works only if each hop uses its own IdentityFile.
struct Pair {
    jump: Lab,
    target: Lab,
}

impl Pair {
    fn start() -> Option<Pair> {
        Some(Pair {
            jump: Lab::start("cfg-jump")?,
            target: Lab::start("cfg-target")?,
        })
    }

    /// known_hosts trusting both servers' ed25519 keys, under the names ssh would use.
    fn known_hosts(&self) -> PathBuf {
        self.target.known_hosts(
            "kh_from_config",
            &[
                known_hosts::entry_line("127.0.0.1", self.jump.port, &self.jump.host_ed25519),
                known_hosts::entry_line("127.0.0.1", self.target.port, &self.target.host_ed25519),
            ],
        )
    }

    /// An ssh_config giving everything about `web-alias` and `jumpbox`; `proxy_jump` is
    /// the `ProxyJump` line's value.
    fn config(&self, proxy_jump: &str) -> PathBuf {
        let text = format!(
            "# recorded style: aliases, several names per Host line, a negation\n\
             Host jumpbox !nothing\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {jport}\n\
             \x20   User {user}\n\
             \x20   IdentityFile {jkey}\n\
             \n\
             Host web-alias other-alias\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {tport}\n\
             \x20   User {user}\n\
             \x20   IdentityFile /nonexistent/first-key\n\
             \x20   IdentityFile {tkey}\n\
             \x20   ProxyJump {proxy_jump}\n\
             \x20   IdentitiesOnly yes\n\
             \x20   UserKnownHostsFile {kh}\n\
             \x20   ConnectTimeout 9\n",
            jport = self.jump.port,
            tport = self.target.port,
            user = self.target.user,
            jkey = self.jump.user_key.display(),
            tkey = self.target.user_key.display(),
            kh = self.known_hosts().display(),
        );
        let path = self.target.dir.join("ssh_config");
        std::fs::write(&path, text).expect("write ssh_config");
        path
    }

    /// The host `web1` at `web-alias`, settled with `config` (nothing else about SSH in the
    /// inventory).
    fn settle(&self, config: &Path) -> (Inventory, Routes) {
        let text = format!(
            "domain: www.example.test\nssh:\n  config: {}\ntiers:\n  web:\n    roles: [web]\nhosts:\n  web1:\n    address: web-alias\n    tier: web\n",
            config.display()
        );
        let mut inv = crate::inventory::parse(Path::new("inv.yml"), &text, &["web".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let env = Env {
            home: self.target.dir.join("home"),
            local_user: self.target.user.clone(),
        };
        let parsed = load_config(&inv, &env).unwrap_or_else(|e| panic!("{e}"));
        let routes = settle(
            &mut inv,
            parsed.as_ref(),
            &env,
            &SystemResolver,
            &RealExists,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (inv, routes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_an_ssh_config_alias_through_a_jump_host() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let (inv, routes) = pair.settle(&pair.config("jumpbox"));
    let o = &routes.by_host["web1"];
    // What the file says, applied; the host's port and user are written back for templates.
    assert_eq!(
        (o.address.as_str(), o.port),
        ("127.0.0.1", pair.target.port)
    );
    assert_eq!(
        (inv.hosts[0].port, inv.hosts[0].user.as_str()),
        (pair.target.port, pair.target.user.as_str())
    );
    assert_eq!(inv.hosts[0].hostname.as_deref(), Some("web-alias"));
    assert_eq!(
        o.identity_files,
        std::slice::from_ref(&pair.target.user_key),
        "a missing IdentityFile is skipped"
    );
    assert_eq!(routes.warnings.len(), 1, "{:?}", routes.warnings);
    assert!(!o.use_agent, "IdentitiesOnly");
    assert_eq!(o.connect_timeout, std::time::Duration::from_secs(9));
    assert_eq!(o.jumps.len(), 1);
    assert_eq!(o.jumps[0].port, pair.jump.port);
    assert_eq!(
        o.jumps[0].identity_files,
        std::slice::from_ref(&pair.jump.user_key)
    );
    check_identities(&inv, &routes, &inv.hosts.iter().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{e}"));
    let session = crate::transport::connect(o).await.unwrap_or_else(|e| {
        panic!(
            "{e}\njump:\n{}\ntarget:\n{}",
            pair.jump.sshd_log(),
            pair.target.sshd_log()
        )
    });
    use crate::transport::Transport;
    let out = session.exec("echo reached", b"").await.expect("exec");
    assert_eq!(out.stdout, b"reached\n");
    session.close().await;
    // The target's sshd saw the connection come from the jump host's forward, with its
    // own key; the jump host's with the jump key.
    assert!(
        pair.jump.sshd_log().contains("Accepted publickey"),
        "{}",
        pair.jump.sshd_log()
    );
    assert!(
        pair.target.sshd_log().contains("Accepted publickey"),
        "{}",
        pair.target.sshd_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_a_proxy_jump_chain_and_the_hops_user_at_host_port_form() {
    let Some(pair) = Pair::start() else {
        return;
    };
    // Two hops: the jump host by its alias, then the same server again written as
    // user@host:port (it forwards to itself), then the target.
    let second = format!("{}@127.0.0.1:{}", pair.jump.user, pair.jump.port);
    let (_inv, mut routes) = pair.settle(&pair.config(&format!("jumpbox,{second}")));
    let o = routes.by_host.get_mut("web1").expect("route");
    assert_eq!(o.jumps.len(), 2);
    assert_eq!(
        (o.jumps[1].address.as_str(), o.jumps[1].port),
        ("127.0.0.1", pair.jump.port)
    );
    // The second hop has no IdentityFile of its own (no Host line matches 127.0.0.1): it
    // uses the host's key, which the jump server does not know; give it the jump key the
    // way a `Host 127.0.0.1` line would.
    o.jumps[1].identity_files = vec![pair.jump.user_key.clone()];
    let session = crate::transport::connect(o).await.unwrap_or_else(|e| {
        panic!(
            "{e}\njump:\n{}\ntarget:\n{}",
            pair.jump.sshd_log(),
            pair.target.sshd_log()
        )
    });
    use crate::transport::Transport;
    let out = session.exec("echo two-hops", b"").await.expect("exec");
    assert_eq!(out.stdout, b"two-hops\n");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_a_hop_with_the_wrong_key_is_refused_naming_the_jump_host() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let (_inv, mut routes) = pair.settle(&pair.config("jumpbox"));
    let o = routes.by_host.get_mut("web1").expect("route");
    // The jump host offered the target's key only: refused there, before the target.
    o.jumps[0].identity_files = vec![pair.target.user_key.clone()];
    let e = crate::transport::connect(o)
        .await
        .expect_err("wrong key")
        .to_string();
    assert!(
        e.contains(&format!(
            "authentication to jump host 127.0.0.1:{} (for web1)",
            pair.jump.port
        )),
        "{e}"
    );
}

/// With nothing naming a key, ssh's default files are used: those that exist and open
/// without a passphrase (an encrypted one is left to the agent, as ssh leaves it).
#[test]
fn default_identity_files_that_open_are_used_and_encrypted_ones_left_to_the_agent() {
    use crate::transport::test_sshd::{TempDir, keygen};
    let home = TempDir::new("default-ids");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    let made = TempDir::new("default-ids-made");
    let plain = keygen(&made, "plain", "ed25519", "");
    let locked = keygen(&made, "locked", "ecdsa", "a passphrase");
    std::fs::copy(&plain, home.join(".ssh/id_ed25519")).expect("copy");
    std::fs::copy(&locked, home.join(".ssh/id_ecdsa")).expect("copy");
    let text = "domain: www.example.test\nssh:\n  config: false\ntiers:\n  web:\n    roles: [web]\nhosts:\n  w: {address: 192.0.2.5, tier: web}\n";
    let mut inv = crate::inventory::parse(Path::new("inv.yml"), text, &["web".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let env = Env {
        home: home.join(""),
        local_user: "op".into(),
    };
    let routes = settle(&mut inv, None, &env, &SystemResolver, &RealExists)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        routes.by_host["w"].identity_files,
        [home.join(".ssh/id_ed25519")]
    );
}
