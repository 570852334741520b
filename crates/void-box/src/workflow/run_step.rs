//! Running one step: boot its sandbox, place its dependencies' outputs,
//! run it, collect its outputs, shut the sandbox down.

use std::sync::Arc;
use std::time::Instant;

use super::step::{CommandStep, Step, StepAction};
use super::StepOutputs;
use crate::event::{EventSink, RunEvent};
use crate::sandbox::{OutputStream, SandboxProvider};
use crate::stage::in_fresh_sandbox;
use crate::{Exec, Sandbox, WORKSPACE_DIR};

/// Where a dependency's stdout (or agent answer) is placed.
pub fn input_path(dep: &str) -> String {
    format!("{WORKSPACE_DIR}/inputs/{dep}/stdout")
}

/// The finished attempt of a step.
pub struct Attempt {
    pub outputs: StepOutputs,
    pub exit_code: Option<i32>,
    pub result: Option<crate::agent::RunResult>,
}

/// Inputs from finished dependencies, in `depends_on` order.
pub type Inputs = Vec<(String, Arc<StepOutputs>)>;

async fn place_inputs(sandbox: &Sandbox, inputs: &Inputs) -> crate::Result<()> {
    for (dep, out) in inputs {
        let path = input_path(dep);
        sandbox.mkdir(parent(&path)).await?;
        sandbox.write_file(&path, out.stdout.as_bytes()).await?;
        for (file, data) in &out.files {
            sandbox.mkdir(parent(file)).await?;
            sandbox.write_file(file, data).await?;
        }
    }
    Ok(())
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
}

async fn collect_outputs(sandbox: &Sandbox, step: &Step) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for path in &step.outputs {
        let data = sandbox
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
    let config = match &step.action {
        StepAction::Command(cmd) => cmd.sandbox.clone(),
        StepAction::Agent(vbox) => vbox.sandbox_config(),
    };
    in_fresh_sandbox(
        provider,
        &config,
        &step.name,
        events,
        async |sandbox| match &step.action {
            StepAction::Command(cmd) => {
                command(step, cmd, sandbox, inputs, workflow_input, events).await
            }
            StepAction::Agent(vbox) => {
                agent(step, vbox, sandbox, inputs, workflow_input, events).await
            }
        },
    )
    .await
    .map_err(|e| format!("sandbox: {e}"))?
}

async fn command(
    step: &Step,
    cmd: &CommandStep,
    sandbox: &Sandbox,
    inputs: &Inputs,
    workflow_input: Option<&str>,
    events: &EventSink,
) -> Result<Attempt, String> {
    place_inputs(sandbox, inputs)
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
        .cwd(WORKSPACE_DIR);
    if let Some(stdin) = stdin {
        exec = exec.stdin_bytes(stdin.into_bytes());
    }
    if let Some(limit) = step.timeout {
        exec = exec.timeout(limit);
    }
    let on_output = |stream: OutputStream, data: &[u8]| {
        events.emit(RunEvent::Output {
            box_name: step.name.clone(),
            stream,
            text: String::from_utf8_lossy(data).into_owned(),
        })
    };
    let out = sandbox
        .exec_with_output(exec, &on_output)
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = out.stderr_text();
        let stderr = stderr.trim();
        let start = stderr.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
        let tail = &stderr[start..];
        return Err(format!("`{}` {}: {tail}", cmd.program, out.status));
    }
    let files = collect_outputs(sandbox, step).await?;
    Ok(Attempt {
        outputs: StepOutputs {
            stdout: out.stdout_text(),
            files,
        },
        exit_code: out.status.code,
        result: None,
    })
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
