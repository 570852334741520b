//! Serves the host over the agent's port: one session after another, each
//! opened by an authenticated handshake, its requests dispatched.
//!
//! Each request runs in its own task, so a long exec never blocks the
//! others. Follow-up messages (stdin, credit, cancel, resize, file chunks)
//! are routed to the task that owns the request id. Everything the tasks
//! send goes through one writer task per session.
//!
//! A session ends when its host goes away, on a protocol error, or when a
//! saved VM is restored ([`HostMsg::Restored`]): the VM takes its new
//! identity and the next session's handshake is under the new secret.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use void_box_protocol::auth::{self, Nonce, Side};
use void_box_protocol::{
    ErrorKind, ErrorReply, Frame, FrameCodec, GuestMsg, HostMsg, ProtocolError, Restore, Secret,
    PROTOCOL_VERSION,
};

use crate::channel::Channel;
use crate::context::AgentContext;
use crate::reply::{Outgoing, Reply};
use crate::{exec, files, init, telemetry};

/// Frames queued for the writer before senders wait.
const OUTBOX_DEPTH: usize = 64;

type Frames<R> = FramedRead<R, FrameCodec<HostMsg, GuestMsg>>;

/// How a session ended.
enum Ended {
    /// The host went away, or broke the protocol.
    Over,
    /// This VM was restored from a saved one and has a new identity.
    Restored,
}

/// Serves sessions on `channel` forever. A session's handshake waits
/// without a deadline: the host is the only party on the port, and its
/// side has the deadlines; a second challenge written while the first is
/// unanswered would reach a host that connects later out of turn.
pub async fn serve(ctx: Arc<AgentContext>, mut channel: Channel) -> io::Result<()> {
    init::log("ready");
    loop {
        let (read, write) = channel.session();
        match session(&ctx, read, write).await {
            Ok(Ended::Over) => {}
            Ok(Ended::Restored) => init::log("restored: new identity"),
            Err(e) => init::log(&format!("session ended: {e}")),
        }
    }
}

