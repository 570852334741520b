//! Message types carried in frames.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// One unit on the wire: a message tagged with the stream (request) it belongs to.
///
/// The host picks a fresh `id` for each request; every message about that
/// request, in either direction, carries the same `id`. Id 0 is reserved for
/// connection-level messages (handshake, ping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame<M> {
    /// Stream (request) id.
    pub id: u32,
    /// The message.
    pub msg: M,
}

impl<M> Frame<M> {
    /// Builds a frame.
    pub fn new(id: u32, msg: M) -> Self {
        Self { id, msg }
    }
}

/// Messages the host sends to the guest agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMsg {
    /// The answer to [`GuestMsg::Challenge`], the host's first message.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        version: u16,
        /// The host's fresh nonce.
        nonce: crate::auth::Nonce,
        /// [`crate::auth::proof`] by the host over both nonces.
        proof: crate::auth::Proof,
        /// Host wall-clock time, used to set the guest clock.
        unix_time_ns: u64,
    },
    /// Liveness probe; answered with [`GuestMsg::Pong`].
    Ping,
    /// Start a process.
    Exec(ExecRequest),
    /// Bytes for the process's stdin (needs credit).
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the process's stdin.
    StdinEof,
    /// Kill the request's process group.
    Cancel,
    /// Resize the request's PTY.
    Resize(PtySize),
    /// The host consumed this many bytes of the stream; the guest may send more.
    Credit(u32),
    /// Open a file for writing (created or truncated, parents created).
    WriteFile {
        /// Absolute guest path inside a writable root.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Next piece of the file being written (needs credit).
    FileChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// All of the file was sent.
    FileEnd,
    /// Stream a file's contents back.
    ReadFile {
        /// Absolute guest path inside a writable root.
        path: String,
    },
    /// Metadata of a path.
    Stat {
        /// Absolute guest path inside a writable root.
        path: String,
    },
    /// Create a directory and its parents.
    Mkdir {
        /// Absolute guest path inside a writable root.
        path: String,
    },
    /// One page of a directory's entries, sorted by name.
    List {
        /// Absolute guest path inside a writable root.
        path: String,
        /// Only entries whose names sort after this one (the last name of
        /// the previous page); `None`: from the start.
        after: Option<String>,
        /// Most entries in the page; the guest answers at most
        /// [`crate::MAX_LIST_PAGE`].
        limit: u32,
    },
    /// Remove a file, a symlink (not its target) or a directory with
    /// everything in it; answered with [`GuestMsg::Done`].
    Remove {
        /// Absolute guest path inside a writable root (not a root itself).
        path: String,
    },
    /// Move `from` to `to` (replacing a file there); answered with
    /// [`GuestMsg::Done`].
    Rename {
        /// Absolute guest path inside a writable root.
        from: String,
        /// Absolute guest path inside a writable root; its directory exists.
        to: String,
    },
    /// Ask for a resource usage snapshot.
    Telemetry,
    /// Kill every process and power the VM off.
    Shutdown,
    /// The host is about to save the VM: answered with [`GuestMsg::Done`],
    /// after which the agent sends nothing until the next message, which
    /// must be [`HostMsg::Thaw`] or [`HostMsg::Restored`].
    Quiesce,
    /// The same VM goes on (it was saved, or the save failed): the session
    /// continues where it was.
    Thaw,
    /// This VM is a copy restored from a saved one: it takes a fresh
    /// identity, ends the session (the requests of the saved VM's session
    /// end with it) and opens a new one with a handshake under the new
    /// secret; the old secret is refused from then on.
    Restored(Box<Restore>),
}

/// What a restored VM must not share with the VM it was saved from, nor
/// with its other copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    /// The new configuration: its secret, hostname, environment, allowed
    /// commands, limits and edge CA replace the saved ones. Its root, user,
    /// mounts and working directory must be the saved VM's.
    pub config: GuestConfig,
    /// Host wall-clock time, to set the guest clock.
    pub unix_time_ns: u64,
    /// Fresh randomness the guest kernel's generator is reseeded with.
    pub entropy: [u8; 32],
}

