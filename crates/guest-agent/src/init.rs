//! Guest preparation done once at boot, before any request is served.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::path::Path;

use rustix::mount::{mount, MountFlags};
use void_box_protocol::{GuestConfig, GUEST_CONFIG_PATH};

/// Unprivileged user every command runs as.
pub const SANDBOX_UID: u32 = 1000;
/// Group of [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;

/// Mounts the pseudo filesystems (when PID 1) and takes the host's
/// configuration out of the initramfs.
pub fn prepare_guest(is_init: bool) -> io::Result<GuestConfig> {
    if is_init {
        mount_filesystems()?;
        harden_kernel();
    }
    let config = take_config(Path::new(GUEST_CONFIG_PATH))?;
    if is_init {
        rustix::system::sethostname(config.hostname.as_bytes())?;
    }
    Ok(config)
}

fn mount_filesystems() -> io::Result<()> {
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    let noexec = nosuid_nodev | MountFlags::NOEXEC;
    let mounts: [(&str, &str, &str, MountFlags, &CStr); 6] = [
        ("proc", "/proc", "proc", noexec, c""),
        ("sysfs", "/sys", "sysfs", noexec, c""),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags::NOSUID,
            c"mode=0755",
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            c"mode=0620,ptmxmode=0666",
        ),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, c"mode=1777"),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, c"mode=1777"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        fs::create_dir_all(target)?;
        mount(source, target, fstype, flags, data)
            .map_err(|e| io::Error::new(e.kind(), format!("mount {fstype} on {target}: {e}")))?;
    }
    Ok(())
}

/// Kernel settings that never depend on a default: no hard links to files
/// one does not own, no following of others' symlinks or opening of others'
/// FIFOs and files with `O_CREAT` in sticky directories, no kernel log or
/// pointers for the sandbox user. (The file API is not hindered by
/// `protected_regular`: it writes a fresh file and renames it into place.)
const HARDENING: [(&str, &str); 6] = [
    ("/proc/sys/fs/protected_hardlinks", "1"),
    ("/proc/sys/fs/protected_symlinks", "1"),
    ("/proc/sys/fs/protected_fifos", "1"),
    ("/proc/sys/fs/protected_regular", "1"),
    ("/proc/sys/kernel/dmesg_restrict", "1"),
    ("/proc/sys/kernel/kptr_restrict", "2"),
];

fn harden_kernel() {
    for (path, value) in HARDENING {
        if let Err(e) = fs::write(path, value) {
            log(&format!("cannot set {path} to {value}: {e}"));
        }
    }
}

/// Reads the configuration and deletes it, so that no process started later
/// can read the secret.
fn take_config(path: &Path) -> io::Result<GuestConfig> {
    let bytes = fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))?;
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        let _ = fs::remove_dir(dir);
    }
    GuestConfig::from_bytes(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("guest config: {e}")))
}

/// Sets the guest wall clock from the host's, sent in the handshake.
pub fn set_clock(unix_time_ns: u64) {
    let ts = rustix::time::Timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as i64,
        tv_nsec: (unix_time_ns % 1_000_000_000) as _,
    };
    if let Err(e) = rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts) {
        log(&format!("cannot set the clock: {e}"));
    }
}

/// Mixes `entropy` from the host into the kernel's generator, credited,
/// and has the generator reseed from it at once: a restored VM must not go
/// on with the random stream of the VM it was saved from (and of its other
/// copies). The reseed also moves the generation that the vDSO's
/// `getrandom` checks, so processes' cached states are dropped too.
pub fn reseed_random(entropy: &[u8; 32]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // linux/random.h: RNDADDENTROPY = _IOW('R', 0x03, int[2]),
    // RNDRESEEDCRNG = _IO('R', 0x07); libc does not name them.
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    #[repr(C)]
    struct PoolInfo {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; 32],
    }
    let info = PoolInfo {
        entropy_count: 256,
        buf_size: 32,
        buf: *entropy,
    };
    let urandom = fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    let fd = urandom.as_raw_fd();
    // SAFETY: `fd` is open for the whole call; RNDADDENTROPY reads a
    // rand_pool_info (two ints, then `buf_size` bytes) from `info`, which
    // is repr(C), fully initialised and outlives the call; RNDRESEEDCRNG
    // takes no argument.
    let done = unsafe {
        libc::ioctl(fd, RNDADDENTROPY as _, &info as *const PoolInfo) == 0
            && libc::ioctl(fd, RNDRESEEDCRNG as _) == 0
    };
    if done {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes one line to the console (the VM's serial port).
pub fn log(message: &str) {
    eprintln!("voidbox-agent: {message}");
}

/// Ends the VM: kills every process, flushes, and restarts the machine,
/// which QEMU (started with `-no-reboot`) turns into an exit.
pub fn power_off() -> ! {
    if rustix::process::getpid().is_init() {
        // kill(-1) from PID 1 signals every process but itself.
        // SAFETY: kill(-1, SIGKILL) is a plain syscall with no memory arguments.
        unsafe {
            libc::kill(-1, libc::SIGKILL);
        }
        rustix::fs::sync();
        let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    }
    std::process::exit(0)
}

/// Reports a fatal error on the console and ends the VM.
pub fn fatal(message: &str) -> ! {
    log(message);
    power_off()
}
