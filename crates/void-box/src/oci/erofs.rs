//! Writes a read-only erofs image (uncompressed, 4 KiB blocks), the form
//! an OCI image takes on its way into a VM: a virtio-blk disk the guest
//! mounts, read in place, never copied into guest RAM.
//!
//! Written by hand because no well-kept crate writes erofs with file data
//! (`composefs` writes metadata-only images and builds them in memory;
//! `erofs-rs` only reads), and `mkfs.erofs` in Debian 12 (1.5) cannot read
//! tar streams or set ownership without root. The format is small and
//! stable (`fs/erofs/erofs_fs.h`); images are checked with `fsck.erofs`
//! and the guest kernel in the tests.
//!
//! Layout, chosen so that layers stream straight into the file in one
//! pass:
//!
//! ```text
//! block 0        superblock at byte 1024
//! blocks 1..     file contents, in the order the layers deliver them
//! meta_blkaddr.. inodes (64-byte extended form), each followed by its
//!                inline xattrs and, when they fit in the same block, the
//!                tail of its contents (FLAT_INLINE); the root comes first
//!                (its nid must fit in 16 bits)
//! then           directory blocks too big to sit inline
//! ```
//!
//! Contents a later layer deleted or replaced leave dead blocks behind.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::tree::{Body, FileData, Meta, NodeId, Tree, ROOT};

/// Block size.
pub const BLOCK: u64 = 4096;
const MAGIC: u32 = 0xE0F5_E1E2;
const SUPERBLOCK_OFFSET: u64 = 1024;
const NULL_ADDR: u32 = u32::MAX;
const INODE_LEN: usize = 64;
const FLAT_PLAIN: u16 = 0;
const FLAT_INLINE: u16 = 2;
/// Tails kept in memory for inlining, in all; later tails go to blocks.
const MAX_INLINE_BYTES: usize = 256 << 20;
const S_IFMT: u32 = 0o170000;

/// Writes an image: contents while the layers stream, then the metadata.
pub struct ErofsWriter {
    out: File,
    /// Next free block of the contents area.
    next_block: u64,
    inline_bytes: usize,
}

impl ErofsWriter {
    /// Starts an image in `out` (truncated).
    pub fn new(mut out: File) -> io::Result<Self> {
        out.set_len(0)?;
        out.seek(SeekFrom::Start(BLOCK))?;
        Ok(ErofsWriter {
            out,
            next_block: 1,
            inline_bytes: 0,
        })
    }

