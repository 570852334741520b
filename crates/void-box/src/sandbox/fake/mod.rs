//! A guest double for host-only tests: [`FakeProvider`] boots sandboxes
//! whose "VM" is a task in this process that speaks the real guest
//! protocol over a socket pair.
//!
//! Everything above the transport is the real code: the handshake with the
//! sandbox's secret (read back from the guest configuration archive the
//! boot builds), request multiplexing, credit-based flow control, the
//! `Sandbox` API, the engines, tools, skills, pipelines, workflows and
//! spec runs. Only the guest's side is imitated: files live in memory
//! under the same writable roots the real agent enforces, the command
//! allowlist is checked the same way, and commands are answered by a
//! handler the test gives ([`FakeProvider::with_commands`]). So tests of
//! the agent loop, permissions, hooks, hand-off, fan-out and specs run in
//! milliseconds without QEMU, while the VM tests prove the real path.
//!
//! What it does not imitate: real processes (a handler returns a command's
//! whole output at once, after reading all of its stdin), PTYs, saving and
//! restoring a VM, guest kernel behaviour, and the images,
//! mounts and volumes of a configuration (they are ignored: the double's
//! files start empty).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> void_box::Result<()> {
//! use void_box::sandbox::fake::{FakeProvider, FakeReply};
//! use void_box::sandbox::{SandboxConfig, SandboxProvider};
//! use void_box::Exec;
//!
//! let provider = FakeProvider::with_commands(|_guest, cmd| {
//!     FakeReply::ok(format!("ran {}\n", cmd.argv().join(" ")))
//! });
//! let sandbox = provider.boot(&SandboxConfig::default()).await?;
//! let out = sandbox.exec(Exec::new("uname").arg("-a")).await?;
//! assert_eq!(out.stdout_text(), "ran uname -a\n");
//! sandbox.write_file("/workspace/a.txt", b"hi").await?;
//! assert_eq!(provider.guests()[0].file("/workspace/a.txt").unwrap(), b"hi");
//! sandbox.shutdown().await?;
//! # Ok(()) }
//! ```

mod fs;
mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use void_box_protocol::{policy, GuestConfig, GUEST_CONFIG_PATH};

use super::Sandbox;
use super::{SandboxConfig, SandboxProvider};
use crate::error::{Error, Result};
use crate::vm::{Accel, VmBackend, VmExit, VmInstance, VmSpec};
use fs::{add_parents, Fs};

/// Most stdin or file bytes the double keeps for one request.
const MAX_FAKE_INPUT: usize = 64 << 20;

/// A command as the fake guest received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCommand {
    /// Program as given.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// The request's own environment (the sandbox's is in [`FakeGuest::config`]).
    pub env: Vec<(String, String)>,
    /// Working directory (default `/workspace`).
    pub cwd: String,
    /// Everything written to its stdin (empty unless stdin was streamed).
    pub stdin: Vec<u8>,
    /// Its timeout, if it had one.
    pub timeout: Option<Duration>,
    /// The uid it runs as when not the sandbox's user.
    pub uid: Option<u32>,
}

impl FakeCommand {
    /// Program and arguments.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    /// The script of `sh -c SCRIPT ...`, the form the `bash` tool uses.
    pub fn script(&self) -> Option<&str> {
        match (policy::program_basename(&self.program), self.args.first()) {
            ("sh" | "bash", Some(flag)) if flag == "-c" => self.args.get(1).map(String::as_str),
            _ => None,
        }
    }
}

/// How the fake guest answers a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeReply {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Bytes for stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub code: i32,
    /// How long the command "runs" before it exits; its timeout and a
    /// cancel end it earlier, as in the real guest.
    pub delay: Duration,
}

impl FakeReply {
    /// Exit 0 with this stdout.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        FakeReply {
            stdout: stdout.into(),
            ..Default::default()
        }
    }

    /// Exit `code` with this stderr.
    pub fn fail(code: i32, stderr: impl Into<Vec<u8>>) -> Self {
        FakeReply {
            stderr: stderr.into(),
            code,
            ..Default::default()
        }
    }

    /// The same reply after the command ran for `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&FakeGuest, &FakeCommand) -> FakeReply + Send + Sync;

