//! The fake guest's files: in memory, under the same writable roots the
//! real agent enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use void_box_protocol::{DirEntry, ErrorKind, ErrorReply, FileKind, FileStat, WRITABLE_ROOTS};

use super::{lock, FakeGuest};

#[derive(Default)]
pub(super) struct Fs {
    pub files: BTreeMap<String, Vec<u8>>,
    pub dirs: BTreeSet<String>,
}

/// The guest's writable roots: the standard ones and its configuration's.
fn roots(guest: &FakeGuest) -> Vec<&str> {
    WRITABLE_ROOTS
        .iter()
        .copied()
        .chain(guest.config().file_roots.iter().map(String::as_str))
        .collect()
}

/// The path, normalised, when it stays under a writable root (the real
/// agent enforces the same with `openat2(RESOLVE_BENEATH)`).
pub(super) fn confine(guest: &FakeGuest, path: &str) -> std::result::Result<String, ErrorReply> {
    let roots = roots(guest);
    let escape = || {
        ErrorReply::new(
            ErrorKind::PathEscape,
            format!("{path} is outside {}", roots.join(", ")),
        )
    };
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(escape)?),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    let normal = format!("/{}", parts.join("/"));
    let inside = roots
        .iter()
        .any(|root| normal == *root || normal.starts_with(&format!("{root}/")));
    if path.starts_with('/') && inside {
        Ok(normal)
    } else {
        Err(escape())
    }
}

pub(super) fn add_parents(dirs: &mut BTreeSet<String>, path: &str) {
    let mut at = path;
    while let Some((parent, _)) = at.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        dirs.insert(parent.to_string());
        at = parent;
    }
}

fn stat_of(kind: FileKind, size: u64) -> FileStat {
    FileStat {
        kind,
        size,
        mode: if kind == FileKind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        mtime_unix_ns: 0,
    }
}

pub(super) fn stat(guest: &FakeGuest, path: &str) -> std::result::Result<FileStat, ErrorReply> {
    let fs = lock(&guest.inner.fs);
    if let Some(data) = fs.files.get(path) {
        Ok(stat_of(FileKind::File, data.len() as u64))
    } else if fs.dirs.contains(path) || roots(guest).contains(&path) {
        Ok(stat_of(FileKind::Dir, 0))
    } else {
        Err(ErrorReply::new(
            ErrorKind::NotFound,
            format!("{path}: no such file or directory"),
        ))
    }
}

pub(super) fn list(guest: &FakeGuest, dir: &str) -> std::result::Result<Vec<DirEntry>, ErrorReply> {
    if stat(guest, dir)?.kind != FileKind::Dir {
        return Err(ErrorReply::new(
            ErrorKind::Io,
            format!("{dir}: not a directory"),
        ));
    }
    let fs = lock(&guest.inner.fs);
    let prefix = format!("{dir}/");
    let child = |p: &str| {
        p.strip_prefix(&prefix)
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
    };
    let mut entries: Vec<DirEntry> = fs
        .files
        .iter()
        .filter_map(|(p, data)| {
            child(p).map(|name| DirEntry {
                name,
                stat: stat_of(FileKind::File, data.len() as u64),
            })
        })
        .chain(fs.dirs.iter().filter_map(|p| {
            child(p).map(|name| DirEntry {
                name,
                stat: stat_of(FileKind::Dir, 0),
            })
        }))
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Removes a file, or a directory with everything below it.
pub(super) fn remove(guest: &FakeGuest, path: &str) -> Result<(), ErrorReply> {
    if roots(guest).contains(&path) {
        return Err(ErrorReply::new(
            ErrorKind::InvalidRequest,
            format!("{path}: not a path below a writable root"),
        ));
    }
    let mut fs = lock(&guest.inner.fs);
    let below = format!("{path}/");
    let (files, dirs) = (fs.files.len(), fs.dirs.len());
    fs.files.retain(|p, _| p != path && !p.starts_with(&below));
    fs.dirs.retain(|p| p != path && !p.starts_with(&below));
    if (files, dirs) == (fs.files.len(), fs.dirs.len()) {
        return Err(ErrorReply::new(
            ErrorKind::NotFound,
            format!("{path}: No such file or directory"),
        ));
    }
    Ok(())
}

/// Moves a file (the double keeps directories implied by files).
pub(super) fn rename(guest: &FakeGuest, from: &str, to: &str) -> Result<(), ErrorReply> {
    let mut fs = lock(&guest.inner.fs);
    let data = fs.files.remove(from).ok_or_else(|| {
        ErrorReply::new(
            ErrorKind::NotFound,
            format!("{from}: No such file or directory"),
        )
    })?;
    fs.files.insert(to.to_string(), data);
    Ok(())
}
