//! UDP beyond DNS, to destinations a rule allows. A smoltcp socket bound
//! to the destination (the stack accepts every address) takes the guest's
//! datagrams; each guest port gets its own host socket connected to the
//! destination, whose replies go back from the destination's address.
//! Datagrams that meet a full queue are dropped, as UDP may; a peer idle
//! for [`IDLE`] is closed and reported with its byte counts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::audit::{NetworkEvent, NetworkEventKind};
use super::GUEST_ADDR;

/// A guest port's flow closes after this long without a datagram.
pub const IDLE: Duration = Duration::from_secs(30);
/// Replies queued per guest port before more are dropped.
const REPLY_QUEUE: usize = 32;
/// The largest datagram either way (an IPv4 UDP payload).
const MAX_DATAGRAM: usize = 65507;
/// Datagrams a destination's smoltcp socket holds each way.
const SOCKET_PACKETS: usize = 16;

/// The smoltcp socket for one destination's datagrams.
pub fn socket() -> udp::Socket<'static> {
    let buffer = || {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; SOCKET_PACKETS],
            vec![0; MAX_DATAGRAM + 1024],
        )
    };
    udp::Socket::new(buffer(), buffer())
}

/// One allowed UDP destination and the guest ports talking to it.
pub struct UdpDest {
    /// Its smoltcp socket.
    pub handle: SocketHandle,
    /// Where the host sends (the host's loopback for the host alias).
    upstream: SocketAddr,
    /// The guest's view of it, for the audit trail.
    dst: SocketAddrV4,
    host: Option<String>,
    reason: String,
    peers: HashMap<u16, Peer>,
    since: Instant,
}

struct Peer {
    /// The host socket, for sending: std's non-blocking send works from
    /// the first datagram (tokio's `try_send` waits for a readiness event
    /// a fresh socket has not had yet).
    socket: std::net::UdpSocket,
    replies: mpsc::Receiver<Vec<u8>>,
    reader: JoinHandle<()>,
    started: Instant,
    last: Instant,
    sent: u64,
    received: u64,
    error: Option<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpDest {
    /// A destination whose datagrams go to `upstream`.
    pub fn new(
        handle: SocketHandle,
        dst: SocketAddrV4,
        upstream: SocketAddr,
        host: Option<String>,
        reason: String,
    ) -> UdpDest {
        UdpDest {
            handle,
            upstream,
            dst,
            host,
            reason,
            peers: HashMap::new(),
            since: Instant::now(),
        }
    }

    /// Guest ports with a host socket.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Whether nothing uses it any more (no guest port, for a while).
    pub fn unused(&self, now: Instant) -> bool {
        self.peers.is_empty() && now.duration_since(self.since) >= Duration::from_secs(1)
    }

    /// The record of its opening.
    pub fn opened(&self) -> NetworkEvent {
        NetworkEvent {
            kind: NetworkEventKind::Udp,
            allowed: true,
            reason: self.reason.clone(),
            host: self.host.clone(),
            address: Some(IpAddr::V4(*self.dst.ip())),
            port: self.dst.port(),
            bytes_sent: 0,
            bytes_received: 0,
            duration: Duration::ZERO,
            error: None,
        }
    }

    /// Moves datagrams both ways through `sock`; `room` is how many more
    /// guest ports may get a host socket. Returns whether any moved.
    pub fn pump(&mut self, sock: &mut udp::Socket<'_>, room: usize, wake: &Arc<Notify>) -> bool {
        let mut moved = false;
        let mut room = room;
        while let Ok((data, meta)) = sock.recv() {
            moved = true;
            let port = meta.endpoint.port;
            if !self.peers.contains_key(&port) {
                if room == 0 {
                    continue; // dropped: the sandbox is at its limit
                }
                match open(self.upstream, wake.clone()) {
                    Ok(peer) => {
                        room -= 1;
                        self.peers.insert(port, peer);
                    }
                    Err(_) => continue,
                }
            }
            let peer = self.peers.get_mut(&port).expect("just made");
            peer.last = Instant::now();
            match peer.socket.send(data) {
                Ok(n) => peer.sent += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => peer.error = Some(format!("sending to {}: {e}", self.upstream)),
            }
        }
        for (port, peer) in self.peers.iter_mut() {
            while sock.can_send() {
                let Ok(reply) = peer.replies.try_recv() else {
                    break;
                };
                let to = IpEndpoint::new(IpAddress::Ipv4(GUEST_ADDR), *port);
                if sock.send_slice(&reply, to).is_ok() {
                    moved = true;
                    peer.received += reply.len() as u64;
                    peer.last = Instant::now();
                }
            }
        }
        moved
    }

    /// Closes the guest ports idle since `now - IDLE` (all of them with
    /// `all`), returning their audit records.
    pub fn close_idle(&mut self, now: Instant, all: bool) -> Vec<NetworkEvent> {
        let idle: Vec<u16> = self
            .peers
            .iter()
            .filter(|(_, p)| all || now.duration_since(p.last) >= IDLE)
            .map(|(port, _)| *port)
            .collect();
        let peers: Vec<Peer> = idle
            .into_iter()
            .filter_map(|port| self.peers.remove(&port))
            .collect();
        peers
            .into_iter()
            .map(|p| NetworkEvent {
                bytes_sent: p.sent,
                bytes_received: p.received,
                duration: p.last.duration_since(p.started),
                error: p.error.clone(),
                ..self.opened()
            })
            .collect()
    }
}

/// A host socket connected to `upstream`, its replies read by a task.
fn open(upstream: SocketAddr, wake: Arc<Notify>) -> std::io::Result<Peer> {
    let bind: SocketAddr = match upstream {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.connect(upstream)?;
    socket.set_nonblocking(true)?;
    let reading = UdpSocket::from_std(socket.try_clone()?)?;
    let (tx, replies) = mpsc::channel(REPLY_QUEUE);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok(n) = reading.recv(&mut buf).await else {
                // An ICMP error from the destination, say: keep reading.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            // Full: dropped, as a congested path would.
            if tx.try_send(buf[..n].to_vec()).is_ok() {
                wake.notify_one();
            } else if tx.is_closed() {
                return;
            }
        }
    });
    let now = Instant::now();
    Ok(Peer {
        socket,
        replies,
        reader,
        started: now,
        last: now,
        sent: 0,
        received: 0,
        error: None,
    })
}
