//! Images from local tarballs, without a registry: `voidbox image import`.

use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::convert::{self, Pending};
use super::{parse_reference, CachedImage, ImageConfig, ImageError, Store};

/// Builds an image from local layer tarballs (plain, gzip or zstd, told by
/// their first bytes; a single rootfs tarball is one layer), with `config`
/// as its configuration, and names it `reference` in the cache. Its digest
/// is the sha256 of the layers' digests and the config, so importing the
/// same files again gives the same image.
pub fn import(
    store: &Store,
    reference: &str,
    layer_files: &[PathBuf],
    config: ImageConfig,
) -> Result<CachedImage, ImageError> {
    let name = parse_reference(reference)?.whole();
    let mut pending = Pending::start(store)?;
    let mut image_hash = Sha256::new();
    let mut layers = Vec::new();
    for path in layer_files {
        let layer_error = |message: String| ImageError::Layer {
            reference: name.clone(),
            layer: path.display().to_string(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| layer_error(e.to_string()))?;
        let mut head = [0u8; 4];
        let n = file
            .read(&mut head)
            .map_err(|e| layer_error(e.to_string()))?;
        let mut raw = HashingReader {
            inner: std::io::Cursor::new(head[..n].to_vec()).chain(file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        pending
            .apply(convert::sniff(&head[..n]), &mut raw)
            .map_err(|e| layer_error(e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(raw.hasher.finalize()));
        image_hash.update(digest.as_bytes());
        layers.push((digest, raw.bytes));
    }
    image_hash.update(serde_json::to_vec(&config).unwrap_or_default());
    let digest = format!("sha256:{}", hex::encode(image_hash.finalize()));
    pending.commit(store, digest, &name, config, layers)
}

/// Hashes and counts what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
