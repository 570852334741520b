//! The vhost-user backend: the device thread, the host's connection requests
//! and the event loop that drives the queue passes (`state.rs`).

use std::io;
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
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::state::{NewConn, Pass, State, KICK_TOKEN};

const NUM_QUEUES: usize = 3;
/// QEMU sizes the vsock queues at 1024 entries.
const QUEUE_SIZE: usize = 1024;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Our own epoll (connection sockets and the kick eventfd), registered in
/// the daemon's event loop under this id (ids up to NUM_QUEUES are taken).
const HOST_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// How long the guest has to accept or refuse a connection.
const CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections asked for by the host, handed to the device thread. Kept
/// apart from [`State`] so that async code never waits on the device.
#[derive(Default)]
struct Requests {
    /// QEMU disconnected; no new connections.
    stopped: bool,
    pending: Vec<NewConn>,
}

struct Backend {
    /// Only the device's own threads take this.
    state: Mutex<State>,
    requests: Mutex<Requests>,
    mem: Mutex<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    guest_cid: u64,
    kick: OwnedFd,
    exit: EventFd,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend {
    fn kick(&self) {
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
    }

    /// Ends the device: no new connections, every stream fails.
    fn stop(&self) {
        let pending = {
            let mut requests = lock(&self.requests);
            requests.stopped = true;
            std::mem::take(&mut requests.pending)
        };
        for new in pending {
            let _ = new.connected.send(Err(stopped()));
        }
        lock(&self.state).close_all();
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the VM's vsock device stopped")
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
            state: Mutex::new(State::new(guest_cid, epoll_fd, kick.try_clone()?)),
            requests: Mutex::new(Requests::default()),
            mem: Mutex::new(None),
            guest_cid,
            kick,
            exit: EventFd::new(EFD_NONBLOCK)?,
        });
        let mut daemon = VhostUserDaemon::new(
            "voidbox-vsock".into(),
            backend.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| io::Error::other(format!("vhost-user daemon: {e}")))?;
        let epoll_raw = lock(&backend.state).epoll().as_raw_fd();
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
                served.stop();
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
            let mut requests = lock(&self.backend.requests);
            if requests.stopped {
                return Err(stopped());
            }
            requests.pending.push(NewConn {
                port,
                stream: ours,
                connected: tx,
            });
        }
        self.backend.kick();
        match tokio::time::timeout(CONNECT_DEADLINE, rx).await {
            Ok(Ok(Ok(()))) => tokio::net::UnixStream::from_std(theirs),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(stopped()),
            // A late answer finds our end closed and resets the connection.
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the guest did not answer a connection to vsock port {port} within {CONNECT_DEADLINE:?}"),
            )),
        }
    }
}

impl VsockDevice {
    /// Ends the device thread, also while it still waits for QEMU. Call it
    /// before the socket's directory goes, or a thread that never saw QEMU
    /// waits in accept() forever.
    pub fn shut_down(&self) {
        let _ = self.backend.exit.write(1);
        // A daemon in accept(): wake it with a connection that closes at once.
        let _ = UnixStream::connect(&self.socket);
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.shut_down();
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
        *lock(&self.mem) = Some(mem);
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // virtio_vsock_config: le64 guest_cid.
        let config = self.guest_cid.to_le_bytes();
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
        let pending = std::mem::take(&mut lock(&self.requests).pending);
        let mut state = lock(&self.state);
        for new in pending {
            state.open(new);
        }
        // Errors are logged, not returned: an error would end the event
        // loop thread and with it every stream of this VM.
        let result = (|| {
            let host = if device_event == HOST_EVENT {
                state.process_host_events()?
            } else {
                Pass::default()
            };
            let Some(atomic) = lock(&self.mem).clone() else {
                return Ok(host);
            };
            let mem = atomic.memory();
            // Every event runs both passes: each is cheap when its queue
            // is empty, and a pass that stopped at its bound resumes here.
            let tx = {
                let mut vring = vrings[TX_QUEUE].get_mut();
                state.process_tx(&*mem, vring.get_queue_mut())?
            };
            if tx.used {
                vrings[TX_QUEUE].signal_used_queue()?;
            }
            let rx = {
                let mut vring = vrings[RX_QUEUE].get_mut();
                state.process_rx(&*mem, vring.get_queue_mut())?
            };
            if rx.used {
                vrings[RX_QUEUE].signal_used_queue()?;
            }
            Ok::<_, io::Error>(host.and(tx).and(rx))
        })();
        match result {
            Ok(pass) if pass.more => self.kick(),
            Ok(_) => {}
            Err(e) => tracing::debug!("vsock device: {e}"),
        }
        Ok(())
    }
}
