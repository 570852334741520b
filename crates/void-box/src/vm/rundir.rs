//! A VM's private runtime directory, and the sweep that removes the ones a
//! killed `voidbox` left behind.
//!
//! Each directory holds an `owner` stamp: the pid and start time of the
//! process that made it. A directory whose owner is no longer running (the
//! pid is gone or now belongs to a process started at another time) holds
//! a dead VM's sockets, logs and initrd (with its secret and environment)
//! and is removed at the next start, with any process still naming it: a
//! VMM whose wrapper was killed before the wrapper could arm the VMM's
//! death signal outlives `voidbox`, and is ended here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::error::{Error, Result};

const PREFIX: &str = "voidbox-";
const STAMP: &str = "owner";

/// Creates a 0700 runtime directory stamped with our pid, after sweeping
/// stale ones once per process.
pub(crate) fn create() -> Result<tempfile::TempDir> {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let removed = sweep(&std::env::temp_dir());
        if removed > 0 {
            tracing::info!(
                removed,
                "removed runtime directories of dead voidbox processes"
            );
        }
    });
    let dir = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| Error::io("create the VM's runtime directory", e))?;
    let me = std::process::id();
    let stamp = format!("{me} {}\n", start_time(me).unwrap_or(0));
    std::fs::write(dir.path().join(STAMP), stamp)
        .map_err(|e| Error::io("stamp the VM's runtime directory", e))?;
    Ok(dir)
}

/// Removes the runtime directories under `tmp` whose owner is dead; returns
/// how many. Directories without a stamp, or that we may not remove, stay.
pub(crate) fn sweep(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path: PathBuf = entry.path();
        // Never follow a link someone planted in /tmp.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(stamp) = std::fs::read_to_string(path.join(STAMP)) else {
            continue;
        };
        if owner_is_dead(&stamp) {
            kill_leftovers(&path);
            if std::fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Kills the processes whose command line names `dir` (a dead VM's VMM or
/// wrapper: nothing else names a private runtime directory); how many.
fn kill_leftovers(dir: &Path) -> usize {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    use std::os::unix::ffi::OsStrExt;
    let needle = dir.as_os_str().as_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        // The pidfd first: if the pid is reused before the command line is
        // read, the signal goes to the process the pidfd holds (gone by
        // then), never to the newcomer.
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero())) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle)
            && pidfd_send_signal(&pidfd, Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    if killed > 0 {
        tracing::warn!(killed, dir = %dir.display(), "killed what a dead voidbox's VM left running");
    }
    killed
}

fn owner_is_dead(stamp: &str) -> bool {
    let mut fields = stamp.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next()) else {
        return false; // not ours to judge
    };
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match start_time(pid) {
        None => true,
        Some(now) => now != started,
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`
/// field 22), which tells a recycled pid from the original.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_dirs_of_dead_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, stamp: Option<String>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("initramfs.cpio"), b"secret").unwrap();
            if let Some(stamp) = stamp {
                std::fs::write(dir.join(STAMP), stamp).unwrap();
            }
            dir
        };
        let me = std::process::id();
        let alive = make(
            "voidbox-alive",
            Some(format!("{me} {}", start_time(me).unwrap())),
        );
        // A pid far above pid_max never exists.
        let dead = make("voidbox-dead", Some("4194304999 1".into()));
        // Our pid, but another start time: the pid was recycled.
        let recycled = make("voidbox-recycled", Some(format!("{me} 1")));
        let unstamped = make("voidbox-unstamped", None);
        let other = make("unrelated-dead", Some("4194304999 1".into()));
        std::os::unix::fs::symlink(&dead, tmp.path().join("voidbox-link")).unwrap();

        assert_eq!(sweep(tmp.path()), 2);
        assert!(alive.exists() && unstamped.exists() && other.exists());
        assert!(!dead.exists() && !recycled.exists());
    }

    #[test]
    fn sweep_kills_what_a_dead_owners_vm_left_running() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join("voidbox-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(STAMP), "4194304999 1").unwrap();
        // A stand-in VMM: runs until killed, naming the directory.
        let mut leftover = std::process::Command::new("tail")
            .args(["-f", "/dev/null"])
            .arg(dead.join(STAMP))
            .spawn()
            .unwrap();
        let bystander = tmp.path().join("voidbox-other");
        let mut unrelated = std::process::Command::new("tail")
            .args(["-f", "/dev/null"])
            .arg(&bystander)
            .spawn()
            .unwrap();
        assert_eq!(sweep(tmp.path()), 1);
        let status = leftover.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "killed");
        assert!(
            unrelated.try_wait().unwrap().is_none(),
            "only what names the dead dir"
        );
        unrelated.kill().unwrap();
        unrelated.wait().unwrap();
    }

    #[test]
    fn start_time_reads_past_a_tricky_command_name() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
