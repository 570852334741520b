//! Workflows: a DAG of steps with `depends_on`, run with automatic
//! parallelism up to a limit. Each step runs in a fresh sandbox; its stdout
//! and declared output files are passed to its dependents.
//!
//! A dependent finds each dependency's stdout (or agent answer) at
//! `/workspace/inputs/<step>/stdout` and its declared output files at the
//! paths they were written to. A command step's stdin is `stdin_from`'s
//! stdout, else its only dependency's, else (for a root step) the
//! workflow's input.

mod graph;
mod run_step;
mod step;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tracing::Instrument;

pub use run_step::input_path;
pub use step::{CommandStep, Step, StepAction, DEFAULT_STEP_TIMEOUT};

use crate::agent::RunResult;
use crate::event::{EventSink, RunEvent};
use crate::pipeline::BoxStatus;
use crate::sandbox::{SandboxProvider, VmProvider};

/// What a finished step hands to its dependents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutputs {
    /// Its stdout (agent steps: the answer, or the JSON output).
    pub stdout: String,
    /// Its declared output files, `(guest path, contents)`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// One step's part in a run.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// How it ended (`cancelled`: in flight when another step failed;
    /// `skipped`: never started).
    pub status: BoxStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time of all attempts.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
    /// Exit code of a command step.
    pub exit_code: Option<i32>,
    /// Its stdout (agent steps: the handoff).
    pub stdout: Option<String>,
    /// An agent step's result.
    pub result: Option<RunResult>,
    /// The cause, when it failed.
    pub error: Option<String>,
}

/// The outcome of a workflow run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowResult {
    /// Workflow name.
    pub name: String,
    /// Every step succeeded.
    pub success: bool,
    /// The output step's stdout (default: the last declared step's).
    pub output: Option<String>,
    /// Every step, in declaration order.
    pub steps: Vec<StepReport>,
    /// Wall time.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
}

/// Why a workflow did not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The graph is invalid; nothing ran.
    #[error("workflow `{workflow}`: {message}")]
    Invalid {
        /// Workflow name.
        workflow: String,
        /// What is wrong, naming the steps.
        message: String,
    },
    /// A step failed; dependents and not-yet-started steps were skipped.
    #[error("workflow `{}`: step `{step}` failed: {cause}", report.name)]
    StepFailed {
        /// The step.
        step: String,
        /// Why.
        cause: String,
        /// The whole run, as far as it went.
        report: Box<WorkflowResult>,
    },
}

/// A DAG of steps.
#[derive(Debug, Clone)]
pub struct Workflow {
    name: String,
    steps: Vec<Step>,
    max_parallel: usize,
    output_step: Option<String>,
}

impl Workflow {
    /// An empty workflow.
    pub fn named(name: &str) -> Workflow {
        Workflow {
            name: name.into(),
            steps: Vec::new(),
            max_parallel: 4,
            output_step: None,
        }
    }

    /// Adds a step.
    pub fn step(mut self, step: Step) -> Workflow {
        self.steps.push(step);
        self
    }

    /// How many steps (VMs) may run at once (default 4).
    pub fn max_parallel(mut self, n: usize) -> Workflow {
        self.max_parallel = n.max(1);
        self
    }

