//! The vhost-user backend: queue processing and the host-side event loop.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::event::{epoll, eventfd, EventfdFlags};
use tokio::sync::oneshot;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::conn::{Conn, HOST_CID, OP_RST, TYPE_STREAM};
use super::packet::{self, Header, HEADER_LEN};

const NUM_QUEUES: usize = 3;
/// QEMU sizes the vsock queues at 1024 entries.
const QUEUE_SIZE: usize = 1024;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Our own epoll (connection sockets and the kick eventfd), registered in
/// the daemon's event loop under this id (ids up to NUM_QUEUES are taken).
const HOST_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// epoll data of the kick eventfd (connections use their local port).
const KICK_TOKEN: u64 = u64::MAX;
/// Largest TX/RX packet payload accepted.
const MAX_PACKET_DATA: u32 = 64 * 1024;
/// How long the guest has to accept or refuse a connection.
const CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// First host-side port handed out.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

struct State {
    guest_cid: u64,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    epoll: OwnedFd,
    /// Read side of the kick eventfd (a duplicate of [`Backend::kick`]).
    kick: OwnedFd,
    conns: HashMap<u32, Conn>,
    /// Connections with something for the guest, in turn order.
    rx_ready: VecDeque<u32>,
    /// RSTs owed to the guest for packets on unknown connections: (local, peer).
    orphan_rsts: VecDeque<(u32, u32)>,
    next_port: u32,
    scratch: Vec<u8>,
    /// Reused buffer for TX packets.
    tx_bytes: Vec<u8>,
    /// QEMU disconnected; no new connections.
    stopped: bool,
}

struct Backend {
    state: Mutex<State>,
    kick: OwnedFd,
    exit: EventFd,
}

impl Backend {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kick(&self) {
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
    }
}

/// A running vsock device for one VM.
pub struct VsockDevice {
    backend: Arc<Backend>,
    socket: PathBuf,
}

impl VsockDevice {
    /// Listens for QEMU on the vhost-user socket `socket` and serves it on
    /// a background thread until QEMU disconnects.
    pub fn start(socket: &Path, guest_cid: u64) -> io::Result<VsockDevice> {
        let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let kick = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        epoll::add(
            &epoll_fd,
            &kick,
            epoll::EventData::new_u64(KICK_TOKEN),
            epoll::EventFlags::IN,
        )?;
        let backend = Arc::new(Backend {
            state: Mutex::new(State {
                guest_cid,
                mem: None,
                epoll: epoll_fd,
                kick: kick.try_clone()?,
                conns: HashMap::new(),
                rx_ready: VecDeque::new(),
                orphan_rsts: VecDeque::new(),
                next_port: FIRST_LOCAL_PORT,
                scratch: vec![0; MAX_PACKET_DATA as usize],
                tx_bytes: Vec::new(),
                stopped: false,
            }),
            kick,
            exit: EventFd::new(EFD_NONBLOCK)?,
        });
        let mut daemon = VhostUserDaemon::new(
            "voidbox-vsock".into(),
            backend.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| io::Error::other(format!("vhost-user daemon: {e}")))?;
        let epoll_raw = backend.lock().epoll.as_raw_fd();
        daemon.get_epoll_handlers()[0]
            .register_listener(epoll_raw, EventSet::IN, u64::from(HOST_EVENT))
            .map_err(|e| io::Error::other(format!("register vsock events: {e}")))?;
        let listener = Listener::new(socket, true).map_err(|e| {
            io::Error::other(format!("vhost-user socket {}: {e}", socket.display()))
        })?;
        let served = backend.clone();
        std::thread::Builder::new()
            .name("voidbox-vsock".into())
            .spawn(move || {
                let result = daemon.start(listener).and_then(|()| daemon.wait());
                if let Err(e) = result {
                    tracing::debug!("vsock device ended: {e}");
                }
                // QEMU is gone (or never came): stop the worker, fail every stream.
                let _ = served.exit.write(1);
                let mut state = served.lock();
                state.stopped = true;
                for conn in state.conns.values_mut() {
                    conn.close(io::ErrorKind::ConnectionAborted);
                }
                state.conns.clear();
            })?;
        Ok(VsockDevice {
            backend,
            socket: socket.to_path_buf(),
        })
    }

