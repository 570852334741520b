//! Process creation without copying the agent.
//!
//! `std::process::Command` forks when the child needs set-up (uid, session,
//! rlimits). Under TCG a fork of the agent is expensive: the page tables are
//! copied, every writable page of the agent is made copy-on-write, and the
//! agent then takes a page fault on each page it writes until the child has
//! exec'd and beyond. Measured: 3.0 ms from `spawn()` to the child's exec,
//! out of a 7.4 ms exec round trip.
//!
//! Instead the child is created with `clone(CLONE_VM | CLONE_VFORK)`, like
//! `posix_spawn`: it borrows the agent's memory on a stack of its own, does
//! its set-up with plain system calls, and execs; the calling thread sleeps
//! until then. Everything the child needs is prepared beforehand so that it
//! allocates nothing and takes no locks.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use rustix::process::{Gid, Resource, Rlimit, Uid};
use void_box_protocol::ResourceLimits;

/// The child's stack, carved from the caller's (suspended) stack as musl's
/// `posix_spawn` does: its set-up is a few shallow calls, and these pages
/// are already mapped, where a fresh allocation would fault them in.
const CHILD_STACK: usize = 32 * 1024;

/// Default search path when the environment has no `PATH`, as in glibc.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A process to start.
pub struct Spawn<'a> {
    /// Program name or path, looked up in `PATH` from `env` like `execvp`.
    pub program: &'a str,
    /// Arguments after `argv[0]`.
    pub args: &'a [String],
    /// The complete environment.
    pub env: &'a [(String, String)],
    /// Working directory.
    pub cwd: &'a str,
    /// Descriptors that become stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: &'a [u32],
    /// Directory to `chroot` into before anything else (an image's root).
    pub root: Option<&'a std::ffi::CStr>,
    pub limits: ResourceLimits,
    /// Make stdin (a pty slave) the controlling terminal.
    pub controlling_tty: bool,
    /// `cgroup.procs` of the control group to join, first of all.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
}

/// What the child reads: raw pointers into buffers the parent keeps alive
/// (it is suspended until the child execs or exits).
struct ChildArgs {
    candidates: Vec<CString>,
    argv: Vec<*const c_char>,
    /// `/bin/sh <script> args...` for a file without `#!` (ENOEXEC), as
    /// `execvp` does; the child fills in the script's path.
    script_argv: Vec<AtomicPtr<c_char>>,
    envp: Vec<*const c_char>,
    cwd: CString,
    root: Option<CString>,
    stdio: [RawFd; 3],
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    limits: ResourceLimits,
    controlling_tty: bool,
    cgroup_procs: Option<RawFd>,
    /// errno of the step that failed, 0 if the child exec'd.
    error: AtomicI32,
}

/// Starts the process; returns its pid once it has exec'd. Its exit
/// signal is SIGCHLD, so the agent's reaper collects it.
pub fn spawn(req: &Spawn<'_>) -> io::Result<i32> {
    let nul = |s: &str| {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
    };
    let argv_c = std::iter::once(req.program)
        .chain(req.args.iter().map(String::as_str))
        .map(nul)
        .collect::<io::Result<Vec<_>>>()?;
    let env_c = req
        .env
        .iter()
        .map(|(k, v)| nul(&format!("{k}={v}")))
        .collect::<io::Result<Vec<_>>>()?;
    let path = req
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let null_terminated = |strings: &[CString]| {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect::<Vec<_>>()
    };
    let args = ChildArgs {
        candidates: candidates(req.program, path)?,
        argv: null_terminated(&argv_c),
        script_argv: [c"/bin/sh".as_ptr(), ptr::null()]
            .into_iter()
            .chain(null_terminated(&argv_c[1..]))
            .map(|p| AtomicPtr::new(p.cast_mut()))
            .collect(),
        envp: null_terminated(&env_c),
        cwd: nul(req.cwd)?,
        root: req.root.map(CString::from),
        stdio: req.stdio.map(|fd| fd.as_raw_fd()),
        uid: Uid::from_raw(req.uid),
        gid: Gid::from_raw(req.gid),
        groups: req.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        limits: req.limits,
        controlling_tty: req.controlling_tty,
        cgroup_procs: req.cgroup_procs.map(|fd| fd.as_raw_fd()),
        error: AtomicI32::new(0),
    };
    let pid = clone_vfork(&args)?;
    match args.error.load(Ordering::Acquire) {
        0 => Ok(pid),
        // The child exited; the reaper collects it as an orphan.
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The paths `execvp` would try, in order.
fn candidates(program: &str, path: &str) -> io::Result<Vec<CString>> {
    let to_c = |s: String| {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
    };
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(vec![to_c(program.to_string())?]);
    }
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            to_c(format!("{}/{program}", dir.trim_end_matches('/')))
        })
        .collect()
}

