//! The wire protocol spoken between the void-box host and the guest agent.
//!
//! One channel (a virtio-serial port) carries many concurrent requests. Every frame is a
//! big-endian `u32` length followed by a [postcard]-encoded [`Frame`]; the
//! frame's `id` names the request (stream) it belongs to, so a long exec never
//! blocks a file read. Streams that carry bulk data (stdout/stderr, stdin, file
//! contents) are flow-controlled with per-stream credit windows (see
//! [`flow`]), so no chunk is ever dropped and no side buffers without bound.
//!
//! A connection starts with a versioned, mutually authenticated handshake
//! ([`GuestMsg::Challenge`], [`HostMsg::Hello`], [`GuestMsg::HelloOk`]): each
//! side proves it holds the 32-byte per-sandbox secret with an HMAC over
//! both sides' nonces ([`auth`]), so the secret itself never crosses the
//! wire, and the guest refuses every other request before it. The one
//! exception is a VM restored from a saved one: inside the session the
//! saved VM authenticated, the host hands it a new secret
//! ([`HostMsg::Restored`]), and a new handshake under that one follows.

#![warn(missing_docs)]

pub mod auth;
pub mod codec;
pub mod flow;
pub mod message;
pub mod policy;

pub use codec::{FrameCodec, ProtocolError};
pub use message::*;

/// Version of this protocol; both sides must agree on it in the handshake.
pub const PROTOCOL_VERSION: u16 = 6;
/// The name of the virtio-serial port the guest agent holds from boot: a
/// character device only root in the guest could open, and only one
/// process at a time.
pub const AGENT_PORT_NAME: &str = "voidbox.agent";
/// Length of the per-sandbox secret in bytes.
pub const SECRET_LEN: usize = 32;
/// Largest encoded frame (without its length prefix) either side accepts.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Largest data payload carried by one frame.
pub const CHUNK_LEN: usize = 64 * 1024;
/// Bytes a sender may have in flight on one stream before it needs credit.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Most entries in one page of a directory listing: 1024 entries of the
/// longest names (255 bytes) and their metadata fit well within a frame.
pub const MAX_LIST_PAGE: u32 = 1024;

/// Most entries in the page a [`HostMsg::List`] with this `limit` gets:
/// at least one (so paging moves on), at most [`MAX_LIST_PAGE`].
pub fn list_page_len(limit: u32) -> usize {
    limit.clamp(1, MAX_LIST_PAGE) as usize
}
/// Where the host places the guest configuration inside the initramfs.
pub const GUEST_CONFIG_PATH: &str = "/.voidbox/config";
/// The commands' default working directory, and where relative paths of
/// the agent tools point.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where the guest agent writes the sandbox's edge CA (PEM), when it has
/// secrets swapped at the network edge.
pub const EDGE_CA_PATH: &str = "/etc/voidbox/edge-ca.pem";
/// The system CA bundle the edge CA is appended to (made if missing).
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The guest directories the file requests may write under.
pub const WRITABLE_ROOTS: [&str; 2] = [WORKSPACE_DIR, "/tmp"];

/// A per-sandbox secret.
pub type Secret = [u8; SECRET_LEN];