    /// Opens a stream to `port` in the guest. Fails if the guest refuses
    /// (nothing listens there yet) or the device stopped.
    pub async fn connect(&self, port: u32) -> io::Result<tokio::net::UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.backend.lock();
            if state.stopped {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the VM's vsock device stopped",
                ));
            }
            let local = state.next_port;
            state.next_port = state.next_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            epoll::add(
                &state.epoll,
                &ours,
                epoll::EventData::new_u64(u64::from(local)),
                epoll::EventFlags::IN
                    | epoll::EventFlags::OUT
                    | epoll::EventFlags::RDHUP
                    | epoll::EventFlags::ET,
            )?;
            let guest_cid = state.guest_cid;
            state
                .conns
                .insert(local, Conn::new(local, port, guest_cid, ours, tx));
            state.rx_ready.push_back(local);
        }
        self.backend.kick();
        match tokio::time::timeout(CONNECT_DEADLINE, rx).await {
            Ok(Ok(Ok(()))) => tokio::net::UnixStream::from_std(theirs),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the VM's vsock device stopped",
            )),
            // A late answer finds our end closed and resets the connection.
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the guest did not answer a connection to vsock port {port} within {CONNECT_DEADLINE:?}"),
            )),
        }
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        // A daemon still waiting for QEMU blocks in accept(): wake it with a
        // connection that closes at once, so its thread ends.
        let _ = self.backend.exit.write(1);
        let _ = UnixStream::connect(&self.socket);
    }
}

impl State {
    fn process_tx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let Some(atomic) = self.mem.clone().filter(|_| queue_ready(vring)) else {
            return Ok(());
        };
        let mem = atomic.memory();
        let mut used = false;
        loop {
            let chain = {
                let mut guard = vring.get_mut();
                let next = guard
                    .get_queue_mut()
                    .iter(mem.clone())
                    .map_err(|e| io::Error::other(format!("TX queue: {e}")))?
                    .next();
                next
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut bytes = std::mem::take(&mut self.tx_bytes);
            if packet::gather(
                mem.deref(),
                chain,
                HEADER_LEN + MAX_PACKET_DATA as usize,
                &mut bytes,
            )
            .is_some()
            {
                if let Some(header) = Header::parse(&bytes) {
                    let data = &bytes[HEADER_LEN..];
                    let data = &data[..(header.len as usize).min(data.len())];
                    self.on_guest_packet(&header, data);
                }
            }
            self.tx_bytes = bytes;
            vring
                .add_used(head, 0)
                .map_err(|e| io::Error::other(format!("TX used: {e}")))?;
            used = true;
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    fn on_guest_packet(&mut self, header: &Header, data: &[u8]) {
        if header.type_ != TYPE_STREAM || header.dst_cid != HOST_CID {
            return;
        }
        let (local, peer) = (header.dst_port, header.src_port);
        match self.conns.get_mut(&local).filter(|c| c.peer_port == peer) {
            Some(conn) => {
                conn.on_guest_packet(header, data);
                if conn.has_rx_work() {
                    self.rx_ready.push_back(local);
                }
                if conn.is_closed() && !conn.has_rx_work() {
                    self.remove(local);
                }
            }
            // Guest-initiated connections are not served: refuse them.
            None if header.op != OP_RST => self.orphan_rsts.push_back((local, peer)),
            None => {}
        }
    }

    fn remove(&mut self, local: u32) {
        if let Some(conn) = self.conns.remove(&local) {
            let _ = epoll::delete(&self.epoll, conn.stream());
        }
    }

    /// Drains our epoll: readable sockets want to send, writable ones can
    /// take buffered guest data.
    fn process_host_events(&mut self) -> io::Result<()> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            events.clear();
            epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&zero),
            )?;
            if events.is_empty() {
                return Ok(());
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
                    self.rx_ready.push_back(local);
                }
            }
        }
    }
}

