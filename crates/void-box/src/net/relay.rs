//! One relayed TCP connection: the guest's side is a smoltcp socket, the
//! destination's a host `TcpStream` served by a reader and a writer task.
//! Bounded channels between them carry the data, so a side that stops
//! reading stops the other (TCP's own window does the rest), and the bytes
//! a connection holds on the host are bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smoltcp::socket::tcp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::audit::{NetworkEvent, NetworkEventKind};
use super::policy::{Decision, Rules};
use super::sniff::{sniff, Sniffed, MAX_SNIFF};
use super::swap::HeaderSwapper;
use super::tls_bridge::TlsBridge;
use super::EdgeSecrets;

/// Chunks queued per direction between the socket and its task.
const CHUNKS: usize = 2;

/// What the connection is, for its audit record.
pub struct Meta {
    pub dst: SocketAddr,
    pub host: Option<String>,
    pub decision: Decision,
    pub names: Vec<String>,
    pub started: Instant,
}

/// A relayed connection.
pub struct Conn {
    meta: Meta,
    to_dst: Option<mpsc::Sender<Bytes>>,
    from_dst: mpsc::Receiver<std::io::Result<Bytes>>,
    /// Part of a chunk the guest's socket had no room for yet.
    leftover: Option<Bytes>,
    dst_done: bool,
    /// Guest bytes held back until the name they carry is checked.
    sniffing: Option<Vec<u8>>,
    /// Rewrites plain-HTTP requests to a secret's host.
    swapper: Option<HeaderSwapper>,
    /// Ends and re-makes TLS to a secret's host, rewriting inside it.
    tls: Option<TlsBridge>,
    /// TLS bytes for the guest's socket, with `tls`.
    guest_out: Vec<u8>,
    /// TLS bytes for the destination, with `tls`.
    dst_out: Vec<u8>,
    chunk: usize,
    sent: u64,
    received: u64,
    error: Option<String>,
    denied: Option<String>,
    /// The guest's SYN has been handed to the socket.
    seen_syn: bool,
    tasks: [JoinHandle<()>; 2],
}

/// What [`Conn::pump`] found.
pub enum Pumped {
    /// Still going; whether any byte moved.
    Open(bool),
    /// Over: remove the socket and record this.
    Done(NetworkEvent),
}

