//! The lanes: every request (and every run) waits in one of four, each
//! with its own concurrency limit and queue bound, so a flood of model
//! turns never delays a cancel, and a flood of anything is answered 429
//! instead of piling up in memory.
//!
//! - control: health, metrics, cancel, confirm, kill, delete, timeouts;
//! - query: reads (get, list, events, history);
//! - execute: what reaches a guest (create, exec, files, the E2B envd API);
//! - generate: model turns and runs, admitted by the work itself (a run
//!   waits `queued` for its turn, its submit answered at once).
//!
//! Tokio's semaphore is fair, so a lane is a FIFO queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{ApiError, AppState};

/// A lane, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Health, metrics, cancel, confirm, kill, delete, timeouts.
    Control,
    /// Reads.
    Query,
    /// What reaches a guest.
    Execute,
    /// Model turns and runs.
    Generate,
}

impl Lane {
    /// Every lane, in priority order.
    pub const ALL: [Lane; 4] = [Lane::Control, Lane::Query, Lane::Execute, Lane::Generate];

    /// Its name, as in metrics and `--lane`.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Control => "control",
            Lane::Query => "query",
            Lane::Execute => "execute",
            Lane::Generate => "generate",
        }
    }

    /// The lane named `name`.
    pub fn from_name(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How much a lane runs at once and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LaneLimit {
    /// At most this many at once.
    pub concurrency: usize,
    /// At most this many waiting; one more is answered 429.
    pub queue: usize,
}

/// Every lane's limit (plain data, in [`crate::ServeConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits(pub [LaneLimit; 4]);

impl Default for LaneLimits {
    fn default() -> Self {
        let limit = |concurrency, queue| LaneLimit { concurrency, queue };
        LaneLimits([
            limit(256, 1024),
            limit(64, 512),
            limit(32, 512),
            // Each run or turn may hold VMs: a few at once on a small host.
            limit(4, 256),
        ])
    }
}

impl LaneLimits {
    /// The limit of `lane`.
    pub fn get(&self, lane: Lane) -> LaneLimit {
        self.0[lane.index()]
    }

    /// Sets the limit of `lane`.
    pub fn set(&mut self, lane: Lane, limit: LaneLimit) {
        self.0[lane.index()] = limit;
    }

    /// Reads `NAME=CONCURRENCY:QUEUE` (`generate=2:50`) into these limits.
    pub fn parse_into(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("`{text}`: expected LANE=CONCURRENCY:QUEUE, as generate=2:50");
        let (name, numbers) = text.split_once('=').ok_or_else(bad)?;
        let lane = Lane::from_name(name)
            .ok_or_else(|| format!("`{name}` is not a lane (control, query, execute, generate)"))?;
        let (concurrency, queue) = numbers.split_once(':').ok_or_else(bad)?;
        let concurrency: usize = concurrency.parse().map_err(|_| bad())?;
        let queue: usize = queue.parse().map_err(|_| bad())?;
        if concurrency == 0 || concurrency > Semaphore::MAX_PERMITS {
            return Err(format!("`{text}`: the concurrency must be at least 1"));
        }
        self.set(lane, LaneLimit { concurrency, queue });
        Ok(())
    }
}

struct LaneState {
    limit: LaneLimit,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    rejected: AtomicU64,
}

/// The four lanes.
pub(crate) struct Lanes {
    lanes: [Arc<LaneState>; 4],
}

/// A lane's figures, for `/metrics`.
pub(crate) struct LaneFigures {
    pub lane: Lane,
    pub running: usize,
    pub waiting: usize,
    pub rejected: u64,
    pub limit: LaneLimit,
}

/// A lane is full: its queue is at its bound.
#[derive(Debug)]
pub(crate) struct Full(pub Lane);

impl Full {
    /// The 429 a full lane answers.
    pub fn error(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the {} lane is full; try again shortly", self.0.name()),
        )
        .retry_after(1)
    }
}

