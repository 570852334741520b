//! Applying an image's layers, in order, to one tree: OCI whiteouts
//! (`.wh.NAME`) and opaque directories (`.wh..wh..opq`), ownership, modes,
//! xattrs, hard links, symlinks and device nodes as the tar headers say.
//!
//! Layers come from a registry, so they are hostile input: paths that
//! climb out (`..`), hard links to nothing or to directories, absurd
//! sizes and entry counts are errors that name the layer and the entry;
//! nothing is ever written to the host's filesystem (contents go into the
//! image file being built).

use std::io::Read;

use super::erofs::{encode_dev, ibody_len, ErofsWriter};
use super::tree::{Body, Meta, Node, Tree};

/// Most entries an image may have, in all layers.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most bytes of contents an image may have, in all layers.
pub const MAX_CONTENT_BYTES: u64 = 64 << 30;
/// Longest symlink target.
const MAX_SYMLINK: usize = 4095;
/// Longest path.
const MAX_PATH: usize = 4096;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The entry is not acceptable.
    #[error("entry `{path}`: {message}")]
    Entry {
        /// The entry's path as the tar gives it.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The image is larger than the limits.
    #[error("{0}")]
    Limit(String),
    /// Reading the stream or writing the image failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Running totals across layers, checked against the limits.
#[derive(Debug, Default)]
pub struct Totals {
    /// Entries applied.
    pub entries: usize,
    /// Bytes of contents.
    pub content_bytes: u64,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// A plain tar.
    Tar,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Codec {
    /// The codec of a layer media type (OCI and Docker names,
    /// non-distributable ones included); `None`: not a layer we read.
    pub fn of(media_type: &str) -> Option<Codec> {
        let layer = media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.");
        if !layer {
            return None;
        }
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Codec::Gzip)
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
            Some(Codec::Zstd)
        } else if media_type.ends_with(".tar") {
            Some(Codec::Tar)
        } else {
            None
        }
    }
}

/// Decompresses and applies one layer blob, then reads the raw blob to
/// its end, so that a verifying reader checks its digest there: an error
/// (a mismatch included) means the image must not be committed.
pub fn apply_blob(
    tree: &mut Tree,
    writer: &mut ErofsWriter,
    raw: &mut dyn Read,
    codec: Codec,
    layer: usize,
    totals: &mut Totals,
) -> Result<(), LayerError> {
    let applied = match codec {
        Codec::Tar => apply(tree, writer, &mut *raw, layer, totals),
        Codec::Gzip => apply(
            tree,
            writer,
            flate2::read::MultiGzDecoder::new(&mut *raw),
            layer,
            totals,
        ),
        Codec::Zstd => match ruzstd::decoding::StreamingDecoder::new(&mut *raw) {
            Ok(decoder) => apply(tree, writer, decoder, layer, totals),
            Err(e) => Err(LayerError::Io(std::io::Error::other(format!("zstd: {e}")))),
        },
    };
    if let Err(LayerError::Limit(_)) = applied {
        return applied;
    }
    // A digest mismatch is the more useful error, whatever else failed
    // (a tampered blob usually breaks the decompressor first).
    std::io::copy(raw, &mut std::io::sink())?;
    applied
}

