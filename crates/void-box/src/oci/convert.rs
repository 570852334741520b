//! One image's conversion: layers applied in order to one tree whose file
//! contents stream into an erofs file, then the metadata written. Blocking
//! work (a pull runs it on a blocking thread, layer by layer).

use std::fs::File;
use std::io::{self, Read};

use super::erofs::ErofsWriter;
use super::layers::{self, Codec, LayerError, Totals};
use super::tree::Tree;

/// Most of `/etc/passwd` and `/etc/group` a record keeps.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// An image being built.
pub struct Converter {
    tree: Tree,
    writer: ErofsWriter,
    totals: Totals,
    layers: usize,
}

impl Converter {
    /// Starts an image in `file` (truncated).
    pub fn new(file: File) -> io::Result<Converter> {
        Ok(Converter {
            tree: Tree::default(),
            writer: ErofsWriter::new(file)?,
            totals: Totals::default(),
            layers: 0,
        })
    }

    /// Applies the next layer from its raw (possibly compressed) bytes,
    /// reading them to the end.
    pub fn apply(&mut self, codec: Codec, raw: &mut dyn Read) -> Result<(), LayerError> {
        self.layers += 1;
        layers::apply_blob(
            &mut self.tree,
            &mut self.writer,
            raw,
            codec,
            self.layers,
            &mut self.totals,
        )
    }

    /// The image's `/etc/passwd` and `/etc/group` (empty where missing).
    pub fn accounts(&mut self) -> io::Result<(String, String)> {
        let mut read = |path| {
            layers::read_file(&self.tree, &mut self.writer, path, MAX_ACCOUNT_FILE)
                .map(|data| String::from_utf8_lossy(&data.unwrap_or_default()).into_owned())
        };
        Ok((read("/etc/passwd")?, read("/etc/group")?))
    }

    /// Writes the metadata; returns the image's size in bytes.
    pub fn finish(self, build_time: u64) -> io::Result<u64> {
        let (_, size) = self.writer.finish(&self.tree, build_time)?;
        Ok(size)
    }
}

/// The codec of a local layer file, told by its first bytes.
pub fn sniff(head: &[u8]) -> Codec {
    match head {
        [0x1f, 0x8b, ..] => Codec::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Codec::Zstd,
        _ => Codec::Tar,
    }
}
