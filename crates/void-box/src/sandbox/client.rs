//! The host end of the guest connection: request multiplexing, flow
//! control credit routing, liveness, and failure propagation.
//!
//! One reader task routes each incoming frame to the stream that owns its
//! id; credit for host→guest data goes straight to that stream's send
//! window. When anything ends the connection (transport error, malformed
//! frame, VM exit, missed heartbeats) every open stream fails at once with
//! the reason, so no caller waits on a dead guest.
//!
//! What waits in a stream's queue is checked as it arrives: an honest
//! guest never has more than the stream's credit ([`STREAM_WINDOW`]) of
//! data unread, nor more than a few other messages, so a guest that sends
//! more (flooding a stream nobody reads) loses its connection instead of
//! growing host memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use void_box_protocol::auth::{self, Nonce, Side};
use void_box_protocol::flow::SendWindow;
use void_box_protocol::{
    Frame, FrameCodec, GuestMsg, HostMsg, ProtocolError, Restore, Secret, PROTOCOL_VERSION,
    STREAM_WINDOW,
};

use crate::error::{Error, Result};

type Codec = FrameCodec<GuestMsg, HostMsg>;

/// Most messages other than data one stream may have waiting (an honest
/// guest sends two or three per request).
const MAX_QUEUED_CONTROL: usize = 16;

struct Route {
    tx: mpsc::UnboundedSender<GuestMsg>,
    window: SendWindow,
    queued: Arc<Queued>,
}

/// What waits, unread, in one stream's queue.
#[derive(Default)]
struct Queued {
    data: AtomicUsize,
    control: AtomicUsize,
}

impl Queued {
    /// Counts `msg` in; the overrun, if it makes the queue exceed what
    /// the guest was allowed to send.
    fn arrive(&self, msg: &GuestMsg) -> Option<String> {
        match data_len(msg) {
            Some(len) => {
                let now = self.data.fetch_add(len, Ordering::AcqRel) + len;
                (now > STREAM_WINDOW as usize).then(|| {
                    format!("{now} bytes of data unread, over its {STREAM_WINDOW}-byte credit")
                })
            }
            None => {
                let now = self.control.fetch_add(1, Ordering::AcqRel) + 1;
                (now > MAX_QUEUED_CONTROL).then(|| format!("{now} messages unread"))
            }
        }
    }

    /// Counts `msg` out, as its reader takes it.
    fn leave(&self, msg: &GuestMsg) {
        match data_len(msg) {
            Some(len) => self.data.fetch_sub(len, Ordering::AcqRel),
            None => self.control.fetch_sub(1, Ordering::AcqRel),
        };
    }
}

/// The length of a flow-controlled message's data.
fn data_len(msg: &GuestMsg) -> Option<usize> {
    match msg {
        GuestMsg::Stdout(d) | GuestMsg::Stderr(d) | GuestMsg::FileChunk(d) => Some(d.len()),
        _ => None,
    }
}

struct Shared {
    routes: Mutex<HashMap<u32, Route>>,
    failure: watch::Sender<Option<String>>,
    /// The guest was asked to send nothing (the VM is being saved): the
    /// heartbeat waits.
    quiesced: watch::Sender<bool>,
}

/// A frame the writer sends before holding every later one, until
/// `resume` gives the frame that goes on (or is dropped: the session is
/// abandoned with its VM).
struct Hold {
    first: Frame<HostMsg>,
    resume: oneshot::Receiver<Frame<HostMsg>>,
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
    holds: mpsc::UnboundedSender<Hold>,
    next_id: AtomicU32,
    tasks: Vec<JoinHandle<()>>,
}

/// A guest that sends nothing until [`thaw`](Self::thaw); dropped, the
/// session stays frozen (its VM is about to end).
pub struct Quiesced {
    resume: oneshot::Sender<Frame<HostMsg>>,
    shared: Arc<Shared>,
}

