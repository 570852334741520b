//! The fake guest's side of the wire: the handshake, then each request in
//! a task of its own, with credit flow control both ways.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use void_box_protocol::auth::{self, Side};
use void_box_protocol::flow::{RecvWindow, SendWindow};
use void_box_protocol::{
    policy, ErrorKind, ErrorReply, ExecRequest, ExitStatus, Frame, FrameCodec, GuestMsg, HostMsg,
    TelemetrySnapshot, CHUNK_LEN, PROTOCOL_VERSION,
};

use super::fs::{add_parents, confine, list, remove, rename, stat};
use super::{lock, FakeCommand, FakeGuest, MAX_FAKE_INPUT};

type Outbox = mpsc::UnboundedSender<Frame<GuestMsg>>;

/// Sends the frames of one request.
#[derive(Clone)]
struct Reply {
    id: u32,
    outbox: Outbox,
}

impl Reply {
    fn send(&self, msg: GuestMsg) {
        let _ = self.outbox.send(Frame::new(self.id, msg));
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) {
        self.send(GuestMsg::Error(ErrorReply::new(kind, message)));
    }

    /// Sends `data` in chunks, each within the host's credit.
    async fn send_data(&self, window: &SendWindow, data: &[u8], wrap: fn(Vec<u8>) -> GuestMsg) {
        for chunk in data.chunks(CHUNK_LEN) {
            if window.reserve(chunk.len()).await.is_err() {
                return;
            }
            self.send(wrap(chunk.to_vec()));
        }
    }
}

/// One host connection: the handshake, then requests, each in a task.
pub(super) async fn serve(guest: FakeGuest, stream: UnixStream) {
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::new(read_half, FrameCodec::<HostMsg, GuestMsg>::new());
    let mut sink = FramedWrite::new(write_half, FrameCodec::<HostMsg, GuestMsg>::new());
    let guest_nonce: auth::Nonce = rand::random();
    let challenge = GuestMsg::Challenge {
        version: PROTOCOL_VERSION,
        nonce: guest_nonce,
    };
    if sink.send(Frame::new(0, challenge)).await.is_err() {
        return;
    }
    let secret = &guest.inner.config.secret;
    let answer = match frames.next().await {
        Some(Ok(Frame {
            msg:
                HostMsg::Hello {
                    version,
                    nonce,
                    proof,
                    ..
                },
            ..
        })) => {
            if version != PROTOCOL_VERSION {
                GuestMsg::Error(ErrorReply::new(ErrorKind::VersionMismatch, "version"))
            } else if !auth::verify(secret, Side::Host, &guest_nonce, &nonce, &proof) {
                GuestMsg::Error(ErrorReply::new(ErrorKind::Unauthenticated, "wrong secret"))
            } else {
                GuestMsg::HelloOk {
                    version: PROTOCOL_VERSION,
                    agent: "fake-guest".into(),
                    proof: auth::proof(secret, Side::Guest, &guest_nonce, &nonce),
                }
            }
        }
        _ => GuestMsg::Error(ErrorReply::new(
            ErrorKind::Unauthenticated,
            "the first message must be Hello",
        )),
    };
    let refused = matches!(answer, GuestMsg::Error(_));
    if sink.send(Frame::new(0, answer)).await.is_err() || refused {
        return;
    }
    let (outbox, mut outgoing) = mpsc::unbounded_channel::<Frame<GuestMsg>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut streams: HashMap<u32, (mpsc::UnboundedSender<HostMsg>, SendWindow)> = HashMap::new();
    let mut requests = Vec::new();
    while let Some(Ok(frame)) = frames.next().await {
        let reply = Reply {
            id: frame.id,
            outbox: outbox.clone(),
        };
        match frame.msg {
            HostMsg::Ping => reply.send(GuestMsg::Pong),
            HostMsg::Credit(n) => {
                if let Some((_, window)) = streams.get(&frame.id) {
                    let _ = window.grant(n);
                }
            }
            msg @ (HostMsg::Stdin(_)
            | HostMsg::StdinEof
            | HostMsg::Cancel
            | HostMsg::Resize(_)
            | HostMsg::FileChunk(_)
            | HostMsg::FileEnd) => {
                if let Some((tx, _)) = streams.get(&frame.id) {
                    let _ = tx.send(msg);
                }
            }
            HostMsg::Shutdown => {
                reply.send(GuestMsg::Done);
                guest.stop("powered off");
            }
            request => {
                let (tx, rx) = mpsc::unbounded_channel();
                let window = SendWindow::new();
                streams.insert(frame.id, (tx, window.clone()));
                if guest.is_silent() {
                    // Heard, never answered: the agent stays alive (pings).
                    continue;
                }
                requests.push(tokio::spawn(handle(
                    guest.clone(),
                    request,
                    rx,
                    window,
                    reply,
                )));
            }
        }
    }
    for request in requests {
        request.abort();
    }
    drop(outbox);
    let _ = writer.await;
}

