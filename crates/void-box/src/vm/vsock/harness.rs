//! A driver's-eye harness for the vsock device: guest memory, an RX and a
//! TX split queue laid out by `virtio-queue`'s mock, and the host ends of
//! the device's connections, with no QEMU. The unit tests drive it step by
//! step; [`replay`] drives it from arbitrary bytes, for the fuzz target
//! and the property test that replays the same inputs under `cargo test`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use tokio::sync::oneshot;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::conn::{BUF_ALLOC, HOST_CID};
use super::packet::{Header, HEADER_LEN};
use super::state::{Backlog, NewConn, Pass, State, MAX_ORPHAN_RSTS};

/// The guest's CID in the harness.
pub const GUEST_CID: u64 = 3;
/// Entries per queue (small, so rings wrap often).
pub const QUEUE_LEN: u16 = 16;
const MEM_SIZE: u64 = 4 << 20;
const RX_AT: u64 = 0;
const TX_AT: u64 = 0x1000;
/// Buffers are carved from here on, round robin.
const DATA_AT: u64 = 0x10000;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// One descriptor as the driver writes it.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// One split queue, seen from the driver.
struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    avail_idx: u16,
    used_seen: u16,
    next_desc: u16,
}

impl Ring {
    fn new(mem: &GuestMemoryMmap, at: u64) -> (Ring, Queue) {
        let mock = MockSplitQueue::create(mem, GuestAddress(at), QUEUE_LEN);
        let queue = mock.create_queue::<Queue>().expect("a valid queue");
        let ring = Ring {
            desc: mock.desc_table_addr(),
            avail: mock.avail_addr(),
            used: mock.used_addr(),
            avail_idx: 0,
            used_seen: 0,
            next_desc: 0,
        };
        (ring, queue)
    }

    fn write_desc(&self, mem: &GuestMemoryMmap, index: u16, d: Desc) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
        raw[14..16].copy_from_slice(&d.next.to_le_bytes());
        let at = self.desc.0 + 16 * u64::from(index % QUEUE_LEN);
        mem.write_slice(&raw, GuestAddress(at)).expect("in memory");
    }

    /// Puts `head` in the available ring and publishes it.
    fn offer(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail.0 + 4 + 2 * u64::from(self.avail_idx % QUEUE_LEN);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
    }

    fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx.to_le(), GuestAddress(self.avail.0 + 2))
            .unwrap();
    }

    /// Writes a well-formed chain over the next free descriptors and
    /// offers it; returns its head.
    fn add_chain(&mut self, mem: &GuestMemoryMmap, parts: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in parts.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_LEN;
            let last = i + 1 == parts.len();
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            let next = (index + 1) % QUEUE_LEN;
            self.write_desc(
                mem,
                index,
                Desc {
                    addr,
                    len,
                    flags,
                    next,
                },
            );
        }
        self.next_desc = (head + parts.len() as u16) % QUEUE_LEN;
        self.offer(mem, head);
        head
    }

    /// Used entries added since the last call: (head, length).
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = u16::from_le(mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap());
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used.0 + 4 + 8 * u64::from(self.used_seen % QUEUE_LEN);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((u32::from_le(id), u32::from_le(len)));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A packet the device put in an RX buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: Header,
    pub data: Vec<u8>,
}

