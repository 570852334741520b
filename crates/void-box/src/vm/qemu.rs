//! The QEMU `microvm` backend.
//!
//! Each VM is one `qemu-system-x86_64 -M microvm` process that boots the
//! kernel directly (PVH). The guest agent's channel is a virtio-serial
//! port on a chardev socket in the VM's private 0700 runtime directory,
//! which holds its other sockets and files too (ADR 0010: QEMU can
//! migrate it, so a VM can be saved and restored).
//!
//! QEMU runs confined ([`super::confine`]): bubblewrap namespaces that show
//! it only `/usr`, a minimal `/dev` and that directory, an empty
//! environment, its own seccomp filter, and an unprivileged user when we are
//! root. It dies with the host process, is killed through a pidfd when the
//! [`QemuVm`] is dropped ([`super::process`]), and the directory goes with
//! it; directories a killed `voidbox` left are swept at the next start
//! ([`super::rundir`]).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::confine::{self, Confinement, Identity, Jail, Passed};
use super::logring::{self, LogRing};
use super::process::{VmmPid, VmmProcess};
use super::qmp::Qmp;
use super::{rundir, Accel, VmBackend, VmExit, VmInstance, VmSpec};
use crate::error::{Error, Result};

/// The agent's chardev socket in the runtime directory.
const AGENT_SOCKET: &str = "agent.sock";
/// How much of the guest's serial console is kept (its last bytes).
const CONSOLE_LOG_BYTES: usize = 256 * 1024;
/// How much of QEMU's own output is kept.
const QEMU_LOG_BYTES: usize = 64 * 1024;

/// Launches VMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    qemu: PathBuf,
    confinement: Confinement,
}

impl QemuBackend {
    /// Finds QEMU (`VOIDBOX_QEMU`, else `qemu-system-x86_64` on `PATH`) and
    /// bubblewrap (`VOIDBOX_BWRAP`, else `bwrap`; `VOIDBOX_CONFINE=off`
    /// runs QEMU without namespaces).
    pub fn from_env() -> Result<Self> {
        let qemu = super::locate("VOIDBOX_QEMU", "qemu-system-x86_64").ok_or_else(|| {
            Error::Launch("qemu-system-x86_64 not found (apt-get install qemu-system-x86, or set VOIDBOX_QEMU)".into())
        })?;
        let qemu = std::fs::canonicalize(&qemu).unwrap_or(qemu);
        Ok(Self {
            qemu,
            confinement: Confinement::from_env()?,
        })
    }