    /// Copies `size` bytes of contents from `from`. `ibody` is the size of
    /// the node's inline xattrs, which decides whether the tail fits next
    /// to its inode. Fails if `from` ends early.
    pub fn write_contents(
        &mut self,
        from: &mut dyn Read,
        size: u64,
        ibody: usize,
    ) -> io::Result<FileData> {
        let tail_len = (size % BLOCK) as usize;
        let inline = tail_len > 0
            && INODE_LEN + ibody + tail_len <= BLOCK as usize
            && self.inline_bytes + tail_len <= MAX_INLINE_BYTES;
        let in_blocks = if inline { size - tail_len as u64 } else { size };
        let blkaddr = if in_blocks > 0 {
            u32::try_from(self.next_block).map_err(|_| too_big())?
        } else {
            NULL_ADDR
        };
        let copied = io::copy(&mut Read::take(&mut *from, in_blocks), &mut self.out)?;
        if copied != in_blocks {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the contents ended early",
            ));
        }
        let pad = (BLOCK - in_blocks % BLOCK) % BLOCK;
        if pad > 0 {
            self.out.write_all(&vec![0u8; pad as usize])?;
        }
        self.next_block += in_blocks.div_ceil(BLOCK);
        let mut tail = Vec::new();
        if inline {
            Read::take(&mut *from, tail_len as u64).read_to_end(&mut tail)?;
            if tail.len() != tail_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the contents ended early",
                ));
            }
            self.inline_bytes += tail_len;
        }
        Ok(FileData {
            size,
            blkaddr,
            inline,
            tail,
        })
    }

    /// Reads back a file's contents (at most `max` bytes), e.g. the
    /// image's `/etc/passwd` to resolve its user.
    pub fn read_contents(&mut self, data: &FileData, max: u64) -> io::Result<Vec<u8>> {
        let len = data.size.min(max);
        let in_blocks = if data.inline {
            data.size - data.tail.len() as u64
        } else {
            data.size
        };
        let mut out = Vec::with_capacity(len as usize);
        if in_blocks > 0 {
            let end = self.out.stream_position()?;
            self.out
                .seek(SeekFrom::Start(u64::from(data.blkaddr) * BLOCK))?;
            (&mut self.out)
                .take(in_blocks.min(len))
                .read_to_end(&mut out)?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        let rest = (len as usize).saturating_sub(out.len());
        out.extend_from_slice(&data.tail[..rest.min(data.tail.len())]);
        Ok(out)
    }

    /// Writes the metadata of every node reachable from the root and the
    /// superblock; returns the finished file and its size in bytes.
    pub fn finish(mut self, tree: &Tree, build_time: u64) -> io::Result<(File, u64)> {
        let order = reachable(tree);
        let index: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut nlink = vec![0u32; order.len()];
        let mut parent = vec![ROOT; tree.len()];
        for &id in &order {
            if let Some(entries) = tree.entries(id) {
                nlink[index[&id]] += 2;
                for &child in entries.values() {
                    if tree.entries(child).is_some() {
                        nlink[index[&id]] += 1;
                        parent[child] = id;
                    } else {
                        nlink[index[&child]] += 1;
                    }
                }
            }
        }
        nlink[0] = nlink[0].max(2);

        // Place every inode; directory sizes depend only on names.
        let meta_blkaddr = self.next_block;
        let mut slots = Vec::with_capacity(order.len());
        let mut off: u64 = 0;
        for &id in &order {
            let node = tree.node(id);
            let ibody = xattr_ibody(&node.meta.xattrs).len() as u64;
            let inline: u64 = match &node.body {
                Body::File(d) if d.inline => d.tail.len() as u64,
                Body::Symlink(t) if INODE_LEN as u64 + ibody + t.len() as u64 <= BLOCK => {
                    t.len() as u64
                }
                Body::Dir(entries) => {
                    let size = dir_size(entries);
                    if INODE_LEN as u64 + ibody + size <= BLOCK {
                        size
                    } else {
                        0
                    }
                }
                _ => 0,
            };
            off = off.next_multiple_of(32);
            if off % BLOCK + INODE_LEN as u64 + ibody + inline > BLOCK {
                off = off.next_multiple_of(BLOCK);
            }
            slots.push((off, inline));
            off += INODE_LEN as u64 + ibody + inline;
        }
        let meta_len = off.next_multiple_of(BLOCK);
        let mut next_late_block = meta_blkaddr + meta_len / BLOCK;
        let nid = |i: usize| slots[i].0 / 32;
        if nid(0) > u64::from(u16::MAX) {
            return Err(too_big());
        }

        // Directory blocks and long symlinks go after the metadata.
        let mut late: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut meta = vec![0u8; meta_len as usize];
        for (i, &id) in order.iter().enumerate() {
            let node = tree.node(id);
            let (slot, inline_len) = slots[i];
            let ibody = xattr_ibody(&node.meta.xattrs);
            let mut inline_bytes: Vec<u8> = Vec::new();
            let (kind, size, layout, i_u) = match &node.body {
                Body::Dir(entries) => {
                    let own = nid(i);
                    let up = nid(index[&parent[id]]);
                    let blob = dir_blob(entries, own, up, |child| {
                        (nid(index[&child]), file_type(tree, child))
                    });
                    let size = blob.len() as u64;
                    if inline_len > 0 {
                        inline_bytes = blob;
                        (0o040000, size, FLAT_INLINE, NULL_ADDR)
                    } else {
                        let at = next_late_block;
                        next_late_block += size.div_ceil(BLOCK);
                        late.push((at, blob));
                        (0o040000, size, FLAT_PLAIN, block_addr(at)?)
                    }
                }
                Body::File(d) => {
                    let layout = if d.inline { FLAT_INLINE } else { FLAT_PLAIN };
                    let addr = if d.size == 0 { 0 } else { d.blkaddr };
                    inline_bytes = d.tail.clone();
                    (0o100000, d.size, layout, addr)
                }
                Body::Symlink(target) => {
                    let size = target.len() as u64;
                    if inline_len > 0 {
                        inline_bytes = target.clone();
                        (0o120000, size, FLAT_INLINE, NULL_ADDR)
                    } else {
                        let at = next_late_block;
                        next_late_block += 1;
                        late.push((at, target.clone()));
                        (0o120000, size, FLAT_PLAIN, block_addr(at)?)
                    }
                }
                Body::Char(rdev) => (0o020000, 0, FLAT_PLAIN, *rdev),
                Body::Block(rdev) => (0o060000, 0, FLAT_PLAIN, *rdev),
                Body::Fifo => (0o010000, 0, FLAT_PLAIN, 0),
            };
            let inode = inode(
                &node.meta,
                kind,
                layout,
                &ibody,
                size,
                i_u,
                i as u32 + 1,
                nlink[i],
            );
            let at = slot as usize;
            meta[at..at + INODE_LEN].copy_from_slice(&inode);
            meta[at + INODE_LEN..at + INODE_LEN + ibody.len()].copy_from_slice(&ibody);
            let tail_at = at + INODE_LEN + ibody.len();
            meta[tail_at..tail_at + inline_bytes.len()].copy_from_slice(&inline_bytes);
        }
        self.out.seek(SeekFrom::Start(meta_blkaddr * BLOCK))?;
        self.out.write_all(&meta)?;
        for (at, mut blob) in late {
            let padded = blob.len().next_multiple_of(BLOCK as usize);
            blob.resize(padded, 0);
            self.out.seek(SeekFrom::Start(at * BLOCK))?;
            self.out.write_all(&blob)?;
        }
        let blocks = next_late_block;
        let sb = superblock(
            nid(0) as u16,
            order.len() as u64,
            build_time,
            block_addr(blocks)?,
            block_addr(meta_blkaddr)?,
        );
        self.out.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
        self.out.write_all(&sb)?;
        self.out.set_len(blocks * BLOCK)?;
        self.out.sync_all()?;
        Ok((self.out, blocks * BLOCK))
    }
}

