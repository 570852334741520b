//! What a pipeline run reports, stage by stage and box by box.

use std::time::Duration;

use serde::Serialize;

use super::Stage;
use crate::agent::{AgentError, RunResult, VoidBox};

/// How a box's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxStatus {
    /// It returned a result.
    Succeeded,
    /// It failed after its retries.
    Failed,
    /// A sibling failed first and it was stopped.
    Cancelled,
    /// An earlier stage failed, so it never started.
    Skipped,
}

/// One box's part in a run.
#[derive(Debug, Clone, Serialize)]
pub struct BoxReport {
    /// Box name.
    pub box_name: String,
    /// How it ended.
    pub status: BoxStatus,
    /// Attempts made (retries + 1 at most).
    pub attempts: u32,
    /// Wall time of all attempts.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
    /// The result, when it succeeded.
    pub result: Option<RunResult>,
    /// The cause, when it failed.
    pub error: Option<String>,
}

impl BoxReport {
    pub(super) fn succeeded(
        b: &VoidBox,
        result: RunResult,
        attempts: u32,
        duration: Duration,
    ) -> Self {
        BoxReport {
            box_name: b.name().into(),
            status: BoxStatus::Succeeded,
            attempts,
            duration,
            result: Some(result),
            error: None,
        }
    }

    pub(super) fn failed(
        b: &VoidBox,
        error: &AgentError,
        attempts: u32,
        duration: Duration,
    ) -> Self {
        BoxReport {
            box_name: b.name().into(),
            status: BoxStatus::Failed,
            attempts,
            duration,
            result: None,
            error: Some(error.to_string()),
        }
    }

    fn not_run(b: &VoidBox, status: BoxStatus) -> Self {
        BoxReport {
            box_name: b.name().into(),
            status,
            attempts: 0,
            duration: Duration::ZERO,
            result: None,
            error: None,
        }
    }

    pub(super) fn cancelled(b: &VoidBox) -> Self {
        Self::not_run(b, BoxStatus::Cancelled)
    }
}

/// One stage's boxes.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// 0-based position in the pipeline.
    pub index: usize,
    /// Its boxes, in declaration order.
    pub boxes: Vec<BoxReport>,
}

impl StageReport {
    pub(super) fn skipped(index: usize, stage: &Stage) -> Self {
        StageReport {
            index,
            boxes: stage
                .boxes()
                .iter()
                .map(|b| BoxReport::not_run(b, BoxStatus::Skipped))
                .collect(),
        }
    }
}

/// The outcome of a pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    /// Pipeline name.
    pub name: String,
    /// Every box succeeded.
    pub success: bool,
    /// The last stage's output (under `continue`, the last good one).
    pub output: Option<String>,
    /// Every stage, in order.
    pub stages: Vec<StageReport>,
    /// Wall time.
    #[serde(rename = "duration_ms", serialize_with = "crate::millis::serialize")]
    pub duration: Duration,
}

impl PipelineResult {
    /// Every box report, stage by stage.
    pub fn boxes(&self) -> impl Iterator<Item = &BoxReport> {
        self.stages.iter().flat_map(|s| s.boxes.iter())
    }

    /// Input and output tokens over all boxes.
    pub fn total_tokens(&self) -> (u64, u64) {
        self.boxes()
            .filter_map(|b| b.result.as_ref())
            .fold((0, 0), |(i, o), r| {
                (i + r.usage.input_tokens, o + r.usage.output_tokens)
            })
    }
}

/// A pipeline in which at least one box failed. Names the first failed
/// stage and box and the cause; carries the whole report.
#[derive(Debug, thiserror::Error)]
#[error("pipeline `{}`: stage {} (box `{}`) failed: {}{}", report.name, stage + 1, box_name, cause, more(*others))]
pub struct PipelineError {
    /// 0-based index of the first failed stage.
    pub stage: usize,
    /// The first failed box.
    pub box_name: String,
    /// Why it failed.
    pub cause: String,
    /// How many other boxes failed.
    pub others: usize,
    /// The whole run, as far as it went.
    pub report: Box<PipelineResult>,
}

fn more(others: usize) -> String {
    match others {
        0 => String::new(),
        n => format!(" (and {n} more failed)"),
    }
}

impl PipelineError {
    pub(super) fn new(report: PipelineResult) -> Self {
        let mut failures = report.stages.iter().flat_map(|s| {
            s.boxes
                .iter()
                .filter(|b| b.status == BoxStatus::Failed)
                .map(move |b| (s.index, b))
        });
        let (stage, first) = failures
            .next()
            .map(|(i, b)| (i, (b.box_name.clone(), b.error.clone().unwrap_or_default())))
            .unwrap_or((0, (String::new(), "unknown".into())));
        let others = failures.count();
        PipelineError {
            stage,
            box_name: first.0,
            cause: first.1,
            others,
            report: Box::new(report),
        }
    }
}
