//! The agent's one channel to the host: the virtio-serial port named
//! [`AGENT_PORT_NAME`] (QEMU's `virtserialport` on a chardev socket). QEMU
//! can migrate it, so a sandbox can be snapshotted and restored, which it
//! cannot do with vhost-user vsock (ADR 0010).
//!
//! The port is a character device with a single opener, held from boot.
//! Two threads do blocking I/O on it and talk to the async side through
//! bounded queues: a read waiting when a session ends belongs to the
//! channel, not the session, so it can never hand one session's bytes to
//! the next. While no host is connected the port reads as end-of-file and
//! writes wait; the reader reports a host that went away once, after it
//! has seen its data.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use void_box_protocol::AGENT_PORT_NAME;

/// Chunks read ahead of the session.
const READ_AHEAD: usize = 16;
/// Chunks waiting for the writer thread.
const WRITE_BEHIND: usize = 16;
/// Bytes one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// How often a port without a host is tried again.
const IDLE_POLL: Duration = Duration::from_millis(5);

enum Incoming {
    Data(Vec<u8>),
    /// The host that sent the data before this disconnected.
    HostGone,
}

/// The open port.
pub struct Channel {
    incoming: mpsc::Receiver<Incoming>,
    outgoing: mpsc::Sender<Vec<u8>>,
}

impl Channel {
    /// Finds the port (its name arrives from the host shortly after boot),
    /// opens it and starts its threads.
    pub fn open(deadline: Duration) -> io::Result<Channel> {
        let path = find_port(Path::new("/sys/class/virtio-ports"), deadline)?;
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        let reader = port.try_clone()?;
        let (in_tx, incoming) = mpsc::channel(READ_AHEAD);
        let (outgoing, out_rx) = mpsc::channel(WRITE_BEHIND);
        std::thread::Builder::new()
            .name("port-read".into())
            .spawn(move || read_port(reader, in_tx))?;
        std::thread::Builder::new()
            .name("port-write".into())
            .spawn(move || write_port(port, out_rx))?;
        Ok(Channel { incoming, outgoing })
    }

    /// The two halves of one session over the channel; the reader ends
    /// (reads end-of-file) when the host goes away.
    pub fn session(&mut self) -> (SessionReader<'_>, SessionWriter) {
        (
            SessionReader {
                incoming: &mut self.incoming,
                pending: Vec::new(),
                at: 0,
                ended: false,
            },
            SessionWriter {
                outgoing: PollSender::new(self.outgoing.clone()),
            },
        )
    }
}

/// `/dev/vportNpM` of the port named [`AGENT_PORT_NAME`] under `sys`.
fn find_port(sys: &Path, deadline: Duration) -> io::Result<PathBuf> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(entries) = std::fs::read_dir(sys) {
            for entry in entries.flatten() {
                let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim_end() == AGENT_PORT_NAME {
                    return Ok(Path::new("/dev").join(entry.file_name()));
                }
            }
        }
        if Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {AGENT_PORT_NAME} in {deadline:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn read_port(mut port: File, to_agent: mpsc::Sender<Incoming>) {
    let mut seen_data = false;
    // One read returns at most one of the driver's page-sized buffers.
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let item = match port.read(&mut buf) {
            Ok(0) => {
                // No host: end-of-file at once, until one connects.
                if !seen_data {
                    std::thread::sleep(IDLE_POLL);
                    continue;
                }
                seen_data = false;
                Incoming::HostGone
            }
            Ok(n) => {
                seen_data = true;
                Incoming::Data(buf[..n].to_vec())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::init::log(&format!("reading the host port: {e}"));
                std::thread::sleep(IDLE_POLL);
                continue;
            }
        };
        if to_agent.blocking_send(item).is_err() {
            return;
        }
    }
}

fn write_port(mut port: File, from_agent: mpsc::Receiver<Vec<u8>>) {
    let mut from_agent = from_agent;
    while let Some(data) = from_agent.blocking_recv() {
        // Waits while no host is connected.
        if let Err(e) = port.write_all(&data) {
            crate::init::log(&format!("writing the host port: {e}"));
        }
    }
}

/// The reading half of a session.
pub struct SessionReader<'a> {
    incoming: &'a mut mpsc::Receiver<Incoming>,
    pending: Vec<u8>,
    at: usize,
    ended: bool,
}

impl AsyncRead for SessionReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.at == this.pending.len() {
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.incoming.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Incoming::Data(data))) => {
                    this.pending = data;
                    this.at = 0;
                }
                Poll::Ready(Some(Incoming::HostGone)) | Poll::Ready(None) => {
                    this.ended = true;
                }
            }
        }
        let n = buf.remaining().min(this.pending.len() - this.at);
        buf.put_slice(&this.pending[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

/// The writing half of a session. Its bytes are on their way once
/// written: the writer thread puts them on the port in order.
pub struct SessionWriter {
    outgoing: PollSender<Vec<u8>>,
}

impl AsyncWrite for SessionWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the port's writer stopped");
        match self.outgoing.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(gone())),
            Poll::Ready(Ok(())) => {
                let n = buf.len().min(READ_CHUNK);
                self.outgoing
                    .send_item(buf[..n].to_vec())
                    .map_err(|_| gone())?;
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_found_by_its_name() {
        let sys = tempfile_dir();
        for (dev, name) in [("vport0p0", "other"), ("vport0p1", AGENT_PORT_NAME)] {
            std::fs::create_dir_all(sys.join(dev)).unwrap();
            std::fs::write(sys.join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        let found = find_port(&sys, Duration::from_millis(50)).unwrap();
        assert_eq!(found, Path::new("/dev/vport0p1"));
        std::fs::remove_dir_all(&sys).unwrap();
        let err = find_port(&sys, Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains(AGENT_PORT_NAME), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agent-port-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_session_ends_where_its_host_went_away_and_the_next_goes_on() {
        use tokio::io::AsyncReadExt;
        let (tx, incoming) = mpsc::channel(8);
        let (outgoing, _rx) = mpsc::channel(8);
        let mut channel = Channel { incoming, outgoing };
        tx.send(Incoming::Data(b"one".to_vec())).await.unwrap();
        tx.send(Incoming::HostGone).await.unwrap();
        tx.send(Incoming::Data(b"two".to_vec())).await.unwrap();
        let mut got = Vec::new();
        channel.session().0.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one");
        let mut next = [0u8; 3];
        channel.session().0.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"two");
    }
}