impl Quiesced {
    /// The VM goes on: the session continues where it was.
    pub fn thaw(self) {
        let _ = self.resume.send(Frame::new(0, HostMsg::Thaw));
        self.shared.quiesced.send_replace(false);
    }
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
        let guest_nonce = match frames.next().await {
            Some(Ok(Frame {
                msg: GuestMsg::Challenge { version, nonce },
                ..
            })) if version == PROTOCOL_VERSION => nonce,
            Some(Ok(Frame {
                msg: GuestMsg::Challenge { version, .. },
                ..
            })) => {
                return Err(Error::Guest {
                    kind: void_box_protocol::ErrorKind::VersionMismatch,
                    message: format!(
                        "the guest agent speaks protocol {version}, the host {PROTOCOL_VERSION}"
                    ),
                })
            }
            other => return Err(handshake_failure(other)),
        };
        let mut host_nonce: Nonce = [0; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut host_nonce);
        let unix_time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        sink.send(Frame::new(
            0,
            HostMsg::Hello {
                version: PROTOCOL_VERSION,
                nonce: host_nonce,
                proof: auth::proof(secret, Side::Host, &guest_nonce, &host_nonce),
                unix_time_ns,
            },
        ))
        .await?;
        match frames.next().await {
            Some(Ok(Frame {
                msg: GuestMsg::HelloOk { proof, .. },
                ..
            })) => {
                if !auth::verify(secret, Side::Guest, &guest_nonce, &host_nonce, &proof) {
                    return Err(Error::Disconnected(
                        "the guest agent could not prove it holds the sandbox's secret".into(),
                    ));
                }
            }
            other => return Err(handshake_failure(other)),
        }

        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            failure: watch::channel(None).0,
            quiesced: watch::channel(false).0,
        });
        let (outbox, outgoing) = mpsc::unbounded_channel::<Frame<HostMsg>>();
        let (holds, held) = mpsc::unbounded_channel::<Hold>();
        let writer = tokio::spawn(write_frames(sink, outgoing, held, shared.clone()));
        let (pong_tx, pong_rx) = watch::channel(());
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let reason = loop {
                    match frames.next().await {
                        Some(Ok(frame)) => {
                            if let Some(reason) = route(&shared, frame, &pong_tx) {
                                break reason;
                            }
                        }
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
            holds,
            next_id: AtomicU32::new(1),
            tasks: vec![writer, reader, heartbeat],
        })
    }

    /// The connection to a VM restored from a saved one, whose agent waits
    /// in the saved session: hands it `restore` (its new identity), then
    /// performs the handshake under the new secret.
    pub async fn restored(
        mut stream: UnixStream,
        restore: Restore,
        liveness: Duration,
    ) -> Result<AgentClient> {
        let secret = restore.config.secret;
        let frame = Frame::new(0, HostMsg::Restored(Box::new(restore)));
        let bytes = void_box_protocol::codec::encode_frame(&frame)?;
        tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes)
            .await
            .map_err(|e| Error::io("send the restored VM its identity", e))?;
        Self::handshake(stream, &secret, liveness).await
    }

    /// Asks the guest to send nothing more (its VM is about to be saved)
    /// and waits, within `limit`, until it says so: everything either side
    /// sent before is then delivered, and nothing is half-way.
    pub async fn quiesce(&self, limit: Duration) -> Result<Quiesced> {
        let (mut stream, id) = self.register()?;
        let (resume, on_resume) = oneshot::channel();
        self.shared.quiesced.send_replace(true);
        let quiesced = Quiesced {
            resume,
            shared: self.shared.clone(),
        };
        let hold = Hold {
            first: Frame::new(id, HostMsg::Quiesce),
            resume: on_resume,
        };
        self.holds.send(hold).map_err(|_| self.shared.failure())?;
        // The answer is the request's end: no Cancel when the stream goes.
        match stream.recv_within(limit, "the quiesce").await {
            Ok(GuestMsg::Done) => Ok(quiesced),
            Ok(other) => Err(Error::Disconnected(format!(
                "unexpected answer to a quiesce: {other:?}"
            ))),
            Err(e) => {
                quiesced.thaw();
                Err(e)
            }
        }
    }

    /// Opens a new request stream and sends its first message.
    pub fn open(&self, first: HostMsg) -> Result<Stream> {
        let (stream, _) = self.register()?;
        stream.send(first)?;
        Ok(stream)
    }

    /// A new request stream, before its first message.
    fn register(&self) -> Result<(Stream, u32)> {
        if self.shared.failure.borrow().is_some() {
            return Err(self.shared.failure());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let window = SendWindow::new();
        let queued = Arc::new(Queued::default());
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Route {
                    tx,
                    window: window.clone(),
                    queued: queued.clone(),
                },
            );
        let stream = Stream {
            rx,
            queued,
            answered: false,
            sender: StreamSender {
                id,
                window,
                outbox: self.outbox.clone(),
                shared: self.shared.clone(),
            },
        };
        Ok((stream, id))
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

/// Why a handshake answer is not the one expected.
fn handshake_failure(answer: Option<std::result::Result<Frame<GuestMsg>, ProtocolError>>) -> Error {
    match answer {
        Some(Ok(Frame {
            msg: GuestMsg::Error(e),
            ..
        })) => Error::Guest {
            kind: e.kind,
            message: e.message,
        },
        Some(Ok(other)) => {
            Error::Disconnected(format!("unexpected handshake answer: {:?}", other.msg))
        }
        Some(Err(e)) => e.into(),
        None => Error::Disconnected("guest closed the connection during the handshake".into()),
    }
}

/// Hands `frame` to its stream; the reason to end the connection when
/// the guest sent more than its stream may hold.
fn route(shared: &Shared, frame: Frame<GuestMsg>, pong: &watch::Sender<()>) -> Option<String> {
    if let GuestMsg::Pong = frame.msg {
        pong.send_replace(());
        return None;
    }
    let mut routes = shared.routes.lock().unwrap_or_else(|p| p.into_inner());
    let route = routes.get(&frame.id)?; // None: a stream the caller already dropped
    let delivered = match frame.msg {
        GuestMsg::Credit(n) => route.window.grant(n).is_ok(),
        msg => {
            if let Some(overrun) = route.queued.arrive(&msg) {
                return Some(format!("the guest overran stream {}: {overrun}", frame.id));
            }
            route.tx.send(msg).is_ok()
        }
    };
    if !delivered {
        if let Some(route) = routes.remove(&frame.id) {
            route.window.close();
        }
    }
    None
}

/// Writes frames in order; a [`Hold`] is written, then everything after it
/// waits for its resumption.
async fn write_frames(
    mut sink: FramedWrite<tokio::net::unix::OwnedWriteHalf, Codec>,
    mut outgoing: mpsc::UnboundedReceiver<Frame<HostMsg>>,
    mut holds: mpsc::UnboundedReceiver<Hold>,
    shared: Arc<Shared>,
) {
    loop {
        let (frame, resume) = tokio::select! {
            biased;
            Some(hold) = holds.recv() => (hold.first, Some(hold.resume)),
            frame = outgoing.recv() => match frame {
                Some(frame) => (frame, None),
                None => return,
            },
        };
        if let Err(e) = sink.send(frame).await {
            shared.fail(format!("writing to the guest failed: {e}"));
            return;
        }
        if let Some(resume) = resume {
            let Ok(next) = resume.await else { return };
            if let Err(e) = sink.send(next).await {
                shared.fail(format!("writing to the guest failed: {e}"));
                return;
            }
        }
    }
}

/// Pings the guest; fails the connection when it stays silent too long.
/// A quiesced guest is not pinged (its VM may be stopped).
async fn heartbeat(
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<Frame<HostMsg>>,
    mut pong: watch::Receiver<()>,
    liveness: Duration,
) {
    let interval = (liveness / 4).max(Duration::from_millis(100));
    let mut quiesced = shared.quiesced.subscribe();
    loop {
        tokio::time::sleep(interval).await;
        if quiesced.wait_for(|q| !q).await.is_err() {
            return;
        }
        pong.mark_unchanged();
        if outbox.send(Frame::new(0, HostMsg::Ping)).is_err() {
            return;
        }
        tokio::select! {
            answered = tokio::time::timeout(liveness, pong.changed()) => {
                if answered.is_err() {
                    shared.fail(format!(
                        "the guest agent did not answer for {:.1} s (guest hung or overloaded)",
                        liveness.as_secs_f64()
                    ));
                    return;
                }
            }
            // Quiesced meanwhile: the ping waits with everything else.
            _ = quiesced.wait_for(|q| *q) => {}
        }
    }
}

/// One request's stream of messages. Dropped before its final answer
/// (a caller that gave up), it cancels the request in the guest, so that
/// nothing there waits on it: a command is killed, a half-written file
/// removed.
pub struct Stream {
    rx: mpsc::UnboundedReceiver<GuestMsg>,
    queued: Arc<Queued>,
    /// Whether the final message of the request arrived.
    answered: bool,
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

    /// The next message within `limit`: fails with [`Error::Timeout`]
    /// naming `what` when none comes (see [`super::RequestDeadlines`]).
    pub async fn recv_within(&mut self, limit: Duration, what: &str) -> Result<GuestMsg> {
        self.recv_until(tokio::time::Instant::now() + limit, limit, what)
            .await
    }

    /// The next message before `deadline` (`limit` after its start).
    pub async fn recv_until(
        &mut self,
        deadline: tokio::time::Instant,
        limit: Duration,
        what: &str,
    ) -> Result<GuestMsg> {
        tokio::time::timeout_at(deadline, self.recv())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "the guest did not answer {what} within {:.1} s",
                    limit.as_secs_f64()
                )))
            })
    }

    /// The next message; fails when the connection dies.
    pub async fn recv(&mut self) -> Result<GuestMsg> {
        match self.rx.recv().await {
            Some(msg) => {
                self.queued.leave(&msg);
                self.answered |= !matches!(
                    msg,
                    GuestMsg::Started { .. }
                        | GuestMsg::Stdout(_)
                        | GuestMsg::Stderr(_)
                        | GuestMsg::FileChunk(_)
                );
                Ok(msg)
            }
            None => Err(self.sender.shared.failure()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self
                .sender
                .outbox
                .send(Frame::new(self.sender.id, HostMsg::Cancel));
        }
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
    /// Sends a message without waiting for credit. One too big for a frame
    /// (a model's multi-megabyte command, say) fails this call here; on the
    /// wire it would end the whole connection.
    pub fn send(&self, msg: HostMsg) -> Result<()> {
        let frame = Frame::new(self.id, msg);
        // Data chunks are at most CHUNK_LEN by construction.
        if !matches!(frame.msg, HostMsg::Stdin(_) | HostMsg::FileChunk(_)) {
            if let Err(ProtocolError::FrameTooLarge { len, max }) =
                void_box_protocol::codec::encode_frame(&frame)
            {
                return Err(Error::TooLarge {
                    what: "the request".into(),
                    size: len as u64,
                    max: max as u64,
                });
            }
        }
        self.outbox.send(frame).map_err(|_| self.shared.failure())
    }

    /// Sends `data` in chunks, each after waiting for the guest's credit.
    pub async fn send_data(&self, data: &[u8], wrap: fn(Vec<u8>) -> HostMsg) -> Result<()> {
        self.send_data_within(data, wrap, None).await
    }

    /// Like [`send_data`](Self::send_data), failing with [`Error::Timeout`]
    /// when the guest grants no credit for `idle` (the `Duration`) while
    /// doing `what`.
    pub async fn send_data_within(
        &self,
        data: &[u8],
        wrap: fn(Vec<u8>) -> HostMsg,
        idle: Option<(Duration, &str)>,
    ) -> Result<()> {
        for chunk in data.chunks(void_box_protocol::CHUNK_LEN) {
            let credit = self.window.reserve(chunk.len());
            let reserved = match idle {
                Some((limit, what)) => tokio::time::timeout(limit, credit).await.map_err(|_| {
                    Error::Timeout(format!(
                        "the guest took no data of {what} for {:.1} s",
                        limit.as_secs_f64()
                    ))
                })?,
                None => credit.await,
            };
            reserved.map_err(|_| self.shared.failure())?;
            self.send(wrap(chunk.to_vec()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