/// Messages the guest agent sends to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestMsg {
    /// The first message on every connection: the guest's nonce.
    Challenge {
        /// The agent's protocol version.
        version: u16,
        /// Fresh random bytes the host's proof must cover.
        nonce: crate::auth::Nonce,
    },
    /// The handshake succeeded.
    HelloOk {
        /// The agent's protocol version.
        version: u16,
        /// The agent's name and version, for diagnostics.
        agent: String,
        /// [`crate::auth::proof`] by the guest over both nonces.
        proof: crate::auth::Proof,
    },
    /// Answer to [`HostMsg::Ping`].
    Pong,
    /// The process started.
    Started {
        /// Guest pid (also its process group id).
        pid: u32,
    },
    /// Bytes the process wrote to stdout (or to its PTY).
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytes the process wrote to stderr.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process ended; this is the last message of an exec stream.
    Exited(ExitStatus),
    /// The guest consumed this many bytes of stdin or file data; the host may send more.
    Credit(u32),
    /// Next piece of a file being read.
    FileChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The file being read is complete.
    FileEnd {
        /// Total bytes sent.
        size: u64,
    },
    /// A file write finished.
    Written {
        /// Total bytes written.
        bytes: u64,
    },
    /// The request succeeded and has no other result.
    Done,
    /// Result of [`HostMsg::Stat`].
    Stat(FileStat),
    /// Result of [`HostMsg::List`]: a page of entries.
    Listing {
        /// Entries in name order.
        entries: Vec<DirEntry>,
        /// Whether entries follow the last of this page.
        more: bool,
    },
    /// Result of [`HostMsg::Telemetry`].
    Telemetry(TelemetrySnapshot),
    /// The request failed; this is the last message of its stream.
    Error(ErrorReply),
}

/// A request to run a program in the guest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program name (looked up in `PATH`) or absolute path.
    pub program: String,
    /// Arguments, without the program name.
    pub args: Vec<String>,
    /// Extra environment, applied over the sandbox environment.
    pub env: Vec<(String, String)>,
    /// Working directory; defaults to `/workspace`.
    pub cwd: Option<String>,
    /// Whether stdin is streamed from the host (otherwise `/dev/null`).
    pub stdin: bool,
    /// Kill the process group after this long.
    pub timeout_ms: Option<u64>,
    /// Run on a pseudo-terminal of this size.
    pub pty: Option<PtySize>,
    /// Overrides of the sandbox's resource limits.
    pub limits: ResourceLimits,
    /// Run as this user instead of the sandbox's (resolved by the host
    /// from the root's `/etc/passwd`).
    pub user: Option<GuestUser>,
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Resource limits applied to processes; `None` leaves the other layer's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// `RLIMIT_NOFILE`: open files.
    pub nofile: Option<u64>,
    /// `RLIMIT_NPROC`: processes of the sandbox user.
    pub nproc: Option<u64>,
    /// `RLIMIT_FSIZE`: largest file a process may write, in bytes.
    pub fsize_bytes: Option<u64>,
    /// `RLIMIT_CPU`: CPU seconds.
    pub cpu_secs: Option<u64>,
}

impl ResourceLimits {
    /// `self` with every unset field taken from `base`.
    pub fn or(self, base: ResourceLimits) -> ResourceLimits {
        ResourceLimits {
            nofile: self.nofile.or(base.nofile),
            nproc: self.nproc.or(base.nproc),
            fsize_bytes: self.fsize_bytes.or(base.fsize_bytes),
            cpu_secs: self.cpu_secs.or(base.cpu_secs),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// The guest killed it because its timeout passed.
    pub timed_out: bool,
    /// The guest killed it because the host cancelled it.
    pub cancelled: bool,
}

impl ExitStatus {
    /// True for a normal exit with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    /// How the process ended, as a sentence's predicate: `exited with code
    /// 3`, `was killed by signal 9`, `timed out`, `was cancelled`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            _ if self.timed_out => f.write_str("timed out"),
            _ if self.cancelled => f.write_str("was cancelled"),
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => f.write_str("ended without a status"),
        }
    }
}

/// Kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// Metadata of a guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Entry kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_unix_ns: i64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// Its metadata (not following symlinks).
    pub stat: FileStat,
}

/// Resource usage of the guest at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySnapshot {
    /// Time since the guest kernel booted.
    pub uptime_ms: u64,
    /// Online CPUs.
    pub cpu_count: u32,
    /// Cumulative CPU time in user mode, in clock ticks (USER_HZ).
    pub cpu_user_ticks: u64,
    /// Cumulative CPU time in kernel mode, in clock ticks.
    pub cpu_system_ticks: u64,
    /// Cumulative idle CPU time, in clock ticks.
    pub cpu_idle_ticks: u64,
    /// Total memory.
    pub mem_total_bytes: u64,
    /// Memory available to new work.
    pub mem_available_bytes: u64,
    /// Number of processes.
    pub process_count: u32,
    /// One-minute load average.
    pub load_avg_1m: f32,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No successful handshake yet, or a wrong secret.
    Unauthenticated,
    /// Protocol versions differ.
    VersionMismatch,
    /// The command is not on the sandbox's allowlist.
    NotAllowed,
    /// The program or path does not exist.
    NotFound,
    /// The path leaves the guest's writable roots.
    PathEscape,
    /// The request is malformed or does not fit its stream.
    InvalidRequest,
    /// An I/O error in the guest.
    Io,
    /// The peer broke the protocol (e.g. sent data beyond its credit).
    ProtocolViolation,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Category.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

