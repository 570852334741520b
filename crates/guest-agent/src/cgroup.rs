//! Control groups: one over every command, one per command.
//!
//! `/sys/fs/cgroup/sandbox` holds every process a request starts and caps
//! their memory and number of tasks together, so a command that eats the
//! guest's memory is killed inside its group while the agent (outside it)
//! keeps serving. Each exec gets a child group, `sandbox/exec-N`, which the
//! child joins before it execs; on timeout, cancel or a vanished host the
//! agent writes `cgroup.kill`, which kills every process in the group,
//! including those that left the exec's session with `setsid`.
//!
//! The sandbox user cannot leave its group (moving a process needs write
//! access to the common ancestor's `cgroup.procs`, which only root has)
//! nor raise its limits (the files belong to root).

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{mount, MountFlags};

/// Where the cgroup v2 hierarchy is mounted.
const HIERARCHY: &str = "/sys/fs/cgroup";
/// Most tasks (processes and threads) all commands together may have.
pub const SANDBOX_PIDS_MAX: u64 = 4096;

/// The group over all commands and the source of per-exec groups.
///
/// Exec groups are reused, not removed: under TCG a `mkdir` and `rmdir`
/// of a cgroup cost 5 ms, more than the rest of an exec. A group whose
/// exec ended empty is free at once; one that still holds a daemon waits
/// until it is empty. (Moving a process into a group is cheap with the
/// hierarchy mounted `favordynmods`: 0.15 ms.)
pub struct Cgroups {
    sandbox: PathBuf,
    next: AtomicU64,
    /// Empty groups, ready for the next exec.
    free: Mutex<Vec<ExecCgroup>>,
    /// Groups that still had processes when their exec ended (a daemon
    /// that called `setsid`); free again once empty.
    busy: Mutex<Vec<ExecCgroup>>,
}

impl Cgroups {
    /// Mounts the hierarchy (as PID 1) and creates the sandbox group with
    /// its limits: memory up to what the guest has less a reserve for the
    /// agent and the kernel, and [`SANDBOX_PIDS_MAX`] tasks.
    pub fn setup(is_init: bool) -> io::Result<Self> {
        let root = Path::new(HIERARCHY);
        if is_init {
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            mount("cgroup2", root, "cgroup2", flags, c"favordynmods")
                .map_err(|e| context(e.into(), "mount cgroup2 on", root))?;
        }
        write(&root.join("cgroup.subtree_control"), "+memory +pids")?;
        let sandbox = root.join("sandbox");
        match fs::create_dir(&sandbox) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(context(e, "create", &sandbox))
            }
            _ => {}
        }
        write(&sandbox.join("memory.max"), &memory_cap().to_string())?;
        write(&sandbox.join("pids.max"), &SANDBOX_PIDS_MAX.to_string())?;
        let cgroups = Self {
            sandbox,
            next: AtomicU64::new(1),
            free: Mutex::new(Vec::new()),
            busy: Mutex::new(Vec::new()),
        };
        // Made at boot, so that the first exec does not pay for it.
        let first = cgroups.make()?;
        lock(&cgroups.free).push(first);
        Ok(cgroups)
    }

    /// An empty group for one exec: a free one, else a new one.
    pub fn create(&self) -> io::Result<ExecCgroup> {
        let emptied: Vec<ExecCgroup> = {
            let mut busy = lock(&self.busy);
            let (empty, still): (Vec<_>, Vec<_>) = busy.drain(..).partition(ExecCgroup::is_empty);
            *busy = still;
            empty
        };
        let mut free = lock(&self.free);
        free.extend(emptied);
        match free.pop() {
            Some(group) => Ok(group),
            None => {
                drop(free);
                self.make()
            }
        }
    }

    fn make(&self) -> io::Result<ExecCgroup> {
        let dir = self.sandbox.join(format!(
            "exec-{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).map_err(|e| context(e, "create", &dir))?;
        let procs = rustix::fs::open(
            dir.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| context(e.into(), "open", &dir))?;
        Ok(ExecCgroup { dir, procs })
    }

    /// Takes the group back once its exec is over: free at once if it is
    /// empty, or later, when its last process has gone.
    pub fn release(&self, group: ExecCgroup) {
        if group.is_empty() {
            lock(&self.free).push(group);
        } else {
            lock(&self.busy).push(group);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One exec's group.
pub struct ExecCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the child to write itself into.
    procs: OwnedFd,
}

impl ExecCgroup {
    /// The descriptor the child writes "0" to, to join (see [`join`]).
    pub fn procs_fd(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// Kills every process in the group.
    pub fn kill(&self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// Whether no process is left in it (`populated 0`). A group that
    /// cannot be read counts as busy.
    fn is_empty(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|events| events.lines().any(|l| l == "populated 0"))
    }
}

/// Moves the calling process into the group whose `cgroup.procs` is `fd`.
/// Safe between `clone` and `exec`: one `write` of static bytes.
pub fn join(fd: RawFd) -> rustix::io::Result<()> {
    // SAFETY: a descriptor the suspended parent keeps open, and a static buffer.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::write(fd, b"0").map(|_| ())
}

/// What the commands may use: all of the guest's memory but a reserve of
/// a sixteenth, and at least 32 MiB, for the agent and the kernel.
fn memory_cap() -> u64 {
    let info = rustix::system::sysinfo();
    let total = info.totalram as u64 * u64::from(info.mem_unit.max(1));
    let reserve = (total / 16).max(32 << 20);
    total.saturating_sub(reserve).max(total / 2)
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| context(e, &format!("write {value:?} to"), path))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
