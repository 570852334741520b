//! Pipelines: boxes in sequence (`pipe`) and in parallel (`fan_out`), each
//! box in a fresh sandbox and its own failure domain.
//!
//! ```no_run
//! # async fn demo(a: void_box::agent::VoidBox, b: void_box::agent::VoidBox,
//! #               c: void_box::agent::VoidBox, d: void_box::agent::VoidBox) {
//! use void_box::pipeline::Pipeline;
//! let result = Pipeline::named("research", a)
//!     .fan_out(vec![b, c])   // both get a's output; d gets ["b's", "c's"]
//!     .pipe(d)
//!     .run()
//!     .await;
//! # }
//! ```

mod report;

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tracing::Instrument;

pub use report::{BoxReport, BoxStatus, PipelineError, PipelineResult, StageReport};

use crate::agent::{AgentError, RunResult, VoidBox};
use crate::event::{EventSink, RunEvent};
use crate::sandbox::{SandboxProvider, VmProvider};

/// What a failed box does to the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Stop at the first failure; running siblings are cancelled (default).
    #[default]
    FailFast,
    /// Run every stage; a failed stage hands on the last good output.
    Continue,
}

/// One step of a pipeline.
#[derive(Debug, Clone)]
pub enum Stage {
    /// One box.
    Box(VoidBox),
    /// Boxes run in parallel, each in its own VM.
    FanOut(Vec<VoidBox>),
}

impl Stage {
    /// The boxes of this stage, in declaration order.
    pub fn boxes(&self) -> &[VoidBox] {
        match self {
            Stage::Box(b) => std::slice::from_ref(b),
            Stage::FanOut(boxes) => boxes,
        }
    }
}

/// A sequence of stages.
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: String,
    stages: Vec<Stage>,
    policy: FailurePolicy,
    stage_timeout: Option<Duration>,
    retries: u32,
    retry_backoff: Duration,
}

impl Pipeline {
    /// A pipeline that starts with `first`.
    pub fn named(name: &str, first: VoidBox) -> Pipeline {
        Pipeline {
            name: name.into(),
            stages: vec![Stage::Box(first)],
            policy: FailurePolicy::FailFast,
            stage_timeout: None,
            retries: 0,
            retry_backoff: Duration::from_secs(1),
        }
    }

    /// Runs `next` on the previous stage's output.
    pub fn pipe(mut self, next: VoidBox) -> Pipeline {
        self.stages.push(Stage::Box(next));
        self
    }

    /// Runs `boxes` in parallel on the previous stage's output; the next
    /// stage gets a JSON array of their outputs, in declaration order.
    pub fn fan_out(mut self, boxes: Vec<VoidBox>) -> Pipeline {
        self.stages.push(Stage::FanOut(boxes));
        self
    }

    /// Failure policy (default fail-fast).
    pub fn policy(mut self, policy: FailurePolicy) -> Pipeline {
        self.policy = policy;
        self
    }

    /// Deadline of each box's run, boot included (default: none beyond the
    /// box's own).
    pub fn stage_timeout(mut self, timeout: Duration) -> Pipeline {
        self.stage_timeout = Some(timeout);
        self
    }

    /// Retries of a failed box (default 0), with exponential backoff.
    pub fn retries(mut self, retries: u32) -> Pipeline {
        self.retries = retries;
        self
    }

