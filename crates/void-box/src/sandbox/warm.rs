//! Warm starts: saving a running sandbox's whole VM (memory, files,
//! processes) and starting sandboxes from what was saved: snapshots by
//! name, copies of a running sandbox ([`Sandbox::fork`]), a paused sandbox
//! brought back ([`Sandbox::resume`]). ADR 0010.
//!
//! A VM made from a saved one never shares the identity of the VM it was
//! saved from, nor of its other copies: before it serves it gets a new
//! session secret (the saved one is refused from then on), a reseeded
//! random generator, the host's clock, a new edge CA and new secret
//! placeholders, and a fresh network stack on the host.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::RngCore;
use void_box_protocol::{GuestConfig, Restore};

use super::client::AgentClient;
use super::plan::{self, BootPlan};
use super::snapshot::{FileStamp, Machine, Snapshot, SnapshotError, SnapshotStore, StoredSnapshot};
use super::{launch, Accel, GuestImage, Sandbox, SandboxConfig};
use crate::error::{Error, Result};
use crate::net::NetworkPolicy;
use crate::vm::qemu::QemuBackend;
use crate::vm::{SavedState, VmInstance, VmSpec};

/// How long the guest may take to stop sending before a save.
const QUIESCE_LIMIT: Duration = Duration::from_secs(30);

/// How a sandbox was booted, as far as a VM loading its saved state must
/// be the same: `None` for one that cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipe {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub machine: Machine,
    pub accel: Accel,
}

impl Recipe {
    /// The record of a VM saved from this recipe into `state`.
    fn record(&self, name: &str, setup: &[String], state: &SavedState) -> Result<Snapshot> {
        let stamp = |path: &Path| {
            FileStamp::of(path).map_err(|e| Error::io(format!("hash {}", path.display()), e))
        };
        let qemu = qemu_binary()?;
        Ok(Snapshot {
            format: 0,
            name: name.into(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            voidbox_version: env!("CARGO_PKG_VERSION").into(),
            kernel: stamp(&self.kernel)?,
            initramfs: stamp(&self.initramfs)?,
            machine: self.machine.clone(),
            accel: self.accel.to_string(),
            qemu: qemu_version(&qemu),
            qemu_binary: stamp(&qemu)?,
            setup: setup.to_vec(),
            devices_bytes: state.devices_bytes,
            devices_blake3: state.devices_blake3.clone(),
            memory_blake3: state.memory_blake3.clone(),
        })
    }
}

/// The QEMU binary VMs run on.
fn qemu_binary() -> Result<PathBuf> {
    let qemu = crate::vm::locate("VOIDBOX_QEMU", "qemu-system-x86_64")
        .ok_or_else(|| Error::Launch("qemu-system-x86_64 not found".into()))?;
    Ok(std::fs::canonicalize(&qemu).unwrap_or(qemu))
}

/// What `qemu --version` says (`7.2.0`), asked once: for the record.
fn qemu_version(qemu: &Path) -> String {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            std::process::Command::new(qemu)
                .arg("--version")
                .output()
                .ok()
                .and_then(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .nth(3)
                        .map(String::from)
                })
                .unwrap_or_else(|| "unknown".into())
        })
        .clone()
}

/// Takes the agent of a VM just loaded from a saved state: connects to its
/// port, lets the VM run, hands it its new identity (`guest`, with its
/// fresh secret) and performs the handshake under it, by `deadline`.
pub(super) async fn renew_agent(
    vm: &dyn VmInstance,
    guest: GuestConfig,
    deadline: Instant,
    liveness: Duration,
) -> Result<AgentClient> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let renew = async {
        // Connected before the VM runs, so its agent never sees the host
        // go away between the saved session and this one.
        let stream = vm
            .connect_agent()
            .await
            .map_err(|e| Error::io("connect to the restored VM's agent", e))?;
        vm.resume().await?;
        let mut entropy = [0u8; 32];
        rand::rng().fill_bytes(&mut entropy);
        let restore = Restore {
            config: guest,
            unix_time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            entropy,
        };
        AgentClient::restored(stream, restore, liveness).await
    };
    let failed = |reason: String| Error::Boot {
        reason,
        console_tail: vm.console_tail(4000),
    };
    match tokio::time::timeout(remaining, renew).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(failed(format!(
            "the restored VM's agent did not take its new identity: {e}"
        ))),
        Err(_) => Err(failed(
            "the restored VM's agent did not answer in time".into(),
        )),
    }
}

