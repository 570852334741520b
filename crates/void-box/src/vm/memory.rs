//! Guest RAM: a memfd made here and handed to QEMU, so the host can copy it
//! when the VM is saved (QEMU then writes only the devices' state:
//! `x-ignore-shared`), and fill it before a saved VM is loaded. A saved
//! copy is a sparse file of the pages that hold anything but zeros, so it
//! takes about what the guest really used; its hash covers each such page
//! with its place, so it does not depend on how a file system lays the
//! file out.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

/// Page size of the copies.
const PAGE: usize = 4096;
/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// A new memfd of `bytes` for guest RAM.
pub fn guest_ram(bytes: u64) -> io::Result<File> {
    let fd = rustix::fs::memfd_create("voidbox-guest-ram", rustix::fs::MemfdFlags::CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(bytes)?;
    Ok(file)
}

/// Copies the first `len` bytes of `from` into `to` (already `len` long),
/// page by page, leaving out pages of zeros (holes in `from` are never
/// read); returns a BLAKE3 hash, hex, of the pages copied and their
/// indexes. (Bytes and indexes are hashed apart, so that the bytes reach
/// BLAKE3 in long runs, which it hashes in parallel lanes.)
pub fn copy_pages(from: &File, to: &File, len: u64) -> io::Result<String> {
    let mut bytes = blake3::Hasher::new();
    let mut places = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < len {
        let start = match rustix::fs::seek(from, SeekFrom::Data(at)) {
            Ok(start) if start < len => start - start % PAGE as u64,
            Ok(_) => break,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(from, SeekFrom::Hole(start))?.min(len);
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            from.read_exact_at(chunk, offset)?;
            // Runs of pages with data are hashed and written in one go.
            let mut flush = |first: usize, last: usize| {
                let run = &chunk[first * PAGE..last.min(n)];
                bytes.update(run);
                to.write_all_at(run, offset + (first * PAGE) as u64)
            };
            let mut run: Option<usize> = None;
            for (i, page) in chunk.chunks(PAGE).enumerate() {
                if is_zero(page) {
                    if let Some(first) = run.take() {
                        flush(first, i * PAGE)?;
                    }
                    continue;
                }
                let index = offset / PAGE as u64 + i as u64;
                places.update(&index.to_le_bytes());
                run.get_or_insert(i);
            }
            if let Some(first) = run {
                flush(first, n)?;
            }
            offset += n as u64;
        }
        at = end.max(start + PAGE as u64);
    }
    let mut both = blake3::Hasher::new();
    both.update(bytes.finalize().as_bytes());
    both.update(places.finalize().as_bytes());
    Ok(both.finalize().to_hex().to_string())
}

/// Whether `page` holds only zeros: an OR of its words without early
/// exit, which the compiler turns into wide loads.
fn is_zero(page: &[u8]) -> bool {
    let words = page.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |a, &b| a | b);
    let body = words.fold(0u64, |a, w| {
        a | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
    });
    body == 0 && tail == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_with_data_are_copied_and_the_hash_follows_them() {
        let len = 64 * PAGE as u64;
        let ram = guest_ram(len).unwrap();
        ram.write_all_at(b"kernel", 0).unwrap();
        ram.write_all_at(&[0u8; PAGE], 5 * PAGE as u64).unwrap(); // zeros, allocated
        ram.write_all_at(b"heap", 40 * PAGE as u64 + 100).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saved = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("memory"))
            .unwrap();
        saved.set_len(len).unwrap();
        let hash = copy_pages(&ram, &saved, len).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            saved.metadata().unwrap().blocks() * 512 <= 4 * PAGE as u64,
            "the copy holds only the two pages with data"
        );
        // Back into a fresh memfd: the same bytes, the same hash.
        let back = guest_ram(len).unwrap();
        assert_eq!(copy_pages(&saved, &back, len).unwrap(), hash);
        let mut page = vec![0u8; PAGE];
        back.read_exact_at(&mut page, 40 * PAGE as u64).unwrap();
        assert_eq!(&page[100..104], b"heap");
        // One byte more anywhere: another hash.
        back.write_all_at(b"x", 20 * PAGE as u64).unwrap();
        let other = guest_ram(len).unwrap();
        assert_ne!(copy_pages(&back, &other, len).unwrap(), hash);
    }
}
