//! The reply side of one request: frames tagged with its id, queued for
//! the connection's writer.

use tokio::sync::mpsc;
use void_box_protocol::{ErrorKind, ErrorReply, Frame, GuestMsg};

/// Sends frames of one request back to the host.
#[derive(Clone)]
pub struct Reply {
    id: u32,
    outbox: mpsc::Sender<Frame<GuestMsg>>,
}

impl Reply {
    /// Replies on request `id` through the connection's outbox.
    pub fn new(id: u32, outbox: mpsc::Sender<Frame<GuestMsg>>) -> Self {
        Self { id, outbox }
    }

    /// Sends a message; false when the connection is gone.
    pub async fn send(&self, msg: GuestMsg) -> bool {
        self.outbox.send(Frame::new(self.id, msg)).await.is_ok()
    }

    /// Sends an error reply.
    pub async fn error(&self, kind: ErrorKind, message: impl Into<String>) -> bool {
        self.send(GuestMsg::Error(ErrorReply::new(kind, message)))
            .await
    }
}
