//! Running `kind: sandbox`: one command in a fresh sandbox.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{AgentEvent, EventSink};
use crate::{Exec, ExecEvent, SandboxBuilder};

pub use crate::agent::OutputStream;

/// `kind: sandbox`: one command in a fresh sandbox.
#[derive(Debug, Clone)]
pub struct SandboxRun {
    name: String,
    // Boxed: a builder is large, and `Runnable` holds this by value.
    builder: Box<SandboxBuilder>,
    program: String,
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
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Wall time, boot included.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl SandboxRun {
    pub(crate) fn new(
        name: &str,
        builder: SandboxBuilder,
        program: &str,
        args: Vec<String>,
    ) -> Self {
        SandboxRun {
            name: name.into(),
            builder: Box::new(builder),
            program: program.into(),
            args,
        }
    }

    /// The spec's name (events carry it as the box name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program and its arguments.
    pub fn command(&self) -> (&str, &[String]) {
        (&self.program, &self.args)
    }

    /// The sandbox it boots.
    pub fn sandbox_builder(&self) -> &SandboxBuilder {
        &self.builder
    }

    /// Boots the sandbox and runs the command with `input` as stdin,
    /// calling `on_output` with each chunk of output as it arrives. Sends
    /// the stage start, sandbox-ready and stage end events. A command that
    /// exits non-zero is a result with `success: false`, not an error.
    /// Dropping the future kills the VM.
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
        on_output: &(dyn Fn(OutputStream, &[u8]) + Send + Sync),
    ) -> crate::Result<SandboxResult> {
        let started = Instant::now();
        events.emit(AgentEvent::StageStarted {
            box_name: self.name.clone(),
        });
        let outcome = self.run_inner(input, &events, on_output, started).await;
        let (success, error) = match &outcome {
            Ok(r) if r.success => (true, None),
            Ok(r) => (false, Some(describe_exit(r))),
            Err(e) => (false, Some(e.to_string())),
        };
        events.emit(AgentEvent::StageFinished {
            box_name: self.name.clone(),
            success,
            duration: started.elapsed(),
            error,
        });
        outcome
    }

    async fn run_inner(
        &self,
        input: Option<&str>,
        events: &EventSink,
        on_output: &(dyn Fn(OutputStream, &[u8]) + Send + Sync),
        started: Instant,
    ) -> crate::Result<SandboxResult> {
        let sandbox = (*self.builder).clone().build().await?;
        events.emit(AgentEvent::SandboxReady {
            box_name: self.name.clone(),
            boot: sandbox.boot_time(),
        });
        let mut cmd = Exec::new(&self.program)
            .args(self.args.iter().cloned())
            .cwd(crate::agent::tools::WORKDIR);
        // A streamed command takes stdin through its writer (`stdin_bytes`
        // is for collected runs only); without input, stdin is empty.
        if input.is_some() {
            cmd = cmd.stdin_stream();
        }
        let run = async {
            let mut stream = sandbox.exec_stream(cmd).await?;
            if let Some(input) = input {
                let writer = stream.stdin();
                let data = input.as_bytes().to_vec();
                // Its own task: a command that reads late must not stall output.
                tokio::spawn(async move {
                    if writer.write(&data).await.is_ok() {
                        let _ = writer.close();
                    }
                });
            }
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            loop {
                match stream.next().await? {
                    Some(ExecEvent::Stdout(data)) => {
                        on_output(OutputStream::Stdout, &data);
                        stdout.extend_from_slice(&data);
                    }
                    Some(ExecEvent::Stderr(data)) => {
                        on_output(OutputStream::Stderr, &data);
                        stderr.extend_from_slice(&data);
                    }
                    Some(ExecEvent::Exit(status)) => {
                        return Ok(SandboxResult {
                            name: self.name.clone(),
                            success: status.success(),
                            exit_code: status.code,
                            signal: status.signal,
                            stdout: String::from_utf8_lossy(&stdout).into_owned(),
                            stderr: String::from_utf8_lossy(&stderr).into_owned(),
                            duration: started.elapsed(),
                        })
                    }
                    None => {
                        return Err(crate::Error::Disconnected(
                            "the command's stream ended without an exit status".into(),
                        ))
                    }
                }
            }
        };
        let result = run.await;
        if let Err(e) = sandbox.shutdown().await {
            tracing::debug!(name = %self.name, "sandbox shutdown: {e}");
        }
        result
    }
}

/// `exited with code 3`, `killed by signal 9`.
pub(crate) fn describe_exit(r: &SandboxResult) -> String {
    match (r.exit_code, r.signal) {
        (Some(code), _) => format!("`{}` exited with code {code}", r.name),
        (None, Some(sig)) => format!("`{}` was killed by signal {sig}", r.name),
        _ => format!("`{}` failed", r.name),
    }
}