    /// First wait before a retry (default 1 s; doubles each time).
    pub fn retry_backoff(mut self, backoff: Duration) -> Pipeline {
        self.retry_backoff = backoff;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Runs the pipeline with no input.
    pub async fn run(&self) -> Result<PipelineResult, PipelineError> {
        self.run_with(None, EventSink::none()).await
    }

    /// Runs the pipeline, calling `on_output(box_name, text)` with the
    /// model's text as each box streams it.
    pub async fn run_streaming<F>(&self, on_output: F) -> Result<PipelineResult, PipelineError>
    where
        F: Fn(&str, &str) + Send + Sync,
    {
        let (sink, mut rx) = EventSink::channel();
        let run = self.run_with(None, sink);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => {
                    while let Some(event) = rx.try_recv() {
                        forward_text(&event, &on_output);
                    }
                    return result;
                }
                Some(event) = rx.recv() => forward_text(&event, &on_output),
            }
        }
    }

    /// Runs the pipeline on `input` in micro-VMs, sending every box's
    /// events to `events`. Dropping the future cancels the run and kills
    /// every VM it started.
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<PipelineResult, PipelineError> {
        self.run_on(&VmProvider, input, events).await
    }

    /// Like [`run_with`](Self::run_with), booting every box's sandbox
    /// through `provider`.
    pub async fn run_on(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<PipelineResult, PipelineError> {
        let span = tracing::info_span!(
            "pipeline",
            otel.name = %format!("pipeline {}", self.name),
            voidbox.pipeline = %self.name,
            voidbox.stages = self.stages.len() as i64,
        );
        self.run_stages(provider, input, events)
            .instrument(span)
            .await
    }

    async fn run_stages(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<PipelineResult, PipelineError> {
        let started = Instant::now();
        let mut handoff: Option<String> = input.map(str::to_string);
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut failed = false;
        for (index, stage) in self.stages.iter().enumerate() {
            if failed && self.policy == FailurePolicy::FailFast {
                stages.push(StageReport::skipped(index, stage));
                continue;
            }
            let reports = match stage {
                Stage::Box(b) => vec![self.run_box(provider, b, handoff.as_deref(), &events).await],
                Stage::FanOut(boxes) => {
                    self.run_fan_out(provider, boxes, handoff.as_deref(), &events)
                        .await
                }
            };
            let stage_ok = reports.iter().all(|r| r.status == BoxStatus::Succeeded);
            if stage_ok || self.policy == FailurePolicy::Continue {
                if let Some(next) = stage_output(stage, &reports) {
                    handoff = Some(next);
                }
            }
            failed |= !stage_ok;
            stages.push(StageReport {
                index,
                boxes: reports,
            });
        }
        let result = PipelineResult {
            name: self.name.clone(),
            success: !failed,
            output: if failed && self.policy == FailurePolicy::FailFast {
                None
            } else {
                handoff
            },
            stages,
            duration: started.elapsed(),
        };
        if failed {
            Err(PipelineError::new(result))
        } else {
            Ok(result)
        }
    }

    /// One box, with the stage timeout and retries.
    async fn run_box(
        &self,
        provider: &dyn SandboxProvider,
        b: &VoidBox,
        input: Option<&str>,
        events: &EventSink,
    ) -> BoxReport {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let run = b.run_on(provider, input, events.clone());
            let outcome = match self.stage_timeout {
                None => run.await,
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // The box's own end event was dropped with its future.
                        let error = AgentError::Timeout {
                            box_name: b.name().into(),
                            after: limit,
                        };
                        events.emit(RunEvent::StageFinished {
                            box_name: b.name().into(),
                            success: false,
                            duration: started.elapsed(),
                            error: Some(error.to_string()),
                        });
                        Err(error)
                    }
                },
            };
            match outcome {
                Ok(result) => return BoxReport::succeeded(b, result, attempt, started.elapsed()),
                Err(error) if attempt > self.retries => {
                    return BoxReport::failed(b, &error, attempt, started.elapsed())
                }
                Err(error) => {
                    let wait = self.retry_backoff * 2u32.saturating_pow(attempt - 1);
                    tracing::warn!(
                        box_name = b.name(),
                        attempt,
                        ?wait,
                        "retrying after: {error}"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// All boxes at once; under fail-fast the first failure cancels the rest
    /// (dropping a run kills its VM).
    async fn run_fan_out(
        &self,
        provider: &dyn SandboxProvider,
        boxes: &[VoidBox],
        input: Option<&str>,
        events: &EventSink,
    ) -> Vec<BoxReport> {
        let mut reports: Vec<Option<BoxReport>> = vec![None; boxes.len()];
        let mut running: FuturesUnordered<_> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| async move { (i, self.run_box(provider, b, input, events).await) })
            .collect();
        while let Some((i, report)) = running.next().await {
            let failed = report.status != BoxStatus::Succeeded;
            reports[i] = Some(report);
            if failed && self.policy == FailurePolicy::FailFast {
                break;
            }
        }
        drop(running);
        reports
            .into_iter()
            .zip(boxes)
            .map(|(report, b)| report.unwrap_or_else(|| BoxReport::cancelled(b)))
            .collect()
    }
}

fn forward_text<F: Fn(&str, &str)>(event: &RunEvent, on_output: &F) {
    if let RunEvent::TextDelta { box_name, text } = event {
        on_output(box_name, text);
    }
}

/// What a stage hands to the next: a box's handoff, or a fan-out's JSON
/// array (declaration order; a failed box appears as `{"box", "error"}`).
fn stage_output(stage: &Stage, reports: &[BoxReport]) -> Option<String> {
    match stage {
        Stage::Box(_) => reports[0].result.as_ref().map(RunResult::handoff),
        Stage::FanOut(_) => {
            let items: Vec<Value> = reports
                .iter()
                .map(|r| match &r.result {
                    Some(result) => match (&result.file, &result.output) {
                        (None, Some(json)) => json.clone(),
                        _ => Value::String(result.handoff()),
                    },
                    None => serde_json::json!({
                        "box": r.box_name,
                        "error": r.error.clone().unwrap_or_default(),
                    }),
                })
                .collect();
            Some(Value::Array(items).to_string())
        }
    }
}
