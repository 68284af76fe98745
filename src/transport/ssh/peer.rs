//! [`Peer`]: the server one SSH connection talks to (the host or its jump host), named the
//! same way in host key checks and in every message.

use std::fmt;
use std::net::IpAddr;

use super::options::{JumpHost, SshOptions};

/// Who is being connected to, for host key checks and messages.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    /// Inventory name of the host this connection serves.
    pub(super) host: String,
    /// The name looked up in known_hosts (and shown).
    pub(super) address: String,
    /// Where to open the TCP connection when it is not `address` (a name resolved once).
    pub(super) ip: Option<IpAddr>,
    pub(super) port: u16,
    /// Whether this is the jump host in front of `host`.
    pub(super) is_jump: bool,
}

impl Peer {
    /// The host `opts` describes.
    pub(super) fn target(opts: &SshOptions) -> Peer {
        Peer {
            host: opts.host_name.clone(),
            address: opts.address.clone(),
            ip: opts.ip,
            port: opts.port,
            is_jump: false,
        }
    }

    /// The jump host in front of the host `opts` describes.
    pub(super) fn jump(opts: &SshOptions, jump: &JumpHost) -> Peer {
        Peer {
            host: opts.host_name.clone(),
            address: jump.address.clone(),
            ip: None,
            port: jump.port,
            is_jump: true,
        }
    }

    /// A server known only by its address (key scanning before the host is trusted).
    #[cfg(test)]
    pub(super) fn address_only(address: &str, port: u16) -> Peer {
        Peer {
            host: address.to_string(),
            address: address.to_string(),
            ip: None,
            port,
            is_jump: false,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_jump {
            write!(
                f,
                "jump host {}:{} (for {})",
                self.address, self.port, self.host
            )
        } else if self.host == self.address {
            write!(f, "{}:{}", self.address, self.port)
        } else if let Some(ip) = self.ip.filter(|ip| ip.to_string() != self.address) {
            write!(f, "{} ({} {ip}:{})", self.host, self.address, self.port)
        } else {
            write!(f, "{} ({}:{})", self.host, self.address, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(host_name: &str, address: &str) -> SshOptions {
        SshOptions::new(host_name, address, "deploy", "/nonexistent/known_hosts")
    }

    #[test]
    fn names_the_host_its_address_and_port() {
        let opts = SshOptions {
            port: 2222,
            ..opts("web1", "10.0.0.5")
        };
        assert_eq!(Peer::target(&opts).to_string(), "web1 (10.0.0.5:2222)");
    }

    #[test]
    fn a_host_named_by_its_address_is_named_once() {
        assert_eq!(
            Peer::target(&opts("10.0.0.5", "10.0.0.5")).to_string(),
            "10.0.0.5:22"
        );
        assert_eq!(
            Peer::address_only("10.0.0.5", 22).to_string(),
            "10.0.0.5:22"
        );
    }

    #[test]
    fn a_jump_host_says_whom_it_serves() {
        let jump = JumpHost {
            address: "bastion".to_string(),
            port: 2200,
            user: "hop".to_string(),
            identity_files: Vec::new(),
        };
        assert_eq!(
            Peer::jump(&opts("web1", "10.0.0.5"), &jump).to_string(),
            "jump host bastion:2200 (for web1)"
        );
    }
}
