//! The VM backend: guest image, VMM process, and the agent's channel.
//!
//! Upper layers never see QEMU: they get a [`VmInstance`] from a
//! [`VmBackend`] and talk to the guest through [`VmInstance::connect_agent`].

pub mod accel;
pub mod confine;
pub mod image;
pub mod initramfs;
mod logring;
mod memory;
mod migrate;
mod process;
pub mod qemu;
mod qmp;
mod rundir;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::UnixStream;

pub use accel::Accel;
pub use migrate::{SavedState, DEVICES, MEMORY};

use crate::error::Result;

/// Everything needed to boot one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Kernel image (an uncompressed, PVH-capable `vmlinux`).
    pub kernel: PathBuf,
    /// Base initramfs (newc cpio).
    pub initramfs: PathBuf,
    /// A cpio archive appended to the initramfs for this VM only.
    pub extra_initramfs: Vec<u8>,
    /// Guest RAM.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Accelerator to use.
    pub accel: Accel,
    /// Extra kernel command line arguments.
    pub cmdline_extra: String,
    /// Read-only disks (virtio-blk), found in the guest by serial.
    pub disks: Vec<Disk>,
    /// Host directories shared with the guest (virtio-9p), by mount tag.
    pub shares: Vec<Share>,
    /// Attach a virtio-net device. Its frames go to a socket pair whose
    /// host end [`VmInstance::take_network_link`] hands out; nothing else
    /// connects it anywhere.
    pub network: bool,
    /// Start from this saved state instead of booting: the VM loads it
    /// (checking its hash) and waits, stopped, for [`VmInstance::resume`].
    /// Everything else in the spec must be what the saved VM had.
    pub incoming: Option<SavedState>,
}

/// A read-only raw disk image attached as virtio-blk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Serial the guest finds it by (at most 20 bytes of `[A-Za-z0-9-]`).
    pub serial: String,
}

/// A host directory shared with the guest over virtio-9p.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The host directory (canonical).
    pub path: PathBuf,
    /// Mount tag (`[A-Za-z0-9-]`, at most 31 bytes).
    pub tag: String,
    /// QEMU refuses every write from the guest.
    pub readonly: bool,
    /// Guest ownership and modes are kept in `user.virtfs.*` xattrs on the
    /// host instead of being applied (volumes, which only void-box uses);
    /// otherwise host files keep their host owner.
    pub mapped_ownership: bool,
}

/// How a VM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// A description of the exit status.
    pub status: String,
}

/// Starts VMs. QEMU is the one implementation today.
pub trait VmBackend: Send + Sync {
    /// Short name for diagnostics.
    fn name(&self) -> &'static str;
    /// Launches a VM; returns once the VMM process runs (not once the guest booted).
    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn VmInstance>>>;
}

/// A running VM. Dropping it kills the VMM and every helper process and
/// removes its temporary files.
pub trait VmInstance: Send + Sync {
    /// Opens the byte stream to the guest agent's port (one at a time).
    /// Fails (quickly) while the VMM is not listening yet; the agent
    /// speaks first once it is up.
    fn connect_agent(&self) -> BoxFuture<'_, std::io::Result<UnixStream>>;
    /// Resolves when the VMM process has exited. The future does not
    /// borrow the instance, so waiting never keeps a VM alive.
    fn wait_exit(&self) -> BoxFuture<'static, VmExit>;
    /// The exit, if it already happened.
    fn exit_status(&self) -> Option<VmExit>;
    /// The last `max_bytes` of the guest's serial console.
    fn console_tail(&self, max_bytes: usize) -> String;
    /// Ends the VM: waits up to `grace` for it to exit on its own, then asks
    /// the VMM to quit, then kills it and removes its files.
    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()>;
    /// Kills the VM immediately and removes its files.
    fn kill(&self);
    /// Host processes belonging to this VM (VMM first), for accounting.
    fn host_pids(&self) -> Vec<u32>;
    /// Host directory holding this VM's sockets and files.
    fn runtime_dir(&self) -> PathBuf;
    /// The host end of the network device's link (Ethernet frames, each
    /// after its 4-byte big-endian length), once; `None` without a device.
    fn take_network_link(&self) -> Option<std::os::unix::net::UnixStream> {
        None
    }
    /// Stops the VM and saves its whole state into the directory `to`
    /// (its files must not exist yet). The VM stays stopped:
    /// [`resume`](Self::resume) lets it go on.
    fn save<'a>(&'a self, to: &'a std::path::Path) -> BoxFuture<'a, Result<SavedState>> {
        let _ = to;
        Box::pin(async { Err(unsupported("saving a VM")) })
    }
    /// Lets a stopped VM (saved, or just restored) run.
    fn resume(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Err(unsupported("resuming a VM")) })
    }
}

fn unsupported(what: &str) -> crate::error::Error {
    crate::error::Error::Launch(format!("{what} is not supported by this backend"))
}

/// `env` if set, else `name` on PATH.
pub(crate) fn locate(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
