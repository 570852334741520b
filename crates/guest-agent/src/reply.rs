//! The reply side of one request: frames tagged with its id, queued for
//! the connection's writer.

use tokio::sync::{mpsc, oneshot};
use void_box_protocol::{ErrorKind, ErrorReply, Frame, GuestMsg};

/// What the session's writer puts on the wire.
pub enum Outgoing {
    /// A frame.
    Frame(Frame<GuestMsg>),
    /// The answer to a quiesce: this frame goes out last; then nothing
    /// until `go_on` says the VM goes on (or is dropped: it was restored,
    /// and what waits is dropped with the session).
    Quiesced(Frame<GuestMsg>, oneshot::Receiver<()>),
}

/// Sends frames of one request back to the host.
#[derive(Clone)]
pub struct Reply {
    id: u32,
    outbox: mpsc::Sender<Outgoing>,
}

impl Reply {
    /// Replies on request `id` through the connection's outbox.
    pub fn new(id: u32, outbox: mpsc::Sender<Outgoing>) -> Self {
        Self { id, outbox }
    }

    /// Sends a message; false when the connection is gone.
    pub async fn send(&self, msg: GuestMsg) -> bool {
        self.outbox
            .send(Outgoing::Frame(Frame::new(self.id, msg)))
            .await
            .is_ok()
    }

    /// Sends an error reply.
    pub async fn error(&self, kind: ErrorKind, message: impl Into<String>) -> bool {
        self.send(GuestMsg::Error(ErrorReply::new(kind, message)))
            .await
    }
}
