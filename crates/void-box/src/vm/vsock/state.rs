//! The device's connections and its passes over the queues.
//!
//! The guest kernel is hostile here: every pass over a queue is bounded
//! (a guest adding buffers as fast as we take them cannot keep us in one
//! pass), an RX chain we cannot use is consumed with length 0 rather than
//! offered again, and what a guest can make us owe it (control packets,
//! RSTs for unknown connections, turns in the ready line) is coalesced or
//! capped, so its cost to the host does not grow with what it sends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::event::epoll;
use tokio::sync::oneshot;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::conn::{Conn, HOST_CID, OP_RST, TYPE_STREAM};
use super::packet::{self, Header, HEADER_LEN};

/// Largest TX/RX packet payload accepted.
pub(super) const MAX_PACKET_DATA: u32 = 64 * 1024;
/// First host-side port handed out.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// RSTs owed for packets on unknown connections beyond this are not sent
/// (they are a courtesy; the guest's connection fails either way).
pub(super) const MAX_ORPHAN_RSTS: usize = 64;
/// Rounds of `epoll_wait` (of 64 events) one pass takes at most.
const MAX_EVENT_ROUNDS: usize = 16;
/// epoll data of the kick eventfd (connections use their local port).
pub(super) const KICK_TOKEN: u64 = u64::MAX;

/// A connection the host asked for, not yet started by the device thread.
pub struct NewConn {
    pub port: u32,
    pub stream: UnixStream,
    pub connected: oneshot::Sender<io::Result<()>>,
}

/// What one pass over a queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Used entries were added: the guest should be signalled.
    pub used: bool,
    /// It stopped at its bound with work perhaps left: run again soon.
    pub more: bool,
}

impl Pass {
    pub fn and(self, other: Pass) -> Pass {
        Pass {
            used: self.used || other.used,
            more: self.more || other.more,
        }
    }
}

pub struct State {
    pub guest_cid: u64,
    epoll: OwnedFd,
    /// Read side of the kick eventfd.
    kick: OwnedFd,
    conns: HashMap<u32, Conn>,
    /// Connections with something for the guest, in turn order, each once.
    rx_ready: VecDeque<u32>,
    in_rx_ready: HashSet<u32>,
    /// RSTs owed to the guest for packets on unknown connections: (local, peer).
    orphan_rsts: VecDeque<(u32, u32)>,
    next_port: u32,
    scratch: Vec<u8>,
    /// Reused buffer for TX packets.
    tx_bytes: Vec<u8>,
}

impl State {
    /// A device state whose epoll watches `kick` (read side).
    pub fn new(guest_cid: u64, epoll: OwnedFd, kick: OwnedFd) -> State {
        State {
            guest_cid,
            epoll,
            kick,
            conns: HashMap::new(),
            rx_ready: VecDeque::new(),
            in_rx_ready: HashSet::new(),
            orphan_rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            scratch: vec![0; MAX_PACKET_DATA as usize],
            tx_bytes: Vec::new(),
        }
    }

    pub fn epoll(&self) -> &OwnedFd {
        &self.epoll
    }

    /// Starts a host-initiated connection: its REQUEST goes out with the
    /// next RX pass.
    pub fn open(&mut self, new: NewConn) {
        let mut local = self.next_port;
        while self.conns.contains_key(&local) {
            local = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        }
        self.next_port = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        let watched = epoll::add(
            &self.epoll,
            &new.stream,
            epoll::EventData::new_u64(u64::from(local)),
            epoll::EventFlags::IN
                | epoll::EventFlags::OUT
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ET,
        );
        if let Err(e) = watched {
            let _ = new.connected.send(Err(e.into()));
            return;
        }
        let conn = Conn::new(local, new.port, self.guest_cid, new.stream, new.connected);
        self.conns.insert(local, conn);
        self.mark_ready(local);
    }

    /// Closes every connection (the device stopped).
    pub fn close_all(&mut self) {
        for conn in self.conns.values_mut() {
            conn.close(io::ErrorKind::ConnectionAborted);
        }
        self.conns.clear();
        self.rx_ready.clear();
        self.in_rx_ready.clear();
    }

    fn mark_ready(&mut self, local: u32) {
        if self.in_rx_ready.insert(local) {
            self.rx_ready.push_back(local);
        }
    }

    fn pop_ready(&mut self) {
        if let Some(local) = self.rx_ready.pop_front() {
            self.in_rx_ready.remove(&local);
        }
    }

    fn remove(&mut self, local: u32) {
        // A gone connection never waits in line (the queue holds live ones only).
        if self.in_rx_ready.remove(&local) {
            self.rx_ready.retain(|&p| p != local);
        }
        if let Some(conn) = self.conns.remove(&local) {
            let _ = epoll::delete(&self.epoll, conn.stream());
        }
    }

    /// Takes what the guest sent: at most one ring's worth of chains.
    pub fn process_tx<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> io::Result<Pass> {
        let mut pass = Pass::default();
        if !queue.ready() {
            return Ok(pass);
        }
        for _ in 0..queue.size() {
            let chain = queue
                .iter(mem)
                .map_err(|e| io::Error::other(format!("TX queue: {e}")))?
                .next();
            let Some(chain) = chain else {
                return Ok(pass);
            };
            let head = chain.head_index();
            let mut bytes = std::mem::take(&mut self.tx_bytes);
            // A malformed chain (a writable descriptor, too long) is dropped.
            let limit = HEADER_LEN + MAX_PACKET_DATA as usize;
            if packet::gather(mem, chain, limit, &mut bytes).is_some() {
                if let Some(header) = Header::parse(&bytes) {
                    let data = &bytes[HEADER_LEN..];
                    let data = &data[..(header.len as usize).min(data.len())];
                    self.on_guest_packet(&header, data);
                }
            }
            self.tx_bytes = bytes;
            queue
                .add_used(mem, head, 0)
                .map_err(|e| io::Error::other(format!("TX used: {e}")))?;
            pass.used = true;
        }
        pass.more = true;
        Ok(pass)
    }

