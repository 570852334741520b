//! An in-process virtio-vsock device served to QEMU over vhost-user.
//!
//! Why in-process: rust-vmm's `vhost-device-vsock` sidecar (0.3.0) loses or
//! stalls streams under sustained bidirectional traffic on our machines
//! (its Unix-socket muxer unregisters a stream from epoll when a read and a
//! write are ready together, and drops guest data when its buffer is full),
//! which broke 50 MiB output streams within the first megabyte. This device
//! is built on the same rust-vmm crates (`vhost-user-backend`,
//! `virtio-queue`, `vm-memory`) but only does what a sandbox needs:
//! host-initiated stream connections, each handed to the caller as one end
//! of a Unix socket pair, with the virtio-vsock credit protocol honoured in
//! both directions so nothing is ever dropped. It also saves a process and
//! a spawn per VM.

mod conn;
mod device;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
mod packet;
mod state;
#[cfg(test)]
mod tests;

pub use device::VsockDevice;
