//! The stack's loop: guest frames in, policy on every new flow, smoltcp
//! for the TCP the guest speaks, host sockets for what it reaches.
//!
//! A guest SYN to a new destination is held while the policy decides and
//! the host connects; only then is it given to a fresh listening socket,
//! so the guest's handshake completes exactly when the destination's did,
//! and a refusal (by the policy or the destination) is a reset of the SYN:
//! "connection refused" in the guest. One task owns all of it; the
//! per-connection tasks only move bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::socket::udp as smol_udp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::audit::{Audit, NetworkEvent, NetworkEventKind};
use super::policy::{Decision, Rules, HOST_ALIAS};
use super::relay::{Conn, Meta, Pumped};
use super::udp::{self, UdpDest};
use super::{dns, frames, host_addrs, EdgeSecrets, NetworkLimits};
use super::{GATEWAY_ADDR, GATEWAY_MAC, GUEST_ADDR, HOST_ALIAS_ADDR, PREFIX_LEN};

/// How long the host may take to connect to a destination.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// Guest frames waiting for smoltcp at most.
const RX_BACKLOG: usize = 256;
/// Distinct refused UDP destinations reported (a flood is reported once
/// per destination, not once per datagram).
const MAX_UDP_REPORTS: usize = 256;

/// A TCP flow: the guest's end and the destination it asked for.
type Flow = (SocketAddrV4, SocketAddrV4);

/// A guest SYN waiting for the host's connection.
struct Held {
    syn: Vec<u8>,
    meta: Meta,
}

enum Done {
    Connected(Flow, std::io::Result<TcpStream>),
    Dns(IpListenEndpointV4, dns::Answer),
    /// A host client connected to a published port.
    Inbound(TcpStream, SocketAddr, u16),
}

/// Where a DNS reply goes back to.
type IpListenEndpointV4 = SocketAddrV4;

/// The device smoltcp sees: frames from the guest queued by the loop,
/// frames to the guest into the writer's bounded channel.
struct Link {
    rx: VecDeque<Vec<u8>>,
    tx: mpsc::Sender<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mpsc::Sender<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        // `transmit` checked for room; a race only costs this frame.
        let _ = self.0.try_send(frame);
        result
    }
}

