//! The QEMU `microvm` backend.
//!
//! Each VM is one unprivileged `qemu-system-x86_64 -M microvm` child
//! process that boots the kernel directly (PVH), with guest RAM in a shared
//! memfd (vhost-user needs `share=on`) and its virtio-vsock device served
//! in-process over vhost-user (see [`super::vsock`]). Its sockets and files
//! live in a private 0700 temporary directory.
//!
//! QEMU dies with the host process (`PR_SET_PDEATHSIG`), is killed when the
//! [`QemuVm`] is dropped, and the directory goes with it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rustix::process::{Pid, Signal, WaitOptions};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::qmp::Qmp;
use super::vsock::VsockDevice;
use super::{Accel, VmBackend, VmExit, VmInstance, VmSpec};
use crate::error::{Error, Result};

/// Guest CID; each VM has its own vsock device, so they never collide.
const GUEST_CID: u64 = 3;

/// Launches VMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    qemu: PathBuf,
}

impl QemuBackend {
    /// Finds QEMU: `VOIDBOX_QEMU`, else `qemu-system-x86_64` on `PATH`.
    pub fn from_env() -> Result<Self> {
        let qemu = locate("VOIDBOX_QEMU", "qemu-system-x86_64").ok_or_else(|| {
            Error::Launch("qemu-system-x86_64 not found (apt-get install qemu-system-x86, or set VOIDBOX_QEMU)".into())
        })?;
        Ok(Self { qemu })
    }

    /// The QEMU arguments for `spec`, with files under `dir`.
    fn qemu_args(spec: &VmSpec, dir: &Path, initrd: &Path) -> Vec<String> {
        let mem = format!("{}M", spec.memory_mb);
        let mut args: Vec<String> = vec![
            "-M".into(),
            "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,memory-backend=mem".into(),
        ];
        match spec.accel {
            Accel::Kvm => {
                args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()])
            }
            Accel::Tcg => args.extend(["-accel".into(), "tcg".into()]),
        }
        args.extend([
            "-m".into(),
            mem.clone(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-chardev".into(),
            format!("socket,id=vsock,path={}", dir.join("vhost.sock").display()),
            "-device".into(),
            "vhost-user-vsock-device,chardev=vsock".into(),
            "-serial".into(),
            format!("file:{}", dir.join("console.log").display()),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        ]);
        for (i, disk) in spec.disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!(
                    "file={},format=raw,if=none,readonly=on,id=disk{i}",
                    qemu_path(&disk.path)
                ),
                "-device".into(),
                format!("virtio-blk-device,drive=disk{i},serial={}", disk.serial),
            ]);
        }
        for (i, share) in spec.shares.iter().enumerate() {
            let model = if share.mapped_ownership {
                "mapped-xattr"
            } else {
                "none"
            };
            args.extend([
                "-fsdev".into(),
                format!(
                    "local,id=share{i},path={},security_model={model}{}",
                    qemu_path(&share.path),
                    if share.readonly { ",readonly=on" } else { "" }
                ),
                "-device".into(),
                format!("virtio-9p-device,fsdev=share{i},mount_tag={}", share.tag),
            ]);
        }
        args.extend([
            "-kernel".into(),
            spec.kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            format!(
                "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init {}",
                spec.cmdline_extra
            )
            .trim_end()
            .to_string(),
        ]);
        args
    }
}

/// A path inside a QEMU option list, where `,` separates options and is
/// written `,,`.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// `env` if set, else `name` on PATH.
fn locate(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Spawns QEMU so that it dies with us and ignores the terminal's Ctrl-C
/// (the host decides when the VM ends).
fn spawn_vmm(program: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log)
        .map_err(|e| Error::io(format!("create {}", log.display()), e))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| Error::io("clone log handle", e))?,
        )
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is a single async-signal-safe syscall.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::Launch(format!("spawn {}: {e}", program.display())))
}

/// Waits for a child in the background and publishes how it ended.
fn watch_exit(mut child: Child) -> (u32, watch::Receiver<Option<VmExit>>) {
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        let _ = tx.send(Some(VmExit { status }));
    });
    (pid, rx)
}

