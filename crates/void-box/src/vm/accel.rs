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

    /// The accelerator for one sandbox: the configuration's, else
    /// [`from_env`](Self::from_env). When KVM is required (`VOIDBOX_ACCEL=kvm`,
    /// which `voidbox --require-kvm` sets) or asked for, anything but a
    /// usable KVM is refused with the reason: TCG is software emulation,
    /// not a security boundary.
    pub fn choose(configured: Option<Accel>) -> Result<Accel> {
        let required = std::env::var("VOIDBOX_ACCEL").is_ok_and(|v| v == "kvm");
        let accel = match configured {
            Some(accel) => accel,
            None => Accel::from_env()?,
        };
        if required && accel == Accel::Tcg {
            return Err(Error::Launch(
                "KVM is required (--require-kvm or VOIDBOX_ACCEL=kvm) but this sandbox's \
                 configuration asks for TCG"
                    .into(),
            ));
        }
        if accel == Accel::Kvm {
            if let Some(why) = kvm_unusable() {
                return Err(Error::Launch(format!(
                    "KVM is required{} but not usable here: {why}. Without it VMs run under \
                     TCG, QEMU's software emulation, which is not a security boundary",
                    if required {
                        " (--require-kvm or VOIDBOX_ACCEL=kvm)"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(accel)
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

    /// What isolates the guest, for headers and results.
    pub fn isolation(&self) -> &'static str {
        match self {
            Accel::Kvm => "hardware virtualization (KVM)",
            Accel::Tcg => "software emulation (TCG), not hardware isolation",
        }
    }

    /// KVM when it can run an ordinary guest ([`kvm_unusable`]), else TCG,
    /// with a one-line notice.
    pub fn detect() -> Accel {
        match kvm_unusable() {
            None => Accel::Kvm,
            Some(why) => {
                static NOTICE: Once = Once::new();
                NOTICE.call_once(|| {
                    tracing::warn!(
                        "no usable hardware virtualization ({why}); VMs run under TCG, \
                         software emulation, which is not a security boundary \
                         (--require-kvm refuses it)"
                    )
                });
                Accel::Tcg
            }
        }
    }
}

/// Why KVM cannot run an ordinary guest here, or `None` when it can: it
/// needs a hardware-virtualization module (`kvm_intel`/`kvm_amd`; a
/// `/dev/kvm` without one, such as nested `kvm_pvm`, cannot boot a normal
/// kernel) and a `/dev/kvm` that opens read-write.
pub fn kvm_unusable() -> Option<String> {
    let hardware =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    if !hardware {
        return Some("neither kvm_intel nor kvm_amd is loaded".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/kvm read-write ({e})")),
    }
}
