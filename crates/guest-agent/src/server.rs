//! Accepts host connections, authenticates them, and dispatches requests.
//!
//! Each request runs in its own task, so a long exec never blocks the
//! others. Follow-up messages (stdin, credit, cancel, resize, file chunks)
//! are routed to the task that owns the request id. Everything the tasks
//! send goes through one writer task per connection.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};
use void_box_protocol::auth::{self, Nonce, Side};
use void_box_protocol::{
    ErrorKind, ErrorReply, Frame, FrameCodec, GuestMsg, HostMsg, ProtocolError, Secret,
    AGENT_VSOCK_PORT, PROTOCOL_VERSION,
};

use crate::context::AgentContext;
use crate::reply::Reply;
use crate::{exec, files, init, telemetry};

/// How long a new connection has to complete the handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Frames queued for the writer before senders wait.
const OUTBOX_DEPTH: usize = 64;

/// Accepts connections forever.
pub async fn serve(ctx: Arc<AgentContext>) -> io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, AGENT_VSOCK_PORT))?;
    init::log("ready");
    loop {
        let (stream, _peer) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_connection(ctx, stream).await {
                init::log(&format!("connection ended: {e}"));
            }
        });
    }
}

async fn handle_connection(
    ctx: Arc<AgentContext>,
    stream: tokio_vsock::VsockStream,
) -> Result<(), String> {
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::new(read_half, FrameCodec::<HostMsg, GuestMsg>::new());
    let mut sink = FramedWrite::new(write_half, FrameCodec::<HostMsg, GuestMsg>::new());

    let guest_nonce = nonce(&ctx.config.secret);
    sink.send(Frame::new(
        0,
        GuestMsg::Challenge {
            version: PROTOCOL_VERSION,
            nonce: guest_nonce,
        },
    ))
    .await
    .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(HANDSHAKE_DEADLINE, frames.next())
        .await
        .map_err(|_| "no handshake within the deadline".to_string())?;
    let secret = &ctx.config.secret;
    // The host's nonce, once its Hello checks out.
    let verdict = match hello {
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
            } else if !auth::verify(secret, Side::Host, &guest_nonce, &host_nonce, &proof) {
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
        None => return Ok(()),
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
            proof: auth::proof(secret, Side::Guest, &guest_nonce, &host_nonce),
        },
    ))
    .await
    .map_err(|e| e.to_string())?;

    let (outbox, mut outgoing) = mpsc::channel::<Frame<GuestMsg>>(OUTBOX_DEPTH);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            let id = frame.id;
            match sink.send(frame).await {
                Ok(()) => {}
                // A reply too big for a frame fails its request, not the
                // connection (nothing of it was written).
                Err(ProtocolError::FrameTooLarge { len, max }) => {
                    let error = GuestMsg::Error(ErrorReply::new(
                        ErrorKind::InvalidRequest,
                        format!("the reply ({len} bytes) is larger than a frame ({max} bytes)"),
                    ));
                    if sink.send(Frame::new(id, error)).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });

    let mut streams: HashMap<u32, mpsc::UnboundedSender<HostMsg>> = HashMap::new();
    let result = loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(format!("bad frame from host: {e}")),
            None => break Ok(()),
        };
        let reply = Reply::new(frame.id, outbox.clone());
        match frame.msg {
            HostMsg::Ping => {
                let _ = reply.send(GuestMsg::Pong).await;
            }
            HostMsg::Hello { .. } => {
                reply
                    .error(ErrorKind::InvalidRequest, "already authenticated")
                    .await;
            }
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
    let _ = writer.await;
    result
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