fn too_big() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the image is too large for erofs (16 TiB of blocks, or a root beyond 2 MiB of metadata)",
    )
}

fn block_addr(block: u64) -> io::Result<u32> {
    u32::try_from(block).map_err(|_| too_big())
}

/// Nodes reachable from the root, root first, each once (hard links share).
fn reachable(tree: &Tree) -> Vec<NodeId> {
    let mut seen = vec![false; tree.len()];
    let mut order = vec![ROOT];
    seen[ROOT] = true;
    let mut i = 0;
    while i < order.len() {
        if let Some(entries) = tree.entries(order[i]) {
            for &child in entries.values() {
                if !seen[child] {
                    seen[child] = true;
                    order.push(child);
                }
            }
        }
        i += 1;
    }
    order
}

fn file_type(tree: &Tree, id: NodeId) -> u8 {
    match tree.node(id).body {
        Body::File(_) => 1,
        Body::Dir(_) => 2,
        Body::Char(_) => 3,
        Body::Block(_) => 4,
        Body::Fifo => 5,
        Body::Symlink(_) => 7,
    }
}

/// The directory's entries, `.` and `..` included, in byte order.
fn sorted_names(entries: &std::collections::BTreeMap<Vec<u8>, NodeId>) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = entries.keys().map(Vec::as_slice).collect();
    names.push(b".");
    names.push(b"..");
    names.sort_unstable();
    names
}

