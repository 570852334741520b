//! What the host keeps of a command's output when it collects it: at most
//! a cap per stream, the first half and the last half, with a count of the
//! bytes dropped between them. The guest is still granted credit for every
//! byte, so a command that prints without end is never stuck; it just
//! costs the host no more than the cap. (`cat /dev/zero` from the model
//! used to grow a host buffer by the guest's whole output rate.)

/// The cap of each collected stream unless an [`Exec`](super::Exec) sets
/// its own with [`max_output`](super::Exec::max_output).
pub const DEFAULT_MAX_OUTPUT: usize = 64 << 20;

/// Where a collected stream lost its middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The bytes before it are the stream's head; after it, its tail.
    pub at: usize,
    /// How many bytes were dropped there.
    pub omitted: u64,
}

/// One stream being collected under a cap.
#[derive(Debug)]
pub(crate) struct Capture {
    head: Vec<u8>,
    /// The last bytes seen, as a ring once it holds `half`: the oldest
    /// byte is at `start`. (Copies are whole slices: a busy stream moves
    /// gigabytes through here.)
    tail: Vec<u8>,
    start: usize,
    half: usize,
    omitted: u64,
}

impl Capture {
    /// Keeps at most `limit` bytes (half head, half tail; at least 2).
    pub(crate) fn new(limit: usize) -> Capture {
        Capture {
            head: Vec::new(),
            tail: Vec::new(),
            start: 0,
            half: (limit / 2).max(1),
            omitted: 0,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let to_head = (self.half - self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..to_head]);
        let mut rest = &data[to_head..];
        // Filling the tail drops nothing.
        let to_tail = (self.half - self.tail.len()).min(rest.len());
        self.tail.extend_from_slice(&rest[..to_tail]);
        rest = &rest[to_tail..];
        if rest.is_empty() {
            return;
        }
        // The tail is full: each new byte pushes its oldest out.
        self.omitted += rest.len() as u64;
        if rest.len() > self.half {
            rest = &rest[rest.len() - self.half..];
        }
        let first = rest.len().min(self.half - self.start);
        self.tail[self.start..self.start + first].copy_from_slice(&rest[..first]);
        self.tail[..rest.len() - first].copy_from_slice(&rest[first..]);
        self.start = (self.start + rest.len()) % self.half;
    }

    /// The kept bytes, and where the middle was dropped (if it was).
    pub(crate) fn finish(self) -> (Vec<u8>, Option<Cut>) {
        let at = self.head.len();
        let mut bytes = self.head;
        bytes.reserve_exact(self.tail.len());
        bytes.extend_from_slice(&self.tail[self.start..]);
        bytes.extend_from_slice(&self.tail[..self.start]);
        let cut = (self.omitted > 0).then_some(Cut {
            at,
            omitted: self.omitted,
        });
        (bytes, cut)
    }
}

/// `bytes` as text, with a notice where `cut` dropped the middle.
pub(crate) fn text_with_notice(bytes: &[u8], cut: Option<Cut>) -> String {
    match cut {
        None => String::from_utf8_lossy(bytes).into_owned(),
        Some(Cut { at, omitted }) => format!(
            "{}\n[... output truncated: {omitted} bytes omitted ...]\n{}",
            String::from_utf8_lossy(&bytes[..at]),
            String::from_utf8_lossy(&bytes[at..])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_counts_the_middle() {
        let mut c = Capture::new(10);
        c.push(b"0123");
        c.push(b"4567890123456789");
        c.push(b"ab");
        let (bytes, cut) = c.finish();
        // 22 bytes in: the first 5 and the last 5 kept.
        assert_eq!(bytes, b"01234789ab");
        let cut = cut.unwrap();
        assert_eq!(cut, Cut { at: 5, omitted: 12 });
        assert_eq!(
            text_with_notice(&bytes, Some(cut)),
            "01234\n[... output truncated: 12 bytes omitted ...]\n789ab"
        );
    }

    #[test]
    fn any_chunking_keeps_the_first_and_last_halves() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for limit in [2, 10, 64, 999, 5000, 6000] {
            for step in [1, 3, 7, 100, 4999, 5000] {
                let mut c = Capture::new(limit);
                data.chunks(step).for_each(|d| c.push(d));
                let (bytes, cut) = c.finish();
                let half = limit / 2;
                if data.len() <= 2 * half {
                    assert_eq!((bytes, cut), (data.clone(), None), "{limit}/{step}");
                } else {
                    let mut want = data[..half].to_vec();
                    want.extend_from_slice(&data[data.len() - half..]);
                    assert_eq!(bytes, want, "{limit}/{step}");
                    let omitted = (data.len() - 2 * half) as u64;
                    assert_eq!(cut, Some(Cut { at: half, omitted }), "{limit}/{step}");
                }
            }
        }
    }

    #[test]
    fn small_output_is_whole() {
        let mut c = Capture::new(100);
        c.push(b"hello");
        assert_eq!(c.finish(), (b"hello".to_vec(), None));
    }

    #[test]
    fn a_flood_costs_no_more_than_the_cap() {
        let mut c = Capture::new(1 << 20);
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..1024 {
            c.push(&chunk);
        }
        let (bytes, cut) = c.finish();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(cut.unwrap().omitted, (64u64 << 20) - (1 << 20));
    }
}
