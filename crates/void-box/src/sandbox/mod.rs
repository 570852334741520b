//! The `Sandbox` API: one fresh micro-VM, driven through its guest agent.

mod capture;
mod client;
mod config;
mod deadlines;
mod defaults;
mod exec;
pub mod fake;
mod files;
mod mounts;
mod plan;
mod pool;
mod provider;
pub mod snapshot;
mod warm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::task::JoinHandle;
use tracing::Instrument;
use void_box_protocol::{GuestConfig, GuestMsg, HostMsg, Secret, TelemetrySnapshot};

pub use crate::error::ConfigError;
pub use capture::{Cut, DEFAULT_MAX_OUTPUT};
pub use config::{SandboxConfig, MAX_MEMORY_MB, MAX_VCPUS, MIN_MEMORY_MB};
pub use deadlines::RequestDeadlines;
pub use defaults::{DEFAULT_ALLOWED_COMMANDS, DEFAULT_LIMITS};
pub use exec::{Exec, ExecEvent, ExecStream, Output, OutputSink, OutputStream, StdinWriter};
pub use files::{ListPage, DEFAULT_MAX_LIST, DEFAULT_MAX_READ};
pub use mounts::{check_guest_path, ImageMount, Mount, MountMode, VolumeMount};
pub use pool::{PoolStatus, SandboxPool, MAX_CONFIGS as MAX_POOL_CONFIGS};
pub use provider::{SandboxProvider, VmProvider};
// The sandbox's own knobs, so that the layers above never name `vm`.
pub use crate::vm::image::GuestImage;
pub use crate::vm::Accel;

use crate::error::{Error, Result};
use crate::net::{EdgeSecret, EdgeSecrets, EdgeTls, Egress, NetworkEvent, PortMap};
use crate::vm::image::config_initramfs;
use crate::vm::{VmBackend, VmInstance};
use client::AgentClient;
use plan::BootPlan;