async fn session<R, W>(ctx: &Arc<AgentContext>, read: R, write: W) -> Result<Ended, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut frames = FramedRead::new(read, FrameCodec::<HostMsg, GuestMsg>::new());
    let mut sink = FramedWrite::new(write, FrameCodec::<HostMsg, GuestMsg>::new());

    let secret = ctx.live().secret;
    let guest_nonce = nonce(&secret);
    sink.send(Frame::new(
        0,
        GuestMsg::Challenge {
            version: PROTOCOL_VERSION,
            nonce: guest_nonce,
        },
    ))
    .await
    .map_err(|e| e.to_string())?;
    // The host's nonce, once its Hello checks out.
    let verdict = match frames.next().await {
        Some(Ok(Frame {
            msg:
                HostMsg::Hello {
                    version,
                    nonce: host_nonce,
                    proof,
                    unix_time_ns,
                },
            ..
        })) => {
            if version != PROTOCOL_VERSION {
                Err(ErrorReply::new(
                    ErrorKind::VersionMismatch,
                    format!("host speaks protocol {version}, agent speaks {PROTOCOL_VERSION}"),
                ))
            } else if !auth::verify(&secret, Side::Host, &guest_nonce, &host_nonce, &proof) {
                Err(ErrorReply::new(ErrorKind::Unauthenticated, "wrong secret"))
            } else {
                init::set_clock(unix_time_ns);
                Ok(host_nonce)
            }
        }
        Some(Ok(_)) => Err(ErrorReply::new(
            ErrorKind::Unauthenticated,
            "the first message must be Hello",
        )),
        Some(Err(e)) => return Err(format!("bad handshake frame: {e}")),
        None => return Ok(Ended::Over),
    };
    let host_nonce = match verdict {
        Ok(nonce) => nonce,
        Err(refusal) => {
            let text = refusal.to_string();
            let _ = sink.send(Frame::new(0, GuestMsg::Error(refusal))).await;
            return Err(format!("handshake refused: {text}"));
        }
    };
    let agent = format!("guest-agent {}", env!("CARGO_PKG_VERSION"));
    sink.send(Frame::new(
        0,
        GuestMsg::HelloOk {
            version: PROTOCOL_VERSION,
            agent,
            proof: auth::proof(&secret, Side::Guest, &guest_nonce, &host_nonce),
        },
    ))
    .await
    .map_err(|e| e.to_string())?;

    let (outbox, outgoing) = mpsc::channel::<Outgoing>(OUTBOX_DEPTH);
    let writer = tokio::spawn(write_frames(sink, outgoing));
    let mut streams: HashMap<u32, mpsc::UnboundedSender<HostMsg>> = HashMap::new();
    let result = loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(format!("bad frame from host: {e}")),
            None => break Ok(Ended::Over),
        };
        let reply = Reply::new(frame.id, outbox.clone());
        match frame.msg {
            HostMsg::Ping => {
                let _ = reply.send(GuestMsg::Pong).await;
            }
            HostMsg::Hello { .. } | HostMsg::Thaw | HostMsg::Restored(_) => {
                reply
                    .error(ErrorKind::InvalidRequest, "not expected now")
                    .await;
            }
            HostMsg::Quiesce => match quiesce(ctx, frame.id, &outbox, &mut frames).await {
                Ok(true) => {}
                Ok(false) => break Ok(Ended::Restored),
                Err(e) => break Err(e),
            },
            msg @ (HostMsg::Stdin(_)
            | HostMsg::StdinEof
            | HostMsg::Cancel
            | HostMsg::Resize(_)
            | HostMsg::Credit(_)
            | HostMsg::FileChunk(_)
            | HostMsg::FileEnd) => {
                // Messages for a request that already ended are dropped.
                if let Some(tx) = streams.get(&frame.id) {
                    if tx.send(msg).is_err() {
                        streams.remove(&frame.id);
                    }
                }
            }
            request => {
                streams.retain(|_, tx| !tx.is_closed());
                if streams.contains_key(&frame.id) {
                    reply
                        .error(ErrorKind::InvalidRequest, "request id already in use")
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                streams.insert(frame.id, tx);
                tokio::spawn(handle_request(ctx.clone(), request, rx, reply));
            }
        }
    };
    // Dropping the stream senders tells every running request the host is
    // gone; exec tasks kill their processes.
    drop(streams);
    drop(outbox);
    match result {
        // What the saved VM's requests still had to say is for a host
        // that is gone: dropped, not sent to the new one.
        Ok(Ended::Restored) => writer.abort(),
        _ => {
            let _ = writer.await;
        }
    }
    result
}

/// Answers a quiesce, then waits for how the VM goes on: `true` when it
/// goes on as it was, `false` when it took a restored VM's new identity.
async fn quiesce<R: AsyncRead + Unpin>(
    ctx: &AgentContext,
    id: u32,
    outbox: &mpsc::Sender<Outgoing>,
    frames: &mut Frames<R>,
) -> Result<bool, String> {
    let (go_on, held) = oneshot::channel();
    outbox
        .send(Outgoing::Quiesced(Frame::new(id, GuestMsg::Done), held))
        .await
        .map_err(|_| "the session's writer stopped".to_string())?;
    match frames.next().await {
        Some(Ok(Frame {
            msg: HostMsg::Thaw, ..
        })) => {
            let _ = go_on.send(());
            Ok(true)
        }
        Some(Ok(Frame {
            msg: HostMsg::Restored(restore),
            ..
        })) => {
            drop(go_on);
            renew(ctx, &restore)?;
            Ok(false)
        }
        Some(Ok(other)) => Err(format!(
            "expected Thaw or Restored after Quiesce, got {:?}",
            other.msg
        )),
        Some(Err(e)) => Err(format!("bad frame from host: {e}")),
        None => Err("the host went away while the VM was quiesced".into()),
    }
}

