//! The host end of the guest connection: request multiplexing, flow
//! control credit routing, liveness, and failure propagation.
//!
//! One reader task routes each incoming frame to the stream that owns its
//! id; credit for host→guest data goes straight to that stream's send
//! window. When anything ends the connection (transport error, malformed
//! frame, VM exit, missed heartbeats) every open stream fails at once with
//! the reason, so no caller waits on a dead guest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use void_box_protocol::flow::SendWindow;
use void_box_protocol::{Frame, FrameCodec, GuestMsg, HostMsg, Secret, PROTOCOL_VERSION};

use crate::error::{Error, Result};

type Codec = FrameCodec<GuestMsg, HostMsg>;

struct Route {
    tx: mpsc::UnboundedSender<GuestMsg>,
    window: SendWindow,
}

struct Shared {
    routes: Mutex<HashMap<u32, Route>>,
    failure: watch::Sender<Option<String>>,
}

impl Shared {
    /// Marks the connection dead (first reason wins) and fails every stream.
    fn fail(&self, reason: String) {
        self.failure.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(reason);
                true
            } else {
                false
            }
        });
        let routes = std::mem::take(&mut *self.routes.lock().unwrap_or_else(|p| p.into_inner()));
        for route in routes.values() {
            route.window.close();
        }
    }

    fn failure(&self) -> Error {
        Error::Disconnected(
            self.failure
                .borrow()
                .clone()
                .unwrap_or_else(|| "connection closed".into()),
        )
    }
}

/// An authenticated, multiplexed connection to the guest agent.
pub struct AgentClient {
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<Frame<HostMsg>>,
    next_id: AtomicU32,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentClient {
    /// Performs the handshake on `stream`, then starts the reader, writer and
    /// heartbeat tasks. The guest must answer a ping within `liveness`.
    pub async fn handshake(
        stream: UnixStream,
        secret: &Secret,
        liveness: Duration,
    ) -> Result<AgentClient> {
        let (read_half, write_half) = stream.into_split();
        let mut frames = FramedRead::new(read_half, Codec::new());
        let mut sink = FramedWrite::new(write_half, Codec::new());
        let unix_time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        sink.send(Frame::new(
            0,
            HostMsg::Hello {
                version: PROTOCOL_VERSION,
                secret: *secret,
                unix_time_ns,
            },
        ))
        .await?;
        match frames.next().await {
            Some(Ok(Frame {
                msg: GuestMsg::HelloOk { .. },
                ..
            })) => {}
            Some(Ok(Frame {
                msg: GuestMsg::Error(e),
                ..
            })) => {
                return Err(Error::Guest {
                    kind: e.kind,
                    message: e.message,
                })
            }
            Some(Ok(other)) => {
                return Err(Error::Disconnected(format!(
                    "unexpected handshake answer: {:?}",
                    other.msg
                )))
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(Error::Disconnected(
                    "guest closed the connection during the handshake".into(),
                ))
            }
        }

        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            failure: watch::channel(None).0,
        });
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<Frame<HostMsg>>();
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(frame) = outgoing.recv().await {
                    if let Err(e) = sink.send(frame).await {
                        shared.fail(format!("writing to the guest failed: {e}"));
                        break;
                    }
                }
            })
        };
        let (pong_tx, pong_rx) = watch::channel(());
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let reason = loop {
                    match frames.next().await {
                        Some(Ok(frame)) => route(&shared, frame, &pong_tx),
                        Some(Err(e)) => break format!("bad frame from the guest: {e}"),
                        None => break "the guest closed the connection".to_string(),
                    }
                };
                shared.fail(reason);
            })
        };
        let heartbeat = {
            let shared = shared.clone();
            let outbox = outbox.clone();
            tokio::spawn(heartbeat(shared, outbox, pong_rx, liveness))
        };
        Ok(AgentClient {
            shared,
            outbox,
            next_id: AtomicU32::new(1),
            tasks: vec![writer, reader, heartbeat],
        })
    }

    /// Opens a new request stream and sends its first message.
    pub fn open(&self, first: HostMsg) -> Result<Stream> {
        if self.shared.failure.borrow().is_some() {
            return Err(self.shared.failure());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let window = SendWindow::new();
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Route {
                    tx,
                    window: window.clone(),
                },
            );
        let stream = Stream {
            rx,
            sender: StreamSender {
                id,
                window,
                outbox: self.outbox.clone(),
                shared: self.shared.clone(),
            },
        };
        stream.send(first)?;
        Ok(stream)
    }

    /// Fails every stream with `reason` (e.g. the VM exited).
    pub fn fail(&self, reason: String) {
        self.shared.fail(reason);
    }

    /// Why the connection is dead, if it is.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn route(shared: &Shared, frame: Frame<GuestMsg>, pong: &watch::Sender<()>) {
    if let GuestMsg::Pong = frame.msg {
        pong.send_replace(());
        return;
    }
    let mut routes = shared.routes.lock().unwrap_or_else(|p| p.into_inner());
    let Some(route) = routes.get(&frame.id) else {
        return; // a stream the caller already dropped
    };
    let delivered = match frame.msg {
        GuestMsg::Credit(n) => route.window.grant(n).is_ok(),
        msg => route.tx.send(msg).is_ok(),
    };
    if !delivered {
        if let Some(route) = routes.remove(&frame.id) {
            route.window.close();
        }
    }
}

