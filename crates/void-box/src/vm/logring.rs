//! Bounded logs: the guest's serial console and QEMU's own output come
//! through pipes into in-memory rings that keep the last bytes. A guest
//! that writes its UART at full speed for hours costs the host a fixed
//! amount of memory and no disk at all.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::tail::Tail;

/// The last `cap` bytes written to a log, shared with its reader task.
#[derive(Debug)]
pub(crate) struct LogRing {
    tail: Mutex<Tail>,
}

impl LogRing {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            tail: Mutex::new(Tail::new(cap)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `bytes`, dropping the oldest beyond the cap.
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    /// The last `max_bytes`, as text.
    pub(crate) fn tail(&self, max_bytes: usize) -> String {
        self.lock().last(max_bytes)
    }
}

/// A pipe whose write end goes to QEMU and whose read end feeds `ring`
/// until every holder of the write end has exited.
pub(crate) fn pipe_into(ring: Arc<LogRing>) -> Result<(OwnedFd, JoinHandle<()>)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io("create a log pipe", e.into()))?;
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
        .map_err(|e| Error::io("read a log pipe", e))?;
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            ring.push(&buf[..n]);
        }
    });
    Ok((write, drain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_bytes_only() {
        let ring = LogRing::new(8);
        ring.push(b"abc");
        ring.push(b"defgh");
        assert_eq!(ring.tail(100), "abcdefgh");
        ring.push(b"ij");
        assert_eq!(ring.tail(100), "cdefghij");
        ring.push(b"0123456789");
        assert_eq!(ring.tail(100), "23456789");
        assert_eq!(ring.tail(3), "789");
    }

    #[tokio::test]
    async fn a_pipe_feeds_its_ring_until_the_writer_is_gone() {
        let ring = LogRing::new(1024);
        let (write, drain) = pipe_into(ring.clone()).unwrap();
        let mut file = std::fs::File::from(write);
        for _ in 0..1000 {
            std::io::Write::write_all(&mut file, b"0123456789").unwrap();
        }
        drop(file);
        tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ring.tail(2000).len(), 1024);
        assert!(ring.tail(2000).ends_with("0123456789"));
    }
}