async fn handle(
    guest: FakeGuest,
    request: HostMsg,
    mut rx: mpsc::UnboundedReceiver<HostMsg>,
    window: SendWindow,
    reply: Reply,
) {
    match request {
        HostMsg::Exec(req) => exec(&guest, req, rx, window, reply).await,
        HostMsg::WriteFile { path, .. } => {
            let path = match confine(&guest, &path) {
                Ok(p) => p,
                Err(e) => return reply.send(GuestMsg::Error(e)),
            };
            let Some(data) = receive(&mut rx, &reply, HostMsg::FileEnd).await else {
                return;
            };
            let bytes = data.len() as u64;
            guest.put_file(&path, data);
            reply.send(GuestMsg::Written { bytes });
        }
        HostMsg::ReadFile { path } => {
            let found = confine(&guest, &path).and_then(|p| {
                guest.file(&p).ok_or_else(|| {
                    ErrorReply::new(ErrorKind::NotFound, format!("{p}: no such file"))
                })
            });
            match found {
                Ok(data) => {
                    reply.send_data(&window, &data, GuestMsg::FileChunk).await;
                    reply.send(GuestMsg::FileEnd {
                        size: data.len() as u64,
                    });
                }
                Err(e) => reply.send(GuestMsg::Error(e)),
            }
        }
        HostMsg::Stat { path } => reply.send(
            match confine(&guest, &path).and_then(|p| stat(&guest, &p)) {
                Ok(st) => GuestMsg::Stat(st),
                Err(e) => GuestMsg::Error(e),
            },
        ),
        HostMsg::Mkdir { path } => reply.send(match confine(&guest, &path) {
            Ok(p) if lock(&guest.inner.fs).files.contains_key(&p) => GuestMsg::Error(
                ErrorReply::new(ErrorKind::Io, format!("{p}: a file is in the way")),
            ),
            Ok(p) => {
                let mut fs = lock(&guest.inner.fs);
                add_parents(&mut fs.dirs, &format!("{p}/x"));
                GuestMsg::Done
            }
            Err(e) => GuestMsg::Error(e),
        }),
        HostMsg::List { path, after, limit } => reply.send(
            match confine(&guest, &path).and_then(|p| list(&guest, &p)) {
                Ok(entries) => {
                    let limit = void_box_protocol::list_page_len(limit);
                    let mut page: Vec<_> = entries
                        .into_iter()
                        .filter(|e| after.as_ref().is_none_or(|a| e.name > *a))
                        .collect();
                    let more = page.len() > limit;
                    page.truncate(limit);
                    GuestMsg::Listing {
                        entries: page,
                        more,
                    }
                }
                Err(e) => GuestMsg::Error(e),
            },
        ),
        HostMsg::Remove { path } => reply.send(
            match confine(&guest, &path).and_then(|p| remove(&guest, &p)) {
                Ok(()) => GuestMsg::Done,
                Err(e) => GuestMsg::Error(e),
            },
        ),
        HostMsg::Rename { from, to } => reply.send(
            match confine(&guest, &from).and_then(|f| Ok((f, confine(&guest, &to)?))) {
                Ok((f, t)) => match rename(&guest, &f, &t) {
                    Ok(()) => GuestMsg::Done,
                    Err(e) => GuestMsg::Error(e),
                },
                Err(e) => GuestMsg::Error(e),
            },
        ),
        HostMsg::Telemetry => reply.send(GuestMsg::Telemetry(TelemetrySnapshot {
            uptime_ms: 1000,
            cpu_count: 1,
            mem_total_bytes: u64::from(guest.inner.memory_mb) << 20,
            mem_available_bytes: u64::from(guest.inner.memory_mb) << 19,
            process_count: 1,
            ..Default::default()
        })),
        other => reply.error(
            ErrorKind::InvalidRequest,
            format!("{other:?} does not start a request"),
        ),
    }
}

