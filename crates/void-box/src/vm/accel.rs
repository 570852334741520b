//! Choosing the accelerator: KVM where hardware virtualization is usable,
//! TCG (software emulation) everywhere else.

use std::fmt;
use std::path::Path;
use std::sync::Once;

use crate::error::{Error, Result};

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// The accelerator to use: `VOIDBOX_ACCEL=kvm|tcg|auto` (default `auto`).
    pub fn from_env() -> Result<Accel> {
        match std::env::var("VOIDBOX_ACCEL").ok().as_deref() {
            None | Some("") | Some("auto") => Ok(Accel::detect()),
            Some(other) => Accel::parse(other),
        }
    }

    /// Parses `kvm`, `tcg` or `auto`.
    pub fn parse(name: &str) -> Result<Accel> {
        match name {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "auto" => Ok(Accel::detect()),
            other => Err(Error::Launch(format!(
                "unknown accelerator `{other}` (VOIDBOX_ACCEL takes kvm, tcg or auto)"
            ))),
        }
    }

    /// KVM only when a hardware-virtualization module is loaded and
    /// /dev/kvm opens read-write. A /dev/kvm without `kvm_intel`/`kvm_amd`
    /// (for example nested `kvm_pvm`) cannot run an ordinary guest kernel,
    /// so TCG is used there, with a one-line notice.
    pub fn detect() -> Accel {
        let hardware = Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists();
        let usable = hardware
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
        if usable {
            Accel::Kvm
        } else {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                tracing::warn!(
                    "no usable hardware virtualization (kvm_intel/kvm_amd with /dev/kvm); \
                     VMs run under TCG software emulation"
                )
            });
            Accel::Tcg
        }
    }
}
