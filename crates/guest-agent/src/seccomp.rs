//! The system-call filter every command runs under.
//!
//! Commands already run as an unprivileged user; the filter takes away the
//! kernel interfaces a sandboxed program has no business with and that have
//! been the way out of most container escapes: user namespaces (they give
//! an unprivileged process CAP_SYS_ADMIN over new namespaces), mounts,
//! BPF, keyrings, perf events, io_uring, ptrace and `process_vm_*`, kernel
//! modules, kexec, and the administrator's calls. Everything else is
//! allowed: this is a deny list on top of the user's permissions, because
//! the programs people run in a sandbox (python, node, claude-code, a
//! compiler) need nearly all of the rest.
//!
//! A denied call fails with `EPERM`; `clone3` fails with `ENOSYS`, so that
//! glibc and musl fall back to `clone`, whose flags a filter can read (the
//! flags of `clone3` sit behind a pointer). No-new-privs is set with the
//! filter, so no setuid program undoes any of it. Filters are inherited
//! by every descendant and cannot be removed.
//!
//! Where it is installed is a matter of cost: installing a filter (the
//! kernel checks it, translates it, allocates it and precomputes its
//! per-call cache) cost 3 ms per command under TCG, a third of an exec, and
//! even a three-call filter cost 2.5 ms. So the agent installs the filter
//! on itself once it has booted ([`CommandFilter::install`]) and every
//! command inherits it for nothing. The price: the three calls the agent
//! still needs (`reboot` to power off, `clock_settime` and `settimeofday`
//! to set the clock at each handshake) stay open to commands that run as
//! guest root. They can only stop or mistime their own VM (the host sets
//! the clock again at the next handshake); the sandbox user lacks the
//! capabilities for them anyway.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Calls a command may never make, whatever its arguments.
const DENIED: &[i64] = &[
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_perf_event_open,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_userfaultfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
];

/// Calls denied only with `CLONE_NEWUSER` in their flags (argument 0).
const NO_NEW_USER_NS: &[i64] = &[libc::SYS_unshare, libc::SYS_clone];

/// The compiled filters.
pub struct CommandFilter {
    /// [`DENIED`] and user namespaces, answered with EPERM.
    deny: BpfProgram,
    /// `clone3`, answered with ENOSYS.
    clone3: BpfProgram,
}

impl CommandFilter {
    /// Compiles the filters for this machine's architecture.
    pub fn new() -> io::Result<Self> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        let new_user = libc::CLONE_NEWUSER as u64;
        for &nr in NO_NEW_USER_NS {
            let flag = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(new_user),
                new_user,
            )
            .map_err(invalid)?;
            rules.insert(nr, vec![SeccompRule::new(vec![flag]).map_err(invalid)?]);
        }
        let deny = compile(rules, libc::EPERM)?;
        let clone3 = compile(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            libc::ENOSYS,
        )?;
        Ok(Self { deny, clone3 })
    }

    /// Sets no-new-privs and installs the filters on every thread of the
    /// agent, once its boot is done (it mounts nothing after). Every
    /// process it starts from then on inherits both.
    pub fn install(&self) -> io::Result<()> {
        for program in [&self.clone3, &self.deny] {
            seccompiler::apply_filter_all_threads(program)
                .map_err(|e| io::Error::other(format!("cannot install the seccomp filter: {e}")))?;
        }
        Ok(())
    }
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> io::Result<BpfProgram> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(invalid)?;
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(invalid)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters compile on the build machine's architecture (the
    /// guest's); what they do is tested in a real guest
    /// (`tests/guest_policy_vm.rs`).
    #[test]
    fn filters_compile() {
        let filter = CommandFilter::new().unwrap();
        assert!(!filter.deny.is_empty());
        assert!(!filter.clone3.is_empty());
    }

    /// The filters are applied in a child of this test process, as the
    /// agent and then a command: the denied calls fail with the promised
    /// errno, the rest still work.
    #[test]
    fn a_filtered_process_cannot_make_a_user_namespace() {
        let filter = CommandFilter::new().unwrap();
        // SAFETY: fork in a test; the child only makes system calls and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                if filter.install().is_err() {
                    return 10;
                }
                // SAFETY: plain system calls with integer arguments.
                unsafe {
                    if libc::unshare(libc::CLONE_NEWUSER) == 0 || errno() != libc::EPERM {
                        return 11;
                    }
                    if libc::syscall(libc::SYS_clone3, 0, 0) == 0 || errno() != libc::ENOSYS {
                        return 12;
                    }
                    if libc::syscall(libc::SYS_bpf, 0, 0, 0) == 0 || errno() != libc::EPERM {
                        return 13;
                    }
                    if libc::getpid() <= 0 || libc::unshare(0) != 0 {
                        return 14;
                    }
                }
                0
            })();
            // SAFETY: ends the forked child without running the test harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}