/// Collects a request's data messages until `end`, crediting the host.
async fn receive(
    rx: &mut mpsc::UnboundedReceiver<HostMsg>,
    reply: &Reply,
    end: HostMsg,
) -> Option<Vec<u8>> {
    let mut window = RecvWindow::new();
    let mut data = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            HostMsg::FileChunk(chunk) | HostMsg::Stdin(chunk) => {
                if let Err(e) = window.on_data(chunk.len()) {
                    reply.error(ErrorKind::ProtocolViolation, e.to_string());
                    return None;
                }
                if data.len() + chunk.len() > MAX_FAKE_INPUT {
                    reply.error(ErrorKind::Io, "the fake guest keeps at most 64 MiB");
                    return None;
                }
                data.extend_from_slice(&chunk);
                if let Some(grant) = window.on_consumed(chunk.len()) {
                    reply.send(GuestMsg::Credit(grant));
                }
            }
            msg if msg == end => return Some(data),
            HostMsg::Cancel => return None,
            _ => {}
        }
    }
    None
}

async fn exec(
    guest: &FakeGuest,
    req: ExecRequest,
    mut rx: mpsc::UnboundedReceiver<HostMsg>,
    window: SendWindow,
    reply: Reply,
) {
    let mut command = FakeCommand {
        program: req.program.clone(),
        args: req.args.clone(),
        env: req.env.clone(),
        cwd: req
            .cwd
            .clone()
            .unwrap_or_else(|| void_box_protocol::WORKSPACE_DIR.into()),
        stdin: Vec::new(),
        timeout: req.timeout_ms.map(Duration::from_millis),
        uid: req.user.as_ref().map(|u| u.uid),
    };
    if let Err(message) = policy::check_command(&guest.inner.config.allowed_commands, &req.program)
    {
        lock(&guest.inner.commands).push(command);
        return reply.error(ErrorKind::NotAllowed, message);
    }
    reply.send(GuestMsg::Started { pid: 100 });
    let killed = |timed_out, cancelled| ExitStatus {
        signal: Some(9),
        timed_out,
        cancelled,
        ..Default::default()
    };
    let deadline = command.timeout.unwrap_or(Duration::MAX);
    if req.stdin {
        match tokio::time::timeout(deadline, receive(&mut rx, &reply, HostMsg::StdinEof)).await {
            Ok(Some(data)) => command.stdin = data,
            Ok(None) => {
                lock(&guest.inner.commands).push(command);
                return reply.send(GuestMsg::Exited(killed(false, true)));
            }
            Err(_) => {
                lock(&guest.inner.commands).push(command);
                return reply.send(GuestMsg::Exited(killed(true, false)));
            }
        }
    }
    lock(&guest.inner.commands).push(command.clone());
    let Some(provider) = guest.inner.provider.upgrade() else {
        return reply.error(ErrorKind::Io, "the fake provider is gone");
    };
    let answer = (provider.handler)(guest, &command);
    // The command "runs" for its delay; a cancel or its timeout ends it.
    let cancelled = async {
        loop {
            match rx.recv().await {
                Some(HostMsg::Cancel) | None => return,
                Some(_) => {}
            }
        }
    };
    let status = tokio::select! {
        _ = tokio::time::sleep(answer.delay.min(deadline)) => {
            if answer.delay > deadline {
                killed(true, false)
            } else {
                ExitStatus { code: Some(answer.code), ..Default::default() }
            }
        }
        _ = cancelled => killed(false, true),
    };
    if status.code.is_some() {
        reply
            .send_data(&window, &answer.stdout, GuestMsg::Stdout)
            .await;
        reply
            .send_data(&window, &answer.stderr, GuestMsg::Stderr)
            .await;
    }
    reply.send(GuestMsg::Exited(status));
}