/// Takes a restored VM's new identity: reseeded randomness, the host's
/// clock, then the new secret and settings.
fn renew(ctx: &AgentContext, restore: &Restore) -> Result<(), String> {
    init::reseed_random(&restore.entropy)
        .map_err(|e| format!("reseed the random generator: {e}"))?;
    init::set_clock(restore.unix_time_ns);
    ctx.renew(&restore.config)
        .map_err(|e| format!("take the restored VM's configuration: {e}"))
}

/// Writes the session's frames until its outbox closes.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, FrameCodec<HostMsg, GuestMsg>>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    while let Some(out) = outgoing.recv().await {
        let (frame, held) = match out {
            Outgoing::Frame(frame) => (frame, None),
            Outgoing::Quiesced(frame, held) => (frame, Some(held)),
        };
        let id = frame.id;
        match sink.send(frame).await {
            Ok(()) => {}
            // A reply too big for a frame fails its request, not the
            // session (nothing of it was written).
            Err(ProtocolError::FrameTooLarge { len, max }) => {
                let error = GuestMsg::Error(ErrorReply::new(
                    ErrorKind::InvalidRequest,
                    format!("the reply ({len} bytes) is larger than a frame ({max} bytes)"),
                ));
                if sink.send(Frame::new(id, error)).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
        if let Some(held) = held {
            if held.await.is_err() {
                return;
            }
        }
    }
}

/// A nonce no other handshake of this or any sandbox uses: an HMAC under
/// the sandbox's own secret (unknown outside host and agent) of a counter
/// and whatever randomness the kernel has. It never waits for the kernel's
/// generator to be seeded, which early in a boot under TCG takes most of a
/// second.
fn nonce(secret: &Secret) -> Nonce {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 32];
    let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::INSECURE);
    let count = CONNECTIONS.fetch_add(1, Ordering::Relaxed).to_le_bytes();
    auth::derive(secret, b"voidbox-guest-nonce", &[&count, &random])
}

async fn handle_request(
    ctx: Arc<AgentContext>,
    request: HostMsg,
    rx: mpsc::UnboundedReceiver<HostMsg>,
    reply: Reply,
) {
    match request {
        HostMsg::Exec(req) => exec::run(&ctx, req, rx, reply).await,
        HostMsg::WriteFile { path, mode } => files::write(&ctx.roots, &path, mode, rx, reply).await,
        HostMsg::ReadFile { path } => files::read(&ctx.roots, &path, rx, reply).await,
        HostMsg::Stat { path } => {
            let result = files::blocking(|| ctx.roots.stat(&path)).map(GuestMsg::Stat);
            files::send_result(&reply, result).await;
        }
        HostMsg::Mkdir { path } => {
            let result = files::blocking(|| ctx.roots.mkdir_all(&path)).map(|_| GuestMsg::Done);
            files::send_result(&reply, result).await;
        }
        HostMsg::List { path, after, limit } => {
            let result = files::blocking(|| ctx.roots.list(&path, after.as_deref(), limit))
                .map(|(entries, more)| GuestMsg::Listing { entries, more });
            files::send_result(&reply, result).await;
        }
        HostMsg::Remove { path } => {
            let result = files::blocking(|| ctx.roots.remove(&path)).map(|_| GuestMsg::Done);
            files::send_result(&reply, result).await;
        }
        HostMsg::Rename { from, to } => {
            let result = files::blocking(|| ctx.roots.rename(&from, &to)).map(|_| GuestMsg::Done);
            files::send_result(&reply, result).await;
        }
        HostMsg::Telemetry => match telemetry::snapshot() {
            Ok(snap) => {
                reply.send(GuestMsg::Telemetry(snap)).await;
            }
            Err(e) => {
                reply.error(ErrorKind::Io, format!("telemetry: {e}")).await;
            }
        },
        HostMsg::Shutdown => {
            reply.send(GuestMsg::Done).await;
            // Give the writer a moment to put the reply on the wire.
            tokio::time::sleep(Duration::from_millis(20)).await;
            init::power_off();
        }
        other => {
            reply
                .error(
                    ErrorKind::InvalidRequest,
                    format!("{other:?} does not start a request"),
                )
                .await;
        }
    }
}