/// A place in a lane's queue; [`Queued::admitted`] waits for a turn.
/// Dropped, it leaves the queue.
pub(crate) struct Queued {
    lane: Arc<LaneState>,
    /// A turn had at once (it never waited).
    ready: Option<OwnedSemaphorePermit>,
    /// Counted among the lane's waiting.
    waits: bool,
}

/// A turn in a lane; the next one waiting goes when it is dropped.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Lanes {
    pub fn new(limits: LaneLimits) -> Lanes {
        Lanes {
            lanes: Lane::ALL.map(|lane| {
                let limit = limits.get(lane);
                Arc::new(LaneState {
                    limit,
                    permits: Arc::new(Semaphore::new(limit.concurrency)),
                    waiting: AtomicUsize::new(0),
                    rejected: AtomicU64::new(0),
                })
            }),
        }
    }

    /// A place in `lane`: a turn at once when one is free, else a place in
    /// its queue, else [`Full`].
    pub fn enter(&self, lane: Lane) -> Result<Queued, Full> {
        let state = &self.lanes[lane.index()];
        if let Ok(permit) = state.permits.clone().try_acquire_owned() {
            return Ok(Queued {
                lane: state.clone(),
                ready: Some(permit),
                waits: false,
            });
        }
        let placed = state
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < state.limit.queue).then_some(w + 1)
            });
        if placed.is_err() {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Full(lane));
        }
        Ok(Queued {
            lane: state.clone(),
            ready: None,
            waits: true,
        })
    }

    /// Each lane's figures now.
    pub fn figures(&self) -> Vec<LaneFigures> {
        Lane::ALL
            .iter()
            .map(|&lane| {
                let s = &self.lanes[lane.index()];
                LaneFigures {
                    lane,
                    running: s.limit.concurrency - s.permits.available_permits(),
                    waiting: s.waiting.load(Ordering::Acquire),
                    rejected: s.rejected.load(Ordering::Relaxed),
                    limit: s.limit,
                }
            })
            .collect()
    }
}