    fn on_guest_packet(&mut self, header: &Header, data: &[u8]) {
        if header.type_ != TYPE_STREAM || header.dst_cid != HOST_CID {
            return;
        }
        let (local, peer) = (header.dst_port, header.src_port);
        match self.conns.get_mut(&local).filter(|c| c.peer_port == peer) {
            Some(conn) => {
                conn.on_guest_packet(header, data);
                let (work, closed) = (conn.has_rx_work(), conn.is_closed());
                if work {
                    self.mark_ready(local);
                } else if closed {
                    self.remove(local);
                }
            }
            // Guest-initiated connections are not served: refuse them.
            None if header.op != OP_RST && self.orphan_rsts.len() < MAX_ORPHAN_RSTS => {
                self.orphan_rsts.push_back((local, peer))
            }
            None => {}
        }
    }

    /// Drains our epoll (bounded): readable sockets want to send, writable
    /// ones can take buffered guest data.
    pub fn process_host_events(&mut self) -> io::Result<Pass> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        for _ in 0..MAX_EVENT_ROUNDS {
            events.clear();
            epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&zero),
            )?;
            if events.is_empty() {
                return Ok(Pass::default());
            }
            for event in &events {
                let token = event.data.u64();
                if token == KICK_TOKEN {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(&self.kick, &mut buf);
                    continue;
                }
                let local = token as u32;
                let Some(conn) = self.conns.get_mut(&local) else {
                    continue;
                };
                let flags = event.flags;
                if flags.intersects(epoll::EventFlags::OUT) {
                    conn.flush();
                }
                if flags.intersects(
                    epoll::EventFlags::IN
                        | epoll::EventFlags::RDHUP
                        | epoll::EventFlags::HUP
                        | epoll::EventFlags::ERR,
                ) {
                    conn.on_readable();
                }
                if conn.has_rx_work() {
                    self.mark_ready(local);
                }
            }
        }
        Ok(Pass {
            used: false,
            more: true,
        })
    }

    /// Fills RX buffers with what connections have for the guest: at most
    /// one ring's worth of chains, and as many turns again.
    pub fn process_rx<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> io::Result<Pass> {
        let mut pass = Pass::default();
        if !queue.ready() {
            return Ok(pass);
        }
        for _ in 0..2 * u32::from(queue.size()) {
            let orphan = self.orphan_rsts.front().copied();
            let port = self.rx_ready.front().copied();
            if orphan.is_none() {
                match port {
                    None => return Ok(pass),
                    Some(port) if !self.conns.get(&port).is_some_and(Conn::has_rx_work) => {
                        self.pop_ready();
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let chain = queue
                .iter(mem)
                .map_err(|e| io::Error::other(format!("RX queue: {e}")))?
                .next();
            let Some(chain) = chain else {
                return Ok(pass); // no buffers: the guest kicks the RX queue when it adds some
            };
            let head = chain.head_index();
            let buffers = packet::writable_buffers(chain).unwrap_or_default();
            let total = buffers.iter().map(|b| b.1).sum::<usize>();
            if total < HEADER_LEN {
                // Device-readable, or too small for a header: given back
                // empty, so it is never offered to us again.
                give_back(mem, queue, head, 0)?;
                pass.used = true;
                continue;
            }
            let room = total - HEADER_LEN;
            let next = match orphan {
                Some((local, peer)) => {
                    self.orphan_rsts.pop_front();
                    Some((self.rst(local, peer), 0))
                }
                None => {
                    let port = port.expect("checked above");
                    let conn = self.conns.get_mut(&port).expect("checked above");
                    let next = conn.next_packet(room, &mut self.scratch);
                    let (work, closed) = (conn.has_rx_work(), conn.is_closed());
                    // Round robin: a busy stream goes to the back of the line.
                    self.pop_ready();
                    if work {
                        self.mark_ready(port);
                    } else if closed {
                        self.remove(port);
                    }
                    if next.is_none() && work {
                        // Data waits but the buffer holds only a header.
                        give_back(mem, queue, head, 0)?;
                        pass.used = true;
                        continue;
                    }
                    next
                }
            };
            match next {
                Some((header, n)) => {
                    let written =
                        packet::scatter(mem, &buffers, &[&header.to_bytes(), &self.scratch[..n]])
                            .unwrap_or(0);
                    give_back(mem, queue, head, written as u32)?;
                    pass.used = true;
                }
                // Nothing to send after all: the chain stays for later.
                None => queue.go_to_previous_position(),
            }
        }
        pass.more = true;
        Ok(pass)
    }

    fn rst(&self, local: u32, peer: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local,
            dst_port: peer,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        }
    }

    /// Counts of what the device holds for the guest (for tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn backlog(&self) -> Backlog {
        Backlog {
            conns: self.conns.len(),
            ready: self.rx_ready.len(),
            orphan_rsts: self.orphan_rsts.len(),
            control: self
                .conns
                .values()
                .map(Conn::control_len)
                .max()
                .unwrap_or(0),
        }
    }
}

/// Adds `head` to the used ring with `len` bytes written.
fn give_back<M: GuestMemory>(mem: &M, queue: &mut Queue, head: u16, len: u32) -> io::Result<()> {
    queue
        .add_used(mem, head, len)
        .map_err(|e| io::Error::other(format!("RX used: {e}")))
}

/// What a device holds for its guest (for tests).
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub conns: usize,
    pub ready: usize,
    pub orphan_rsts: usize,
    /// The most control packets one connection owes.
    pub control: usize,
}
