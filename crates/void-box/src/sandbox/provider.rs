//! The one seam between everything that runs stages (agent boxes,
//! pipelines, workflows, spec runs) and the machines their sandboxes run
//! on. [`VmProvider`] boots real micro-VMs; the
//! [`FakeProvider`](super::fake::FakeProvider) boots in-process guest
//! doubles for host-only tests. Both hand out the same [`Sandbox`] type,
//! so nothing above this seam can tell, or reach QEMU.

use futures::future::BoxFuture;

use super::plan::{self, BootPlan};
use super::snapshot::SnapshotStore;
use super::{launch, warm, Sandbox, SandboxConfig};
use crate::error::Result;
use crate::vm::image::GuestImage;
use crate::vm::qemu::QemuBackend;
use crate::vm::{Accel, VmSpec};

/// Boots sandboxes.
pub trait SandboxProvider: Send + Sync {
    /// Boots one sandbox configured by `config` and waits until its guest
    /// agent answers. Dropping the future, or the sandbox, kills the VM.
    fn boot<'a>(&'a self, config: &'a SandboxConfig) -> BoxFuture<'a, Result<Sandbox>>;
}

/// Boots real micro-VMs with QEMU: resolves the guest image and the
/// accelerator the configuration leaves open, pulls the OCI images it
/// names (once; they are cached), finds its mounts and volumes, then
/// launches; or, for a configuration that names a snapshot, restores it.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmProvider;

impl SandboxProvider for VmProvider {
    fn boot<'a>(&'a self, config: &'a SandboxConfig) -> BoxFuture<'a, Result<Sandbox>> {
        Box::pin(async move {
            config.validate()?;
            if let Some(name) = &config.snapshot {
                let stored = SnapshotStore::default_location().get(name)?;
                let state = stored.snapshot.state(&stored.dir);
                return warm::restore(&stored.snapshot, state, config).await;
            }
            let image = match &config.boot {
                Some(image) => image.clone(),
                None => GuestImage::resolve()?,
            };
            let accel = Accel::choose(config.accel)?;
            let spec = VmSpec {
                kernel: image.kernel,
                initramfs: image.initramfs,
                extra_initramfs: Vec::new(),
                memory_mb: config.memory_mb,
                vcpus: config.vcpus,
                accel,
                cmdline_extra: String::new(),
                disks: Vec::new(),
                shares: Vec::new(),
                network: false,
                incoming: None,
            };
            let plan = plan::resolve(config, BootPlan::bare(spec)).await?;
            launch(config, plan, &QemuBackend::from_env()?).await
        })
    }
}