/// The driver has set the queue up (before that it must not be touched).
fn queue_ready(vring: &VringRwLock) -> bool {
    vring.get_ref().get_queue().ready()
}

impl State {
    /// Fills RX buffers with what connections have for the guest.
    fn process_rx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let Some(atomic) = self.mem.clone().filter(|_| queue_ready(vring)) else {
            return Ok(());
        };
        let mem = atomic.memory();
        let mut used = false;
        loop {
            let orphan = self.orphan_rsts.front().copied();
            let port = self.rx_ready.front().copied();
            if orphan.is_none() {
                match port {
                    None => break,
                    Some(port) if !self.conns.get(&port).is_some_and(Conn::has_rx_work) => {
                        self.rx_ready.pop_front();
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let mut guard = vring.get_mut();
            let mut iter = guard
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(|e| io::Error::other(format!("RX queue: {e}")))?;
            let Some(chain) = iter.next() else {
                break; // no buffers: the guest kicks the RX queue when it adds some
            };
            let head = chain.head_index();
            let buffers = packet::writable_buffers(chain).unwrap_or_default();
            let room = buffers
                .iter()
                .map(|b| b.1)
                .sum::<usize>()
                .saturating_sub(HEADER_LEN);
            let next = match orphan {
                Some((local, peer)) => {
                    self.orphan_rsts.pop_front();
                    let header = Header {
                        src_cid: HOST_CID,
                        dst_cid: self.guest_cid,
                        src_port: local,
                        dst_port: peer,
                        type_: TYPE_STREAM,
                        op: OP_RST,
                        ..Header::default()
                    };
                    Some((header, 0))
                }
                None => {
                    let port = port.expect("checked above");
                    let conn = self.conns.get_mut(&port).expect("checked above");
                    let next = if buffers.is_empty() {
                        None
                    } else {
                        conn.next_packet(room, &mut self.scratch)
                    };
                    // Round robin: a busy stream goes to the back of the line.
                    self.rx_ready.pop_front();
                    if conn.has_rx_work() {
                        self.rx_ready.push_back(port);
                    } else if conn.is_closed() {
                        self.remove(port);
                    }
                    next
                }
            };
            match next {
                Some((header, n)) => {
                    drop(iter);
                    let written = packet::scatter(
                        mem.deref(),
                        &buffers,
                        &[&header.to_bytes(), &self.scratch[..n]],
                    )
                    .unwrap_or(0);
                    guard
                        .add_used(head, written as u32)
                        .map_err(|e| io::Error::other(format!("RX used: {e}")))?;
                    used = true;
                }
                None => iter.go_to_previous_position(),
            }
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

impl VhostUserBackend for Backend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, _enabled: bool) {
        // EVENT_IDX is not offered.
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.lock().mem = Some(mem);
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // virtio_vsock_config: le64 guest_cid.
        let config = self.lock().guest_cid.to_le_bytes();
        let (offset, size) = (offset as usize, size as usize);
        config
            .get(offset..offset.saturating_add(size))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<EventFd> {
        self.exit.try_clone().ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let mut state = self.lock();
        // Errors are logged, not returned: an error would end the event
        // loop thread and with it every stream of this VM.
        let result = match device_event {
            TX_QUEUE => state.process_tx(&vrings[TX_QUEUE as usize]),
            HOST_EVENT => state.process_host_events(),
            _ => Ok(()), // RX buffers added (or the unused event queue)
        }
        .and_then(|()| state.process_rx(&vrings[RX_QUEUE as usize]));
        if let Err(e) = result {
            tracing::debug!("vsock device: {e}");
        }
        Ok(())
    }
}
