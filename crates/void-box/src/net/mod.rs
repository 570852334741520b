//! The host side of a sandbox's network: a user-mode TCP/IP stack that
//! terminates every connection the guest opens and re-makes it on the host
//! only when the [egress policy](policy) allows it.
//!
//! The guest sees an ordinary virtio-net interface (`10.0.2.15/24`, gateway
//! and DNS at `10.0.2.2`). QEMU hands its Ethernet frames to us over a
//! socket pair (`-netdev stream`), and [`smoltcp`] plays every host the
//! guest talks to: no TAP, no bridge, no privileges, and no packet of the
//! guest's ever reaches a host network. A connection the policy refuses is
//! reset before its handshake completes (the guest sees "connection
//! refused"); DNS is answered from the host's resolver, filtered by the same
//! rules; every attempt is an [`NetworkEvent`] (ADR 0008).

mod audit;
mod dns;
mod edge_tls;
mod frames;
mod host_addrs;
pub mod policy;
mod relay;
mod secrets;
mod sniff;
mod stack;
mod swap;
mod tls_bridge;
mod udp;

use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use audit::{NetworkEvent, NetworkEventKind};
pub use edge_tls::{EdgeTls, EdgeTlsError};
pub use policy::{Decision, Rule, RuleError, Rules, HOST_ALIAS};
pub use secrets::{EdgeSecret, EdgeSecrets, SecretConfig};

/// The guest's address.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The gateway, which is also the guest's DNS server.
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// What [`HOST_ALIAS`] resolves to in the guest.
pub const HOST_ALIAS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 254);
/// The guest subnet's prefix length.
pub const PREFIX_LEN: u8 = 24;
/// The link MTU. Large frames carry a 64 KiB TCP segment in one frame, so
/// the emulated guest handles ~40 times fewer packets than at 1500.
pub const MTU: usize = 65520;
/// The guest NIC's MAC address.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The gateway's MAC address.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02];

/// The kernel command line that configures the guest's interface (the
/// kernel's own static IP configuration: no DHCP, no userspace step).
pub fn guest_cmdline() -> String {
    format!("ip={GUEST_ADDR}::{GATEWAY_ADDR}:255.255.255.0::eth0:off")
}

/// Bounds on what one sandbox's network may hold on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLimits {
    /// Most connections open (or being opened) at once; more are refused.
    pub max_connections: u32,
    /// Bytes buffered per connection and direction, in the stack and on
    /// the way to or from the host socket.
    pub buffer_bytes: u32,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        NetworkLimits {
            max_connections: 128,
            buffer_bytes: 256 * 1024,
        }
    }
}

impl NetworkLimits {
    /// Checks the limits are sane; says which is not.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.max_connections) {
            return Err(format!(
                "max_connections {} is outside 1-4096",
                self.max_connections
            ));
        }
        if !(16 * 1024..=16 << 20).contains(&self.buffer_bytes) {
            return Err(format!(
                "buffer_bytes {} is outside 16 KiB-16 MiB",
                self.buffer_bytes
            ));
        }
        Ok(())
    }
}

/// A sandbox's network: none at all (the default: no network device), or
/// a device whose egress follows `rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// No network device.
    #[default]
    Off,
    /// A network device; connections go where `rules` allow.
    On {
        /// Allow and deny rules.
        rules: Rules,
        /// Host-side bounds.
        #[serde(default)]
        limits: NetworkLimits,
    },
}

impl NetworkPolicy {
    /// The public internet and nothing else (`network: true`).
    pub fn public() -> NetworkPolicy {
        NetworkPolicy::from(Rules::public())
    }

    /// Exactly what `allow` lists, less what `deny` lists.
    pub fn rules<A: AsRef<str>, D: AsRef<str>>(
        allow: &[A],
        deny: &[D],
    ) -> Result<NetworkPolicy, RuleError> {
        Rules::parse(allow, deny).map(NetworkPolicy::from)
    }

    /// The same policy with other limits (no effect when off).
    pub fn with_limits(self, new: NetworkLimits) -> NetworkPolicy {
        match self {
            NetworkPolicy::Off => NetworkPolicy::Off,
            NetworkPolicy::On { rules, .. } => NetworkPolicy::On { rules, limits: new },
        }
    }

    /// The policy with `extra` allowed too (what a box's skills declare):
    /// a network that was off becomes one that reaches only `extra`.
    pub fn with_allowed(self, extra: Vec<Rule>) -> NetworkPolicy {
        if extra.is_empty() {
            return self;
        }
        match self {
            NetworkPolicy::Off => NetworkPolicy::from(Rules {
                allow: extra,
                deny: Vec::new(),
            }),
            NetworkPolicy::On { mut rules, limits } => {
                // A rule granted twice (a spec's and a box's sandbox) is one rule.
                for rule in extra {
                    if !rules.allow.contains(&rule) {
                        rules.allow.push(rule);
                    }
                }
                NetworkPolicy::On { rules, limits }
            }
        }
    }

