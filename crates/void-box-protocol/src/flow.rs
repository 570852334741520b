//! Credit-based flow control for data streams.
//!
//! Each bulk stream (process output, stdin, file contents) starts with
//! [`STREAM_WINDOW`] bytes of credit. The sender spends credit for every
//! chunk and waits when it has none; the receiver hands credit back
//! ([`HostMsg::Credit`](crate::HostMsg::Credit) /
//! [`GuestMsg::Credit`](crate::GuestMsg::Credit)) as its consumer takes the
//! data. So a slow reader slows its writer down instead of losing chunks or
//! buffering without bound, and one stalled stream never blocks the others
//! on the shared connection.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::{ProtocolError, STREAM_WINDOW};

/// Most credit a sender may hold at once; more is a peer bug or an attack.
const MAX_HELD_CREDIT: usize = 4 * STREAM_WINDOW as usize;

/// The sending side of a stream: waits for credit before each chunk.
#[derive(Clone)]
pub struct SendWindow {
    credit: Arc<Semaphore>,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SendWindow {
    /// A window holding the initial [`STREAM_WINDOW`] of credit.
    pub fn new() -> Self {
        Self {
            credit: Arc::new(Semaphore::new(STREAM_WINDOW as usize)),
        }
    }

    /// Waits until `len` bytes may be sent and spends that credit.
    ///
    /// Fails only when the window was closed.
    pub async fn reserve(&self, len: usize) -> Result<(), ProtocolError> {
        let len = u32::try_from(len.min(STREAM_WINDOW as usize)).unwrap_or(STREAM_WINDOW);
        let permit = self
            .credit
            .acquire_many(len)
            .await
            .map_err(|_| ProtocolError::FlowControl("stream closed".into()))?;
        permit.forget();
        Ok(())
    }

    /// Adds credit granted by the receiver.
    pub fn grant(&self, bytes: u32) -> Result<(), ProtocolError> {
        let held = self.credit.available_permits();
        if held + bytes as usize > MAX_HELD_CREDIT {
            return Err(ProtocolError::FlowControl(format!(
                "peer granted {bytes} bytes of credit on top of {held} already held"
            )));
        }
        self.credit.add_permits(bytes as usize);
        Ok(())
    }

    /// Wakes every waiter with an error; used when the stream ends.
    pub fn close(&self) {
        self.credit.close();
    }
}

/// The receiving side of a stream: checks the sender stays within its credit
/// and decides when to hand credit back.
#[derive(Debug)]
pub struct RecvWindow {
    /// Bytes the sender may still send without new credit.
    remaining: u64,
    /// Bytes consumed but not yet credited back.
    unacked: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvWindow {
    /// A window matching a fresh [`SendWindow`].
    pub fn new() -> Self {
        Self {
            remaining: STREAM_WINDOW as u64,
            unacked: 0,
        }
    }

    /// Accounts for `len` bytes that arrived; an error if the sender overran its credit.
    pub fn on_data(&mut self, len: usize) -> Result<(), ProtocolError> {
        let len = len as u64;
        if len > self.remaining {
            return Err(ProtocolError::FlowControl(format!(
                "peer sent {len} bytes with only {} bytes of credit",
                self.remaining
            )));
        }
        self.remaining -= len;
        Ok(())
    }

    /// Records that `len` bytes were consumed; returns credit to send back,
    /// batched so that small chunks do not each cost a message.
    pub fn on_consumed(&mut self, len: usize) -> Option<u32> {
        self.unacked = self.unacked.saturating_add(len as u32);
        if self.unacked >= STREAM_WINDOW / 4 {
            let grant = std::mem::take(&mut self.unacked);
            self.remaining += grant as u64;
            Some(grant)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_rejects_overrun() {
        let mut w = RecvWindow::new();
        w.on_data(STREAM_WINDOW as usize).unwrap();
        assert!(w.on_data(1).is_err());
    }

    #[test]
    fn credit_is_batched_and_restores_window() {
        let mut w = RecvWindow::new();
        w.on_data(STREAM_WINDOW as usize).unwrap();
        assert_eq!(w.on_consumed(10), None);
        let grant = w.on_consumed(STREAM_WINDOW as usize / 4).unwrap();
        assert_eq!(grant as usize, 10 + STREAM_WINDOW as usize / 4);
        w.on_data(grant as usize).unwrap();
        assert!(w.on_data(1).is_err());
    }

    #[tokio::test]
    async fn sender_waits_for_credit() {
        let w = SendWindow::new();
        w.reserve(STREAM_WINDOW as usize).await.unwrap();
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.reserve(100).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        w.grant(100).unwrap();
        waiter.await.unwrap().unwrap();
    }

    #[test]
    fn absurd_grant_is_rejected() {
        let w = SendWindow::new();
        assert!(w.grant(u32::MAX).is_err());
    }
}
