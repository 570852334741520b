//! Running `kind: sandbox`: one command in a fresh sandbox.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::event::{EventSink, RunEvent};
use crate::sandbox::{SandboxProvider, VmProvider, DEFAULT_MAX_OUTPUT};
use crate::stage::in_fresh_sandbox;
use crate::{Exec, ExitStatus, OutputStream, SandboxConfig};

/// `kind: sandbox`: one command in a fresh sandbox.
#[derive(Debug, Clone)]
pub struct SandboxRun {
    name: String,
    // Boxed: a configuration is large, and `Runnable` holds this by value.
    config: Box<SandboxConfig>,
    /// `None`: the image's `Entrypoint` and `Cmd`, with `args` after them.
    program: Option<String>,
    args: Vec<String>,
}

/// How a sandbox command ended.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxResult {
    /// The spec's name.
    pub name: String,
    /// Exited with code 0.
    pub success: bool,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal, when one killed it.
    pub signal: Option<i32>,
    /// What it wrote to stdout: all of it, or its first and last 32 MiB
    /// around a notice of what was dropped.
    pub stdout: String,
    /// What it wrote to stderr, likewise.
    pub stderr: String,
    /// How it ended, in full.
    #[serde(skip)]
    pub status: ExitStatus,
    /// Wall time, boot included.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
    /// What isolated it: `kvm`, or `tcg` (software emulation).
    pub accel: crate::vm::Accel,
}

impl SandboxResult {
    /// How it ended, as a sentence: `` `name` exited with code 3 ``.
    pub fn ending(&self) -> String {
        format!("`{}` {}", self.name, self.status)
    }
}

impl SandboxRun {
    pub(crate) fn new(
        name: &str,
        config: SandboxConfig,
        program: Option<String>,
        args: Vec<String>,
    ) -> Self {
        SandboxRun {
            name: name.into(),
            config: Box::new(config),
            program,
            args,
        }
    }

    /// The spec's name (events carry it as the box name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program (`None`: the image's `Entrypoint` and `Cmd`) and its
    /// arguments.
    pub fn command(&self) -> (Option<&str>, &[String]) {
        (self.program.as_deref(), &self.args)
    }

    /// The sandbox it boots.
    pub fn sandbox_config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Boots a micro-VM and runs the command in it; see [`run_on`](Self::run_on).
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
    ) -> crate::Result<SandboxResult> {
        self.run_on(&VmProvider, input, events).await
    }

    /// Boots a sandbox through `provider` and runs the command with
    /// `input` as stdin. Sends the stage start, sandbox-ready and stage end
    /// events, and the command's output as [`RunEvent::Output`] as it
    /// arrives. A command that exits non-zero is a result with `success:
    /// false`, not an error. Dropping the future kills the VM.
    pub async fn run_on(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: EventSink,
    ) -> crate::Result<SandboxResult> {
        let started = Instant::now();
        events.emit(RunEvent::StageStarted {
            box_name: self.name.clone(),
        });
        let outcome = match self.argv().await {
            Ok(argv) => {
                let config = (*self.config).clone().allow_command(&argv[0]);
                in_fresh_sandbox(provider, &config, &self.name, &events, async |sandbox| {
                    self.command_in(sandbox, &argv, input, &events, started)
                        .await
                })
                .await
                .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        let (success, error) = match &outcome {
            Ok(r) if r.success => (true, None),
            Ok(r) => (false, Some(r.ending())),
            Err(e) => (false, Some(e.to_string())),
        };
        events.emit(RunEvent::StageFinished {
            box_name: self.name.clone(),
            success,
            duration: started.elapsed(),
            error,
        });
        outcome
    }

    /// The command line: the program and its arguments, or the image's
    /// `Entrypoint` + `Cmd` followed by the arguments.
    async fn argv(&self) -> crate::Result<Vec<String>> {
        if let Some(program) = &self.program {
            return Ok(std::iter::once(program.clone())
                .chain(self.args.iter().cloned())
                .collect());
        }
        let reference = self.config.image.as_deref().ok_or_else(|| {
            crate::Error::Image("a sandbox run without a program needs an image".into())
        })?;
        let image = crate::oci::ensure(&crate::oci::Store::default_location(), reference, None)
            .await
            .map_err(|e| crate::Error::Image(e.to_string()))?;
        let mut argv = image.record.config.command().ok_or_else(|| {
            crate::Error::Image(format!(
                "{reference} has neither Entrypoint nor Cmd; give `run.program`"
            ))
        })?;
        argv.extend(self.args.iter().cloned());
        Ok(argv)
    }

    async fn command_in(
        &self,
        sandbox: &crate::Sandbox,
        argv: &[String],
        input: Option<&str>,
        events: &EventSink,
        started: Instant,
    ) -> crate::Result<SandboxResult> {
        // The working directory is the guest's default: the image's
        // `WorkingDir`, else /workspace.
        let mut cmd = Exec::new(&argv[0]).args(argv[1..].iter().cloned());
        // A streamed command takes stdin through its writer (`stdin_bytes`
        // is for collected runs only); without input, stdin is empty.
        if input.is_some() {
            cmd = cmd.stdin_stream();
        }
        let stream = sandbox.exec_stream(cmd).await?;
        if let Some(input) = input {
            stream
                .stdin()
                .write_all_and_close(input.as_bytes().to_vec());
        }
        let output = |stream: OutputStream, data: &[u8]| {
            events.emit(RunEvent::Output {
                box_name: self.name.clone(),
                stream,
                text: String::from_utf8_lossy(data).into_owned(),
            })
        };
        // Everything streams as events; the result keeps the head and tail.
        let out = stream.collect_with(DEFAULT_MAX_OUTPUT, &output).await?;
        Ok(SandboxResult {
            name: self.name.clone(),
            success: out.status.success(),
            exit_code: out.status.code,
            signal: out.status.signal,
            stdout: out.stdout_text(),
            stderr: out.stderr_text(),
            status: out.status,
            duration: started.elapsed(),
            accel: sandbox.accel(),
        })
    }
}
