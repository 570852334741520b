//! virtio-vsock packets: the 44-byte header and moving bytes through
//! descriptor chains.
//!
//! We do not use `virtio_vsock::VsockPacket` here: it accepts at most one
//! data descriptor per TX packet, while Linux 6.x guests send large writes
//! as non-linear buffers spread over several descriptors; such packets
//! would be dropped and the stream corrupted. Gathering the whole chain
//! handles every layout the driver may use.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_LEN: usize = 44;

/// `struct virtio_vsock_hdr` (all fields little-endian on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// Parses a header from the first [`HEADER_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER_LEN)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    /// The wire form.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Reads a TX chain (device-readable descriptors) into `out`, at most
/// `limit` bytes. `None` for a malformed chain.
pub fn gather<M, T>(
    mem: &M,
    chain: DescriptorChain<T>,
    limit: usize,
    out: &mut Vec<u8>,
) -> Option<()>
where
    M: GuestMemory,
    T: std::ops::Deref,
    T::Target: GuestMemory,
{
    out.clear();
    for desc in chain {
        if desc.is_write_only() {
            return None;
        }
        let start = out.len();
        let len = desc.len() as usize;
        if start + len > limit {
            return None;
        }
        out.resize(start + len, 0);
        mem.read_slice(&mut out[start..], desc.addr()).ok()?;
    }
    Some(())
}

/// The device-writable buffers of an RX chain.
pub fn writable_buffers<T>(chain: DescriptorChain<T>) -> Option<Vec<(GuestAddress, usize)>>
where
    T: std::ops::Deref,
    T::Target: GuestMemory,
{
    let mut buffers = Vec::new();
    for desc in chain {
        if !desc.is_write_only() {
            return None;
        }
        buffers.push((desc.addr(), desc.len() as usize));
    }
    Some(buffers)
}

/// Writes `parts` one after another across `buffers`; returns bytes written.
pub fn scatter<M: GuestMemory>(
    mem: &M,
    buffers: &[(GuestAddress, usize)],
    parts: &[&[u8]],
) -> Option<usize> {
    let mut buffers = buffers.iter().copied();
    let (mut addr, mut room) = buffers.next()?;
    let mut written = 0;
    for part in parts {
        let mut part = *part;
        while !part.is_empty() {
            while room == 0 {
                (addr, room) = buffers.next()?;
            }
            let n = room.min(part.len());
            mem.write_slice(&part[..n], addr).ok()?;
            addr = addr.checked_add(n as u64)?;
            room -= n;
            part = &part[n..];
            written += n;
        }
    }
    Some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 1 << 30,
            dst_port: 1024,
            len: 65536,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 512 * 1024,
            fwd_cnt: 12345,
        };
        assert_eq!(Header::parse(&h.to_bytes()), Some(h));
        assert_eq!(Header::parse(&[0; 10]), None);
    }
}
