//! How QEMU is confined (ADR 0005).
//!
//! QEMU runs under bubblewrap in fresh user, mount, PID, IPC, network, UTS
//! and cgroup namespaces. Its filesystem is an empty root with `/usr`
//! read-only, a minimal `/dev` (plus `/dev/kvm` when used), its own `/proc`
//! and the VM's runtime directory; nothing else of the host (no `$HOME`, no
//! `/etc`, no `/tmp`). Files it needs from elsewhere (kernel, disks,
//! shares) are opened here and inherited as descriptors, which QEMU names
//! `/proc/self/fd/N`. Its environment is empty. When we run as root it runs
//! as an unprivileged user. Inside, QEMU's own seccomp filter
//! (`-sandbox on,…`) applies on top.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::io::{fcntl_setfd, FdFlags};
use rustix::process::Signal;

use crate::error::{ConfigError, Error, Result};

/// QEMU's own seccomp filter: no obsolete syscalls, no setuid, no fork or
/// exec, no scheduler or affinity changes.
pub(crate) const QEMU_SECCOMP: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The user a root `voidbox` runs QEMU as, unless `VOIDBOX_QEMU_USER` says
/// otherwise: `nobody:nogroup`.
const DEFAULT_UNPRIVILEGED: Identity = Identity {
    uid: 65534,
    gid: 65534,
};

/// A uid and gid to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Whether and how VMMs are confined.
#[derive(Debug, Clone)]
pub(crate) enum Confinement {
    /// Under bubblewrap at this path.
    Bwrap(PathBuf),
    /// `VOIDBOX_CONFINE=off`: no namespaces (QEMU's seccomp filter, the
    /// empty environment and the uid drop still apply).
    Off,
}

impl Confinement {
    /// Reads `VOIDBOX_CONFINE` and finds `bwrap` (`VOIDBOX_BWRAP`, else PATH).
    pub(crate) fn from_env() -> Result<Self> {
        match std::env::var("VOIDBOX_CONFINE").as_deref() {
            Ok("off") => return Ok(Self::Off),
            Ok("" | "on") | Err(_) => {}
            Ok(other) => {
                return Err(Error::Launch(format!(
                    "VOIDBOX_CONFINE={other:?}: expected \"on\" or \"off\""
                )))
            }
        }
        super::locate("VOIDBOX_BWRAP", "bwrap")
            .map(Self::Bwrap)
            .ok_or_else(|| {
                Error::Launch(
                    "bubblewrap (bwrap) not found; QEMU runs confined by it: apt-get install \
                     bubblewrap (or set VOIDBOX_CONFINE=off to run QEMU without namespaces)"
                        .into(),
                )
            })
    }
}

/// Which identity QEMU runs as: `None` keeps ours. As root: the owner of
/// the shared directories (9p reads and writes them with QEMU's own
/// rights, so it must be able to; all must have one owner), else
/// `VOIDBOX_QEMU_USER` (`UID:GID`), else `nobody`.
pub(crate) fn identity(shares: &[PathBuf]) -> Result<Option<Identity>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let mut owner: Option<Identity> = None;
    for share in shares {
        let meta = std::fs::metadata(share)
            .map_err(|e| Error::io(format!("stat {}", share.display()), e))?;
        let this = Identity {
            uid: meta.uid(),
            gid: meta.gid(),
        };
        match owner {
            Some(seen) if seen.uid != this.uid => {
                return Err(Error::Config(ConfigError::new(
                    "mounts",
                    format!(
                        "mounted directories have different owners (uid {} and {}); as root, \
                         QEMU runs as their owner, so they must have one",
                        seen.uid, this.uid
                    ),
                )))
            }
            _ => owner = Some(this),
        }
    }
    if owner.is_some() {
        return Ok(owner);
    }
    match std::env::var("VOIDBOX_QEMU_USER") {
        Ok(spec) if !spec.is_empty() => parse_identity(&spec).map(Some),
        _ => Ok(Some(DEFAULT_UNPRIVILEGED)),
    }
}

fn parse_identity(spec: &str) -> Result<Identity> {
    let bad = || Error::Launch(format!("VOIDBOX_QEMU_USER={spec:?}: expected UID:GID"));
    let (uid, gid) = spec.split_once(':').ok_or_else(bad)?;
    Ok(Identity {
        uid: uid.parse().map_err(|_| bad())?,
        gid: gid.parse().map_err(|_| bad())?,
    })
}

/// Files opened here and inherited by QEMU, which opens them again as
/// `/proc/self/fd/N`: it needs no path to them, and no directory on the way
/// needs to be visible or searchable.
#[derive(Default)]
pub(crate) struct Passed {
    fds: Vec<OwnedFd>,
}

impl Passed {
    /// Opens `path` (read-only) and returns the name QEMU gives it.
    pub(crate) fn open(&mut self, path: &Path) -> Result<String> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Ok(self.add(file.into()))
    }

    /// Passes `fd` on; returns its number in QEMU.
    pub(crate) fn add_raw(&mut self, fd: OwnedFd) -> i32 {
        let raw = fd.as_raw_fd();
        self.fds.push(fd);
        raw
    }

    /// Passes `fd` on; returns the name QEMU gives it.
    pub(crate) fn add(&mut self, fd: OwnedFd) -> String {
        let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
        self.fds.push(fd);
        name
    }
}

