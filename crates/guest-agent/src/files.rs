//! File requests, confined to the guest's writable roots.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` relative to a root directory descriptor, so
//! neither `..` nor a symlink (absolute or relative) can lead outside the
//! root, whatever a guest process planted in it.

use std::collections::BinaryHeap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use tokio::sync::mpsc;
use void_box_protocol::flow::{RecvWindow, SendWindow};
use void_box_protocol::{
    DirEntry, ErrorKind, FileKind, FileStat, GuestMsg, HostMsg, CHUNK_LEN, WRITABLE_ROOTS,
};

use crate::reply::Reply;
use crate::rootfs::CommandRoot;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// A failed file request.
#[derive(Debug)]
pub struct FileError {
    kind: ErrorKind,
    message: String,
}

impl FileError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn io(path: &str, what: &str, e: impl Into<io::Error>) -> Self {
        let e: io::Error = e.into();
        let kind = match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => {
                return Self::new(
                    ErrorKind::PathEscape,
                    format!("{path}: resolves outside the writable roots"),
                )
            }
            Some(libc::ENOENT) => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        Self::new(kind, format!("{what} {path}: {e}"))
    }
}

/// Open descriptors of the writable roots (inside the command root), and
/// who owns what the file requests create there.
pub struct Roots {
    roots: Vec<(String, OwnedFd)>,
    owner: (u32, u32),
}

