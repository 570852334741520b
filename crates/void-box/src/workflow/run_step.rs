//! Running one step: boot its sandbox, place its dependencies' outputs,
//! run it, collect its outputs, shut the sandbox down.

use std::sync::Arc;
use std::time::Instant;

use super::step::{CommandStep, Step, StepAction};
use super::StepOutputs;
use crate::agent::{tools::WORKDIR, AgentEvent, EventSink, OutputStream};
use crate::sandbox::{GuestSession, SandboxProvider};
use crate::{Exec, Sandbox};

/// Where a dependency's stdout (or agent answer) is placed.
pub fn input_path(dep: &str) -> String {
    format!("{WORKDIR}/inputs/{dep}/stdout")
}

/// The finished attempt of a step.
pub struct Attempt {
    pub outputs: StepOutputs,
    pub exit_code: Option<i32>,
    pub result: Option<crate::agent::RunResult>,
}

/// Inputs from finished dependencies, in `depends_on` order.
pub type Inputs = Vec<(String, Arc<StepOutputs>)>;

async fn place_inputs(session: &dyn GuestSession, inputs: &Inputs) -> crate::Result<()> {
    for (dep, out) in inputs {
        let path = input_path(dep);
        session.mkdir(parent(&path)).await?;
        session.write_file(&path, out.stdout.as_bytes()).await?;
        for (file, data) in &out.files {
            session.mkdir(parent(file)).await?;
            session.write_file(file, data).await?;
        }
    }
    Ok(())
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
}

async fn collect_outputs(
    session: &dyn GuestSession,
    step: &Step,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for path in &step.outputs {
        let data = session
            .read_file(path)
            .await
            .map_err(|e| format!("declared output {path} could not be read: {e}"))?;
        files.push((path.clone(), data));
    }
    Ok(files)
}

/// One attempt of `step`. The sandbox is shut down (or, on cancellation,
/// dropped and killed) before this returns.
pub async fn attempt(
    step: &Step,
    provider: &dyn SandboxProvider,
    inputs: &Inputs,
    workflow_input: Option<&str>,
    events: &EventSink,
) -> Result<Attempt, String> {
    match &step.action {
        StepAction::Command(cmd) => {
            command(step, cmd, provider, inputs, workflow_input, events).await
        }
        StepAction::Agent(vbox) => {
            let sandbox = vbox
                .sandbox_builder()
                .build()
                .await
                .map_err(|e| format!("sandbox: {e}"))?;
            events.emit(AgentEvent::SandboxReady {
                box_name: step.name.clone(),
                boot: sandbox.boot_time(),
            });
            let outcome = agent(step, vbox, &sandbox, inputs, workflow_input, events).await;
            if let Err(e) = sandbox.shutdown().await {
                tracing::debug!(step = step.name, "sandbox shutdown: {e}");
            }
            outcome
        }
    }
}

async fn command(
    step: &Step,
    cmd: &CommandStep,
    provider: &dyn SandboxProvider,
    inputs: &Inputs,
    workflow_input: Option<&str>,
    events: &EventSink,
) -> Result<Attempt, String> {
    let booting = Instant::now();
    let session = provider
        .boot(&cmd.sandbox)
        .await
        .map_err(|e| format!("sandbox: {e}"))?;
    events.emit(AgentEvent::SandboxReady {
        box_name: step.name.clone(),
        boot: booting.elapsed(),
    });
    let outcome = async {
        place_inputs(session.as_ref(), inputs)
            .await
            .map_err(|e| format!("placing inputs: {e}"))?;
        let stdin = match &cmd.stdin_from {
            Some(from) => inputs
                .iter()
                .find(|(d, _)| d == from)
                .map(|(_, o)| o.stdout.clone()),
            None if inputs.len() == 1 => Some(inputs[0].1.stdout.clone()),
            None if inputs.is_empty() => workflow_input.map(str::to_string),
            None => None,
        };
        let mut exec = Exec::new(&cmd.program)
            .args(cmd.args.iter().cloned())
            .cwd(WORKDIR);
        if let Some(stdin) = stdin {
            exec = exec.stdin_bytes(stdin.into_bytes());
        }
        if let Some(limit) = step.timeout {
            exec = exec.timeout(limit);
        }
        let on_output = |is_stderr: bool, data: &[u8]| {
            events.emit(AgentEvent::Output {
                box_name: step.name.clone(),
                stream: if is_stderr {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                },
                text: String::from_utf8_lossy(data).into_owned(),
            })
        };
        let out = session
            .exec_streaming(exec, &on_output)
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let how = match (out.status.code, out.status.signal, out.status.timed_out) {
                (_, _, true) => "timed out".to_string(),
                (Some(code), _, _) => format!("exited with code {code}"),
                (_, Some(sig), _) => format!("killed by signal {sig}"),
                _ => "failed".to_string(),
            };
            let stderr = out.stderr_text();
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!("`{}` {how}: {tail}", cmd.program));
        }
        let files = collect_outputs(session.as_ref(), step).await?;
        Ok(Attempt {
            outputs: StepOutputs {
                stdout: out.stdout_text(),
                files,
            },
            exit_code: out.status.code,
            result: None,
        })
    }
    .await;
    if let Err(e) = session.shutdown().await {
        tracing::debug!(step = step.name, "sandbox shutdown: {e}");
    }
    outcome
}

async fn agent(
    step: &Step,
    vbox: &crate::agent::VoidBox,
    sandbox: &Sandbox,
    inputs: &Inputs,
    workflow_input: Option<&str>,
    events: &EventSink,
) -> Result<Attempt, String> {
    place_inputs(sandbox, inputs)
        .await
        .map_err(|e| format!("placing inputs: {e}"))?;
    // One dependency hands over its output as is; several, as a JSON object.
    let input = match inputs.as_slice() {
        [] => workflow_input.map(str::to_string),
        [(_, only)] => Some(only.stdout.clone()),
        many => Some(
            serde_json::Value::Object(
                many.iter()
                    .map(|(d, o)| (d.clone(), serde_json::Value::String(o.stdout.clone())))
                    .collect(),
            )
            .to_string(),
        ),
    };
    let started = Instant::now();
    let result = vbox
        .run_in(sandbox, input.as_deref(), events.clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(step = step.name, elapsed = ?started.elapsed(), "agent step done");
    let files = collect_outputs(sandbox, step).await?;
    Ok(Attempt {
        outputs: StepOutputs {
            stdout: result.handoff(),
            files,
        },
        exit_code: None,
        result: Some(result),
    })
}
