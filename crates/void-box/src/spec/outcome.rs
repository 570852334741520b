//! How a spec's run ended, whatever its kind, and what any front end
//! (`voidbox run`, the daemon) says of it.

use serde_json::Value;

use super::{Runnable, SandboxResult};
use crate::agent::{AgentError, RunResult};
use crate::event::EventSink;
use crate::pipeline::{PipelineError, PipelineResult};
use crate::sandbox::SandboxProvider;
use crate::workflow::{WorkflowError, WorkflowResult};

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// `kind: agent`.
    Agent(Result<RunResult, AgentError>),
    /// `kind: pipeline`.
    Pipeline(Result<PipelineResult, PipelineError>),
    /// `kind: workflow`.
    Workflow(Result<WorkflowResult, WorkflowError>),
    /// `kind: sandbox`.
    Sandbox(Result<SandboxResult, crate::Error>),
}

/// What is said of any outcome.
#[derive(Debug, Clone)]
pub struct Ending {
    /// `agent`, `pipeline`, `workflow` or `sandbox`.
    pub kind: &'static str,
    /// The whole result (or the report of a failed run), as JSON.
    pub report: Option<Value>,
    /// The run's output: an agent's output file, else its schema output,
    /// else its text; a pipeline's or workflow's output; a command's stdout.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Runnable {
    /// Runs it on `provider`, its events to `events`. Dropping the future
    /// cancels the run and kills its VMs.
    pub async fn run_on(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: EventSink,
    ) -> RunOutcome {
        match self {
            Runnable::Agent(a) => RunOutcome::Agent(a.run_on(provider, input, events).await),
            Runnable::Pipeline(p) => RunOutcome::Pipeline(p.run_on(provider, input, events).await),
            Runnable::Workflow(w) => RunOutcome::Workflow(w.run_on(provider, input, events).await),
            Runnable::Sandbox(s) => RunOutcome::Sandbox(s.run_on(provider, input, events).await),
        }
    }
}

impl RunOutcome {
    /// What is said of it.
    pub fn ending(&self) -> Ending {
        let error = |e: &dyn std::fmt::Display| Some(e.to_string());
        let (kind, report, error) = match self {
            RunOutcome::Agent(r) => match r {
                Ok(a) => ("agent", Some(to_json(a)), None),
                Err(e) => ("agent", None, error(e)),
            },
            RunOutcome::Pipeline(r) => match r {
                Ok(p) => ("pipeline", Some(to_json(p)), None),
                Err(e) => ("pipeline", Some(to_json(&e.report)), error(e)),
            },
            RunOutcome::Workflow(r) => match r {
                Ok(w) => ("workflow", Some(to_json(w)), None),
                Err(e @ WorkflowError::StepFailed { report, .. }) => {
                    ("workflow", Some(to_json(report)), error(e))
                }
                Err(e) => ("workflow", None, error(e)),
            },
            RunOutcome::Sandbox(r) => match r {
                Ok(s) if s.success => ("sandbox", Some(to_json(s)), None),
                Ok(s) => ("sandbox", Some(to_json(s)), Some(s.ending())),
                Err(e) => ("sandbox", None, error(e)),
            },
        };
        let output = report.as_ref().and_then(|r| {
            ["file", "output", "text", "stdout"]
                .iter()
                .find_map(|k| r.get(*k).filter(|v| !v.is_null()))
                .cloned()
        });
        Ending {
            kind,
            report,
            output,
            error,
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
