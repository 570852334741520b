//! Errors of the host library.

use void_box_protocol::{ErrorKind, ProtocolError};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong driving a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox configuration cannot boot.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The guest image is missing or unusable.
    #[error("guest image: {0}")]
    Image(String),
    /// The VM could not be started (QEMU failed to launch).
    #[error("cannot start the VM: {0}")]
    Launch(String),
    /// The VM started but the guest agent never answered.
    #[error("sandbox boot failed: {reason}\n--- guest console (tail) ---\n{console_tail}")]
    Boot {
        /// What went wrong.
        reason: String,
        /// The last lines the guest printed on its serial console.
        console_tail: String,
    },
    /// The guest agent refused or failed a request.
    #[error("guest: {kind:?}: {message}")]
    Guest {
        /// Category reported by the guest.
        kind: ErrorKind,
        /// The guest's explanation.
        message: String,
    },
    /// The connection to the guest is gone (VM exited, guest hung, transport closed).
    #[error("sandbox unavailable: {0}")]
    Disconnected(String),
    /// A skill failed: its MCP server would not start, broke the protocol,
    /// or went away.
    #[error("skill `{skill}`: {message}")]
    Skill {
        /// The skill's name.
        skill: String,
        /// What went wrong, with the server's stderr tail when it has one.
        message: String,
    },
    /// Something is larger than the host accepts to hold.
    #[error("{what} is {size} bytes; at most {max} are accepted")]
    TooLarge {
        /// What (a guest file, a command's output).
        what: String,
        /// Its size, or what had arrived when it was refused.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A snapshot cannot be made, found or used.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The guest broke the wire protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// A host-side I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// The guest's error category, when the guest refused or failed the request.
    pub fn guest_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Guest { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// A sandbox configuration that cannot boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox `{field}`: {message}")]
pub struct ConfigError {
    /// The field at fault, as serde names it (`memory_mb`, `env`, ...).
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }
}

/// An error and its sources on one line (reqwest's own message is terse,
/// and keeps a redirect policy's reason in the source).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Why a snapshot cannot be made, found or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The name is not a snapshot name.
    #[error("{0}")]
    Name(String),
    /// No snapshot has this name.
    #[error("no snapshot named `{0}` (voidbox snapshot ls lists them)")]
    Missing(String),
    /// A snapshot of this name exists.
    #[error("a snapshot named `{0}` exists (voidbox snapshot rm {0} first)")]
    Exists(String),
    /// The snapshot no longer matches what a restore would use.
    #[error("snapshot `{name}` cannot be used: {why}; make it again (voidbox snapshot create {name} ...)")]
    Stale {
        /// The snapshot.
        name: String,
        /// What changed.
        why: String,
    },
    /// The snapshot's files are damaged.
    #[error("snapshot `{name}` is damaged: {why}")]
    Damaged {
        /// The snapshot.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The sandbox cannot be saved as it is.
    #[error("{0}")]
    Unsupported(String),
    /// A file of the store failed.
    #[error("snapshot store {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