impl VmBackend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu-microvm"
    }

    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn VmInstance>>> {
        async move {
            // 0700: the initrd in it carries the sandbox's secret.
            let dir = tempfile::Builder::new()
                .prefix("voidbox-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| Error::io("create the VM's runtime directory", e))?;
            let initrd = dir.path().join("initramfs.cpio");
            write_initrd(&spec.initramfs, &spec.extra_initramfs, &initrd)?;

            let device = VsockDevice::start(&dir.path().join("vhost.sock"), GUEST_CID)
                .map_err(|e| Error::Launch(format!("vsock device: {e}")))?;
            let args = Self::qemu_args(spec, dir.path(), &initrd);
            let qemu = spawn_vmm(&self.qemu, &args, &dir.path().join("qemu.log"))?;
            let (qemu_pid, qemu_exit) = watch_exit(qemu);
            Ok(Box::new(QemuVm {
                qemu_pid,
                qemu_exit,
                killed: AtomicBool::new(false),
                device,
                dir_path: dir.path().to_path_buf(),
                dir: Mutex::new(Some(dir)),
            }) as Box<dyn VmInstance>)
        }
        .boxed()
    }
}

/// The per-VM initrd: the shared base archive with this VM's archive
/// appended (the kernel unpacks concatenated archives in order).
fn write_initrd(base: &Path, extra: &[u8], dest: &Path) -> Result<()> {
    std::fs::copy(base, dest)
        .map_err(|e| Error::Image(format!("cannot read initramfs {}: {e}", base.display())))?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dest)
        .map_err(|e| Error::io("open the VM's initrd", e))?;
    file.write_all(extra)
        .map_err(|e| Error::io("write the VM's initrd", e))
}

/// A running QEMU VM and its vsock device.
pub struct QemuVm {
    qemu_pid: u32,
    qemu_exit: watch::Receiver<Option<VmExit>>,
    killed: AtomicBool,
    device: VsockDevice,
    dir_path: PathBuf,
    /// Removed by [`QemuVm::kill_all`], once QEMU is dead: a sandbox's files
    /// go with it even while something else still holds the instance.
    dir: Mutex<Option<tempfile::TempDir>>,
}

impl QemuVm {
    fn log_tail(&self, name: &str, max_bytes: usize) -> String {
        tail_of(&self.dir_path.join(name), max_bytes)
    }

    fn kill_all(&self) {
        // Once reaped, the pid may belong to someone else: never signal it twice.
        let running = self.qemu_exit.borrow().is_none();
        if running && !self.killed.swap(true, Ordering::SeqCst) {
            if let Some(pid) = Pid::from_raw(self.qemu_pid as i32) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                // Reap now so no zombie outlives the sandbox; if the watcher
                // task got there first this returns ECHILD at once.
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            }
        }
        drop(self.dir.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

fn tail_of(path: &Path, max_bytes: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes as u64);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

async fn wait_for(mut rx: watch::Receiver<Option<VmExit>>) -> VmExit {
    match rx.wait_for(|e| e.is_some()).await {
        Ok(exit) => exit.clone().expect("checked by wait_for"),
        Err(_) => VmExit {
            status: "unknown (watcher gone)".into(),
        },
    }
}

impl VmInstance for QemuVm {
    fn connect(&self, port: u32) -> BoxFuture<'_, std::io::Result<UnixStream>> {
        self.device.connect(port).boxed()
    }

    fn wait_exit(&self) -> BoxFuture<'static, VmExit> {
        wait_for(self.qemu_exit.clone()).boxed()
    }

    fn exit_status(&self) -> Option<VmExit> {
        self.qemu_exit.borrow().clone()
    }

    fn console_tail(&self, max_bytes: usize) -> String {
        let mut tail = self.log_tail("console.log", max_bytes);
        let qemu = self.log_tail("qemu.log", max_bytes / 2);
        if !qemu.trim().is_empty() {
            tail.push_str("\n--- qemu ---\n");
            tail.push_str(&qemu);
        }
        tail
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        async move {
            let exit = self.qemu_exit.clone();
            if tokio::time::timeout(grace, wait_for(exit.clone()))
                .await
                .is_err()
            {
                let quit = async {
                    let mut qmp = Qmp::connect(&self.dir_path.join("qmp.sock")).await?;
                    qmp.execute("quit").await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), quit).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), wait_for(exit)).await;
            }
            self.kill_all();
        }
        .boxed()
    }

    fn kill(&self) {
        self.kill_all();
    }

    fn host_pids(&self) -> Vec<u32> {
        vec![self.qemu_pid]
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir_path.clone()
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill_all();
    }
}
