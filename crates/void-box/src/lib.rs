//! void-box: run AI agents inside hardware-isolated micro-VMs.
//!
//! `VoidBox = Agent(Skills) + Isolation`. This crate's foundation is the
//! [`Sandbox`]: a fresh micro-VM with its own Linux kernel, a guest agent as
//! PID 1, and an authenticated, multiplexed channel to it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), void_box::Error> {
//! use void_box::{Exec, Sandbox};
//!
//! let sandbox = Sandbox::builder().memory_mb(512).vcpus(1).build().await?;
//! let out = sandbox.exec(Exec::shell("echo hello from $(uname -n)")).await?;
//! assert!(out.status.success());
//! sandbox.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Layers, bottom up: [`vm`] (guest image, QEMU, the agent's channel),
//! [`sandbox`] (the API everything above uses), then the agents layer:
//! [`llm`] (providers), [`skill`] (declared capabilities) and [`agent`]
//! (`VoidBox`, the agent loop, permissions, hooks, events).

#![warn(missing_docs)]

pub mod agent;
mod dirs;
pub mod error;
pub mod event;
pub mod llm;
pub(crate) mod millis;
pub mod net;
pub mod observe;
pub mod oci;
pub mod pipeline;
pub mod sandbox;
pub mod skill;
pub mod spec;
mod stage;
mod tail;
mod tls;
pub mod vm;
pub mod volume;
pub mod workflow;

pub use dirs::{cache_dir, data_dir};
pub use error::{Error, Result};
pub use sandbox::{
    Exec, ExecEvent, ExecStream, Output, OutputStream, Sandbox, SandboxConfig, StdinWriter,
};
pub use void_box_protocol::{
    DirEntry, ErrorKind, ExitStatus, FileKind, FileStat, PtySize, ResourceLimits,
    TelemetrySnapshot, AGENT_PORT_NAME, WORKSPACE_DIR,
};