/// Creates the child and waits for its exec or exit.
fn clone_vfork(args: &ChildArgs) -> io::Result<i32> {
    let mut stack = MaybeUninit::<[u8; CHILD_STACK]>::uninit();
    // SAFETY: the child runs on `stack`, whose top is aligned down to 16
    // bytes as the ABI requires. `args` and `stack` outlive the child's use
    // of them: CLONE_VFORK keeps this thread suspended until the child has
    // exec'd or exited. All signals are blocked across the clone so that no
    // handler of the agent runs on the child's stack; the old mask is
    // restored right after.
    unsafe {
        let top = (stack.as_mut_ptr().cast::<u8>().add(CHILD_STACK) as usize & !15) as *mut c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        Ok(pid)
    }
}

/// The child between clone and exec: it shares the agent's memory, so it
/// only makes system calls on data prepared by the parent. On failure it
/// records errno and exits 127.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the suspended parent keeps alive.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let errno = match child_setup(args) {
        Ok(()) => exec_candidates(args),
        Err(e) => e.raw_os_error(),
    };
    args.error.store(errno.max(1), Ordering::Release);
    // SAFETY: _exit ends this child only; no destructors, no atexit.
    unsafe { libc::_exit(127) }
}

fn child_setup(args: &ChildArgs) -> rustix::io::Result<()> {
    // Joined while still root: moving a process needs the agent's rights.
    if let Some(fd) = args.cgroup_procs {
        crate::cgroup::join(fd)?;
    }
    for (target, &fd) in args.stdio.iter().enumerate() {
        dup_to(fd, target as RawFd)?;
    }
    // The image's root, before the working directory is looked up in it.
    if let Some(root) = &args.root {
        rustix::process::chroot(root.as_c_str())?;
    }
    // rustix's thread variants are the raw system calls; glibc's setuid
    // would ask every thread of the (shared) agent to change identity.
    rustix::thread::set_thread_groups(&args.groups)?;
    rustix::thread::set_thread_gid(args.gid)?;
    rustix::thread::set_thread_uid(args.uid)?;
    rustix::process::chdir(args.cwd.as_c_str())?;
    reset_signals();
    rustix::process::setsid()?;
    if args.controlling_tty {
        rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
    }
    let limits = args.limits;
    set_limit(Resource::Nofile, limits.nofile)?;
    set_limit(Resource::Nproc, limits.nproc)?;
    set_limit(Resource::Fsize, limits.fsize_bytes)?;
    set_limit(Resource::Cpu, limits.cpu_secs)?;
    Ok(())
}

/// `dup2(fd, target)`, clearing close-on-exec when they are already equal.
fn dup_to(fd: RawFd, target: RawFd) -> rustix::io::Result<()> {
    // SAFETY: plain descriptor system calls on numbers the parent keeps open.
    let ret = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if ret < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(errno()));
    }
    Ok(())
}

/// The child starts like one from `Command`: empty signal mask and SIGPIPE
/// at its default (the agent ignores it, and ignoring survives exec).
/// Handlers need no reset: exec resets them, and the mask keeps them from
/// running before.
fn reset_signals() {
    // SAFETY: rt_sigaction and rt_sigprocmask on this process only (no
    // CLONE_SIGHAND: the child has its own copy of the handler table).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
    }
}

/// Lowers a limit; the child is no longer root and cannot raise a hard
/// limit, and the kernel's default may be lower than asked (NPROC scales
/// with guest memory), so it asks for at most what is allowed.
fn set_limit(resource: Resource, value: Option<u64>) -> rustix::io::Result<()> {
    let Some(v) = value else { return Ok(()) };
    let v = v.min(
        rustix::process::getrlimit(resource)
            .maximum
            .unwrap_or(u64::MAX),
    );
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(v),
            maximum: Some(v),
        },
    )
}

/// Tries each candidate path like `execvp`: a missing file moves on, a
/// permission error is remembered, anything else stops. Returns errno.
fn exec_candidates(args: &ChildArgs) -> i32 {
    let mut denied = false;
    let mut last = libc::ENOENT;
    for path in &args.candidates {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays of
        // them, alive in the suspended parent.
        unsafe { libc::execve(path.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr()) };
        last = errno();
        if last == libc::ENOEXEC {
            args.script_argv[1].store(path.as_ptr().cast_mut(), Ordering::Relaxed);
            // SAFETY: as above; AtomicPtr has the layout of a raw pointer.
            unsafe {
                libc::execve(
                    c"/bin/sh".as_ptr(),
                    args.script_argv.as_ptr().cast(),
                    args.envp.as_ptr(),
                )
            };
            return errno();
        }
        match last {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return last,
        }
    }
    if denied {
        libc::EACCES
    } else {
        last
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    #[test]
    fn candidates_follow_path_like_execvp() {
        let c = candidates("true", "/usr/bin::/bin/").unwrap();
        let c: Vec<&CStr> = c.iter().map(|s| s.as_c_str()).collect();
        assert_eq!(c, [c"/usr/bin/true", c"./true", c"/bin/true"]);
        let c = candidates("./x", "/bin").unwrap();
        assert_eq!(c[0].as_c_str(), c"./x");
        assert!(candidates("", "/bin").is_err());
    }
}