/// The device, its guest memory and queues, and the host's stream ends.
pub struct Harness {
    pub mem: GuestMemoryMmap,
    pub state: State,
    rx: Ring,
    tx: Ring,
    rx_queue: Queue,
    tx_queue: Queue,
    /// Where each offered RX head's first buffer is, to read replies back.
    rx_buffers: Vec<(u16, u64, u32)>,
    next_data: u64,
    /// Host ends of opened connections, with their connect answers.
    pub hosts: Vec<(UnixStream, oneshot::Receiver<io::Result<()>>)>,
    /// The guest port each connection asked for.
    ports: Vec<u32>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .expect("guest memory");
        let (rx, rx_queue) = Ring::new(&mem, RX_AT);
        let (tx, tx_queue) = Ring::new(&mem, TX_AT);
        let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)
            .expect("epoll");
        let kick =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).expect("eventfd");
        Harness {
            state: State::new(GUEST_CID, epoll, kick),
            mem,
            rx,
            tx,
            rx_queue,
            tx_queue,
            rx_buffers: Vec::new(),
            next_data: DATA_AT,
            hosts: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Guest memory for a buffer of `len` bytes (round robin over the
    /// data area; old buffers are reused).
    fn buffer(&mut self, len: u32) -> u64 {
        let len = u64::from(len.max(1));
        if self.next_data + len > MEM_SIZE {
            self.next_data = DATA_AT;
        }
        let at = self.next_data;
        self.next_data += len;
        at
    }

    /// The host asks for a connection to guest port `port`; returns its
    /// index in [`hosts`](Self::hosts).
    pub fn connect(&mut self, port: u32) -> usize {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (tx, rx) = oneshot::channel();
        self.state.open(NewConn {
            port,
            stream: ours,
            connected: tx,
        });
        self.hosts.push((theirs, rx));
        self.ports.push(port);
        self.hosts.len() - 1
    }

    /// The guest posts one RX buffer of `len` bytes.
    pub fn post_rx(&mut self, len: u32) -> u16 {
        let at = self.buffer(len);
        let head = self.rx.add_chain(&self.mem, &[(at, len, true)]);
        self.rx_buffers.retain(|b| b.0 != head);
        self.rx_buffers.push((head, at, len));
        head
    }

    /// The guest posts an RX chain of its own making (any flags, any
    /// addresses), `descs` written from descriptor `at` on, and offers `head`.
    pub fn post_rx_raw(&mut self, at: u16, descs: &[Desc], head: u16) {
        for (i, d) in descs.iter().enumerate() {
            let index = at.wrapping_add(i as u16);
            self.rx.write_desc(&self.mem, index, *d);
            // That descriptor no longer holds the buffer `post_rx` put there.
            self.rx_buffers.retain(|b| b.0 != index % QUEUE_LEN);
        }
        self.rx_buffers.retain(|b| b.0 != head % QUEUE_LEN);
        self.rx.offer(&self.mem, head);
    }

    /// Likewise on the TX queue.
    pub fn post_tx_raw(&mut self, at: u16, descs: &[Desc], head: u16) {
        for (i, d) in descs.iter().enumerate() {
            self.tx.write_desc(&self.mem, at.wrapping_add(i as u16), *d);
        }
        self.tx.offer(&self.mem, head);
    }

    /// The guest publishes an available index of its choosing.
    pub fn set_avail_idx(&mut self, rx: bool, idx: u16) {
        let ring = if rx { &mut self.rx } else { &mut self.tx };
        ring.set_avail_idx(&self.mem, idx);
    }

    /// The guest sends a packet, its bytes split over `pieces` descriptors.
    pub fn send(&mut self, header: Header, data: &[u8], pieces: usize) {
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        let pieces = pieces.clamp(1, bytes.len().max(1));
        let step = bytes.len().div_ceil(pieces);
        let mut parts = Vec::new();
        for chunk in bytes.chunks(step) {
            let at = self.buffer(chunk.len() as u32);
            self.mem.write_slice(chunk, GuestAddress(at)).unwrap();
            parts.push((at, chunk.len() as u32, false));
        }
        self.tx.add_chain(&self.mem, &parts);
    }

    /// A packet from the guest on connection `host` (its ports filled in).
    pub fn header(&self, host: usize, op: u16) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: self.peer_port(host),
            dst_port: (1 << 30) + host as u32,
            type_: super::conn::TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        }
    }

    fn peer_port(&self, host: usize) -> u32 {
        self.ports.get(host).copied().unwrap_or(1024)
    }

    /// Runs the device's passes until none asks for more (at most 64
    /// rounds: every pass is bounded, so this always returns).
    pub fn run(&mut self) -> Pass {
        let mut all = Pass::default();
        for _ in 0..64 {
            let pass = self
                .state
                .process_host_events()
                .unwrap_or_default()
                .and(
                    self.state
                        .process_tx(&self.mem, &mut self.tx_queue)
                        .unwrap_or_default(),
                )
                .and(
                    self.state
                        .process_rx(&self.mem, &mut self.rx_queue)
                        .unwrap_or_default(),
                );
            all = all.and(Pass {
                used: pass.used,
                more: false,
            });
            if !pass.more {
                return all;
            }
        }
        all.more = true;
        all
    }

    /// TX entries the device gave back since the last call.
    pub fn tx_used(&mut self) -> Vec<(u32, u32)> {
        self.tx.take_used(&self.mem)
    }

    /// RX entries the device gave back, with the packet each one holds
    /// (`None`: given back empty).
    pub fn received(&mut self) -> Vec<(u32, Option<Received>)> {
        let used = self.rx.take_used(&self.mem);
        used.into_iter()
            .map(|(head, len)| {
                let packet = self
                    .rx_buffers
                    .iter()
                    .find(|b| u32::from(b.0) == head)
                    // A used entry longer than its buffer was forged: raw
                    // chains may point the device's writes at the rings.
                    .filter(|b| len as usize >= HEADER_LEN && len <= b.2)
                    .map(|&(_, at, _)| {
                        let mut bytes = vec![0u8; len as usize];
                        self.mem.read_slice(&mut bytes, GuestAddress(at)).unwrap();
                        let header = Header::parse(&bytes).expect("checked length");
                        Received {
                            header,
                            data: bytes[HEADER_LEN..].to_vec(),
                        }
                    });
                (head, packet)
            })
            .collect()
    }

    /// What the device owes the guest.
    pub fn backlog(&self) -> Backlog {
        self.state.backlog()
    }

    /// Writes to host end `host` (what it does not take now is dropped).
    pub fn host_write(&mut self, host: usize, data: &[u8]) -> usize {
        self.hosts[host].0.write(data).unwrap_or(0)
    }

    /// Reads what host end `host` has (without waiting).
    pub fn host_read(&mut self, host: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.hosts[host].0.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The invariants a hostile guest must not break: what the device
    /// owes it stays bounded whatever it sent.
    pub fn check_bounded(&self) {
        let b = self.backlog();
        assert!(b.control <= 3, "{b:?}");
        assert!(b.orphan_rsts <= MAX_ORPHAN_RSTS, "{b:?}");
        assert!(b.ready <= b.conns, "{b:?}");
    }
}

