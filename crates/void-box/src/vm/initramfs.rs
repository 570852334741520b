//! Writing initramfs archives (newc cpio) with fixed metadata, so that the
//! same inputs always give the same bytes and the same cache key.

use std::io::{self, Write};

use cpio::newc::{trailer, Builder};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds a cpio archive entry by entry.
pub struct CpioWriter<W: Write> {
    out: Option<W>,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out: Some(out),
            next_ino: 1,
        }
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        data: &[u8],
        rdev: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let mut builder = Builder::new(name)
            .ino(self.next_ino)
            .mode(mode)
            .uid(uid)
            .gid(gid)
            .nlink(if mode & S_IFDIR != 0 { 2 } else { 1 })
            .mtime(0);
        if let Some((major, minor)) = rdev {
            builder = builder.rdev_major(major).rdev_minor(minor);
        }
        self.next_ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: too large for cpio"),
            )
        })?;
        let out = self.out.take().expect("writer present until finish");
        let mut writer = builder.write(out, size);
        writer.write_all(data)?;
        self.out = Some(writer.finish()?);
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, perm: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | perm, uid, gid, &[], None)
    }

    /// Adds a regular file.
    pub fn file(
        &mut self,
        name: &str,
        perm: u32,
        uid: u32,
        gid: u32,
        data: &[u8],
    ) -> io::Result<()> {
        self.entry(name, S_IFREG | perm, uid, gid, data, None)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 0, 0, target.as_bytes(), None)
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | perm, 0, 0, &[], Some((major, minor)))
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        trailer(self.out.take().expect("writer present until finish"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back_with_the_cpio_reader() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/etc", 0o755, 0, 0).unwrap();
        w.file("/etc/hello", 0o400, 0, 0, b"hi").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        let bytes = w.finish().unwrap();
        let mut names = Vec::new();
        let mut input = &bytes[..];
        loop {
            let reader = cpio::NewcReader::new(input).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            names.push((
                reader.entry().name().to_string(),
                reader.entry().file_size(),
            ));
            input = reader.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("etc".to_string(), 0),
                ("etc/hello".to_string(), 2),
                ("bin/sh".to_string(), 7),
                ("dev/console".to_string(), 0)
            ]
        );
    }
}