/// What QEMU's sandbox contains.
pub(crate) struct Jail<'a> {
    /// The VMM binary.
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// The VM's runtime directory (bound read-write at the same path).
    pub runtime_dir: &'a Path,
    /// Bind `/dev/kvm`.
    pub kvm: bool,
    /// Run as this identity (only when we are root).
    pub identity: Option<Identity>,
    /// Descriptors QEMU inherits.
    pub passed: Passed,
    /// Bubblewrap's `--info-fd` (the write end), when confined.
    pub info: Option<OwnedFd>,
}

/// The command that starts QEMU in its jail. Its `pre_exec` makes the
/// passed descriptors inheritable and sets the death signal; spawn it from
/// a thread that outlives the VMM ([`super::process`]).
pub(crate) fn command(confinement: &Confinement, jail: Jail<'_>) -> Result<Command> {
    let mut cmd = match confinement {
        Confinement::Off => {
            let mut cmd = Command::new(jail.program);
            cmd.args(jail.args);
            cmd
        }
        Confinement::Bwrap(bwrap) => {
            let mut cmd = Command::new(bwrap);
            cmd.args(bwrap_args(&jail)?).arg("--").arg(jail.program);
            cmd.args(jail.args);
            cmd
        }
    };
    cmd.env_clear().current_dir("/").process_group(0);
    if let Some(id) = jail.identity {
        // std clears the supplementary groups when root sets a uid.
        cmd.uid(id.uid).gid(jail_gid(id, jail.kvm));
    }
    let mut inherit: Vec<i32> = jail.passed.fds.iter().map(AsRawFd::as_raw_fd).collect();
    inherit.extend(jail.info.iter().map(AsRawFd::as_raw_fd));
    // Owned by the closure, so dropping the command closes our copies.
    let keep = (jail.passed, jail.info);
    // SAFETY: between fork and exec this only makes raw syscalls (fcntl,
    // prctl) on descriptors that are open, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep;
            for &fd in &inherit {
                fcntl_setfd(std::os::fd::BorrowedFd::borrow_raw(fd), FdFlags::empty())?;
            }
            // After the uid change, which would clear it.
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            Ok(())
        });
    }
    Ok(cmd)
}

/// With KVM, QEMU's group is the one `/dev/kvm` belongs to.
fn jail_gid(id: Identity, kvm: bool) -> u32 {
    if kvm {
        if let Ok(meta) = std::fs::metadata("/dev/kvm") {
            return meta.gid();
        }
    }
    id.gid
}

fn bwrap_args(jail: &Jail<'_>) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = [
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    // /lib, /lib64, /bin and /sbin: symlinks into /usr on merged-/usr hosts.
    for top in ["/lib", "/lib64", "/bin", "/sbin"] {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), top.into()]),
            Err(_) if path.is_dir() => args.extend(["--ro-bind".into(), top.into(), top.into()]),
            Err(_) => {}
        }
    }
    // A QEMU installed outside /usr brings its prefix (`PREFIX/bin/qemu-…`).
    if !jail.program.starts_with("/usr") {
        let prefix = jail
            .program
            .parent()
            .and_then(Path::parent)
            .filter(|p| *p != Path::new("/"))
            .ok_or_else(|| {
                Error::Launch(format!(
                    "cannot confine QEMU at {}: install it under /usr or in PREFIX/bin",
                    jail.program.display()
                ))
            })?;
        args.extend(["--ro-bind".into(), prefix.into(), prefix.into()]);
    }
    args.extend([
        "--dev".into(),
        "/dev".into(),
        "--proc".into(),
        "/proc".into(),
    ]);
    if jail.kvm {
        args.extend(["--dev-bind".into(), "/dev/kvm".into(), "/dev/kvm".into()]);
    }
    args.extend([
        "--bind".into(),
        jail.runtime_dir.into(),
        jail.runtime_dir.into(),
        "--chdir".into(),
        jail.runtime_dir.into(),
    ]);
    if let Some(info) = &jail.info {
        args.extend(["--info-fd".into(), info.as_raw_fd().to_string().into()]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_user_parses_or_says_what_it_wants() {
        assert_eq!(
            parse_identity("1000:1001").unwrap(),
            Identity {
                uid: 1000,
                gid: 1001
            }
        );
        for bad in ["1000", "a:b", ":", "1000:"] {
            let err = parse_identity(bad).unwrap_err().to_string();
            assert!(err.contains("UID:GID"), "{err}");
        }
    }

    #[test]
    fn the_jail_shows_usr_read_only_and_nothing_of_home() {
        let jail = Jail {
            program: Path::new("/usr/bin/qemu-system-x86_64"),
            args: &[],
            runtime_dir: Path::new("/tmp/voidbox-x"),
            kvm: false,
            identity: None,
            passed: Passed::default(),
            info: None,
        };
        let args: Vec<String> = bwrap_args(&jail)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let text = args.join(" ");
        assert!(text.contains("--ro-bind /usr /usr"), "{text}");
        assert!(
            text.contains("--bind /tmp/voidbox-x /tmp/voidbox-x"),
            "{text}"
        );
        for ns in ["user", "ipc", "pid", "net", "uts"] {
            assert!(text.contains(&format!("--unshare-{ns} ")), "{ns}: {text}");
        }
        assert!(!text.contains("/root") && !text.contains("/home") && !text.contains("/etc"));
        assert!(!text.contains("/dev/kvm"));
    }
}