    /// The step whose stdout is the workflow's output.
    pub fn output_step(mut self, name: &str) -> Workflow {
        self.output_step = Some(name.into());
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps, in declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Checks the graph: unique names, known dependencies, no cycles, a
    /// known output step, `stdin_from` among the dependencies.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        let invalid = |message: String| WorkflowError::Invalid {
            workflow: self.name.clone(),
            message,
        };
        if self.steps.is_empty() {
            return Err(invalid("a workflow needs at least one step".into()));
        }
        let nodes: Vec<(&str, &[String])> = self
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
            .collect();
        graph::validate(&nodes).map_err(invalid)?;
        for step in &self.steps {
            if let StepAction::Command(c) = &step.action {
                if let Some(from) = &c.stdin_from {
                    if !step.depends_on.contains(from) {
                        return Err(invalid(format!(
                            "step `{}` takes stdin from `{from}`, which is not among its depends_on",
                            step.name
                        )));
                    }
                }
            }
        }
        if let Some(out) = &self.output_step {
            if !self.steps.iter().any(|s| &s.name == out) {
                return Err(invalid(format!("output_step `{out}` is not a step")));
            }
        }
        Ok(())
    }

    /// Runs every step in real VMs.
    pub async fn run(&self) -> Result<WorkflowResult, WorkflowError> {
        self.run_with(None, EventSink::none()).await
    }

    /// Runs in real VMs with `input` for the root steps, sending events (a
    /// step's start and end as `StageStarted`/`StageFinished` under its
    /// name, plus its agent's events). Dropping the future cancels the run
    /// and kills every VM it started.
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<WorkflowResult, WorkflowError> {
        self.run_on(&VmProvider, input, events).await
    }

    /// Like [`run_with`](Self::run_with), booting every step's sandbox
    /// (command and agent steps alike) through `provider`.
    pub async fn run_on(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<WorkflowResult, WorkflowError> {
        self.validate()?;
        let span = tracing::info_span!(
            "workflow",
            otel.name = %format!("workflow {}", self.name),
            voidbox.workflow = %self.name,
            voidbox.steps = self.steps.len() as i64,
        );
        self.schedule(input, events, provider)
            .instrument(span)
            .await
    }

    async fn schedule(
        &self,
        input: Option<&str>,
        events: EventSink,
        provider: &dyn SandboxProvider,
    ) -> Result<WorkflowResult, WorkflowError> {
        let started = Instant::now();
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut waiting_on: Vec<usize> = self.steps.iter().map(|s| s.depends_on.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for dep in &step.depends_on {
                dependents[index[dep.as_str()]].push(i);
            }
        }
        let mut ready: VecDeque<usize> = (0..self.steps.len())
            .filter(|&i| waiting_on[i] == 0)
            .collect();
        let mut outputs: Vec<Option<Arc<StepOutputs>>> = vec![None; self.steps.len()];
        let mut reports: Vec<Option<StepReport>> = vec![None; self.steps.len()];
        let mut launched = vec![false; self.steps.len()];
        let mut failure: Option<(String, String)> = None;
        let mut running = FuturesUnordered::new();

        loop {
            while failure.is_none() && running.len() < self.max_parallel {
                let Some(i) = ready.pop_front() else { break };
                launched[i] = true;
                let step = &self.steps[i];
                let inputs: run_step::Inputs = step
                    .depends_on
                    .iter()
                    .map(|d| {
                        let out = outputs[index[d.as_str()]].clone();
                        (
                            d.clone(),
                            out.expect("a step starts after its dependencies"),
                        )
                    })
                    .collect();
                let events = events.clone();
                running.push(async move {
                    let report = run_with_retries(step, provider, inputs, input, &events).await;
                    (i, report)
                });
            }
            let Some((i, (report, out))) = running.next().await else {
                break;
            };
            if report.status == BoxStatus::Succeeded {
                outputs[i] = out.map(Arc::new);
                for &d in &dependents[i] {
                    waiting_on[d] -= 1;
                    if waiting_on[d] == 0 {
                        ready.push_back(d);
                    }
                }
            } else if failure.is_none() {
                failure = Some((
                    report.name.clone(),
                    report.error.clone().unwrap_or_default(),
                ));
                // Fail fast: in-flight steps are dropped, which kills their VMs.
                reports[i] = Some(report);
                break;
            }
            reports[i] = Some(report);
        }
        drop(running);

        // A step that started but has no report was in flight when the run
        // stopped: it was cancelled (its VM killed), not skipped.
        let steps: Vec<StepReport> = reports
            .into_iter()
            .zip(&self.steps)
            .zip(launched)
            .map(|((r, s), launched)| {
                r.unwrap_or_else(|| {
                    let status = if launched {
                        BoxStatus::Cancelled
                    } else {
                        BoxStatus::Skipped
                    };
                    StepReport::not_run(&s.name, status)
                })
            })
            .collect();
        let output_step = self
            .output_step
            .clone()
            .or_else(|| self.steps.last().map(|s| s.name.clone()));
        let output = output_step.and_then(|name| {
            outputs[index[name.as_str()]]
                .as_ref()
                .map(|o| o.stdout.clone())
        });
        let result = WorkflowResult {
            name: self.name.clone(),
            success: failure.is_none(),
            output,
            steps,
            duration: started.elapsed(),
        };
        match failure {
            None => Ok(result),
            Some((step, cause)) => Err(WorkflowError::StepFailed {
                step,
                cause,
                report: Box::new(result),
            }),
        }
    }
}

/// All attempts of one step, with its start and end events.
async fn run_with_retries(
    step: &Step,
    provider: &dyn SandboxProvider,
    inputs: run_step::Inputs,
    workflow_input: Option<&str>,
    events: &EventSink,
) -> (StepReport, Option<StepOutputs>) {
    let started = Instant::now();
    let span = tracing::info_span!(
        "step",
        otel.name = %format!("step {}", step.name),
        voidbox.step = %step.name,
        voidbox.attempts = tracing::field::Empty,
        voidbox.success = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    events.emit(RunEvent::StageStarted {
        box_name: step.name.clone(),
    });
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        let attempt = run_step::attempt(step, provider, &inputs, workflow_input, events);
        let attempt = attempt.instrument(span.clone());
        let outcome = match step.timeout {
            None => attempt.await,
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {limit:?}"))),
        };
        match outcome {
            Ok(done) => break Ok(done),
            Err(e) if attempts > step.retries => break Err(e),
            Err(e) => {
                let wait = step.retry_backoff * 2u32.saturating_pow(attempts - 1);
                tracing::warn!(step = step.name, attempts, ?wait, "retrying after: {e}");
                tokio::time::sleep(wait).await;
            }
        }
    };
    let duration = started.elapsed();
    span.record("voidbox.attempts", i64::from(attempts));
    span.record("voidbox.success", outcome.is_ok());
    if outcome.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    crate::observe::metrics::stage_finished(&step.name, outcome.is_ok(), duration);
    events.emit(RunEvent::StageFinished {
        box_name: step.name.clone(),
        success: outcome.is_ok(),
        duration,
        error: outcome.as_ref().err().cloned(),
    });
    match outcome {
        Ok(done) => (
            StepReport {
                name: step.name.clone(),
                status: BoxStatus::Succeeded,
                attempts,
                duration,
                exit_code: done.exit_code,
                stdout: Some(done.outputs.stdout.clone()),
                result: done.result,
                error: None,
            },
            Some(done.outputs),
        ),
        Err(cause) => (
            StepReport {
                name: step.name.clone(),
                status: BoxStatus::Failed,
                attempts,
                duration,
                exit_code: None,
                stdout: None,
                result: None,
                error: Some(cause),
            },
            None,
        ),
    }
}

impl StepReport {
    fn not_run(name: &str, status: BoxStatus) -> StepReport {
        StepReport {
            name: name.into(),
            status,
            attempts: 0,
            duration: Duration::ZERO,
            exit_code: None,
            stdout: None,
            result: None,
            error: None,
        }
    }
}