    /// Whether the sandbox gets a network device.
    pub fn is_on(&self) -> bool {
        matches!(self, NetworkPolicy::On { .. })
    }

    /// Checks rule count and limits.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            NetworkPolicy::Off => Ok(()),
            NetworkPolicy::On { rules, limits } => {
                if rules.len() > policy::MAX_RULES {
                    return Err(format!(
                        "{} rules; at most {} are allowed",
                        rules.len(),
                        policy::MAX_RULES
                    ));
                }
                limits.validate()
            }
        }
    }
}

impl From<bool> for NetworkPolicy {
    fn from(on: bool) -> Self {
        if on {
            NetworkPolicy::public()
        } else {
            NetworkPolicy::Off
        }
    }
}

impl From<Rules> for NetworkPolicy {
    fn from(rules: Rules) -> Self {
        NetworkPolicy::On {
            rules,
            limits: NetworkLimits::default(),
        }
    }
}

/// A guest TCP port published on the host's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMap {
    /// The port a guest program listens on.
    pub guest: u16,
    /// The port on the host's 127.0.0.1; 0 picks a free one.
    #[serde(default)]
    pub host: u16,
}

/// Most ports one sandbox may publish.
pub const MAX_PORTS: usize = 64;

/// Checks a list of published ports: real guest ports, each once, and no
/// host port twice.
pub fn check_ports(ports: &[PortMap]) -> Result<(), String> {
    if ports.len() > MAX_PORTS {
        return Err(format!("{} ports; at most {MAX_PORTS}", ports.len()));
    }
    for (i, p) in ports.iter().enumerate() {
        if p.guest == 0 {
            return Err("guest port 0 is not a port".into());
        }
        for q in &ports[..i] {
            if q.guest == p.guest {
                return Err(format!("guest port {} is published twice", p.guest));
            }
            if p.host != 0 && q.host == p.host {
                return Err(format!("host port {} is used twice", p.host));
            }
        }
    }
    Ok(())
}

/// How many audit events may wait for a slow subscriber before the oldest
/// are dropped (the subscriber is told how many).
const AUDIT_BACKLOG: usize = 4096;

/// One sandbox's running network stack. Dropping it ends the stack, every
/// connection it relays and its published ports' listeners.
pub struct Egress {
    task: JoinHandle<()>,
    events: broadcast::Sender<NetworkEvent>,
    published: Vec<PortMap>,
}

impl Egress {
    /// Serves the guest frames arriving on `link` (QEMU's end of the
    /// `-netdev stream` socket pair is the other) under `rules`, and
    /// listens for `ports` on 127.0.0.1 (failing if one is taken). Needs a
    /// Tokio runtime.
    pub fn start(
        link: UnixStream,
        rules: Rules,
        limits: NetworkLimits,
        ports: &[PortMap],
        secrets: EdgeSecrets,
        sandbox_id: &str,
    ) -> std::io::Result<Egress> {
        link.set_nonblocking(true)?;
        let link = tokio::net::UnixStream::from_std(link)?;
        let mut listeners = Vec::new();
        let mut published = Vec::new();
        for p in ports {
            let listener =
                std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p.host)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "publish guest port {} at 127.0.0.1:{}: {e}",
                            p.guest, p.host
                        ),
                    )
                })?;
            listener.set_nonblocking(true)?;
            let host = listener.local_addr()?.port();
            listeners.push((tokio::net::TcpListener::from_std(listener)?, p.guest));
            published.push(PortMap {
                guest: p.guest,
                host,
            });
        }
        let (events, _) = broadcast::channel(AUDIT_BACKLOG);
        let audit = audit::Audit::new(events.clone(), sandbox_id);
        let span = tracing::info_span!("sandbox.network", voidbox.sandbox_id = %sandbox_id);
        let task = tokio::spawn(
            stack::run(link, rules, limits, listeners, secrets, audit).instrument(span),
        );
        Ok(Egress {
            task,
            events,
            published,
        })
    }

    /// Every connection attempt and DNS answer from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NetworkEvent> {
        self.events.subscribe()
    }

    /// Stops serving and waits (briefly) until the records of what was
    /// still open are in the trail.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task).await;
    }

    /// The published ports, with the host ports they got.
    pub fn published(&self) -> &[PortMap] {
        &self.published
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