/// Error messages are cut to this many bytes: one that echoes a path or a
/// command near the frame limit must not make its reply unsendable.
pub const MAX_ERROR_MESSAGE: usize = 4096;

impl ErrorReply {
    /// Builds an error reply; a message over [`MAX_ERROR_MESSAGE`] bytes is
    /// cut (on a character boundary) and marked.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        Self { kind, message }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// Per-sandbox configuration the host hands to the guest agent at boot.
///
/// It travels in a small cpio archive appended to the initramfs, readable
/// only by root, and the agent deletes it before serving requests, so the
/// secret is never visible to the unprivileged processes it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// The per-sandbox secret both sides prove in the handshake.
    pub secret: Secret,
    /// Guest hostname.
    pub hostname: String,
    /// Environment of every process.
    pub env: Vec<(String, String)>,
    /// Programs that may be executed (basename match); `*` allows all.
    pub allowed_commands: Vec<String>,
    /// Default resource limits of every process.
    pub limits: ResourceLimits,
    /// The root filesystem commands run in: an image on a read-only disk
    /// under a writable overlay. `None`: the initramfs itself.
    pub rootfs: Option<RootFs>,
    /// Filesystems mounted for commands (inside `rootfs` when there is
    /// one), in order.
    pub mounts: Vec<GuestMount>,
    /// Who commands run as; `None`: the unprivileged sandbox user (1000).
    pub user: Option<GuestUser>,
    /// Working directory of commands that name none; `None`: `/workspace`.
    pub workdir: Option<String>,
    /// The DNS server `/etc/resolv.conf` names, when the guest has a
    /// network (its interface is configured by the kernel's `ip=`).
    pub nameserver: Option<String>,
    /// The sandbox's edge CA (PEM), which commands must trust: the host
    /// ends TLS to secrets' hosts with certificates it signs.
    #[serde(default)]
    pub edge_ca: Option<String>,
    /// Directories the file requests reach beside [`crate::WRITABLE_ROOTS`]
    /// (absolute, normal paths); made for the command user when missing.
    #[serde(default)]
    pub file_roots: Vec<String>,
}

/// An image the guest mounts as the root of every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Serial of the read-only virtio-blk disk holding the erofs image.
    pub disk: String,
    /// Size limit of the writable overlay (a tmpfs) in MiB; `None`: the
    /// tmpfs default, half the guest's RAM.
    pub overlay_mb: Option<u32>,
}

/// A filesystem mounted at a path in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    /// Where it comes from.
    pub source: MountSource,
    /// Absolute guest path.
    pub target: String,
    /// Mounted read-only (the host enforces it too).
    pub readonly: bool,
    /// Hand the mount's root to the command user (volumes, whose
    /// ownership the host keeps in xattrs for the guest).
    pub own_root: bool,
}

/// The source of a [`GuestMount`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host directory shared over virtio-9p, by its mount tag.
    Share {
        /// The 9p mount tag.
        tag: String,
    },
    /// An erofs image on a read-only virtio-blk disk, by its serial.
    Disk {
        /// The disk's serial.
        serial: String,
    },
}

/// A numeric identity for commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

impl GuestConfig {
    /// Encodes the configuration for the initramfs.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("GuestConfig always serializes")
    }

    /// Decodes a configuration written by [`GuestConfig::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_error_message_is_cut_to_a_sendable_size() {
        let long = format!("/workspace/{}", "é".repeat(600_000));
        let reply = ErrorReply::new(ErrorKind::NotFound, long);
        assert!(reply.message.len() <= MAX_ERROR_MESSAGE);
        assert!(reply.message.ends_with("..."));
        let frame = crate::Frame::new(7, GuestMsg::Error(reply));
        crate::codec::encode_frame(&frame).expect("fits in a frame");
        assert_eq!(
            ErrorReply::new(ErrorKind::NotFound, "short").message,
            "short"
        );
    }
}