/// Reads `input` as a script of guest and host actions and plays it
/// against the device, checking after each step that every pass returned
/// and that the device's backlog stays bounded. Never panics on any input
/// unless the device misbehaves.
pub fn replay(input: &[u8]) {
    let mut h = Harness::new();
    let mut bytes = Script::new(input);
    while let Some(op) = bytes.u8() {
        match op % 8 {
            0 if h.hosts.len() < 4 => {
                h.connect(1024);
            }
            1 if !h.hosts.is_empty() => {
                let host = bytes.u8().unwrap_or(0) as usize % h.hosts.len();
                let len = usize::from(bytes.u16().unwrap_or(1)) % 8192;
                h.host_write(host, &vec![0x5a; len]);
            }
            2 if !h.hosts.is_empty() => {
                let host = bytes.u8().unwrap_or(0) as usize % h.hosts.len();
                h.host_read(host);
            }
            3 => {
                let len = u32::from(bytes.u16().unwrap_or(4096));
                h.post_rx(len);
            }
            4 => {
                // A packet with fields from the input, on a known
                // connection when there is one.
                let host = bytes.u8().unwrap_or(0) as usize;
                let mut header = if h.hosts.is_empty() {
                    h.header(0, 0)
                } else {
                    h.header(host % h.hosts.len(), 0)
                };
                header.op = u16::from(bytes.u8().unwrap_or(0) % 9);
                if bytes.u8().unwrap_or(0).is_multiple_of(4) {
                    header.dst_port = bytes.u32().unwrap_or(0);
                }
                header.buf_alloc = bytes.u32().unwrap_or(BUF_ALLOC);
                header.fwd_cnt = bytes.u32().unwrap_or(0);
                let data = vec![0xa5; usize::from(bytes.u16().unwrap_or(0)) % 4096];
                header.len = bytes.u32().unwrap_or(data.len() as u32);
                let pieces = usize::from(bytes.u8().unwrap_or(1) % 4);
                h.send(header, &data, pieces);
            }
            5 | 6 => {
                // Raw descriptors: any address, length, flags and next.
                let n = 1 + bytes.u8().unwrap_or(0) % 4;
                let at = bytes.u16().unwrap_or(0);
                let descs: Vec<Desc> = (0..n)
                    .map(|_| Desc {
                        addr: match bytes.u8().unwrap_or(0) % 3 {
                            0 => bytes.u64().unwrap_or(0),
                            _ => DATA_AT + u64::from(bytes.u16().unwrap_or(0)),
                        },
                        len: bytes.u32().unwrap_or(0),
                        flags: bytes.u16().unwrap_or(0),
                        next: bytes.u16().unwrap_or(0),
                    })
                    .collect();
                let head = bytes.u16().unwrap_or(at);
                if op % 8 == 5 {
                    h.post_rx_raw(at, &descs, head);
                } else {
                    h.post_tx_raw(at, &descs, head);
                }
            }
            7 => {
                let rx = bytes.u8().unwrap_or(0).is_multiple_of(2);
                let idx = bytes.u16().unwrap_or(0);
                h.set_avail_idx(rx, idx);
            }
            _ => {}
        }
        h.run();
        h.received();
        h.tx_used();
        h.check_bounded();
    }
}

/// Little-endian fields read off the front of a byte string.
struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    fn new(input: &'a [u8]) -> Self {
        Script(input)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}