/// Pings the guest; fails the connection when it stays silent too long.
async fn heartbeat(
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<Frame<HostMsg>>,
    mut pong: watch::Receiver<()>,
    liveness: Duration,
) {
    let interval = (liveness / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(interval).await;
        pong.mark_unchanged();
        if outbox.send(Frame::new(0, HostMsg::Ping)).is_err() {
            return;
        }
        if tokio::time::timeout(liveness, pong.changed())
            .await
            .is_err()
        {
            shared.fail(format!(
                "the guest agent did not answer for {:.1} s (guest hung or overloaded)",
                liveness.as_secs_f64()
            ));
            return;
        }
    }
}

/// One request's stream of messages.
pub struct Stream {
    rx: mpsc::UnboundedReceiver<GuestMsg>,
    sender: StreamSender,
}

impl Stream {
    /// Sends a message on this stream.
    pub fn send(&self, msg: HostMsg) -> Result<()> {
        self.sender.send(msg)
    }

    /// A handle that can send on this stream from another task.
    pub fn sender(&self) -> StreamSender {
        self.sender.clone()
    }

    /// The next message; fails when the connection dies.
    pub async fn recv(&mut self) -> Result<GuestMsg> {
        match self.rx.recv().await {
            Some(msg) => Ok(msg),
            None => Err(self.sender.shared.failure()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let routes = &self.sender.shared.routes;
        if let Some(route) = routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.sender.id)
        {
            route.window.close();
        }
    }
}

/// Sends flow-controlled data on a stream.
#[derive(Clone)]
pub struct StreamSender {
    id: u32,
    window: SendWindow,
    outbox: mpsc::UnboundedSender<Frame<HostMsg>>,
    shared: Arc<Shared>,
}

impl StreamSender {
    /// Sends a message without waiting for credit.
    pub fn send(&self, msg: HostMsg) -> Result<()> {
        self.outbox
            .send(Frame::new(self.id, msg))
            .map_err(|_| self.shared.failure())
    }

    /// Sends `data` in chunks, each after waiting for the guest's credit.
    pub async fn send_data(&self, data: &[u8], wrap: fn(Vec<u8>) -> HostMsg) -> Result<()> {
        for chunk in data.chunks(void_box_protocol::CHUNK_LEN) {
            self.window
                .reserve(chunk.len())
                .await
                .map_err(|_| self.shared.failure())?;
            self.send(wrap(chunk.to_vec()))?;
        }
        Ok(())
    }
}
