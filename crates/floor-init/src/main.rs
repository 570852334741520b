//! The benchmark floor: the least a guest can do to answer on the agent's
//! port.
//!
//! Booted as `/init` in an initramfs of its own, it mounts `/dev`, opens
//! the virtio-serial port the agent would hold and echoes whatever it
//! receives, nothing else: no runtime, no protocol. `voidbox bench startup`
//! times QEMU start to the first echo and compares the sandbox's cold
//! start against that.

use std::ffi::CStr;
use std::io;

/// The agent's port: the first virtio-serial device's port 1, as QEMU
/// numbers it (`virtserialport,nr=1`). Named by its number here, to keep
/// this binary to libc alone.
const PORT: &CStr = c"/dev/vport0p1";

fn main() {
    if let Err(e) = serve() {
        eprintln!("floor-init: {e}");
    }
    // PID 1 must not exit; park until the host kills the VM.
    loop {
        std::thread::park();
    }
}

fn serve() -> io::Result<()> {
    // SAFETY: plain syscalls on C strings that outlive them and on a
    // descriptor this function owns; `buf` outlives every read and write.
    unsafe {
        if libc::mount(
            c"devtmpfs".as_ptr(),
            c"/dev".as_ptr(),
            c"devtmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let fd = loop {
            let fd = libc::open(PORT.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd >= 0 {
                break fd;
            }
            libc::usleep(1000);
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                // No host yet (end-of-file until one connects).
                libc::usleep(1000);
                continue;
            }
            libc::write(fd, buf.as_ptr().cast(), n as usize);
        }
    }
}
