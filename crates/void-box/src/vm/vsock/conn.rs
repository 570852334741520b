//! One host-initiated vsock stream: its socket, state, and credit.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use tokio::sync::oneshot;

use super::packet::Header;

/// Host CID in vsock addressing.
pub const HOST_CID: u64 = 2;
/// The only socket type supported (stream).
pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;
/// Bytes of guest data this end buffers per connection (our `buf_alloc`).
pub const BUF_ALLOC: u32 = 512 * 1024;
/// Largest payload we put in one packet.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Control packets waiting for an RX buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Request,
    CreditUpdate,
    Rst,
}

enum State {
    Connecting(oneshot::Sender<io::Result<()>>),
    Connected,
    Closed,
}

pub struct Conn {
    pub local_port: u32,
    pub peer_port: u32,
    guest_cid: u64,
    stream: UnixStream,
    state: State,
    control: VecDeque<Control>,
    /// Guest data not yet written to the host socket.
    out_buf: VecDeque<u8>,
    /// Guest bytes forwarded to the host socket (our `fwd_cnt`).
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` last told to the guest.
    fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The host socket may have data to read.
    want_read: bool,
}

impl Conn {
    pub fn new(
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        stream: UnixStream,
        connected: oneshot::Sender<io::Result<()>>,
    ) -> Conn {
        Conn {
            local_port,
            peer_port,
            guest_cid,
            stream,
            state: State::Connecting(connected),
            control: VecDeque::from([Control::Request]),
            out_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            want_read: false,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Closes the connection; a pending connect fails with `why`.
    pub fn close(&mut self, why: io::ErrorKind) {
        if let State::Connecting(tx) = std::mem::replace(&mut self.state, State::Closed) {
            let _ = tx.send(Err(io::Error::new(
                why,
                "guest refused the vsock connection",
            )));
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn peer_free(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Queues a control packet unless one of its kind already waits: a
    /// guest asking for credit a million times is owed one answer.
    fn push_control(&mut self, control: Control) {
        if !self.control.contains(&control) {
            self.control.push_back(control);
        }
    }

    /// Control packets waiting (at most one of each kind).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn control_len(&self) -> usize {
        self.control.len()
    }

    /// Something is waiting to go to the guest.
    pub fn has_rx_work(&self) -> bool {
        !self.control.is_empty()
            || (matches!(self.state, State::Connected) && self.want_read && self.peer_free() > 0)
    }

    /// The host socket became readable.
    pub fn on_readable(&mut self) {
        self.want_read = true;
    }

    /// Handles a packet the guest sent on this connection.
    pub fn on_guest_packet(&mut self, header: &Header, data: &[u8]) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = Wrapping(header.fwd_cnt);
        match header.op {
            OP_RESPONSE => {
                if let State::Connecting(tx) = std::mem::replace(&mut self.state, State::Connected)
                {
                    let _ = tx.send(Ok(()));
                }
                self.want_read = true;
            }
            OP_RST => self.close(io::ErrorKind::ConnectionRefused),
            OP_SHUTDOWN => {
                self.flush();
                self.close(io::ErrorKind::ConnectionReset);
                self.push_control(Control::Rst);
            }
            OP_RW => {
                if self.out_buf.len() + data.len() > BUF_ALLOC as usize {
                    // The guest ignored our credit: end the stream rather than lose bytes silently.
                    self.close(io::ErrorKind::InvalidData);
                    self.push_control(Control::Rst);
                    return;
                }
                self.out_buf.extend(data);
                self.flush();
            }
            OP_CREDIT_REQUEST => self.push_control(Control::CreditUpdate),
            _ => {} // CREDIT_UPDATE: the credit fields above were all it carried
        }
    }

    /// Writes buffered guest data to the host socket; queues a credit
    /// update once a good part of our buffer was freed.
    pub fn flush(&mut self) {
        while !self.out_buf.is_empty() {
            let (front, _) = self.out_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.out_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The host end is gone: tell the guest.
                    self.out_buf.clear();
                    self.close(io::ErrorKind::BrokenPipe);
                    self.push_control(Control::Rst);
                    return;
                }
            }
        }
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= BUF_ALLOC / 4 {
            self.push_control(Control::CreditUpdate);
        }
    }

    /// The next packet for the guest: its header, and the number of data
    /// bytes placed at the start of `scratch` (at most `room`).
    pub fn next_packet(&mut self, room: usize, scratch: &mut [u8]) -> Option<(Header, usize)> {
        let mut header = Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            type_: TYPE_STREAM,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
            ..Header::default()
        };
        if let Some(control) = self.control.pop_front() {
            header.op = match control {
                Control::Request => OP_REQUEST,
                Control::CreditUpdate => OP_CREDIT_UPDATE,
                Control::Rst => OP_RST,
            };
            self.fwd_cnt_sent = self.fwd_cnt;
            return Some((header, 0));
        }
        if !(matches!(self.state, State::Connected) && self.want_read) {
            return None;
        }
        let max = room
            .min(self.peer_free() as usize)
            .min(MAX_PAYLOAD)
            .min(scratch.len());
        if max == 0 {
            return None;
        }
        match self.stream.read(&mut scratch[..max]) {
            Ok(0) => {
                // The host closed its end.
                self.close(io::ErrorKind::ConnectionReset);
                header.op = OP_RST;
                Some((header, 0))
            }
            Ok(n) => {
                header.op = OP_RW;
                header.len = n as u32;
                self.tx_cnt += Wrapping(n as u32);
                self.fwd_cnt_sent = self.fwd_cnt;
                Some((header, n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.want_read = false;
                None
            }
            Err(_) => {
                self.close(io::ErrorKind::ConnectionReset);
                header.op = OP_RST;
                Some((header, 0))
            }
        }
    }
}