/// Splits sorted names into blocks: each holds its 12-byte dirents, then
/// the names back to back.
fn dir_blocks<'a>(names: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut blocks: Vec<Vec<&[u8]>> = vec![Vec::new()];
    let mut used = 0;
    for name in names {
        if used + 12 + name.len() > BLOCK as usize {
            blocks.push(Vec::new());
            used = 0;
        }
        used += 12 + name.len();
        blocks.last_mut().expect("one block at least").push(name);
    }
    blocks
}

fn dir_size(entries: &std::collections::BTreeMap<Vec<u8>, NodeId>) -> u64 {
    let blocks = dir_blocks(&sorted_names(entries));
    let last: usize = blocks
        .last()
        .map_or(0, |b| b.iter().map(|n| 12 + n.len()).sum());
    (blocks.len() as u64 - 1) * BLOCK + last as u64
}

fn dir_blob(
    entries: &std::collections::BTreeMap<Vec<u8>, NodeId>,
    own: u64,
    up: u64,
    child: impl Fn(NodeId) -> (u64, u8),
) -> Vec<u8> {
    let names = sorted_names(entries);
    let blocks = dir_blocks(&names);
    let mut out = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let start = out.len();
        let mut nameoff = 12 * block.len();
        for name in block {
            let (nid, ft) = match *name {
                b"." => (own, 2),
                b".." => (up, 2),
                other => child(entries[other]),
            };
            out.extend_from_slice(&nid.to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(ft);
            out.push(0);
            nameoff += name.len();
        }
        for name in block {
            out.extend_from_slice(name);
        }
        if i + 1 < blocks.len() {
            out.resize(start + BLOCK as usize, 0);
        }
    }
    out
}

/// The inline xattr body: a 12-byte header, then entries padded to 4
/// bytes. Names erofs has no prefix index for are dropped.
pub fn xattr_ibody(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    const PREFIXES: [(&[u8], u8); 5] = [
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
        (b"user.", 1),
        (b"trusted.", 4),
        (b"security.", 6),
    ];
    let mut body = Vec::new();
    for (name, value) in xattrs {
        let Some((prefix, index)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p)) else {
            continue;
        };
        let suffix = &name[prefix.len()..];
        let (Ok(name_len), Ok(value_len)) =
            (u8::try_from(suffix.len()), u16::try_from(value.len()))
        else {
            continue;
        };
        let start = body.len();
        body.push(name_len);
        body.push(*index);
        body.extend_from_slice(&value_len.to_le_bytes());
        body.extend_from_slice(suffix);
        body.extend_from_slice(value);
        body.resize(start + (body.len() - start).next_multiple_of(4), 0);
    }
    if body.is_empty() {
        // A header without entries is refused by the kernel.
        return body;
    }
    let mut out = vec![0u8; 12];
    out.extend_from_slice(&body);
    out
}

/// The size of a node's inline xattr body.
pub fn ibody_len(meta: &Meta) -> usize {
    xattr_ibody(&meta.xattrs).len()
}