struct ProviderState {
    handler: Box<Handler>,
    guests: Mutex<Vec<FakeGuest>>,
    next_id: AtomicU32,
}

/// Boots fake sandboxes (see the module documentation). Cheap to clone;
/// clones share the handler and the list of booted guests.
#[derive(Clone)]
pub struct FakeProvider {
    state: Arc<ProviderState>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("guests", &lock(&self.state.guests).len())
            .finish_non_exhaustive()
    }
}

impl Default for FakeProvider {
    /// Every command exits 0 and echoes its stdin.
    fn default() -> Self {
        FakeProvider::with_commands(|_, cmd| FakeReply::ok(cmd.stdin.clone()))
    }
}

impl FakeProvider {
    /// A provider whose guests answer every command with `handler`, which
    /// may read and change the guest's files.
    pub fn with_commands(
        handler: impl Fn(&FakeGuest, &FakeCommand) -> FakeReply + Send + Sync + 'static,
    ) -> Self {
        FakeProvider {
            state: Arc::new(ProviderState {
                handler: Box::new(handler),
                guests: Mutex::new(Vec::new()),
                next_id: AtomicU32::new(1),
            }),
        }
    }

    /// Every guest booted so far, in boot order.
    pub fn guests(&self) -> Vec<FakeGuest> {
        lock(&self.state.guests).clone()
    }
}

impl SandboxProvider for FakeProvider {
    fn boot<'a>(&'a self, config: &'a SandboxConfig) -> BoxFuture<'a, Result<Sandbox>> {
        Box::pin(async move {
            let spec = VmSpec {
                kernel: PathBuf::from("fake-kernel"),
                initramfs: PathBuf::from("fake-initramfs"),
                extra_initramfs: Vec::new(),
                memory_mb: config.memory_mb,
                vcpus: config.vcpus,
                accel: config.accel.unwrap_or(Accel::Tcg),
                cmdline_extra: String::new(),
                disks: Vec::new(),
                shares: Vec::new(),
                network: false,
                incoming: None,
            };
            super::launch(config, super::plan::BootPlan::bare(spec), self).await
        })
    }
}

impl VmBackend for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn VmInstance>>> {
        Box::pin(async move {
            let config = read_guest_config(&spec.extra_initramfs)?;
            let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
            let guest = FakeGuest {
                inner: Arc::new(GuestState {
                    id,
                    config,
                    memory_mb: spec.memory_mb,
                    fs: Mutex::new(Fs::default()),
                    commands: Mutex::new(Vec::new()),
                    exit: watch::channel(None).0,
                    tasks: Mutex::new(Vec::new()),
                    silent: AtomicBool::new(false),
                    provider: Arc::downgrade(&self.state),
                }),
            };
            lock(&self.state.guests).push(guest.clone());
            Ok(Box::new(FakeVm { guest }) as Box<dyn VmInstance>)
        })
    }
}

/// Reads the guest configuration back out of the archive the boot built,
/// as the real agent does at start-up.
fn read_guest_config(archive: &[u8]) -> Result<GuestConfig> {
    let wanted = GUEST_CONFIG_PATH.trim_start_matches('/');
    let mut input = archive;
    loop {
        let mut reader = cpio::NewcReader::new(input)
            .map_err(|e| Error::io("read the fake guest's config archive", e))?;
        if reader.entry().is_trailer() {
            return Err(Error::Launch(
                "the guest config archive holds no configuration".into(),
            ));
        }
        if reader.entry().name() == wanted {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes)
                .map_err(|e| Error::io("read the fake guest's config", e))?;
            return GuestConfig::from_bytes(&bytes)
                .map_err(|e| Error::Launch(format!("bad guest config: {e}")));
        }
        input = reader
            .finish()
            .map_err(|e| Error::io("read the fake guest's config archive", e))?;
    }
}

struct GuestState {
    id: u32,
    config: GuestConfig,
    memory_mb: u32,
    fs: Mutex<Fs>,
    commands: Mutex<Vec<FakeCommand>>,
    exit: watch::Sender<Option<VmExit>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Answers no request ([`FakeGuest::set_answering`]).
    silent: AtomicBool,
    /// Weak: the provider holds its guests, not the other way round.
    provider: std::sync::Weak<ProviderState>,
}

