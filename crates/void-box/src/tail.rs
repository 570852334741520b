//! The last bytes of a stream: what an MCP server wrote, the guest's
//! console, QEMU's own output. Fixed memory, however much arrives.

use std::collections::VecDeque;

/// The last `cap` bytes pushed into it.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the cap.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let excess = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..excess);
        self.buf.extend(data);
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        self.last(self.buf.len())
    }

    /// The last `max_bytes` kept, as text.
    pub(crate) fn last(&self, max_bytes: usize) -> String {
        let start = self.buf.len().saturating_sub(max_bytes);
        let bytes: Vec<u8> = self.buf.range(start..).copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        assert_eq!(tail.text(), "abc");
        tail.push(b"defg");
        assert_eq!(tail.text(), "cdefg");
        tail.push(b"0123456789");
        assert_eq!(tail.text(), "56789");
        tail.push(b"");
        assert_eq!(tail.text(), "56789");
        assert_eq!(tail.last(2), "89");
    }
}