/// Applies one uncompressed layer (a tar stream) as layer number `layer`
/// (1-based; a higher number is applied later).
pub fn apply(
    tree: &mut Tree,
    writer: &mut ErofsWriter,
    stream: impl Read,
    layer: usize,
    totals: &mut Totals,
) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries()? {
        let mut entry = entry?;
        totals.entries += 1;
        if totals.entries > MAX_ENTRIES {
            return Err(LayerError::Limit(format!(
                "the image has more than {MAX_ENTRIES} entries"
            )));
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let bad = |message: &str| LayerError::Entry {
            path: shown.clone(),
            message: message.into(),
        };
        let parts = split_path(&raw_path).map_err(&bad)?;
        let Some((name, dirs)) = parts.split_last() else {
            // The root itself: only its metadata can change.
            if entry.header().entry_type().is_dir() {
                tree.node_mut(super::tree::ROOT).meta = meta(&mut entry)?;
            }
            continue;
        };
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let parent = tree.make_dirs(dirs, layer).map_err(&bad)?;
            if hidden == b".wh..opq" {
                tree.make_opaque(parent, layer);
            } else if !hidden.is_empty() {
                tree.unlink(parent, hidden);
            }
            continue;
        }
        let kind = entry.header().entry_type();
        let meta = meta(&mut entry)?;
        let body = if kind.is_dir() {
            let parent = tree.make_dirs(dirs, layer).map_err(&bad)?;
            match tree.entries(parent).and_then(|e| e.get(*name)).copied() {
                // A directory again in a later layer changes its metadata
                // and keeps its entries.
                Some(existing) if tree.entries(existing).is_some() => {
                    tree.node_mut(existing).meta = meta;
                    continue;
                }
                _ => Body::Dir(Default::default()),
            }
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad("a hard link without a target"))?
                .into_owned();
            let target_parts = split_path(&target).map_err(&bad)?;
            let node = tree
                .lookup(&target_parts)
                .filter(|id| tree.entries(*id).is_none())
                .ok_or_else(|| bad("a hard link to a missing file or to a directory"))?;
            let parent = tree.make_dirs(dirs, layer).map_err(&bad)?;
            tree.link(parent, name, node);
            continue;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad("a symlink without a target"))?
                .into_owned();
            if target.is_empty() || target.len() > MAX_SYMLINK {
                return Err(bad("a symlink target must be 1-4095 bytes"));
            }
            Body::Symlink(target)
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            totals.content_bytes += size;
            if totals.content_bytes > MAX_CONTENT_BYTES {
                return Err(LayerError::Limit(format!(
                    "the image's contents exceed {} GiB",
                    MAX_CONTENT_BYTES >> 30
                )));
            }
            let data = writer
                .write_contents(&mut entry, size, ibody_len(&meta))
                .map_err(|e| bad(&format!("reading its contents: {e}")))?;
            Body::File(data)
        } else if kind.is_character_special() || kind.is_block_special() {
            let major = entry.header().device_major()?.unwrap_or(0);
            let minor = entry.header().device_minor()?.unwrap_or(0);
            let rdev = encode_dev(major, minor);
            if kind.is_character_special() {
                Body::Char(rdev)
            } else {
                Body::Block(rdev)
            }
        } else if kind.is_fifo() {
            Body::Fifo
        } else {
            // Global pax headers and the like carry no file.
            continue;
        };
        let parent = tree.make_dirs(dirs, layer).map_err(&bad)?;
        let node = tree.add(Node { meta, body, layer });
        tree.link(parent, name, node);
    }
    Ok(())
}