impl Device for Link {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        if self.tx.capacity() == 0 {
            return None;
        }
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        // No room: smoltcp keeps the data and tries again on the next poll.
        (self.tx.capacity() > 0).then_some(Tx(&self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = frames::MAX_FRAME;
        caps
    }
}

struct Stack {
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    dns_socket: SocketHandle,
    /// Every rule: what DNS answers by.
    rules: Arc<Rules>,
    /// The rules for TCP, and for UDP beyond DNS.
    tcp_rules: Rules,
    udp_rules: Rules,
    limits: NetworkLimits,
    audit: Audit,
    conns: HashMap<SocketHandle, Conn>,
    flows: HashMap<Flow, SocketHandle>,
    held: HashMap<Flow, Held>,
    names: dns::Names,
    dns_in_flight: usize,
    udp_reported: HashSet<SocketAddrV4>,
    /// Allowed UDP destinations with their flows.
    udp_dests: HashMap<SocketAddrV4, UdpDest>,
    tasks: JoinSet<()>,
    done_tx: mpsc::Sender<Done>,
    wake: Arc<Notify>,
    epoch: Instant,
    /// The last gateway port used for a connection into the guest.
    local_port: u16,
    secrets: EdgeSecrets,
}

/// Runs one sandbox's network until QEMU's end of `link` closes, taking
/// host clients of `listeners` (each for its guest port) in.
pub(crate) async fn run(
    link: UnixStream,
    rules: Rules,
    limits: NetworkLimits,
    listeners: Vec<(TcpListener, u16)>,
    secrets: EdgeSecrets,
    audit: Audit,
) {
    let (read, write) = link.into_split();
    let (rx_tx, mut rx) = mpsc::channel(frames::RX_QUEUE);
    let (tx, tx_rx) = mpsc::channel(frames::TX_QUEUE);
    let wake = Arc::new(Notify::new());
    let mut io = JoinSet::new();
    io.spawn(frames::read(read, rx_tx));
    io.spawn(frames::write(write, tx_rx, wake.clone()));
    for (listener, guest) in &listeners {
        if let Ok(at) = listener.local_addr() {
            audit.published(super::PortMap {
                guest: *guest,
                host: at.port(),
            });
        }
    }
    let max_pending = limits.max_connections as usize + dns::MAX_IN_FLIGHT;
    let (done_tx, mut done_rx) = mpsc::channel(max_pending);
    for (listener, guest_port) in listeners {
        let done = done_tx.clone();
        io.spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                if done
                    .send(Done::Inbound(stream, peer, guest_port))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    let mut stack = Stack::new(
        Link {
            rx: VecDeque::new(),
            tx,
        },
        rules,
        limits,
        audit,
        secrets,
        done_tx,
        wake.clone(),
    );
    loop {
        let delay = stack.delay();
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                stack.on_frame(frame);
                // Take what else is queued before polling once for all.
                for _ in 0..frames::RX_QUEUE {
                    match rx.try_recv() {
                        Ok(frame) => stack.on_frame(frame),
                        Err(_) => break,
                    }
                }
            }
            Some(done) = done_rx.recv() => stack.on_done(done),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        stack.poll();
        while stack.tasks.try_join_next().is_some() {}
    }
}

impl Stack {
    fn new(
        mut link: Link,
        rules: Rules,
        limits: NetworkLimits,
        audit: Audit,
        secrets: EdgeSecrets,
        done_tx: mpsc::Sender<Done>,
        wake: Arc<Notify>,
    ) -> Stack {
        let epoch = Instant::now();
        let mac = HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC));
        let mut iface = Interface::new(Config::new(mac), &mut link, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            for a in [GATEWAY_ADDR, HOST_ALIAS_ADDR] {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), PREFIX_LEN));
            }
        });
        // Accept packets for every address (the guest's destinations),
        // routed through our own.
        iface.set_any_ip(true);
        let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY_ADDR);
        let mut sockets = SocketSet::new(Vec::new());
        let mut dns_socket = smol_udp::Socket::new(
            smol_udp::PacketBuffer::new(
                vec![smol_udp::PacketMetadata::EMPTY; 64],
                vec![0; 64 * 1024],
            ),
            smol_udp::PacketBuffer::new(
                vec![smol_udp::PacketMetadata::EMPTY; 64],
                vec![0; 64 * 1024],
            ),
        );
        let _ = dns_socket.bind(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(GATEWAY_ADDR)),
            port: 53,
        });
        let dns_socket = sockets.add(dns_socket);
        Stack {
            iface,
            link,
            sockets,
            dns_socket,
            tcp_rules: rules.for_protocol(false),
            udp_rules: rules.for_protocol(true),
            rules: Arc::new(rules),
            limits,
            audit,
            conns: HashMap::new(),
            flows: HashMap::new(),
            held: HashMap::new(),
            names: dns::Names::default(),
            dns_in_flight: 0,
            udp_reported: HashSet::new(),
            udp_dests: HashMap::new(),
            tasks: JoinSet::new(),
            done_tx,
            wake,
            epoch,
            local_port: 49151,
            secrets,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn delay(&mut self) -> Duration {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map_or(Duration::from_secs(1), |d| {
                Duration::from_micros(d.total_micros())
            })
    }

    /// Looks at one guest frame: new TCP flows and UDP datagrams meet the
    /// policy here; the rest goes to smoltcp as it is.
    fn on_frame(&mut self, frame: Vec<u8>) {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => {}
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                // Only the guest's own address, and no fragments (at this
                // MTU a fragment is someone hiding something).
                if ip.src_addr() != GUEST_ADDR || ip.more_frags() || ip.frag_offset() != 0 {
                    return;
                }
                let dst = ip.dst_addr();
                match ip.next_header() {
                    IpProtocol::Tcp => {
                        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                            return;
                        };
                        if tcp.syn() && !tcp.ack() {
                            let flow = (
                                SocketAddrV4::new(GUEST_ADDR, tcp.src_port()),
                                SocketAddrV4::new(dst, tcp.dst_port()),
                            );
                            return self.on_syn(flow, frame);
                        }
                    }
                    IpProtocol::Udp => {
                        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                            return;
                        };
                        if !(dst == GATEWAY_ADDR && udp.dst_port() == 53) {
                            self.on_udp(SocketAddrV4::new(dst, udp.dst_port()));
                        }
                        // smoltcp answers the refused ones "port unreachable"
                        // (no socket is bound for them).
                    }
                    IpProtocol::Icmp => {
                        // Pings to the gateway are answered; to anything
                        // else they are not (smoltcp would answer for all).
                        if dst != GATEWAY_ADDR && dst != HOST_ALIAS_ADDR {
                            return;
                        }
                    }
                    _ => return,
                }
            }
            // No IPv6, nothing else.
            _ => return,
        }
        self.deliver(frame);
    }

    /// Queues a frame for smoltcp. While the guest is not taking frames
    /// (the queue to it is full, so smoltcp takes none either) the backlog
    /// is bounded: beyond it frames are dropped, as a NIC would.
    fn deliver(&mut self, frame: Vec<u8>) {
        if self.link.rx.len() < RX_BACKLOG {
            self.link.rx.push_back(frame);
        }
    }

    fn refuse_udp(&mut self, dst: SocketAddrV4, reason: String) {
        if self.udp_reported.len() >= MAX_UDP_REPORTS || !self.udp_reported.insert(dst) {
            return;
        }
        self.audit.record(NetworkEvent {
            kind: NetworkEventKind::Udp,
            allowed: false,
            reason,
            host: None,
            address: Some(IpAddr::V4(*dst.ip())),
            port: dst.port(),
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::ZERO,
            error: None,
        });
    }

    /// What the policy says of `dst`: the decision, where the host
    /// reaches it, the name to report and the names it was resolved from.
    fn destination(
        &self,
        dst: SocketAddrV4,
        udp: bool,
    ) -> (Decision, SocketAddr, Option<String>, Vec<String>) {
        let rules = if udp {
            &self.udp_rules
        } else {
            &self.tcp_rules
        };
        let (dst_ip, port) = (*dst.ip(), dst.port());
        if dst_ip == HOST_ALIAS_ADDR {
            let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            (
                rules.host_alias(port),
                upstream,
                Some(HOST_ALIAS.to_string()),
                vec![HOST_ALIAS.to_string()],
            )
        } else if in_guest_subnet(dst_ip) {
            let why = format!("{dst_ip} is the sandbox's own network; the gateway serves only DNS");
            (Decision::deny(why), SocketAddr::from(dst), None, Vec::new())
        } else {
            let names = self.names.of(dst_ip).to_vec();
            let mut decision = rules.decide(IpAddr::V4(dst_ip), port, &names);
            let addr = IpAddr::V4(dst_ip);
            if decision.allowed
                && !rules.cidr_allows(addr, port)
                && host_addrs::host_addresses().contains(&addr)
            {
                decision = Decision::deny(format!(
                    "{dst_ip} is one of the host's own addresses; reach host services as {HOST_ALIAS}"
                ));
            }
            (
                decision,
                SocketAddr::from(dst),
                names.last().cloned(),
                names,
            )
        }
    }

    /// A datagram to `dst` (not the DNS server): an allowed destination
    /// gets a socket (once); a refused one is reported (once).
    fn on_udp(&mut self, dst: SocketAddrV4) {
        if self.udp_dests.contains_key(&dst) {
            return;
        }
        let (decision, upstream, host, _) = self.destination(dst, true);
        if !decision.allowed {
            return self.refuse_udp(dst, decision.reason);
        }
        let open = self.conns.len() + self.held.len() + self.udp_dests.len();
        if open >= self.limits.max_connections as usize {
            return self.refuse_udp(dst, format!("the sandbox has {open} flows open, its limit"));
        }
        let mut sock = udp::socket();
        let bound = sock.bind(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*dst.ip())),
            port: dst.port(),
        });
        if bound.is_err() {
            return self.refuse_udp(dst, format!("{dst} cannot be served"));
        }
        let handle = self.sockets.add(sock);
        let dest = UdpDest::new(handle, dst, upstream, host, decision.reason);
        self.audit.record(dest.opened());
        self.udp_dests.insert(dst, dest);
    }

    /// Moves datagrams for the allowed UDP destinations; closes idle ones.
    fn serve_udp(&mut self) -> bool {
        let mut moved = false;
        let now = Instant::now();
        let peers: usize = self.udp_dests.values().map(UdpDest::peers).sum();
        let used = self.conns.len() + self.held.len() + peers;
        let mut room = (self.limits.max_connections as usize).saturating_sub(used);
        let mut unused = Vec::new();
        for (dst, dest) in self.udp_dests.iter_mut() {
            let before = dest.peers();
            let sock = self.sockets.get_mut::<smol_udp::Socket>(dest.handle);
            moved |= dest.pump(sock, room, &self.wake);
            room = room.saturating_sub(dest.peers().saturating_sub(before));
            for event in dest.close_idle(now, false) {
                self.audit.record(event);
            }
            if dest.unused(now) {
                unused.push(*dst);
            }
        }
        for dst in unused {
            if let Some(dest) = self.udp_dests.remove(&dst) {
                self.sockets.remove(dest.handle);
            }
        }
        moved
    }

    fn on_syn(&mut self, flow: Flow, syn: Vec<u8>) {
        if self.flows.contains_key(&flow) {
            // A retransmission for a socket that has it already.
            return self.deliver(syn);
        }
        if self.held.contains_key(&flow) {
            return; // still connecting; the guest will ask again
        }
        let (decision, upstream, host, names) = self.destination(flow.1, false);
        let meta = Meta {
            dst: upstream,
            host,
            decision,
            names,
            started: Instant::now(),
        };
        let open = self.conns.len() + self.held.len();
        let refusal = if !meta.decision.allowed {
            Some(meta.decision.reason.clone())
        } else if open >= self.limits.max_connections as usize {
            Some(format!(
                "the sandbox has {open} connections open, its limit"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.audit.record(refused_tcp(&meta, reason, None));
            // No socket listens for it: smoltcp resets it.
            return self.deliver(syn);
        }
        let done = self.done_tx.clone();
        self.tasks.spawn(async move {
            let result =
                match tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(upstream)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer in {CONNECT_DEADLINE:?}"),
                    )),
                };
            let _ = done.send(Done::Connected(flow, result)).await;
        });
        self.held.insert(flow, Held { syn, meta });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Connected(flow, result) => {
                let Some(held) = self.held.remove(&flow) else {
                    return;
                };
                match result {
                    Ok(stream) => self.accept(flow, held, stream),
                    Err(e) => {
                        let error = format!("connecting to {} failed: {e}", held.meta.dst);
                        let mut event =
                            refused_tcp(&held.meta, held.meta.decision.reason.clone(), Some(error));
                        event.allowed = true;
                        self.audit.record(event);
                        self.deliver(held.syn);
                    }
                }
            }
            Done::Inbound(stream, peer, guest_port) => self.inbound(stream, peer, guest_port),
            Done::Dns(to, answer) => {
                self.dns_in_flight -= 1;
                for (addr, name) in answer.learned {
                    self.names.learn(addr, name);
                }
                if let Some(event) = answer.event {
                    self.audit.record(event);
                }
                if let Some(reply) = answer.reply {
                    let sock = self.sockets.get_mut::<smol_udp::Socket>(self.dns_socket);
                    let to = smoltcp::wire::IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
                    let _ = sock.send_slice(&reply, to);
                }
            }
        }
    }

    fn accept(&mut self, flow: Flow, held: Held, stream: TcpStream) {
        let size = self.limits.buffer_bytes as usize;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        sock.set_nagle_enabled(false);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*flow.1.ip())),
            port: flow.1.port(),
        };
        if sock.listen(local).is_err() {
            return;
        }
        let handle = self.sockets.add(sock);
        let mut conn = Conn::new(stream, held.meta, size, self.wake.clone());
        conn.syn_delivered();
        self.conns.insert(handle, conn);
        self.flows.insert(flow, handle);
        self.deliver(held.syn);
        // Handed over now, before another listener for the same
        // destination exists to take it.
        let now = self.now();
        self.iface.poll(now, &mut self.link, &mut self.sockets);
    }

    /// Opens a connection from the gateway to the guest's published port
    /// for a host client.
    fn inbound(&mut self, stream: TcpStream, peer: SocketAddr, guest_port: u16) {
        let meta = Meta {
            dst: SocketAddr::from((GUEST_ADDR, guest_port)),
            host: None,
            decision: Decision {
                allowed: true,
                reason: format!("published port {guest_port}, from {peer}"),
                by_name: false,
            },
            names: Vec::new(),
            started: Instant::now(),
        };
        let open = self.conns.len() + self.held.len();
        if open >= self.limits.max_connections as usize {
            let reason = format!("the sandbox has {open} connections open, its limit");
            self.audit.record(refused_tcp(&meta, reason, None));
            return;
        }
        let size = self.limits.buffer_bytes as usize;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        sock.set_nagle_enabled(false);
        let local = (IpAddress::Ipv4(GATEWAY_ADDR), self.next_local_port());
        let remote = (IpAddress::Ipv4(GUEST_ADDR), guest_port);
        if sock.connect(self.iface.context(), remote, local).is_err() {
            return;
        }
        let handle = self.sockets.add(sock);
        let conn = Conn::new(stream, meta, size, self.wake.clone()).without_sniffing();
        self.conns.insert(handle, conn);
    }

    /// A gateway port for a connection into the guest, not in use.
    fn next_local_port(&mut self) -> u16 {
        loop {
            self.local_port = if self.local_port == u16::MAX {
                49152
            } else {
                self.local_port + 1
            };
            let port = self.local_port;
            let taken = self.conns.keys().any(|h| {
                let sock = self.sockets.get::<tcp::Socket>(*h);
                sock.local_endpoint().is_some_and(|e| e.port == port)
            });
            if !taken {
                return port;
            }
        }
    }

    /// Polls smoltcp and moves data until nothing more moves.
    fn poll(&mut self) {
        for _ in 0..8 {
            let now = self.now();
            self.iface.poll(now, &mut self.link, &mut self.sockets);
            let mut moved = self.serve_dns();
            moved |= self.serve_udp();
            moved |= self.pump();
            if !moved {
                break;
            }
        }
    }

    fn serve_dns(&mut self) -> bool {
        let mut moved = false;
        let sock = self.sockets.get_mut::<smol_udp::Socket>(self.dns_socket);
        while let Ok((query, meta)) = sock.recv() {
            moved = true;
            let IpAddress::Ipv4(from) = meta.endpoint.addr;
            if self.dns_in_flight >= dns::MAX_IN_FLIGHT {
                continue; // dropped: the guest's resolver retries
            }
            self.dns_in_flight += 1;
            let query = query.to_vec();
            let rules = self.rules.clone();
            let done = self.done_tx.clone();
            let to = SocketAddrV4::new(from, meta.endpoint.port);
            self.tasks.spawn(async move {
                let answer = dns::answer(&query, rules).await;
                let _ = done.send(Done::Dns(to, answer)).await;
            });
        }
        moved
    }

    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut finished = Vec::new();
        for (handle, conn) in self.conns.iter_mut() {
            let sock = self.sockets.get_mut::<tcp::Socket>(*handle);
            match conn.pump(sock, &self.tcp_rules, &mut self.secrets) {
                Pumped::Open(m) => moved |= m,
                Pumped::Done(event) => {
                    finished.push(*handle);
                    self.audit.record(event);
                }
            }
        }
        for handle in finished {
            self.conns.remove(&handle);
            self.flows.retain(|_, h| *h != handle);
            self.sockets.remove(handle);
            moved = true;
        }
        moved
    }
}