/// A sandbox from the saved VM `record` describes, its state in `state`,
/// under `config`'s own settings (environment, network, secrets, allowed
/// commands, limits, timeouts, hostname). The machine and root are the
/// saved VM's: a `config` that asks for another image, or for host
/// directories, is refused.
pub(crate) async fn restore(
    record: &Snapshot,
    state: SavedState,
    config: &SandboxConfig,
) -> Result<Sandbox> {
    let stale = |why: String| {
        Error::Snapshot(SnapshotError::Stale {
            name: record.name.clone(),
            why,
        })
    };
    let Usable {
        image,
        accel,
        root_image,
    } = check_usable(record, config)?;
    if !config.mounts.is_empty() || !config.volumes.is_empty() || !config.image_mounts.is_empty() {
        return Err(Error::Launch(format!(
            "a sandbox from snapshot `{}` cannot add mounts, volumes or image mounts \
             (they are not in its saved VM)",
            record.name
        )));
    }
    let mut effective = config.clone();
    effective.snapshot = None;
    let machine = &record.machine;
    effective.memory_mb = machine.memory_mb;
    effective.vcpus = machine.vcpus;
    effective.user = machine.user.clone();
    effective.overlay_mb = machine.overlay_mb;
    effective.image = match (&machine.image, &config.image) {
        (Some(saved), Some(asked)) if asked != &saved.reference => {
            return Err(Error::Launch(format!(
                "snapshot `{}` has image {}, not {asked}",
                record.name, saved.reference
            )))
        }
        (None, Some(asked)) => {
            return Err(Error::Launch(format!(
                "snapshot `{}` has no image, and {asked} was asked for",
                record.name
            )))
        }
        _ => root_image,
    };
    match (machine.network_device, effective.network_device().is_some()) {
        (true, false) => {
            // The device is in the saved VM; here it reaches nothing.
            effective.network = NetworkPolicy::rules(&[] as &[&str], &[] as &[&str])
                .map_err(|e| Error::Launch(e.to_string()))?;
        }
        (false, true) => {
            return Err(Error::Launch(format!(
                "snapshot `{}` was made without a network device, so a sandbox from it \
                 has no network (make it with one: voidbox snapshot create --network ...)",
                record.name
            )))
        }
        _ => {}
    }
    let spec = VmSpec {
        kernel: image.kernel,
        initramfs: image.initramfs,
        extra_initramfs: Vec::new(),
        memory_mb: effective.memory_mb,
        vcpus: effective.vcpus,
        accel,
        cmdline_extra: String::new(),
        disks: Vec::new(),
        shares: Vec::new(),
        network: false,
        incoming: Some(state),
    };
    let plan = plan::resolve(&effective, BootPlan::bare(spec)).await?;
    if plan.spec.network != machine.network_device {
        return Err(stale("its network device does not match".into()));
    }
    launch(&effective, plan, &QemuBackend::from_env()?).await
}

/// What a saved VM is loaded with: the guest image, the accelerator and
/// its OCI root pinned to the digest it was made from.
pub(crate) struct Usable {
    pub image: GuestImage,
    pub accel: Accel,
    pub root_image: Option<String>,
}

/// Refuses a saved VM that a sandbox of `config` could not load: another
/// guest image, accelerator or QEMU than it was made with, or its OCI
/// image gone from the cache.
pub(crate) fn check_usable(record: &Snapshot, config: &SandboxConfig) -> Result<Usable> {
    let image = match &config.boot {
        Some(image) => image.clone(),
        None => GuestImage::resolve()?,
    };
    record.check_guest_image(&image.kernel, &image.initramfs)?;
    let accel = Accel::choose(config.accel)?;
    record.check_machine(&accel.to_string(), &qemu_binary()?)?;
    let root_image = match &record.machine.image {
        None => None,
        Some(saved) => Some(pinned(&saved.reference, &saved.digest).ok_or_else(|| {
            Error::Snapshot(SnapshotError::Stale {
                name: record.name.clone(),
                why: format!(
                    "its image {} ({}) is no longer cached (voidbox image pull it)",
                    saved.reference, saved.digest
                ),
            })
        })?),
    };
    Ok(Usable {
        image,
        accel,
        root_image,
    })
}

impl StoredSnapshot {
    /// Refuses the snapshot when a sandbox of the default configuration
    /// could not start from it (`voidbox snapshot ls` shows why).
    pub fn check_usable(&self) -> Result<()> {
        check_usable(&self.snapshot, &SandboxConfig::default()).map(|_| ())
    }
}

/// `reference` pinned to `digest` (`name@sha256:…`), when that image is in
/// the cache.
fn pinned(reference: &str, digest: &str) -> Option<String> {
    let store = crate::oci::Store::default_location();
    store.by_digest(digest)?;
    let name = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    // A tag goes: the digest names the image.
    let name = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    Some(format!("{name}@{digest}"))
}

