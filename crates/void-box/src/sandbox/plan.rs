//! From a [`SandboxConfig`] to what one boot needs on the host: the VM
//! (kernel, initramfs, accelerator, disks, shares) and what the guest
//! agent sets up (its root, mounts, user, working directory, the image's
//! environment). Everything here fails before a VM starts, naming the
//! path, image or user at fault.

use std::path::PathBuf;

use void_box_protocol::{GuestMount, GuestUser, MountSource, RootFs};

use super::{MountMode, SandboxConfig};
use crate::error::{Error, Result};
use crate::oci::{self, resolve_user, CachedImage, ImageError, ResolvedUser};
use crate::vm::{Disk, Share, VmSpec};
use crate::volume::Volumes;

/// Serial of the root image's disk.
const ROOT_DISK: &str = "vb-root";

/// One boot, resolved.
#[derive(Debug, Clone)]
pub(crate) struct BootPlan {
    /// The VM; `extra_initramfs` is filled in at launch.
    pub spec: VmSpec,
    /// The root filesystem of commands.
    pub rootfs: Option<RootFs>,
    /// What the guest mounts, in order.
    pub mounts: Vec<GuestMount>,
    /// Who commands run as.
    pub user: Option<GuestUser>,
    /// Default working directory.
    pub workdir: Option<String>,
    /// Environment under the sandbox's own: the user's `HOME`/`USER`, then
    /// the image's `Env`.
    pub base_env: Vec<(String, String)>,
    /// The guest's DNS server, when it has a network.
    pub nameserver: Option<String>,
    /// The OCI image at the root, as resolved.
    pub image: Option<super::snapshot::SnapshotImage>,
    /// The root's `/etc/passwd` and `/etc/group`, for commands run as
    /// another user ([`Exec::user`](super::Exec::user)).
    pub accounts: Accounts,
}

/// The user database of a sandbox's command root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accounts {
    pub passwd: String,
    pub group: String,
}

impl Default for Accounts {
    /// The initramfs': root alone.
    fn default() -> Self {
        Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\n".into(),
            group: "root:x:0:\n".into(),
        }
    }
}

impl Accounts {
    /// `spec` (`root`, `UID[:GID]`, `NAME[:GROUP]`) as a user of this root.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedUser> {
        resolve_user(spec, &self.passwd, &self.group)
            .map_err(|e| Error::Config(super::ConfigError::new("user", format!("`{spec}`: {e}"))))
    }
}

impl BootPlan {
    /// A plan with nothing but the VM.
    pub fn bare(spec: VmSpec) -> BootPlan {
        BootPlan {
            spec,
            rootfs: None,
            mounts: Vec::new(),
            user: None,
            workdir: None,
            base_env: Vec::new(),
            nameserver: None,
            image: None,
            accounts: Accounts::default(),
        }
    }
}

fn image_error(e: ImageError) -> Error {
    Error::Image(e.to_string())
}