/// Boots a sandbox on `backend`: makes its secret and guest
/// configuration, launches the VM the plan describes (kernel, initramfs,
/// accelerator, disks and shares, already resolved by the provider) and
/// waits until its guest agent answers the handshake.
pub(crate) async fn launch(
    config: &SandboxConfig,
    plan: BootPlan,
    backend: &dyn VmBackend,
) -> Result<Sandbox> {
    let recipe = warm::recipe_of(config, &plan);
    let BootPlan {
        mut spec,
        rootfs,
        mounts,
        user,
        workdir,
        base_env,
        nameserver,
        image: _,
        accounts,
    } = plan;
    let restoring = spec.incoming.is_some();
    let span = tracing::info_span!(
        "sandbox.boot",
        voidbox.sandbox_id = tracing::field::Empty,
        voidbox.restored = restoring,
        voidbox.accel = %spec.accel,
        voidbox.memory_mb = i64::from(config.memory_mb),
        voidbox.vcpus = i64::from(config.vcpus),
        voidbox.boot_ms = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let started = Instant::now();
    let boot = async {
        config.validate()?;
        let mut secret: Secret = [0; 32];
        rand::rng().fill_bytes(&mut secret);
        let edge_secrets = edge_secrets(config)?;
        let edge_ca = edge_secrets.tls.as_ref().map(|t| t.ca_pem().to_string());
        let guest = GuestConfig {
            secret,
            hostname: config.hostname.clone(),
            env: base_env
                .into_iter()
                // Before the configuration's own, which may override them.
                .chain(edge_ca.iter().flat_map(|_| trust_env()))
                .chain(config.env.iter().cloned())
                .chain(
                    config
                        .secrets
                        .iter()
                        .zip(&edge_secrets.secrets)
                        .map(|(s, e)| (s.name.clone(), e.placeholder.clone())),
                )
                .collect(),
            allowed_commands: config.allowed_commands.clone(),
            limits: config.limits,
            rootfs,
            mounts,
            user,
            workdir,
            nameserver,
            edge_ca,
            file_roots: config.file_roots.clone(),
        };
        if !restoring {
            spec.extra_initramfs = config_initramfs(&guest.to_bytes())
                .map_err(|e| Error::io("write the guest config archive", e))?;
        }
        spec.memory_mb = config.memory_mb;
        spec.vcpus = config.vcpus;
        let vm: Arc<dyn VmInstance> = Arc::from(backend.launch(&spec).await?);
        // Serving the link before the guest boots: its first packets wait
        // in the socket pair meanwhile.
        let egress = start_network(config, &*vm, edge_secrets)?;
        let deadline = started + config.boot_timeout;
        let client = if restoring {
            warm::renew_agent(&*vm, guest, deadline, config.liveness_timeout).await?
        } else {
            connect_agent(&*vm, &secret, deadline, config.liveness_timeout).await?
        };
        let mut sandbox = Sandbox::watch(
            vm,
            client,
            egress,
            spec.accel,
            started.elapsed(),
            config.deadlines,
        );
        sandbox.recipe = recipe;
        sandbox.accounts = Arc::new(accounts);
        Ok(sandbox)
    };
    let result = boot.instrument(span.clone()).await;
    match &result {
        Ok(sandbox) => {
            span.record("voidbox.sandbox_id", sandbox.id());
            span.record("voidbox.boot_ms", sandbox.boot_time.as_millis() as i64);
            crate::observe::metrics::sandbox_booted(sandbox.boot_time);
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

/// Starts the host side of the sandbox's network, when it has one.
fn start_network(
    config: &SandboxConfig,
    vm: &dyn VmInstance,
    secrets: EdgeSecrets,
) -> Result<Option<Egress>> {
    let Some((rules, limits)) = config.network_device() else {
        return Ok(None);
    };
    let link = vm
        .take_network_link()
        .ok_or_else(|| Error::Launch("the VM was launched without its network link".into()))?;
    Egress::start(link, rules, limits, &config.ports, secrets, &vm_id(vm))
        .map(Some)
        .map_err(|e| Error::io("start the sandbox's network", e))
}

/// A placeholder for each of the configuration's secrets (random per
/// sandbox, so one sandbox's is worthless in another), with what replaces
/// it, and the sandbox's edge CA when there is a secret.
fn edge_secrets(config: &SandboxConfig) -> Result<EdgeSecrets> {
    if config.secrets.is_empty() {
        return Ok(EdgeSecrets::default());
    }
    let secrets: Vec<EdgeSecret> = config
        .secrets
        .iter()
        .map(|s| {
            let mut nonce = [0u8; 16];
            rand::rng().fill_bytes(&mut nonce);
            EdgeSecret {
                placeholder: format!("voidbox-secret-{}", hex::encode(nonce)),
                value: s.value.clone(),
                hosts: s.check().unwrap_or_default(),
            }
        })
        .collect();
    let hosts: Vec<_> = secrets.iter().flat_map(|s| s.hosts.clone()).collect();
    let tls = EdgeTls::new(&hosts, &config.upstream_roots)
        .map_err(|e| Error::Launch(format!("the sandbox's edge TLS: {e}")))?;
    Ok(EdgeSecrets {
        secrets,
        tls: Some(tls),
    })
}

/// What points the guest's TLS clients at a bundle that holds the edge CA
/// (OpenSSL, curl, Python's requests; Node and Bun add the CA to theirs).
fn trust_env() -> [(String, String); 4] {
    use void_box_protocol::{CA_BUNDLE_PATH, EDGE_CA_PATH};
    [
        ("SSL_CERT_FILE".into(), CA_BUNDLE_PATH.into()),
        ("REQUESTS_CA_BUNDLE".into(), CA_BUNDLE_PATH.into()),
        ("CURL_CA_BUNDLE".into(), CA_BUNDLE_PATH.into()),
        ("NODE_EXTRA_CA_CERTS".into(), EDGE_CA_PATH.into()),
    ]
}

/// A VM's short id: the name of its runtime directory.
fn vm_id(vm: &dyn VmInstance) -> String {
    vm.runtime_dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn console_suffix(vm: &dyn VmInstance) -> String {
    let tail = vm.console_tail(2000);
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; guest console tail:\n{tail}")
    }
}

/// Connects to the agent's port (retrying while QEMU sets it up) and
/// performs the handshake, within the deadline.
async fn connect_agent(
    vm: &dyn VmInstance,
    secret: &Secret,
    deadline: Instant,
    liveness: Duration,
) -> Result<AgentClient> {
    let boot_error = |reason: String| Error::Boot {
        reason,
        console_tail: vm.console_tail(4000),
    };
    let mut last_error = String::from("no attempt");
    loop {
        if let Some(exit) = vm.exit_status() {
            return Err(boot_error(format!(
                "the VM exited during boot ({})",
                exit.status
            )));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            // The console tail is read before kill() removes the VM's files.
            let error = boot_error(format!(
                "the guest agent did not answer in time ({last_error})"
            ));
            vm.kill();
            return Err(error);
        }
        let attempt = async {
            let stream = vm.connect_agent().await.map_err(|e| e.to_string())?;
            AgentClient::handshake(stream, secret, liveness)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(remaining, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = "connection attempt timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A micro-VM with its own kernel, driven through its guest agent.
///
/// Every method may be called concurrently. Dropping the sandbox kills the
/// VM and removes every host file it used; [`shutdown`](Self::shutdown)
/// does the same gracefully.
pub struct Sandbox {
    vm: Arc<dyn VmInstance>,
    client: Arc<AgentClient>,
    /// The network's host side; dropping it ends every connection.
    egress: Option<Egress>,
    exit_watch: JoinHandle<()>,
    accel: Accel,
    boot_time: Duration,
    deadlines: RequestDeadlines,
    /// How it was booted, for a save; `None`: it cannot be saved.
    recipe: Option<warm::Recipe>,
    /// Its root's users, for commands run as one of them.
    accounts: Arc<plan::Accounts>,
}

impl Sandbox {
    /// Starts configuring a sandbox: the default [`SandboxConfig`], whose
    /// setters chain and whose [`build`](SandboxConfig::build) boots it.
    pub fn builder() -> SandboxConfig {
        SandboxConfig::default()
    }

    /// Watches a freshly connected VM: a VM that dies fails every pending
    /// call at once. The watcher holds no strong reference, so dropping the
    /// sandbox frees the VM at once.
    fn watch(
        vm: Arc<dyn VmInstance>,
        client: AgentClient,
        egress: Option<Egress>,
        accel: Accel,
        boot_time: Duration,
        deadlines: RequestDeadlines,
    ) -> Sandbox {
        let client = Arc::new(client);
        let exit_watch = {
            let exited = vm.wait_exit();
            let vm = Arc::downgrade(&vm);
            let client = Arc::downgrade(&client);
            tokio::spawn(async move {
                let exit = exited.await;
                let console = vm
                    .upgrade()
                    .map(|vm| console_suffix(&*vm))
                    .unwrap_or_default();
                if let Some(client) = client.upgrade() {
                    client.fail(format!("the VM exited ({}){console}", exit.status));
                }
            })
        };
        Sandbox {
            vm,
            client,
            egress,
            exit_watch,
            accel,
            boot_time,
            deadlines,
            recipe: None,
            accounts: Arc::default(),
        }
    }

    /// Ends the VM now, without asking the guest (what [`Drop`] does):
    /// every pending call fails, and its files go. For an owner that
    /// shares the sandbox and must end it before the last handle drops.
    pub fn kill(&self) {
        self.client.fail("the sandbox was killed".into());
        self.vm.kill();
    }

    /// Whether the VM still runs and its agent answers.
    pub fn is_alive(&self) -> bool {
        self.client.failure().is_none() && self.vm.exit_status().is_none()
    }

    /// A short id for logs and traces (the name of its runtime directory).
    pub fn id(&self) -> String {
        vm_id(&*self.vm)
    }

    /// The accelerator this VM runs on.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Time from `build()` to the agent's handshake.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Host processes of this VM (VMM first).
    pub fn host_pids(&self) -> Vec<u32> {
        self.vm.host_pids()
    }

    /// Host directory holding this VM's sockets and files.
    pub fn runtime_dir(&self) -> std::path::PathBuf {
        self.vm.runtime_dir()
    }

    /// The audit trail of the sandbox's network from now on: one event per
    /// connection attempt and DNS question. `None` without a network.
    pub fn network_events(&self) -> Option<tokio::sync::broadcast::Receiver<NetworkEvent>> {
        self.egress.as_ref().map(Egress::subscribe)
    }

    /// The guest ports published on the host's 127.0.0.1, with the host
    /// ports they got (a requested 0 is the free port picked).
    pub fn published_ports(&self) -> Vec<PortMap> {
        self.egress
            .as_ref()
            .map(|e| e.published().to_vec())
            .unwrap_or_default()
    }

    /// The last bytes of the guest's serial console.
    pub fn console_tail(&self, max_bytes: usize) -> String {
        self.vm.console_tail(max_bytes)
    }

    /// Runs a command and collects its output.
    ///
    /// With a timeout, the guest kills everything the command started
    /// when it passes and the result says `timed_out`; the host gives up
    /// waiting [`RequestDeadlines::exec_grace`] after that in case the
    /// guest cannot.
    pub async fn exec(&self, cmd: impl Into<Exec>) -> Result<Output> {
        self.exec_with_output(cmd, &|_, _| {}).await
    }

    /// Like [`exec`](Self::exec), also passing each output chunk to
    /// `on_output` as it arrives.
    pub async fn exec_with_output(
        &self,
        cmd: impl Into<Exec>,
        on_output: OutputSink<'_>,
    ) -> Result<Output> {
        let mut cmd = cmd.into();
        let stdin = cmd.stdin.take();
        let max_output = cmd.max_output.unwrap_or(DEFAULT_MAX_OUTPUT);
        let started = Instant::now();
        let program = cmd.request.program.clone();
        let output = async {
            let stream = self.exec_stream(cmd).await?;
            if let Some(data) = stdin {
                stream.stdin().write_all_and_close(data);
            }
            stream.collect_with(max_output, on_output).await
        }
        .await;
        crate::observe::metrics::exec_finished(&program, started.elapsed());
        output
    }

    /// Starts a command whose output is streamed. When the caller is in a
    /// traced span, the command gets its context as `TRACEPARENT`.
    pub async fn exec_stream(&self, cmd: impl Into<Exec>) -> Result<ExecStream> {
        let mut cmd = cmd.into();
        if !cmd.request.env.iter().any(|(k, _)| k == "TRACEPARENT") {
            if let Some(parent) = crate::observe::traceparent() {
                cmd.request.env.push(("TRACEPARENT".into(), parent));
            }
        }
        if let Some(spec) = cmd.user.take() {
            let user = self.accounts.resolve(&spec)?;
            // The user's own HOME and USER, under what the command sets.
            let own = [
                ("HOME", user.home),
                ("USER", user.name.clone()),
                ("LOGNAME", user.name),
            ];
            for (key, value) in own {
                if let Some(value) = value {
                    if !cmd.request.env.iter().any(|(k, _)| k == key) {
                        cmd.request.env.insert(0, (key.into(), value));
                    }
                }
            }
            cmd.request.user = Some(void_box_protocol::GuestUser {
                uid: user.uid,
                gid: user.gid,
                groups: user.groups,
            });
        }
        let end = cmd.request.timeout_ms.map(|ms| {
            tokio::time::Instant::now() + Duration::from_millis(ms) + self.deadlines.exec_grace
        });
        let what = format!("`{}`", cmd.request.program);
        let stream = self.client.open(HostMsg::Exec(cmd.request))?;
        ExecStream::start(stream, self.deadlines, end, what).await
    }

    /// CPU, memory and process figures of the guest.
    pub async fn telemetry(&self) -> Result<TelemetrySnapshot> {
        match self.query(HostMsg::Telemetry, "telemetry").await? {
            GuestMsg::Telemetry(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Powers the guest off and waits for the VM to end (killing it if it
    /// does not within a few seconds). Everything is cleaned up either way.
    pub async fn shutdown(mut self) -> Result<()> {
        if self.client.failure().is_none() {
            if let Ok(mut stream) = self.client.open(HostMsg::Shutdown) {
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await;
            }
        }
        self.vm.stop(Duration::from_secs(5)).await;
        if let Some(egress) = self.egress.take() {
            egress.stop().await;
        }
        Ok(())
    }
}

pub(super) fn unexpected(msg: GuestMsg) -> Error {
    match msg {
        GuestMsg::Error(e) => Error::Guest {
            kind: e.kind,
            message: e.message,
        },
        other => Error::Disconnected(format!("unexpected answer from the guest: {other:?}")),
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.exit_watch.abort();
        self.client.fail("the sandbox was dropped".into());
        self.vm.kill();
    }
}