/// One fake sandbox's guest: its configuration, files and commands, for
/// the test to inspect. Cheap to clone.
#[derive(Clone)]
pub struct FakeGuest {
    inner: Arc<GuestState>,
}

impl std::fmt::Debug for FakeGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGuest")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl FakeGuest {
    /// What the host configured: environment, allowlist, limits, hostname.
    pub fn config(&self) -> &GuestConfig {
        &self.inner.config
    }

    /// The guest RAM the sandbox asked for.
    pub fn memory_mb(&self) -> u32 {
        self.inner.memory_mb
    }

    /// A file's contents.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        lock(&self.inner.fs).files.get(path).cloned()
    }

    /// Every file, by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.inner.fs).files.clone()
    }

    /// Creates or replaces a file (its parent directories too), as a
    /// command in the guest would.
    pub fn put_file(&self, path: &str, data: impl Into<Vec<u8>>) {
        let mut fs = lock(&self.inner.fs);
        add_parents(&mut fs.dirs, path);
        fs.files.insert(path.to_string(), data.into());
    }

    /// Every command the guest was asked to run, in order (refused ones
    /// included).
    pub fn commands(&self) -> Vec<FakeCommand> {
        lock(&self.inner.commands).clone()
    }

    /// With `false`, the guest goes on answering heartbeats but leaves
    /// every new request unanswered, like an agent whose handlers are
    /// stuck: what the host's request deadlines are for. `true` restores.
    pub fn set_answering(&self, answering: bool) {
        self.inner.silent.store(!answering, Ordering::Relaxed);
    }

    fn is_silent(&self) -> bool {
        self.inner.silent.load(Ordering::Relaxed)
    }

    /// Whether the sandbox was shut down or killed.
    pub fn is_stopped(&self) -> bool {
        self.inner.exit.borrow().is_some()
    }

    fn stop(&self, status: &str) {
        self.inner.exit.send_if_modified(|exit| {
            if exit.is_none() {
                *exit = Some(VmExit {
                    status: status.into(),
                });
                true
            } else {
                false
            }
        });
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }
}

struct FakeVm {
    guest: FakeGuest,
}

impl VmInstance for FakeVm {
    fn connect_agent(&self) -> BoxFuture<'_, std::io::Result<UnixStream>> {
        Box::pin(async move {
            if self.guest.is_stopped() {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            let (host, guest_end) = UnixStream::pair()?;
            let task = tokio::spawn(serve::serve(self.guest.clone(), guest_end));
            lock(&self.guest.inner.tasks).push(task);
            Ok(host)
        })
    }