impl Queued {
    /// Waits for a turn (at once when it had one).
    pub async fn admitted(mut self) -> Admitted {
        if let Some(permit) = self.ready.take() {
            return Admitted { _permit: permit };
        }
        // The semaphore is never closed.
        let permit = self
            .lane
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("a lane's semaphore is never closed");
        Admitted { _permit: permit }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.waits {
            self.lane.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How long a request waits in its lane before it is answered 503.
const REQUEST_WAIT: Duration = Duration::from_secs(30);

/// The lane of a request; `None`: admitted by the work itself (runs,
/// model turns).
pub(crate) fn lane_of(method: &Method, path: &str) -> Option<Lane> {
    let last = path.rsplit('/').next().unwrap_or("");
    if path == "/v1/runs" && method == Method::POST
        || path.starts_with("/v1/sessions/")
            && matches!(last, "generate" | "generate_object" | "stream")
    {
        return None;
    }
    if path.starts_with("/v1/sessions/") && last == "compact" {
        return Some(Lane::Generate);
    }
    if matches!(path, "/v1/health" | "/metrics" | "/health")
        || matches!(last, "cancel" | "timeout" | "SendSignal")
        || path.contains("/confirmations/")
        || (method == Method::DELETE && !path.ends_with("/files"))
    {
        return Some(Lane::Control);
    }
    if method == Method::GET && !path.contains("/files") {
        return Some(Lane::Query);
    }
    Some(Lane::Execute)
}

/// The middleware: every request waits for its turn in its lane (at most
/// [`REQUEST_WAIT`]), or is answered 429 when the lane's queue is full.
pub(crate) async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(lane) = lane_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let queued = match state.lanes.enter(lane) {
        Ok(queued) => queued,
        Err(full) => return full.error().into_response(),
    };
    let Ok(turn) = tokio::time::timeout(REQUEST_WAIT, queued.admitted()).await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waited {}s in the {} lane",
                REQUEST_WAIT.as_secs(),
                lane.name()
            ),
        )
        .retry_after(5)
        .into_response();
    };
    let response = next.run(request).await;
    drop(turn);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_their_lanes() {
        let cases = [
            (Method::GET, "/v1/health", Some(Lane::Control)),
            (Method::POST, "/v1/runs/run-1/cancel", Some(Lane::Control)),
            (Method::DELETE, "/v1/sandboxes/sb-1", Some(Lane::Control)),
            (
                Method::POST,
                "/v1/sandboxes/sb-1/timeout",
                Some(Lane::Control),
            ),
            (Method::GET, "/v1/runs", Some(Lane::Query)),
            (Method::GET, "/v1/runs/run-1/events", Some(Lane::Query)),
            (Method::POST, "/v1/sandboxes/sb-1/exec", Some(Lane::Execute)),
            (Method::GET, "/v1/sandboxes/sb-1/files", Some(Lane::Execute)),
            (
                Method::DELETE,
                "/v1/sandboxes/sb-1/files",
                Some(Lane::Execute),
            ),
            (Method::POST, "/v1/sandboxes", Some(Lane::Execute)),
            (Method::POST, "/v1/runs", None),
            (Method::POST, "/v1/sessions/s-1/stream", None),
            (
                Method::POST,
                "/v1/sessions/s-1/compact",
                Some(Lane::Generate),
            ),
            (Method::POST, "/v1/sessions/s-1/cancel", Some(Lane::Control)),
            (
                Method::POST,
                "/v1/sessions/s-1/confirmations/c-1",
                Some(Lane::Control),
            ),
            (Method::GET, "/v1/sessions/s-1/history", Some(Lane::Query)),
            (
                Method::POST,
                "/process.Process/SendSignal",
                Some(Lane::Control),
            ),
            (Method::POST, "/process.Process/Start", Some(Lane::Execute)),
            (Method::DELETE, "/sandboxes/sb-1", Some(Lane::Control)),
            (Method::GET, "/v2/sandboxes", Some(Lane::Query)),
            (Method::GET, "/files", Some(Lane::Execute)),
        ];
        for (method, path, lane) in cases {
            assert_eq!(lane_of(&method, path), lane, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn a_full_lane_refuses_and_a_freed_turn_goes_to_the_first_waiting() {
        let mut limits = LaneLimits::default();
        limits.parse_into("generate=1:2").unwrap();
        let lanes = Lanes::new(limits);
        let first = lanes.enter(Lane::Generate).unwrap().admitted().await;
        let second = lanes.enter(Lane::Generate).unwrap();
        let third = lanes.enter(Lane::Generate).unwrap();
        assert!(lanes.enter(Lane::Generate).is_err(), "the queue holds two");
        // Other lanes do not wait behind it.
        let _control = lanes.enter(Lane::Control).unwrap().admitted().await;
        let f = &lanes.figures()[Lane::Generate.index()];
        assert_eq!((f.running, f.waiting, f.rejected), (1, 2, 1));
        drop(third);
        let waits = tokio::spawn(second.admitted());
        tokio::task::yield_now().await;
        assert!(!waits.is_finished());
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(5), waits)
            .await
            .unwrap()
            .unwrap();
        let f = &lanes.figures()[Lane::Generate.index()];
        assert_eq!((f.running, f.waiting), (1, 0));
    }

    #[test]
    fn bad_lane_limits_say_what_is_wrong() {
        let mut limits = LaneLimits::default();
        for bad in [
            "generate",
            "fast=1:2",
            "generate=0:2",
            "generate=1",
            "generate=a:b",
        ] {
            assert!(limits.parse_into(bad).is_err(), "{bad}");
        }
        assert_eq!(limits, LaneLimits::default(), "nothing changed");
    }
}