    /// The QEMU arguments for `spec`: sockets and logs under `dir`, every
    /// other file through a descriptor in `passed`.
    fn qemu_args(
        spec: &VmSpec,
        dir: &Path,
        initrd: &str,
        console: &str,
        memory: &str,
        network: Option<i32>,
        passed: &mut Passed,
    ) -> Result<Vec<String>> {
        let mem = format!("{}M", spec.memory_mb);
        let mut args: Vec<String> = vec![
            "-M".into(),
            "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,memory-backend=mem".into(),
        ];
        match spec.accel {
            Accel::Kvm => {
                args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()])
            }
            // Every feature TCG emulates (AVX2 since QEMU 7.2): the default
            // qemu64 model stops at SSE3, and today's binaries (Bun's, in
            // claude-code; numpy's) need x86-64-v2 or more.
            Accel::Tcg => args.extend(["-accel".into(), "tcg".into(), "-cpu".into(), "max".into()]),
        }
        args.extend([
            "-m".into(),
            mem.clone(),
            "-smp".into(),
            spec.vcpus.to_string(),
            // Guest RAM is our memfd (vm/memory.rs): shared, so a save
            // leaves it to us, and host accounting tells it from QEMU's own.
            "-object".into(),
            format!("memory-backend-file,id=mem,size={mem},mem-path={memory},share=on"),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-sandbox".into(),
            confine::QEMU_SECCOMP.into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            // One port beside the reserved port 0: the agent's.
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                qemu_path(&dir.join(AGENT_SOCKET))
            ),
            "-device".into(),
            format!(
                "virtserialport,chardev=agent,nr=1,name={}",
                void_box_protocol::AGENT_PORT_NAME
            ),
            "-serial".into(),
            format!("file:{console}"),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                qemu_path(&dir.join("qmp.sock"))
            ),
        ]);
        for (i, disk) in spec.disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!(
                    "file={},format=raw,if=none,readonly=on,id=disk{i}",
                    passed.open(&disk.path)?
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
                    passed.open(&share.path)?,
                    if share.readonly { ",readonly=on" } else { "" }
                ),
                "-device".into(),
                format!("virtio-9p-device,fsdev=share{i},mount_tag={}", share.tag),
            ]);
        }
        if let Some(link) = network {
            args.extend([
                "-netdev".into(),
                format!("stream,id=net0,addr.type=fd,addr.str={link}"),
                "-device".into(),
                format!(
                    "virtio-net-device,netdev=net0,mac={},host_mtu={}",
                    mac_text(&crate::net::GUEST_MAC),
                    crate::net::MTU
                ),
            ]);
        }
        if spec.incoming.is_some() {
            // Stopped until the state is loaded and checked.
            args.extend(["-S".into(), "-incoming".into(), "defer".into()]);
        }
        args.extend([
            "-kernel".into(),
            passed.open(&spec.kernel)?,
            "-initrd".into(),
            initrd.to_string(),
            "-append".into(),
            // tsc=reliable: under TCG, emulation stalls make the clocksource
            // watchdog call the TSC unstable and fall back to 4 ms jiffies
            // (QEMU's TSC follows the host clock; KVM guests use kvm-clock).
            format!(
                "console=ttyS0 quiet panic=-1 reboot=t tsc=reliable rdinit=/init {}",
                spec.cmdline_extra
            )
            .trim_end()
            .to_string(),
        ]);
        Ok(args)
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// A path inside a QEMU option list, where `,` separates options and is
/// written `,,`.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Starts QEMU in its jail on a keeper thread, its own output (and the
/// wrapper's) into `log`. A launch that fails says what QEMU said.
async fn spawn_vmm(
    confinement: &Confinement,
    jail: Jail<'_>,
    log: &Arc<LogRing>,
) -> Result<VmmProcess> {
    let (log_write, drained) = logring::pipe_into(log.clone())?;
    let (info, vmm_pid) = match confinement {
        Confinement::Bwrap(_) => {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| Error::io("create the wrapper's report pipe", e.into()))?;
            (Some(write), VmmPid::Reported(read))
        }
        Confinement::Off => (None, VmmPid::Child),
    };
    let what = jail.program.display().to_string();
    let mut cmd = confine::command(confinement, Jail { info, ..jail })?;
    let log_err = log_write
        .try_clone()
        .map_err(|e| Error::io("clone the log pipe", e))?;
    cmd.stdin(Stdio::null()).stdout(log_write).stderr(log_err);
    match VmmProcess::spawn(cmd, vmm_pid, what).await {
        Ok(process) => Ok(process),
        Err(e) => {
            // Everything holding the pipe is gone, so it ends soon.
            let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
            let said = log.tail(2000);
            Err(match e {
                Error::Launch(why) if !said.trim().is_empty() => {
                    Error::Launch(format!("{why}\n--- qemu ---\n{}", said.trim_end()))
                }
                other => other,
            })
        }
    }
}

/// Hands the runtime directory, and what QEMU opens in it, to `id`.
fn chown_for(id: Option<Identity>, paths: &[&Path]) -> Result<()> {
    let Some(id) = id else { return Ok(()) };
    for path in paths {
        std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid))
            .map_err(|e| Error::io(format!("chown {} for QEMU", path.display()), e))?;
    }
    Ok(())
}

impl VmBackend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu-microvm"
    }

    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn VmInstance>>> {
        async move {
            let dir = rundir::create()?;
            let shares: Vec<PathBuf> = spec.shares.iter().map(|s| s.path.clone()).collect();
            let identity = confine::identity(&shares)?;
            chown_for(identity, &[dir.path()])?;

            // The console: a pipe QEMU opens as its serial "file", into a ring.
            let console = LogRing::new(CONSOLE_LOG_BYTES);
            let (console_write, _) = logring::pipe_into(console.clone())?;
            if let Some(id) = identity {
                std::os::unix::fs::fchown(&console_write, Some(id.uid), Some(id.gid))
                    .map_err(|e| Error::io("hand the console pipe to QEMU's user", e))?;
            }
            let mut passed = Passed::default();
            let console_name = passed.add(console_write);
            // A VM that loads a saved state never reads its initrd: the
            // base file does, without a copy.
            let initrd = match &spec.incoming {
                Some(_) => passed.open(&spec.initramfs)?,
                None => passed.add(initrd_memfd(&spec.initramfs, &spec.extra_initramfs)?),
            };
            let memory = super::memory::guest_ram(u64::from(spec.memory_mb) << 20)
                .map_err(|e| Error::io("make the guest's RAM", e))?;
            if let Some(id) = identity {
                std::os::unix::fs::fchown(&memory, Some(id.uid), Some(id.gid))
                    .map_err(|e| Error::io("hand the guest's RAM to QEMU's user", e))?;
            }
            let memory_name = passed.add(
                memory
                    .try_clone()
                    .map_err(|e| Error::io("pass the guest's RAM", e))?
                    .into(),
            );
            let (network, network_link) = if spec.network {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                    .map_err(|e| Error::io("create the network link", e))?;
                (Some(passed.add_raw(theirs.into())), Some(ours))
            } else {
                (None, None)
            };
            let args = Self::qemu_args(
                spec,
                dir.path(),
                &initrd,
                &console_name,
                &memory_name,
                network,
                &mut passed,
            )?;
            let jail = Jail {
                program: &self.qemu,
                args: &args,
                runtime_dir: dir.path(),
                kvm: spec.accel == Accel::Kvm,
                identity,
                passed,
                info: None,
            };
            let qemu_log = LogRing::new(QEMU_LOG_BYTES);
            let process = spawn_vmm(&self.confinement, jail, &qemu_log).await?;
            let vm = QemuVm {
                process,
                console,
                qemu_log,
                network_link: Mutex::new(network_link),
                memory,
                identity,
                dir_path: dir.path().to_path_buf(),
                dir: Mutex::new(Some(dir)),
            };
            if let Some(state) = &spec.incoming {
                // Dropping `vm` on failure kills QEMU and removes its files.
                let qmp = vm.dir_path.join("qmp.sock");
                super::migrate::load(&qmp, &vm.dir_path, &vm.memory, state)
                    .await
                    .map_err(|e| match e {
                        Error::Launch(why) => {
                            Error::Launch(format!("{why}{}", tail_suffix(&vm.qemu_log)))
                        }
                        other => other,
                    })?;
            }
            Ok(Box::new(vm) as Box<dyn VmInstance>)
        }
        .boxed()
    }
}