impl Roots {
    /// Creates (if needed) and opens the roots under `root`, the
    /// configuration's `extra` ones after the standard ones; files the host
    /// writes belong to `owner` (the command user), and so does an extra
    /// root that had to be made (a home directory).
    pub fn open(root: &CommandRoot, owner: (u32, u32), extra: &[String]) -> io::Result<Self> {
        let mut roots = Vec::new();
        let names = WRITABLE_ROOTS.iter().map(|n| (*n, false));
        for (name, made_for_owner) in names.chain(extra.iter().map(|n| (n.as_str(), true))) {
            let existed = std::fs::symlink_metadata(root.host_view(name)).is_ok();
            let dir = root.real_dir(name)?;
            if made_for_owner && !existed {
                std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1))?;
            }
            let fd = rustix::fs::open(
                &dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            roots.push((name.to_string(), fd));
        }
        Ok(Self { roots, owner })
    }

    /// Splits an absolute path into its root descriptor and the relative rest.
    fn split<'p>(&self, path: &'p str) -> Result<(&OwnedFd, &'p str), FileError> {
        let escape = || {
            FileError::new(
                ErrorKind::PathEscape,
                format!(
                    "{path}: not inside a writable root ({})",
                    self.roots
                        .iter()
                        .map(|(r, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        };
        for (root, fd) in &self.roots {
            if let Some(rest) = path.strip_prefix(root) {
                if rest.is_empty() {
                    return Ok((fd, "."));
                }
                if let Some(rest) = rest.strip_prefix('/') {
                    let rest = rest.trim_start_matches('/');
                    return Ok((fd, if rest.is_empty() { "." } else { rest }));
                }
            }
        }
        Err(escape())
    }

    fn open_at(&self, path: &str, flags: OFlags, mode: u32) -> Result<OwnedFd, FileError> {
        let (root, rest) = self.split(path)?;
        open_beneath(root, rest, flags, mode, path, "open")
    }

    /// Metadata of `path` (a final symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<FileStat, FileError> {
        let fd = self.open_at(path, OFlags::PATH | OFlags::NOFOLLOW, 0)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, "stat", e))?;
        Ok(file_stat(&st))
    }

    /// `mkdir -p`; new directories belong to the sandbox user.
    pub fn mkdir_all(&self, path: &str) -> Result<OwnedFd, FileError> {
        let (root, rest) = self.split(path)?;
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        let mut dir = open_beneath(root, ".", dir_flags, 0, path, "open")?;
        for component in Path::new(rest).components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::CurDir => continue,
                _ => {
                    return Err(FileError::new(
                        ErrorKind::PathEscape,
                        format!("{path}: `..` is not allowed"),
                    ))
                }
            };
            dir = match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    // Opened readable (fchown needs more than O_PATH), and
                    // used as the parent of the next component.
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
                    let created = open_beneath(&dir, name, flags, 0, path, "open")?;
                    chown_to(&created, self.owner);
                    created
                }
                Err(rustix::io::Errno::EXIST) => {
                    open_beneath(&dir, name, dir_flags, 0, path, "open")?
                }
                Err(e) => return Err(FileError::io(path, "mkdir", e)),
            };
        }
        Ok(dir)
    }

    /// One page of a directory's entries in name order: at most `limit`
    /// (and [`void_box_protocol::MAX_LIST_PAGE`]) of those whose names sort after `after`,
    /// and whether more follow. Only the page is held: the smallest names
    /// are kept in a bounded heap as the directory is read, so a directory
    /// of a million entries costs the agent one page of memory.
    ///
    /// Names that are not UTF-8 are compared as shown (lossily), so two
    /// such names that look alike may not both make it across a page
    /// boundary; every other name is listed exactly once.
    pub fn list(
        &self,
        path: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, bool), FileError> {
        let limit = void_box_protocol::list_page_len(limit);
        let fd = self.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| FileError::io(path, "list", e))?;
        // The limit + 1 smallest names: one more tells whether more follow.
        let mut page: BinaryHeap<(String, CString)> = BinaryHeap::with_capacity(limit + 2);
        for entry in dir {
            let entry = entry.map_err(|e| FileError::io(path, "list", e))?;
            let raw = entry.file_name();
            if raw == c"." || raw == c".." {
                continue;
            }
            let name = raw.to_string_lossy().into_owned();
            if after.is_some_and(|after| name.as_str() <= after) {
                continue;
            }
            page.push((name, raw.to_owned()));
            if page.len() > limit + 1 {
                page.pop();
            }
        }
        let mut names = page.into_sorted_vec();
        let more = names.len() > limit;
        names.truncate(limit);
        let mut entries = Vec::with_capacity(names.len());
        for (name, raw) in names {
            let st = match rustix::fs::statat(&fd, &raw, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed since it was read: not an entry any more.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(FileError::io(path, "stat", e)),
            };
            entries.push(DirEntry {
                name,
                stat: file_stat(&st),
            });
        }
        Ok((entries, more))
    }

    /// Removes `path`: a file, a symlink (never what it points to), or a
    /// directory with everything below it, each entry opened beneath the
    /// one above it, so nothing a guest process swaps in meanwhile leads
    /// out of the root.
    pub fn remove(&self, path: &str) -> Result<(), FileError> {
        let (dir, name) = self.parent_of(path)?;
        remove_at(&dir, name, path, 0)
    }

    /// Moves `from` to `to`, both below writable roots (on one file
    /// system: `/tmp` and `/workspace` are two).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FileError> {
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name).map_err(|e| match e {
            rustix::io::Errno::XDEV => FileError::new(
                ErrorKind::InvalidRequest,
                format!("{from} -> {to}: not on one file system"),
            ),
            e => FileError::io(from, "rename", e),
        })
    }

    /// The directory holding `path` and `path`'s last name; `path` must be
    /// below a writable root, not a root itself.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str), FileError> {
        let trimmed = path.trim_end_matches('/');
        let not_below = || {
            FileError::new(
                ErrorKind::InvalidRequest,
                format!("{path}: not a path below a writable root"),
            )
        };
        let (parent, name) = trimmed.rsplit_once('/').ok_or_else(not_below)?;
        let is_root = self.roots.iter().any(|(root, _)| root == trimmed);
        if name.is_empty() || name == "." || name == ".." || is_root {
            return Err(not_below());
        }
        let parent = if parent.is_empty() { "/" } else { parent };
        let dir = self.open_at(parent, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        Ok((dir, name))
    }

    /// Starts writing `path` (creating its parents): the data goes to a
    /// fresh file beside it, which replaces `path` only when complete. So
    /// nothing ever writes through whatever a guest process left at
    /// `path` (a FIFO, a device, a hard link to another file, a symlink),
    /// and a failed write leaves the old file as it was. An existing
    /// target that is not a file of its own is refused all the same.
    fn create(&self, path: &str, mode: u32) -> Result<PendingFile, FileError> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) if !name.is_empty() && name != "." && name != ".." => {
                (if parent.is_empty() { "/" } else { parent }, name)
            }
            _ => {
                return Err(FileError::new(
                    ErrorKind::InvalidRequest,
                    format!("{path}: not a file path"),
                ))
            }
        };
        let dir = self.mkdir_all(parent)?;
        match open_beneath(&dir, name, OFlags::PATH | OFlags::NOFOLLOW, 0, path, "open") {
            Ok(existing) => {
                let st =
                    rustix::fs::fstat(&existing).map_err(|e| FileError::io(path, "stat", e))?;
                only_regular(path, &st)?;
                if st.st_nlink > 1 {
                    return Err(FileError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "{path}: has {} hard links; refusing to replace it",
                            st.st_nlink
                        ),
                    ));
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        for _ in 0..16 {
            let temp = temp_name();
            match openat_beneath(&dir, temp.as_str(), flags, mode & 0o7777) {
                Ok(fd) => {
                    chown_to(&fd, self.owner);
                    return Ok(PendingFile {
                        dir,
                        temp,
                        name: name.to_string(),
                        file: Some(File::from(fd)),
                    });
                }
                // A name someone planted: take another.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(FileError::io(path, "create", e)),
            }
        }
        Err(FileError::new(
            ErrorKind::Io,
            format!("{path}: no free temporary name beside it"),
        ))
    }
}

