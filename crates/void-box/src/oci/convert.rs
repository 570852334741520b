//! One image's conversion: layers applied in order to one tree whose file
//! contents stream into an erofs file, then the metadata written, then the
//! file committed to the cache. Blocking work (a pull runs it on a
//! blocking thread, layer by layer).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::config::{resolve_user, ImageConfig};
use super::erofs::ErofsWriter;
use super::layers::{self, Codec, LayerError, Totals};
use super::store::{self, CachedImage, ImageRecord, Store};
use super::tree::Tree;
use super::ImageError;

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

/// An image being built in the cache's `tmp/`: removed when dropped
/// unless [`commit`](Self::commit) moved it into place.
pub struct Pending {
    converter: Option<Converter>,
    path: Option<PathBuf>,
}

impl Pending {
    /// Starts an image in a fresh temporary file of `store`.
    pub fn start(store: &Store) -> Result<Pending, ImageError> {
        let (path, file) = store.temp_image()?;
        let converter = Converter::new(file).map_err(|e| cache_error(&path, e))?;
        Ok(Pending {
            converter: Some(converter),
            path: Some(path),
        })
    }

    /// Applies the next layer; see [`Converter::apply`].
    pub fn apply(&mut self, codec: Codec, raw: &mut dyn Read) -> Result<(), LayerError> {
        self.converter
            .as_mut()
            .expect("a pending image has its converter")
            .apply(codec, raw)
    }

    /// Finishes the image and names it `reference`: its `/etc/passwd` and
    /// `/etc/group` are read (an image whose `User` names nobody is refused
    /// now, not at every boot), the metadata written, the record made and
    /// the file moved into place.
    pub fn commit(
        mut self,
        store: &Store,
        digest: String,
        reference: &str,
        config: ImageConfig,
        layers: Vec<(String, u64)>,
    ) -> Result<CachedImage, ImageError> {
        let path = self.path.take().expect("a pending image has its file");
        let mut converter = self
            .converter
            .take()
            .expect("a pending image has its converter");
        let (passwd, group) = match converter.accounts() {
            Ok(found) => found,
            Err(e) => return Err(self.abandon(path, e)),
        };
        if let Some(user) = &config.user {
            if let Err(message) = resolve_user(user, &passwd, &group) {
                let _ = std::fs::remove_file(&path);
                return Err(ImageError::Unusable {
                    reference: reference.to_string(),
                    message,
                });
            }
        }
        let build_time = store::now();
        let size_bytes = match converter.finish(build_time) {
            Ok(size) => size,
            Err(e) => return Err(self.abandon(path, e)),
        };
        let record = ImageRecord {
            digest,
            reference: reference.to_string(),
            config,
            passwd,
            group,
            layers,
            size_bytes,
            pulled_at: build_time,
        };
        let committed = store.commit(&path, &record, reference);
        if committed.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        committed
    }

    fn abandon(&self, path: PathBuf, e: io::Error) -> ImageError {
        let _ = std::fs::remove_file(&path);
        cache_error(&path, e)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn cache_error(path: &std::path::Path, e: io::Error) -> ImageError {
    ImageError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
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