/// The sandbox stopped (the link closed or the task was aborted): what
/// was still open gets its audit record now, so the trail holds every
/// connection, not only those that closed in time.
impl Drop for Stack {
    fn drop(&mut self) {
        const STOPPED: &str = "the sandbox stopped with the connection open";
        for conn in self.conns.values_mut() {
            self.audit.record(conn.stopped(STOPPED));
        }
        for held in self.held.values() {
            let reason = held.meta.decision.reason.clone();
            let event = refused_tcp(&held.meta, reason, Some(STOPPED.into()));
            self.audit.record(NetworkEvent {
                allowed: true,
                ..event
            });
        }
        let now = Instant::now();
        for dest in self.udp_dests.values_mut() {
            for event in dest.close_idle(now, true) {
                self.audit.record(event);
            }
        }
        self.audit.finish();
    }
}

fn in_guest_subnet(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - PREFIX_LEN);
    u32::from(addr) & mask == u32::from(GATEWAY_ADDR) & mask
}

fn refused_tcp(meta: &Meta, reason: String, error: Option<String>) -> NetworkEvent {
    NetworkEvent {
        kind: NetworkEventKind::Tcp,
        allowed: false,
        reason,
        host: meta.host.clone(),
        address: Some(meta.dst.ip()),
        port: meta.dst.port(),
        bytes_sent: 0,
        bytes_received: 0,
        duration: meta.started.elapsed(),
        error,
    }
}