/// How deep [`Roots::remove`] goes below the path it was given.
const MAX_REMOVE_DEPTH: usize = 128;

/// Removes `name` under `dir` (a directory with its contents).
fn remove_at<P: rustix::path::Arg + Copy>(
    dir: &OwnedFd,
    name: P,
    path: &str,
    depth: usize,
) -> Result<(), FileError> {
    use rustix::fs::AtFlags;
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) => {}
        Err(e) => return Err(FileError::io(path, "remove", e)),
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(FileError::new(
            ErrorKind::InvalidRequest,
            format!("{path}: more than {MAX_REMOVE_DEPTH} levels of directories"),
        ));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
    let sub = open_beneath(dir, name, flags, 0, path, "open")?;
    let entries = rustix::fs::Dir::read_from(&sub).map_err(|e| FileError::io(path, "list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(path, "list", e))?;
        let raw = entry.file_name();
        if raw == c"." || raw == c".." {
            continue;
        }
        remove_at(&sub, raw, path, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        .map_err(|e| FileError::io(path, "remove", e))
}

/// A file being written under a temporary name in its target's directory.
struct PendingFile {
    dir: OwnedFd,
    temp: String,
    name: String,
    /// `None` once renamed into place.
    file: Option<File>,
}

impl PendingFile {
    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("written before commit")
    }

    /// Gives the finished file its name, replacing what was there.
    fn commit(mut self, path: &str) -> Result<(), FileError> {
        self.file = None;
        rustix::fs::renameat(&self.dir, self.temp.as_str(), &self.dir, self.name.as_str())
            .map_err(|e| FileError::io(path, "rename into", e))?;
        self.temp.clear();
        Ok(())
    }
}

impl Drop for PendingFile {
    /// An unfinished file is removed; the target was never touched.
    fn drop(&mut self) {
        if !self.temp.is_empty() {
            let _ =
                rustix::fs::unlinkat(&self.dir, self.temp.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// A name for a file being written: hidden, short (whatever the target's
/// length), and unlikely to be taken.
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        ".voidbox-write-{}-{nanos:09}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Refuses anything but a regular file (a FIFO, a device, a socket).
fn only_regular(path: &str, st: &rustix::fs::Stat) -> Result<(), FileError> {
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::RegularFile => Ok(()),
        other => Err(FileError::new(
            ErrorKind::InvalidRequest,
            format!("{path}: not a regular file ({other:?})"),
        )),
    }
}

/// Opens `name` under `dir` without leaving it: the one place that applies
/// the confinement flags. `path` and `what` only word the error.
fn open_beneath<P: rustix::path::Arg>(
    dir: impl AsFd,
    name: P,
    flags: OFlags,
    mode: u32,
    path: &str,
    what: &str,
) -> Result<OwnedFd, FileError> {
    openat_beneath(dir, name, flags, mode).map_err(|e| FileError::io(path, what, e))
}

/// [`open_beneath`] with the bare errno.
fn openat_beneath<P: rustix::path::Arg>(
    dir: impl AsFd,
    name: P,
    flags: OFlags,
    mode: u32,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
        RESOLVE,
    )
}

fn chown_to(fd: &OwnedFd, (uid, gid): (u32, u32)) {
    // Best effort: the command user should own what the host puts in its
    // roots, but a failure here must not fail the write.
    let _ = rustix::fs::fchown(
        fd.as_fd(),
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
}

fn file_stat(st: &rustix::fs::Stat) -> FileStat {
    let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let kind = match file_type {
        rustix::fs::FileType::RegularFile => FileKind::File,
        rustix::fs::FileType::Directory => FileKind::Dir,
        rustix::fs::FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    };
    FileStat {
        kind,
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_unix_ns: unix_ns(st.st_mtime, st.st_mtime_nsec as i64),
    }
}

/// Nanoseconds since the epoch, saturating: anyone in the guest may set a
/// file's time to year 300 million (`touch -d @9e15`).
fn unix_ns(secs: i64, nanos: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Sends a one-message result.
pub async fn send_result(reply: &Reply, result: Result<GuestMsg, FileError>) {
    match result {
        Ok(msg) => reply.send(msg).await,
        Err(e) => reply.error(e.kind, e.message).await,
    };
}

/// Receives a file in chunks, crediting the host as each chunk is written;
/// the file takes its name when the last chunk is in. File system calls run
/// with [`blocking`], so a slow disk never stalls the other requests.
pub async fn write(
    roots: &Roots,
    path: &str,
    mode: u32,
    mut rx: mpsc::UnboundedReceiver<HostMsg>,
    reply: Reply,
) {
    let mut file = match blocking(|| roots.create(path, mode)) {
        Ok(f) => f,
        Err(e) => return send_result(&reply, Err(e)).await,
    };
    let mut window = RecvWindow::new();
    let mut written: u64 = 0;
    while let Some(msg) = rx.recv().await {
        match msg {
            HostMsg::FileChunk(data) => {
                if let Err(e) = window.on_data(data.len()) {
                    reply
                        .error(ErrorKind::ProtocolViolation, e.to_string())
                        .await;
                    return;
                }
                if let Err(e) = blocking(|| file.file().write_all(&data)) {
                    let e = FileError::io(path, "write", e);
                    reply.error(e.kind, e.message).await;
                    return;
                }
                written += data.len() as u64;
                if let Some(grant) = window.on_consumed(data.len()) {
                    reply.send(GuestMsg::Credit(grant)).await;
                }
            }
            HostMsg::FileEnd => {
                let result =
                    blocking(|| file.commit(path)).map(|()| GuestMsg::Written { bytes: written });
                return send_result(&reply, result).await;
            }
            // The host gave up: the half-written file goes, the target stays.
            HostMsg::Cancel => return,
            other => {
                reply
                    .error(
                        ErrorKind::InvalidRequest,
                        format!("unexpected {other:?} during a file write"),
                    )
                    .await;
                return;
            }
        }
    }
}

/// Runs file system calls on this worker thread after handing its other
/// tasks to another one, so they go on while the calls block.
pub fn blocking<T>(calls: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(calls)
}

/// Streams a file to the host, waiting for credit between chunks.
pub async fn read(
    roots: &Roots,
    path: &str,
    mut rx: mpsc::UnboundedReceiver<HostMsg>,
    reply: Reply,
) {
    // Non-blocking, so a FIFO opens at once and is refused, not waited on.
    let opened = blocking(|| {
        roots
            .open_at(
                path,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                0,
            )
            .and_then(|fd| {
                let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, "stat", e))?;
                only_regular(path, &st)?;
                Ok(File::from(fd))
            })
    });
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => return send_result(&reply, Err(e)).await,
    };
    let window = SendWindow::new();
    let credit_window = window.clone();
    // Credit arrives while this task waits for it.
    let credits = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                HostMsg::Credit(n) if credit_window.grant(n).is_ok() => {}
                // Broken credit, or the host gave up: stop sending.
                HostMsg::Credit(_) | HostMsg::Cancel => break,
                _ => {}
            }
        }
        credit_window.close();
    });
    let mut size: u64 = 0;
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        let n = match blocking(|| file.read(&mut buf)) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let e = FileError::io(path, "read", e);
                reply.error(e.kind, e.message).await;
                credits.abort();
                return;
            }
        };
        if window.reserve(n).await.is_err()
            || !reply.send(GuestMsg::FileChunk(buf[..n].to_vec())).await
        {
            credits.abort();
            return;
        }
        size += n as u64;
    }
    reply.send(GuestMsg::FileEnd { size }).await;
    credits.abort();
}

#[cfg(test)]
mod tests {
    use super::unix_ns;

    #[test]
    fn far_future_and_past_times_saturate() {
        assert_eq!(unix_ns(1, 5), 1_000_000_005);
        assert_eq!(unix_ns(9_000_000_000_000_000, 0), i64::MAX);
        assert_eq!(unix_ns(i64::MIN, 0), i64::MIN);
    }
}
