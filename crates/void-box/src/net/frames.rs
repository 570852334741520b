//! Ethernet frames over QEMU's `-netdev stream` socket: each frame is a
//! 4-byte big-endian length and the frame. One task reads, one writes, so
//! the stack's loop never waits on the socket.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use tokio::sync::{mpsc, Notify};

/// The largest frame either side may send: the MTU and an Ethernet header.
pub const MAX_FRAME: usize = super::MTU + 14;
/// Frames read ahead of the stack. Beyond it the reader stops reading, so
/// a flooding guest fills its own queues, not the host's memory.
pub const RX_QUEUE: usize = 64;
/// Frames waiting to be written to the guest. Beyond it new frames are
/// dropped, as a full NIC ring would (TCP sends them again).
pub const TX_QUEUE: usize = 128;

/// Reads frames into `to_stack` until the socket closes or sends a frame
/// that cannot be one (the guest's side of the framing is QEMU's; a bad
/// length means the link is broken, and it is dropped).
pub async fn read(mut link: OwnedReadHalf, to_stack: mpsc::Sender<Vec<u8>>) {
    let mut len = [0u8; 4];
    loop {
        if link.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_FRAME {
            tracing::warn!(len = n, "network link sent an impossible frame; closing it");
            return;
        }
        let mut frame = vec![0; n];
        if link.read_exact(&mut frame).await.is_err() {
            return;
        }
        if to_stack.send(frame).await.is_err() {
            return;
        }
    }
}

/// Writes frames from `from_stack` until it closes or the socket fails,
/// waking the stack each time it has made room (the stack holds frames
/// back while the queue is full).
pub async fn write(
    link: OwnedWriteHalf,
    mut from_stack: mpsc::Receiver<Vec<u8>>,
    room: Arc<Notify>,
) {
    let mut link = BufWriter::with_capacity(256 * 1024, link);
    while let Some(frame) = from_stack.recv().await {
        room.notify_one();
        let mut ok = write_one(&mut link, &frame).await;
        // Whatever else is ready goes out in the same flush.
        while ok {
            match from_stack.try_recv() {
                Ok(frame) => ok = write_one(&mut link, &frame).await,
                Err(_) => break,
            }
        }
        if !ok || link.flush().await.is_err() {
            return;
        }
    }
}

async fn write_one(link: &mut BufWriter<OwnedWriteHalf>, frame: &[u8]) -> bool {
    let len = (frame.len() as u32).to_be_bytes();
    link.write_all(&len).await.is_ok() && link.write_all(frame).await.is_ok()
}