/// The per-VM initrd: the shared base archive with this VM's archive
/// appended (the kernel unpacks concatenated archives in order). It holds
/// the sandbox's secret and environment, so it lives in memory only, in a
/// memfd that QEMU alone is handed: nothing of it is left on disk, even
/// when `voidbox` is killed.
fn initrd_memfd(base: &Path, extra: &[u8]) -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("voidbox-initrd", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io("create the VM's initrd", e.into()))?;
    let mut file = std::fs::File::from(fd);
    let mut source = std::fs::File::open(base)
        .map_err(|e| Error::Image(format!("cannot read initramfs {}: {e}", base.display())))?;
    std::io::copy(&mut source, &mut file)
        .and_then(|_| file.write_all(extra))
        .map_err(|e| Error::io("write the VM's initrd", e))?;
    Ok(file.into())
}

/// What QEMU said last, for an error message.
fn tail_suffix(log: &LogRing) -> String {
    let said = log.tail(2000);
    if said.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- qemu ---\n{}", said.trim_end())
    }
}

/// A running QEMU VM.
pub struct QemuVm {
    process: VmmProcess,
    console: Arc<LogRing>,
    qemu_log: Arc<LogRing>,
    /// The user QEMU runs as, when not ours.
    identity: Option<Identity>,
    /// The guest's RAM.
    memory: std::fs::File,
    network_link: Mutex<Option<std::os::unix::net::UnixStream>>,
    dir_path: PathBuf,
    /// Removed by [`QemuVm::kill_all`], once QEMU is dead: a sandbox's files
    /// go with it even while something else still holds the instance.
    dir: Mutex<Option<tempfile::TempDir>>,
}

impl QemuVm {
    fn kill_all(&self) {
        self.process.kill();
        drop(self.dir.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
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
    fn connect_agent(&self) -> BoxFuture<'_, std::io::Result<UnixStream>> {
        UnixStream::connect(self.dir_path.join(AGENT_SOCKET)).boxed()
    }

    fn wait_exit(&self) -> BoxFuture<'static, VmExit> {
        wait_for(self.process.exit()).boxed()
    }

    fn exit_status(&self) -> Option<VmExit> {
        self.process.exit().borrow().clone()
    }

    fn console_tail(&self, max_bytes: usize) -> String {
        let mut tail = self.console.tail(max_bytes);
        let qemu = self.qemu_log.tail(max_bytes / 2);
        if !qemu.trim().is_empty() {
            tail.push_str("\n--- qemu ---\n");
            tail.push_str(&qemu);
        }
        tail
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        async move {
            let exit = self.process.exit();
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
        self.process.pids().to_vec()
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir_path.clone()
    }

    fn take_network_link(&self) -> Option<std::os::unix::net::UnixStream> {
        self.network_link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn save<'a>(&'a self, to: &'a Path) -> BoxFuture<'a, Result<super::SavedState>> {
        async move {
            let qmp = self.dir_path.join("qmp.sock");
            super::migrate::save(&qmp, &self.dir_path, self.identity, &self.memory, to)
                .await
                .map_err(|e| match e {
                    Error::Launch(why) => {
                        Error::Launch(format!("{why}{}", tail_suffix(&self.qemu_log)))
                    }
                    other => other,
                })
        }
        .boxed()
    }

    fn resume(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut qmp = Qmp::connect(&self.dir_path.join("qmp.sock"))
                .await
                .map_err(|e| Error::io("QMP", e))?;
            qmp.execute("cont")
                .await
                .map_err(|e| Error::io("let the VM run", e))?;
            Ok(())
        }
        .boxed()
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill_all();
    }
}
