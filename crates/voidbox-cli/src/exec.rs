//! `voidbox exec`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use void_box::net::NetworkPolicy;
use void_box::sandbox::{Mount, VolumeMount};
use void_box::{Exec, ExecEvent, Sandbox, SandboxConfig};

use crate::stop::StopSignals;

/// Sandbox options shared by `exec` and `shell`.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory_mb: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Environment variable for the guest (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Allow this command in addition to the default allowlist (repeatable; `*` allows all).
    #[arg(long = "allow", value_name = "CMD")]
    pub allow: Vec<String>,
    /// Run in this OCI image (pulled and cached on first use).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Share a host directory (repeatable; read-only unless `:rw`).
    #[arg(long = "mount", value_name = "HOST:GUEST[:ro|rw]", value_parser = Mount::parse)]
    pub mounts: Vec<Mount>,
    /// Mount a named volume (repeatable; created on first use).
    #[arg(long = "volume", value_name = "NAME:GUEST[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<VolumeMount>,
    /// Run commands as this user (`root`, `UID[:GID]`, a name from the image).
    #[arg(long)]
    pub user: Option<String>,
    /// Let the file API reach this directory too (repeatable; made for the
    /// sandbox user): `/home/user` for a snapshot that E2B templates name.
    #[arg(long = "file-root", value_name = "DIR")]
    pub file_roots: Vec<String>,
    /// Size limit of the image's writable layer, in MiB.
    #[arg(long, value_name = "MIB")]
    pub overlay_mb: Option<u32>,
    /// Give the guest a network reaching what this rule allows (repeatable:
    /// `public` for the internet, `api.github.com:443`, `10.0.0.0/8`,
    /// `host.voidbox.internal:8080`). Without it there is no network device.
    #[arg(long = "network", value_name = "RULE")]
    pub network: Vec<String>,
    /// Start from this snapshot (`voidbox snapshot create`) instead of
    /// booting; its memory, CPUs, image and user are the snapshot's.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
}

impl SandboxArgs {
    /// Boots a sandbox with these options, pulling its images first with
    /// progress on stderr.
    pub async fn boot(&self) -> Result<Sandbox> {
        let config = self.config()?;
        let images: Vec<String> = config.image.iter().cloned().collect();
        crate::pull::ensure_all(&images, crate::pull::Show::Human).await?;
        config.build().await.context("starting the sandbox")
    }

    /// The sandbox configuration these options describe.
    pub fn config(&self) -> Result<SandboxConfig> {
        let mut builder = Sandbox::builder()
            .memory_mb(self.memory_mb)
            .vcpus(self.vcpus);
        if !self.network.is_empty() {
            builder.network =
                NetworkPolicy::rules(&self.network, &[] as &[&str]).context("--network")?;
        }
        builder.snapshot = self.snapshot.clone();
        for (k, v) in &self.env {
            builder = builder.env(k, v);
        }
        for cmd in &self.allow {
            builder = builder.allow_command(cmd);
        }
        builder.image = self.image.clone();
        builder.mounts = self.mounts.clone();
        builder.volumes = self.volumes.clone();
        builder.user = self.user.clone();
        builder.file_roots = self.file_roots.clone();
        builder.overlay_mb = self.overlay_mb;
        Ok(builder)
    }
}

fn parse_volume(s: &str) -> Result<VolumeMount, String> {
    let (rest, readonly) = match s.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (s.strip_suffix(":rw").unwrap_or(s), false),
    };
    let (name, guest) = rest
        .split_once(':')
        .filter(|(n, g)| !n.is_empty() && !g.is_empty())
        .ok_or_else(|| format!("expected NAME:GUEST[:ro], got `{s}`"))?;
    Ok(VolumeMount {
        name: name.into(),
        guest: guest.into(),
        readonly,
    })
}

pub fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected K=V, got `{s}`"))
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Command and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Seconds, positive and finite (a bad value is an error, not a panic).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if secs <= 0.0 {
        return Err(format!("{s} is not a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} seconds: {e}"))
}

/// On a terminal, says what the command runs in: boot time and isolation.
pub fn print_header(sandbox: &Sandbox) {
    if std::io::stderr().is_terminal() {
        let accel = sandbox.accel();
        eprintln!(
            "voidbox: sandbox up in {:.1} s on {accel}: {}",
            sandbox.boot_time().as_secs_f64(),
            accel.isolation()
        );
    }
}

pub async fn run(args: ExecArgs) -> Result<ExitCode> {
    let mut stop = StopSignals::new()?;
    // A stop during the boot drops it, which kills the VM.
    let sandbox = tokio::select! {
        sandbox = args.sandbox.boot() => sandbox?,
        code = stop.next() => return Ok(ExitCode::from(code)),
    };
    print_header(&sandbox);
    let mut cmd = Exec::new(&args.command[0]).args(args.command[1..].iter().cloned());
    if let Some(timeout) = args.timeout {
        cmd = cmd.timeout(timeout);
    }
    // Piped or redirected input goes to the command, as with a local
    // command; a terminal does not (use `voidbox shell` to type).
    let forward_stdin = !std::io::stdin().is_terminal();
    if forward_stdin {
        cmd = cmd.stdin_stream();
    }
    let result = stream_command(&sandbox, cmd, forward_stdin, &mut stop).await;
    sandbox.shutdown().await?;
    result
}

/// Streams a command's output to ours; Ctrl-C, SIGTERM or SIGHUP cancels it.
async fn stream_command(
    sandbox: &Sandbox,
    cmd: Exec,
    forward_stdin: bool,
    stop: &mut StopSignals,
) -> Result<ExitCode> {
    let mut stream = sandbox.exec_stream(cmd).await?;
    if forward_stdin {
        let writer = stream.stdin();
        tokio::spawn(async move { writer.copy_from(tokio::io::stdin()).await });
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            _ = stop.next() => {
                stream.cancel()?;
                continue;
            }
        };
        match event {
            Some(ExecEvent::Stdout(data)) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some(ExecEvent::Stderr(data)) => {
                stderr.write_all(&data)?;
            }
            Some(ExecEvent::Exit(status)) => {
                if status.timed_out {
                    eprintln!("voidbox: command timed out");
                }
                return Ok(exit_code(&status));
            }
            None => anyhow::bail!("the command's stream ended without an exit status"),
        }
    }
}

/// Exit code like a shell's: the code, or 128 + signal.
pub fn exit_code(status: &void_box::ExitStatus) -> ExitCode {
    match (status.code, status.signal) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::from(125),
    }
}