#[allow(clippy::too_many_arguments)]
fn inode(
    meta: &Meta,
    kind: u32,
    layout: u16,
    ibody: &[u8],
    size: u64,
    i_u: u32,
    ino: u32,
    nlink: u32,
) -> [u8; INODE_LEN] {
    let mut b = [0u8; INODE_LEN];
    let icount: u16 = if ibody.is_empty() {
        0
    } else {
        1 + ((ibody.len() - 12) / 4) as u16
    };
    let mode = ((kind & S_IFMT) | (meta.perm & 0o7777)) as u16;
    b[0..2].copy_from_slice(&(1 | (layout << 1)).to_le_bytes());
    b[2..4].copy_from_slice(&icount.to_le_bytes());
    b[4..6].copy_from_slice(&mode.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    b[16..20].copy_from_slice(&i_u.to_le_bytes());
    b[20..24].copy_from_slice(&ino.to_le_bytes());
    b[24..28].copy_from_slice(&meta.uid.to_le_bytes());
    b[28..32].copy_from_slice(&meta.gid.to_le_bytes());
    b[32..40].copy_from_slice(&meta.mtime.to_le_bytes());
    b[44..48].copy_from_slice(&nlink.to_le_bytes());
    b
}

fn superblock(
    root_nid: u16,
    inos: u64,
    build_time: u64,
    blocks: u32,
    meta_blkaddr: u32,
) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[12] = 12; // blkszbits
    b[14..16].copy_from_slice(&root_nid.to_le_bytes());
    b[16..24].copy_from_slice(&inos.to_le_bytes());
    b[24..32].copy_from_slice(&build_time.to_le_bytes());
    b[36..40].copy_from_slice(&blocks.to_le_bytes());
    b[40..44].copy_from_slice(&meta_blkaddr.to_le_bytes());
    b[64..71].copy_from_slice(b"voidbox");
    b
}

/// `rdev` in the kernel's `new_encode_dev` form, as erofs stores it.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tree::Node;

    #[test]
    fn xattr_bodies_are_indexed_padded_and_skip_unknown_prefixes() {
        assert!(xattr_ibody(&[]).is_empty());
        assert!(xattr_ibody(&[(b"system.other".to_vec(), b"x".to_vec())]).is_empty());
        let body = xattr_ibody(&[(b"user.test".to_vec(), b"hello".to_vec())]);
        // header, then len 4 "test", index 1, value 5 "hello": 4+4+5 = 13 -> 16
        assert_eq!(body.len(), 12 + 16);
        assert_eq!(&body[12..16], &[4, 1, 5, 0]);
        assert_eq!(&body[16..25], b"testhello");
    }

    #[test]
    fn directories_split_into_blocks_by_name_length() {
        let mut entries = std::collections::BTreeMap::new();
        for i in 0..400 {
            entries.insert(format!("entry-{i:04}").into_bytes(), 1);
        }
        let size = dir_size(&entries);
        let blob = dir_blob(&entries, 9, 9, |_| (3, 1));
        assert_eq!(blob.len() as u64, size);
        assert!(size > BLOCK, "{size}");
        // The first block starts with `.`, `..` (they sort before `e`).
        assert_eq!(u16::from_le_bytes([blob[8], blob[9]]) % 12, 0);
        let first_name = u16::from_le_bytes([blob[8], blob[9]]) as usize;
        assert_eq!(&blob[first_name..first_name + 1], b".");
    }

    #[test]
    fn small_tails_are_inlined_and_contents_read_back() {
        let file = tempfile::tempfile().unwrap();
        let mut w = ErofsWriter::new(file).unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let d = w
            .write_contents(&mut &big[..], big.len() as u64, 0)
            .unwrap();
        assert!(d.inline);
        assert_eq!(d.tail.len(), 10_000 % 4096);
        assert_eq!(d.blkaddr, 1);
        assert_eq!(w.read_contents(&d, u64::MAX).unwrap(), big);
        assert_eq!(w.read_contents(&d, 10).unwrap(), &big[..10]);
        let exact = vec![7u8; 8192];
        let e = w.write_contents(&mut &exact[..], 8192, 0).unwrap();
        assert!(!e.inline && e.blkaddr == 3);
        let mut tree = Tree::default();
        let f = tree.add(Node {
            meta: Meta::default(),
            body: Body::File(d),
            layer: 1,
        });
        tree.link(ROOT, b"f", f);
        let (_, size) = w.finish(&tree, 0).unwrap();
        assert_eq!(size % BLOCK, 0);
    }
}