impl Sandbox {
    /// The recipe of this sandbox, or why it cannot be saved.
    fn recipe(&self, what: &str) -> Result<&Recipe> {
        self.recipe.as_ref().ok_or_else(|| {
            Error::Launch(format!(
                "this sandbox cannot be {what}: it shares host directories (mounts or \
                 volumes), which a saved VM cannot take along"
            ))
        })
    }

    /// Saves the whole VM into the directory `to` and lets it go on.
    async fn save_running(&self, to: &Path) -> Result<SavedState> {
        let quiesced = self.client.quiesce(QUIESCE_LIMIT).await?;
        let saved = self.vm.save(to).await;
        // Whatever the save did, this VM goes on.
        let resumed = self.vm.resume().await;
        quiesced.thaw();
        let saved = saved?;
        resumed?;
        Ok(saved)
    }

    /// Saves the whole VM into the directory `to`, then ends it.
    async fn save_and_end(self, to: &Path) -> Result<SavedState> {
        let quiesced = self.client.quiesce(QUIESCE_LIMIT).await?;
        let saved = self.vm.save(to).await;
        drop(quiesced);
        drop(self);
        saved
    }

    /// Saves this sandbox as the snapshot `name` in `store` and ends it;
    /// `setup` records how it was prepared.
    pub async fn save_snapshot(
        self,
        store: &SnapshotStore,
        name: &str,
        setup: &[String],
    ) -> Result<StoredSnapshot> {
        let recipe = self.recipe("saved")?.clone();
        let making = store.start(name).map_err(Error::Snapshot)?;
        let state = self.save_and_end(making.dir()).await?;
        let record = recipe.record(name, setup, &state)?;
        making.finish(&record).map_err(Error::Snapshot)
    }

    /// `n` new sandboxes, each a copy of this one as it is now (memory,
    /// files, processes) with its own identity; this one goes on, and from
    /// then on their files diverge. `config` gives the copies' own
    /// settings (environment, network, secrets, allowed commands, limits,
    /// timeouts); their machine and root are this one's. The requests this
    /// sandbox has in flight stay its own: in the copies they end.
    pub async fn fork(&self, n: usize, config: &SandboxConfig) -> Result<Vec<Sandbox>> {
        let recipe = self.recipe("forked")?.clone();
        // In the sandbox's runtime directory: a `voidbox` killed meanwhile
        // leaves it to the next one's sweep.
        let dir = tempfile::Builder::new()
            .prefix("fork-")
            .tempdir_in(self.runtime_dir())
            .map_err(|e| Error::io("make the fork's directory", e))?;
        let state = self.save_running(dir.path()).await?;
        let record = recipe.record(&format!("fork of {}", self.id()), &[], &state)?;
        let copies = (0..n).map(|_| restore(&record, state.clone(), config));
        // The saved files go with `dir` once every copy has loaded them.
        futures::future::try_join_all(copies).await
    }

    /// Saves the sandbox to disk and ends its VM, freeing its memory;
    /// [`Sandbox::resume`] brings it back where it was. Returns its id.
    pub async fn pause(self) -> Result<String> {
        let id = self.id();
        self.save_snapshot(&paused_store(), &id, &[]).await?;
        Ok(id)
    }

    /// The sandbox [`pause`](Self::pause) saved as `id`, running again
    /// where it was (with a new identity), under `config`'s settings. Its
    /// saved files are removed once it runs.
    pub async fn resume(id: &str, config: &SandboxConfig) -> Result<Sandbox> {
        let store = paused_store();
        let stored = store.get(id).map_err(|e| match e {
            SnapshotError::Missing(_) => Error::Launch(format!("no paused sandbox `{id}`")),
            other => Error::Snapshot(other),
        })?;
        let state = stored.snapshot.state(&stored.dir);
        let sandbox = restore(&stored.snapshot, state, config).await?;
        store.remove(id)?;
        Ok(sandbox)
    }
}

/// Where paused sandboxes are kept: a snapshot store of their own, named
/// by sandbox id.
fn paused_store() -> SnapshotStore {
    SnapshotStore::at(crate::dirs::data_dir().join("paused"))
}

/// The recipe of a boot `plan` resolved for `config`: `None` when it
/// shares host directories, which a saved VM cannot take along.
pub(super) fn recipe_of(config: &SandboxConfig, plan: &BootPlan) -> Option<Recipe> {
    if !plan.spec.shares.is_empty() {
        return None;
    }
    Some(Recipe {
        kernel: plan.spec.kernel.clone(),
        initramfs: plan.spec.initramfs.clone(),
        machine: Machine {
            image: plan.image.clone(),
            user: config.user.clone(),
            overlay_mb: config.overlay_mb,
            memory_mb: config.memory_mb,
            vcpus: config.vcpus,
            network_device: plan.spec.network,
        },
        accel: plan.spec.accel,
    })
}
