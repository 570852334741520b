//! The benchmark floor: the least a guest can do to answer on vsock.
//!
//! Booted as `/init` in an initramfs of its own, it listens on the agent's
//! vsock port and echoes whatever it receives, nothing else: no mounts, no
//! runtime, no protocol. `voidbox bench startup` times QEMU start to the
//! first echo and compares the sandbox's cold start against that.

use std::io;

/// Port the benchmark connects to: `void_box_protocol::AGENT_VSOCK_PORT`
/// (not a dependency here, to keep this binary to libc alone).
const PORT: u32 = 1023;

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
    // SAFETY: plain socket syscalls on descriptors this function owns;
    // `addr` is a fully initialised sockaddr_vm that outlives the bind call.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        addr.svm_port = PORT;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) < 0
            || libc::listen(fd, 16) < 0
        {
            return Err(io::Error::last_os_error());
        }
        loop {
            let conn = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
            if conn < 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(conn, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 || libc::write(conn, buf.as_ptr().cast(), n as usize) != n {
                    break;
                }
            }
            libc::close(conn);
        }
    }
}