/// A tar path as components: `./a//b/` → `[a, b]`. Refuses `..`, NUL and
/// over-long paths; a leading `/` is dropped (layers are relative to the
/// root either way).
fn split_path(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if path.len() > MAX_PATH {
        return Err("the path is longer than 4096 bytes");
    }
    if path.contains(&0) {
        return Err("the path holds a NUL byte");
    }
    let mut parts = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("the path climbs out with `..`"),
            p if p.len() > 255 => return Err("a path component is longer than 255 bytes"),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

/// The entry's metadata: pax `uid`/`gid`/`mtime` over the header's, and
/// its xattrs (`SCHILY.xattr.*`).
fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        perm: header.mode()? & 0o7777,
        // An empty or garbled owner is root, as tar itself reads it.
        uid: header
            .uid()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        gid: header
            .gid()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        mtime: header.mtime().unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let number = || {
                std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|v| v.split('.').next())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match key {
                b"uid" => {
                    meta.uid = number()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(meta.uid)
                }
                b"gid" => {
                    meta.gid = number()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(meta.gid)
                }
                b"mtime" => meta.mtime = number().unwrap_or(meta.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        meta.xattrs
                            .push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// A regular file's contents, read back from the image (`/etc/passwd`).
pub fn read_file(
    tree: &Tree,
    writer: &mut ErofsWriter,
    path: &str,
    max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let parts: Vec<&[u8]> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::as_bytes)
        .collect();
    let Some(id) = tree.lookup(&parts) else {
        return Ok(None);
    };
    match &tree.node(id).body {
        Body::File(data) => writer.read_contents(data, max).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_escapes_refused() {
        assert_eq!(split_path(b"./a//b/").unwrap(), [b"a".as_slice(), b"b"]);
        assert_eq!(
            split_path(b"/etc/passwd").unwrap(),
            [b"etc".as_slice(), b"passwd"]
        );
        assert!(split_path(b"a/../../etc").is_err());
        assert!(split_path(b"a\0b").is_err());
        assert!(split_path(b".").unwrap().is_empty());
    }

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h
    }

    fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn whiteouts_opaque_dirs_and_links_apply_in_order() {
        let mut tree = Tree::default();
        let mut writer = ErofsWriter::new(tempfile::tempfile().unwrap()).unwrap();
        let mut totals = Totals::default();
        let one = layer(|b| {
            add_file(b, "a/keep", b"k");
            add_file(b, "a/gone", b"g");
            add_file(b, "d/old", b"o");
            let mut h = header(tar::EntryType::Link);
            b.append_link(&mut h, "a/alias", "a/keep").unwrap();
        });
        apply(&mut tree, &mut writer, &one[..], 1, &mut totals).unwrap();
        let two = layer(|b| {
            add_file(b, "a/.wh.gone", b"");
            add_file(b, "d/new", b"n");
            add_file(b, "d/.wh..wh..opq", b"");
        });
        apply(&mut tree, &mut writer, &two[..], 2, &mut totals).unwrap();
        let names = |dir: &str| -> Vec<String> {
            let id = tree.lookup(&[dir.as_bytes()]).unwrap();
            tree.entries(id)
                .unwrap()
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(names("a"), ["alias", "keep"]);
        assert_eq!(names("d"), ["new"], "opaque hides the lower layer only");
        assert_eq!(
            tree.lookup(&[b"a", b"alias"]),
            tree.lookup(&[b"a", b"keep"]),
            "a hard link shares the node"
        );
        assert_eq!(
            read_file(&tree, &mut writer, "/d/new", 10)
                .unwrap()
                .unwrap(),
            b"n"
        );
        assert_eq!(totals.entries, 7);
    }

    #[test]
    fn a_later_layer_writes_through_a_symlinked_directory() {
        // Debian's merged /usr: `lib` is a link to `usr/lib`.
        let mut tree = Tree::default();
        let mut writer = ErofsWriter::new(tempfile::tempfile().unwrap()).unwrap();
        let mut totals = Totals::default();
        let one = layer(|b| {
            add_file(b, "usr/lib/a", b"a");
            let mut h = header(tar::EntryType::Symlink);
            b.append_link(&mut h, "lib", "usr/lib").unwrap();
        });
        apply(&mut tree, &mut writer, &one[..], 1, &mut totals).unwrap();
        let two = layer(|b| add_file(b, "lib/b", b"b"));
        apply(&mut tree, &mut writer, &two[..], 2, &mut totals).unwrap();
        let usr_lib = tree.lookup(&[b"usr", b"lib"]).unwrap();
        let names: Vec<&[u8]> = tree
            .entries(usr_lib)
            .unwrap()
            .keys()
            .map(Vec::as_slice)
            .collect();
        assert_eq!(names, [b"a".as_slice(), b"b"]);
        let lib = tree.entries(super::super::tree::ROOT).unwrap()[b"lib".as_slice()];
        assert!(
            matches!(tree.node(lib).body, Body::Symlink(_)),
            "the link stays a link"
        );
    }

    #[test]
    fn setuid_and_ownership_are_kept() {
        let mut tree = Tree::default();
        let mut writer = ErofsWriter::new(tempfile::tempfile().unwrap()).unwrap();
        let one = layer(|b| {
            let mut h = header(tar::EntryType::Regular);
            h.set_mode(0o4755);
            h.set_uid(70000);
            h.set_size(1);
            b.append_data(&mut h, "bin/su", &b"x"[..]).unwrap();
        });
        apply(&mut tree, &mut writer, &one[..], 1, &mut Totals::default()).unwrap();
        let meta = &tree.node(tree.lookup(&[b"bin", b"su"]).unwrap()).meta;
        assert_eq!((meta.perm, meta.uid), (0o4755, 70000));
    }

    #[test]
    fn hostile_entries_are_named_errors() {
        let mut tree = Tree::default();
        let mut writer = ErofsWriter::new(tempfile::tempfile().unwrap()).unwrap();
        let mut totals = Totals::default();
        let link_to_nothing = layer(|b| {
            let mut h = header(tar::EntryType::Link);
            b.append_link(&mut h, "x", "missing").unwrap();
        });
        let err = apply(&mut tree, &mut writer, &link_to_nothing[..], 1, &mut totals).unwrap_err();
        assert!(
            err.to_string()
                .contains("entry `x`: a hard link to a missing"),
            "{err}"
        );
        // tar::Builder refuses `..`, so write the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut climbing = h.as_bytes().to_vec();
        climbing.extend_from_slice(&[0u8; 1024]);
        let err = apply(&mut tree, &mut writer, &climbing[..], 1, &mut totals).unwrap_err();
        assert!(err.to_string().contains("climbs out"), "{err}");
    }
}