    fn wait_exit(&self) -> BoxFuture<'static, VmExit> {
        let mut exit = self.guest.inner.exit.subscribe();
        Box::pin(async move {
            match exit.wait_for(Option::is_some).await {
                Ok(exit) => exit.clone().expect("waited for Some"),
                Err(_) => VmExit {
                    status: "fake guest dropped".into(),
                },
            }
        })
    }

    fn exit_status(&self) -> Option<VmExit> {
        self.guest.inner.exit.borrow().clone()
    }

    fn console_tail(&self, _max_bytes: usize) -> String {
        String::new()
    }

    fn stop(&self, _grace: Duration) -> BoxFuture<'_, ()> {
        self.guest.stop("stopped");
        Box::pin(async {})
    }

    fn kill(&self) {
        self.guest.stop("killed");
    }

    fn host_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("fake-{}", self.guest.inner.id))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Exec;
    use void_box_protocol::ErrorKind;

    #[tokio::test]
    async fn speaks_the_protocol_with_flow_control() {
        let provider = FakeProvider::with_commands(|guest, cmd| {
            // A "cat FILE" that reads what the host wrote.
            match cmd.argv().as_slice() {
                ["cat", path] => FakeReply::ok(guest.file(path).unwrap_or_default()),
                _ => FakeReply::fail(127, "not found"),
            }
        });
        let sandbox = provider.boot(&SandboxConfig::default()).await.unwrap();
        // More than one window each way, so credit has to flow.
        let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        sandbox.write_file("/workspace/big", &big).await.unwrap();
        assert_eq!(sandbox.read_file("/workspace/big").await.unwrap(), big);
        let out = sandbox
            .exec(Exec::new("cat").arg("/workspace/big"))
            .await
            .unwrap();
        assert_eq!(out.stdout, big);
        let echoed = sandbox
            .exec(Exec::new("sh").args(["-c", "x"]).stdin_bytes(big.clone()))
            .await
            .unwrap();
        assert_eq!(echoed.status.code, Some(127));
        let guest = &provider.guests()[0];
        assert_eq!(guest.commands()[1].stdin, big);
        assert_eq!(guest.commands()[1].script(), Some("x"));
        sandbox.shutdown().await.unwrap();
        assert!(guest.is_stopped());
    }

    #[tokio::test]
    async fn enforces_roots_and_the_allowlist_like_the_guest() {
        let provider = FakeProvider::default();
        let sandbox = provider
            .boot(&SandboxConfig::default().allowed_commands(["sh"]))
            .await
            .unwrap();
        let err = sandbox.write_file("/etc/passwd", b"x").await.unwrap_err();
        assert_eq!(err.guest_kind(), Some(ErrorKind::PathEscape));
        let err = sandbox.read_file("/workspace/../etc/x").await.unwrap_err();
        assert_eq!(err.guest_kind(), Some(ErrorKind::PathEscape));
        let err = sandbox.exec(Exec::new("curl")).await.unwrap_err();
        assert_eq!(err.guest_kind(), Some(ErrorKind::NotAllowed));
        sandbox.mkdir("/workspace/a/b").await.unwrap();
        sandbox.write_file("/workspace/a/f", b"12").await.unwrap();
        let names: Vec<String> = sandbox
            .list("/workspace/a")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["b", "f"]);
        assert_eq!(sandbox.stat("/workspace/a/f").await.unwrap().size, 2);
    }

    #[tokio::test]
    async fn timeouts_and_cancels_end_a_slow_command() {
        let provider = FakeProvider::with_commands(|_, _| {
            FakeReply::ok("late").after(Duration::from_secs(60))
        });
        let sandbox = provider.boot(&SandboxConfig::default()).await.unwrap();
        let out = sandbox
            .exec(Exec::new("sleep").timeout(Duration::from_millis(20)))
            .await
            .unwrap();
        assert!(out.status.timed_out && out.stdout.is_empty());
        let mut stream = sandbox.exec_stream(Exec::new("sleep")).await.unwrap();
        stream.cancel().unwrap();
        let status = loop {
            if let Some(crate::ExecEvent::Exit(s)) = stream.next().await.unwrap() {
                break s;
            }
        };
        assert!(status.cancelled);
    }

    #[tokio::test]
    async fn files_are_removed_and_renamed_below_the_roots() {
        let provider = FakeProvider::default();
        let sandbox = provider.boot(&SandboxConfig::default()).await.unwrap();
        sandbox
            .write_file("/workspace/d/a.txt", b"a")
            .await
            .unwrap();
        sandbox
            .rename("/workspace/d/a.txt", "/workspace/b.txt")
            .await
            .unwrap();
        assert_eq!(sandbox.read_file("/workspace/b.txt").await.unwrap(), b"a");
        sandbox.remove("/workspace/d").await.unwrap();
        assert!(sandbox.stat("/workspace/d").await.is_err());
        for refused in [
            sandbox.remove("/workspace").await,
            sandbox.remove("/etc").await,
        ] {
            assert!(refused.is_err());
        }
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused() {
        let provider = FakeProvider::default();
        let sandbox = provider.boot(&SandboxConfig::default()).await.unwrap();
        let guest = provider.guests()[0].clone();
        let vm = FakeVm { guest };
        let stream = vm.connect_agent().await.unwrap();
        let err =
            super::super::client::AgentClient::handshake(stream, &[7; 32], Duration::from_secs(1))
                .await
                .err()
                .expect("refused");
        assert_eq!(err.guest_kind(), Some(ErrorKind::Unauthenticated));
        drop(sandbox);
    }
}