impl Conn {
    /// Starts the tasks for `stream`, the connection to the destination.
    pub fn new(stream: TcpStream, meta: Meta, buffer_bytes: usize, wake: Arc<Notify>) -> Conn {
        let chunk = (buffer_bytes / 4).clamp(4096, 64 * 1024);
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (to_dst, mut dst_rx) = mpsc::channel::<Bytes>(CHUNKS);
        let (dst_tx, from_dst) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS);
        let reader_wake = wake.clone();
        let reader = tokio::spawn(async move {
            loop {
                let mut buf = BytesMut::with_capacity(chunk);
                let result = match read.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => Ok(buf.freeze()),
                    Err(e) => Err(e),
                };
                let failed = result.is_err();
                if dst_tx.send(result).await.is_err() || failed {
                    break;
                }
                reader_wake.notify_one();
            }
            drop(dst_tx);
            reader_wake.notify_one();
        });
        let writer = tokio::spawn(async move {
            while let Some(data) = dst_rx.recv().await {
                wake.notify_one();
                if write.write_all(&data).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        Conn {
            sniffing: Some(Vec::new()),
            swapper: None,
            tls: None,
            guest_out: Vec::new(),
            dst_out: Vec::new(),
            meta,
            to_dst: Some(to_dst),
            from_dst,
            leftover: None,
            dst_done: false,
            chunk,
            sent: 0,
            received: 0,
            error: None,
            denied: None,
            seen_syn: false,
            tasks: [reader, writer],
        }
    }

    /// Moves what can move between `sock` and the destination, and says
    /// whether the connection is over.
    pub fn pump(
        &mut self,
        sock: &mut tcp::Socket<'_>,
        rules: &Rules,
        secrets: &mut EdgeSecrets,
    ) -> Pumped {
        if sock.state() == tcp::State::Listen {
            if self.seen_syn {
                // The SYN never reached the socket (a bad checksum, say).
                sock.abort();
                self.error = Some("the guest's SYN was not accepted".into());
                return Pumped::Done(self.record());
            }
            return Pumped::Open(false);
        }
        let mut moved = self.guest_to_dst(sock, rules, secrets);
        moved |= self.dst_to_guest(sock);
        if self.denied.is_some() || self.error.is_some() {
            sock.abort();
        }
        match sock.state() {
            tcp::State::Closed | tcp::State::TimeWait => Pumped::Done(self.record()),
            _ => Pumped::Open(moved),
        }
    }

    /// A connection into the guest (a published port): nothing to check.
    pub fn without_sniffing(mut self) -> Conn {
        self.sniffing = None;
        self
    }

    /// The SYN has been queued for the socket.
    pub fn syn_delivered(&mut self) {
        self.seen_syn = true;
    }

    fn guest_to_dst(
        &mut self,
        sock: &mut tcp::Socket<'_>,
        rules: &Rules,
        secrets: &mut EdgeSecrets,
    ) -> bool {
        let mut moved = false;
        while sock.can_recv() {
            if !self.flush_dst() {
                break;
            }
            if let Some(bridge) = &self.tls {
                // The guest's side waits while the other is behind.
                if !bridge.wants_guest_bytes() || self.guest_out.len() >= self.chunk {
                    break;
                }
            }
            let Some(tx) = self.to_dst.clone() else { break };
            let permit = match tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.error = Some("the destination stopped reading".into());
                    return moved;
                }
            };
            let limit = match &self.sniffing {
                Some(held) => MAX_SNIFF - held.len(),
                None => self.chunk,
            };
            let Ok(data) = sock.recv(|buf| {
                let n = buf.len().min(limit);
                (n, Bytes::copy_from_slice(&buf[..n]))
            }) else {
                break;
            };
            moved = true;
            let data = match self.sniffing.take() {
                None => data,
                Some(mut held) => {
                    held.extend_from_slice(&data);
                    match self.check_name(&held, rules, secrets) {
                        None => {
                            self.sniffing = Some(held);
                            continue;
                        }
                        Some(false) => return moved,
                        Some(true) => Bytes::from(held),
                    }
                }
            };
            self.sent += data.len() as u64;
            permit.send(self.outgoing(data));
            if self.error.is_some() {
                return moved;
            }
        }
        // The guest closed its side (sent FIN; `may_recv` is false before
        // the handshake ends too) and everything it sent is on its way.
        let guest_closed = matches!(
            sock.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        );
        if guest_closed && sock.recv_queue() == 0 && self.to_dst.is_some() {
            if let Some(held) = self.sniffing.take() {
                if !held.is_empty() {
                    if self.check_name(&held, rules, secrets) != Some(true) {
                        return moved;
                    }
                    self.sent += held.len() as u64;
                    let data = self.outgoing(Bytes::from(held));
                    if let Some(tx) = &self.to_dst {
                        if tx.try_send(data).is_err() {
                            self.sniffing = Some(Vec::new());
                            return moved;
                        }
                    }
                }
            }
            if let Some(bridge) = &mut self.tls {
                bridge.guest_eof(&mut self.dst_out);
                if !self.flush_dst() {
                    return moved;
                }
            }
            self.to_dst = None;
        }
        moved
    }

    /// Sends what the TLS bridge has for the destination; says whether
    /// nothing is left waiting.
    fn flush_dst(&mut self) -> bool {
        if self.dst_out.is_empty() {
            return true;
        }
        let Some(tx) = &self.to_dst else {
            self.dst_out.clear();
            return true;
        };
        match tx.try_send(Bytes::from(std::mem::take(&mut self.dst_out))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(data)) => {
                self.dst_out = Vec::from(data);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.error = Some("the destination stopped reading".into());
                false
            }
        }
    }

    /// What goes to the destination for `data` from the guest.
    fn outgoing(&mut self, data: Bytes) -> Bytes {
        if let Some(bridge) = &mut self.tls {
            let mut out = std::mem::take(&mut self.dst_out);
            if let Err(e) = bridge.on_guest_bytes(&data, &mut self.guest_out, &mut out) {
                self.error = Some(e);
            }
            return Bytes::from(out);
        }
        match &mut self.swapper {
            None => data,
            Some(swapper) => {
                let mut out = Vec::with_capacity(data.len());
                swapper.feed(&data, &mut out);
                Bytes::from(out)
            }
        }
    }

    /// Checks the name in the guest's first bytes; `None`: not sure yet.
    /// On a refusal the connection is marked denied. A plain-HTTP request
    /// to a name the guest resolved to this address, which a secret is
    /// bound to, gets that secret swapped in from here on; TLS to one is
    /// ended here and re-made, so that the swap happens inside it.
    fn check_name(
        &mut self,
        held: &[u8],
        rules: &Rules,
        secrets: &mut EdgeSecrets,
    ) -> Option<bool> {
        let (name, http) = match sniff(held) {
            Sniffed::NeedMore => return None,
            Sniffed::Other => return Some(true),
            Sniffed::Tls(name) => (name, false),
            Sniffed::Http(name) => (name, true),
            Sniffed::Unreadable(why) => {
                if self.meta.decision.by_name {
                    self.denied = Some(format!("the connection carries {why}"));
                    return Some(false);
                }
                return Some(true);
            }
        };
        let Some(name) = name else {
            // No name given: the address decision stands.
            return Some(true);
        };
        if self.meta.host.is_none() {
            self.meta.host = Some(name.clone());
        }
        let dst = self.meta.dst;
        let sent = [name.clone()];
        let refused = if let Some(refusal) = rules.denied(dst.ip(), dst.port(), &sent) {
            Some(refusal.reason)
        } else if self.meta.decision.by_name
            && !(rules.decide(dst.ip(), dst.port(), &sent).allowed
                && self.meta.names.contains(&name))
        {
            Some(format!(
                "it names {name}, which no rule allows at this address"
            ))
        } else {
            None
        };
        match refused {
            Some(why) => {
                self.meta.host = Some(name);
                self.denied = Some(why);
                Some(false)
            }
            None => {
                // The name must be what the address was reached by, not
                // only what the guest wrote in the header.
                if !self.meta.names.contains(&name) {
                    return Some(true);
                }
                let swaps = secrets.swaps_for(&name, dst.port());
                if swaps.is_empty() {
                    return Some(true);
                }
                if http {
                    self.swapper = Some(HeaderSwapper::new(swaps));
                    return Some(true);
                }
                match secrets.bridge(&name, swaps) {
                    Ok(bridge) => {
                        self.tls = Some(bridge);
                        Some(true)
                    }
                    Err(e) => {
                        self.error = Some(e);
                        Some(false)
                    }
                }
            }
        }
    }

    fn dst_to_guest(&mut self, sock: &mut tcp::Socket<'_>) -> bool {
        let mut moved = false;
        loop {
            if !self.guest_out.is_empty() {
                // TLS bytes from the bridge go first, in order.
                if !sock.can_send() {
                    break;
                }
                let n = sock.send_slice(&self.guest_out).unwrap_or(0);
                moved |= n > 0;
                self.received += n as u64;
                self.guest_out.drain(..n);
                if !self.guest_out.is_empty() {
                    break;
                }
            }
            if self.tls.is_some() && !self.flush_dst() {
                break;
            }
            if self.leftover.is_none() {
                match self.from_dst.try_recv() {
                    Ok(Ok(data)) => {
                        if let Some(bridge) = &mut self.tls {
                            let result = bridge.on_upstream_bytes(
                                &data,
                                &mut self.guest_out,
                                &mut self.dst_out,
                            );
                            if let Err(e) = result {
                                self.error = Some(e);
                                return moved;
                            }
                            moved = true;
                            continue;
                        }
                        self.leftover = Some(data);
                    }
                    Ok(Err(e)) => {
                        self.error = Some(format!("the destination failed: {e}"));
                        return moved;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if !self.dst_done {
                            if let Some(bridge) = &mut self.tls {
                                bridge.upstream_eof(&mut self.guest_out);
                            }
                        }
                        self.dst_done = true;
                        if !self.guest_out.is_empty() {
                            continue;
                        }
                        break;
                    }
                }
            }
            let Some(data) = self.leftover.take() else {
                break;
            };
            if !sock.can_send() {
                self.leftover = Some(data);
                break;
            }
            let n = sock.send_slice(&data).unwrap_or(0);
            moved |= n > 0;
            self.received += n as u64;
            if n < data.len() {
                self.leftover = Some(data.slice(n..));
                break;
            }
        }
        if self.dst_done && self.leftover.is_none() && self.guest_out.is_empty() && sock.may_send()
        {
            sock.close();
        }
        moved
    }

    /// Its record when the sandbox stops before it closes.
    pub fn stopped(&mut self, why: &str) -> NetworkEvent {
        self.error.get_or_insert_with(|| why.to_string());
        self.record()
    }

    fn record(&self) -> NetworkEvent {
        let allowed = self.denied.is_none();
        NetworkEvent {
            kind: NetworkEventKind::Tcp,
            allowed,
            reason: match &self.denied {
                Some(why) => why.clone(),
                None => self.meta.decision.reason.clone(),
            },
            host: self.meta.host.clone(),
            address: Some(self.meta.dst.ip()),
            port: self.meta.dst.port(),
            bytes_sent: self.sent,
            bytes_received: self.received,
            duration: self.meta.started.elapsed(),
            error: self.error.clone(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