/// Adds the image, mounts, volumes and user of `config` to `plan`,
/// pulling images that are not cached yet.
pub(crate) async fn resolve(config: &SandboxConfig, mut plan: BootPlan) -> Result<BootPlan> {
    let store = oci::Store::default_location();
    let mut image: Option<CachedImage> = None;
    if let Some(reference) = &config.image {
        let cached = oci::ensure(&store, reference, None)
            .await
            .map_err(image_error)?;
        plan.spec.disks.push(Disk {
            path: cached.path.clone(),
            serial: ROOT_DISK.into(),
        });
        plan.rootfs = Some(RootFs {
            disk: ROOT_DISK.into(),
            overlay_mb: config.overlay_mb,
        });
        plan.workdir = cached.record.config.working_dir.clone();
        plan.image = Some(super::snapshot::SnapshotImage {
            reference: reference.clone(),
            digest: cached.record.digest.clone(),
        });
        image = Some(cached);
    }
    let user = resolve_command_user(config, image.as_ref())?;
    plan.accounts = accounts_of(image.as_ref());
    if let Some(user) = &user {
        if let Some(home) = &user.home {
            plan.base_env.push(("HOME".into(), home.clone()));
        }
        if let Some(name) = &user.name {
            plan.base_env.push(("USER".into(), name.clone()));
            plan.base_env.push(("LOGNAME".into(), name.clone()));
        }
        plan.user = Some(GuestUser {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
        });
    }
    if let Some(image) = &image {
        plan.base_env
            .extend(image.record.config.env.iter().cloned());
    }
    for (i, m) in config.mounts.iter().enumerate() {
        let path = std::fs::canonicalize(&m.host)
            .map_err(|e| Error::Launch(format!("mount {}: {e}", m.host.display())))?;
        if !path.is_dir() {
            return Err(Error::Launch(format!(
                "mount {}: not a directory",
                m.host.display()
            )));
        }
        let tag = format!("vb-mount{i}");
        let readonly = m.mode == MountMode::Ro;
        plan.spec.shares.push(Share {
            path,
            tag: tag.clone(),
            readonly,
            mapped_ownership: false,
        });
        plan.mounts.push(GuestMount {
            source: MountSource::Share { tag },
            target: m.guest.clone(),
            readonly,
            own_root: false,
        });
    }
    let volumes = Volumes::default_location();
    for (i, v) in config.volumes.iter().enumerate() {
        let path: PathBuf = volumes
            .ensure(&v.name)
            .map_err(|e| Error::Launch(e.to_string()))?;
        let tag = format!("vb-volume{i}");
        plan.spec.shares.push(Share {
            path,
            tag: tag.clone(),
            readonly: v.readonly,
            mapped_ownership: true,
        });
        plan.mounts.push(GuestMount {
            source: MountSource::Share { tag },
            target: v.guest.clone(),
            readonly: v.readonly,
            own_root: !v.readonly,
        });
    }
    for (i, m) in config.image_mounts.iter().enumerate() {
        let cached = oci::ensure(&store, &m.image, None)
            .await
            .map_err(image_error)?;
        let serial = format!("vb-image{i}");
        plan.spec.disks.push(Disk {
            path: cached.path,
            serial: serial.clone(),
        });
        plan.mounts.push(GuestMount {
            source: MountSource::Disk { serial },
            target: m.guest.clone(),
            readonly: true,
            own_root: false,
        });
    }
    if config.network_device().is_some() {
        plan.spec.network = true;
        let cmdline = crate::net::guest_cmdline();
        plan.spec.cmdline_extra = format!("{} {cmdline}", plan.spec.cmdline_extra)
            .trim()
            .to_string();
        plan.nameserver = Some(crate::net::GATEWAY_ADDR.to_string());
    }
    // Parents before children, whatever order they were declared in.
    plan.mounts.sort_by_key(|m| m.target.matches('/').count());
    Ok(plan)
}

/// The image's user database, else the initramfs'.
fn accounts_of(image: Option<&CachedImage>) -> Accounts {
    image.map_or_else(Accounts::default, |i| Accounts {
        passwd: i.record.passwd.clone(),
        group: i.record.group.clone(),
    })
}

/// The user commands run as: the configuration's, else the image's, else
/// none (the guest's unprivileged sandbox user).
fn resolve_command_user(
    config: &SandboxConfig,
    image: Option<&CachedImage>,
) -> Result<Option<ResolvedUser>> {
    let accounts = accounts_of(image);
    let (passwd, group) = (accounts.passwd.as_str(), accounts.group.as_str());
    let spec = match (
        &config.user,
        image.and_then(|i| i.record.config.user.as_ref()),
    ) {
        (Some(user), _) => user,
        (None, Some(user)) => user,
        (None, None) => return Ok(None),
    };
    resolve_user(spec, passwd, group)
        .map(Some)
        .map_err(|e| Error::Launch(format!("user `{spec}`: {e}")))
}
