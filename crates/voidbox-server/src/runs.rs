//! Runs: specs the daemon runs the way `voidbox run` does, each with its
//! numbered events kept (bounded) for readers that come, go and come back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;
use void_box::event::{EventLine, EventSink};
use void_box::sandbox::SandboxProvider;
use void_box::spec::{Ending, Runnable};

use crate::registry::unix_ms;

/// Events a run keeps at most, and their bytes; beyond, they are counted
/// and dropped (the run goes on).
const MAX_EVENTS: usize = 100_000;
const MAX_EVENT_BYTES: usize = 64 << 20;
/// Finished runs kept; the oldest finished goes first.
const MAX_FINISHED: usize = 256;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One run.
pub(crate) struct Run {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub created_unix_ms: u64,
    state: Mutex<State>,
    /// The number of the last event kept (and a bump when it ends).
    changed: watch::Sender<u64>,
}

pub(crate) struct State {
    pub status: Status,
    pub ended_unix_ms: Option<u64>,
    pub ending: Option<Ending>,
    /// `(number, JSON)`, numbered from 1.
    events: Vec<(u64, Arc<str>)>,
    event_bytes: usize,
    pub events_dropped: u64,
    next: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl State {
    /// Events kept.
    pub fn kept(&self) -> usize {
        self.events.len()
    }
}

impl Run {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept events after number `after`, and whether the run ended.
    pub fn events_after(&self, after: u64) -> (Vec<(u64, Arc<str>)>, bool) {
        let state = self.state();
        let from = state.events.partition_point(|(n, _)| *n <= after);
        (
            state.events[from..].to_vec(),
            state.status != Status::Running,
        )
    }

    /// Resolves when an event is kept or the run ends.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn keep(&self, line: &EventLine) {
        let mut state = self.state();
        state.next += 1;
        let json: Arc<str> = serde_json::to_string(line).unwrap_or_default().into();
        if state.events.len() >= MAX_EVENTS || state.event_bytes + json.len() > MAX_EVENT_BYTES {
            state.events_dropped += 1;
            return;
        }
        state.event_bytes += json.len();
        let n = state.next;
        state.events.push((n, json));
        drop(state);
        self.changed.send_replace(n);
    }

    fn end(&self, status: Status, ending: Option<Ending>) {
        let mut state = self.state();
        if state.status != Status::Running {
            return;
        }
        state.status = status;
        state.ended_unix_ms = Some(unix_ms());
        state.ending = ending;
        state.task = None;
        drop(state);
        // Readers look again, and see the end.
        self.changed.send_modify(|_| {});
    }
}

/// Every run the daemon knows.
pub(crate) struct Runs {
    provider: Arc<dyn SandboxProvider>,
    runs: Mutex<HashMap<String, Arc<Run>>>,
}

impl Runs {
    pub fn new(provider: Arc<dyn SandboxProvider>) -> Runs {
        Runs {
            provider,
            runs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `runnable` (named `name`, of `kind`) with `input`.
    pub fn start(
        self: &Arc<Self>,
        name: String,
        kind: String,
        runnable: Runnable,
        input: Option<String>,
    ) -> Arc<Run> {
        let id = format!("run-{}", random_id());
        let run = Arc::new(Run {
            id: id.clone(),
            name,
            kind,
            created_unix_ms: unix_ms(),
            state: Mutex::new(State {
                status: Status::Running,
                ended_unix_ms: None,
                ending: None,
                events: Vec::new(),
                event_bytes: 0,
                events_dropped: 0,
                next: 0,
                task: None,
            }),
            changed: watch::channel(0).0,
        });
        self.forget_old();
        self.lock().insert(id, run.clone());
        let provider = self.provider.clone();
        let worker = run.clone();
        let task = tokio::spawn(async move {
            let (sink, mut events) = EventSink::channel();
            let running = runnable.run_on(&*provider, input.as_deref(), sink);
            tokio::pin!(running);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut running => break outcome,
                    Some(event) = events.recv() => worker.keep(&line(event)),
                }
            };
            while let Some(event) = events.try_recv() {
                worker.keep(&line(event));
            }
            let ending = outcome.ending();
            let status = if ending.error.is_none() {
                Status::Succeeded
            } else {
                Status::Failed
            };
            worker.end(status, Some(ending));
        });
        let mut state = run.state();
        if state.status == Status::Running {
            state.task = Some(task);
        }
        drop(state);
        run
    }

    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.lock().get(id).cloned()
    }

    /// Every run, newest first.
    pub fn list(&self) -> Vec<Arc<Run>> {
        let mut all: Vec<Arc<Run>> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| {
            b.created_unix_ms
                .cmp(&a.created_unix_ms)
                .then(b.id.cmp(&a.id))
        });
        all
    }

    /// Cancels a running run (its VMs are killed); whether it was running.
    pub fn cancel(&self, run: &Run) -> bool {
        let task = run.state().task.take();
        match task {
            Some(task) => {
                task.abort();
                run.end(Status::Cancelled, None);
                true
            }
            None => false,
        }
    }

    /// Cancels every running run (the daemon stops).
    pub fn cancel_all(&self) {
        for run in self.list() {
            self.cancel(&run);
        }
    }

    /// Drops the oldest finished runs past [`MAX_FINISHED`].
    fn forget_old(&self) {
        let mut runs = self.lock();
        let mut finished: Vec<(u64, String)> = runs
            .values()
            .filter(|r| r.state().status != Status::Running)
            .map(|r| (r.created_unix_ms, r.id.clone()))
            .collect();
        if finished.len() < MAX_FINISHED {
            return;
        }
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() + 1 - MAX_FINISHED) {
            runs.remove(id);
        }
    }
}

fn line(event: void_box::event::RunEvent) -> EventLine {
    EventLine {
        ts_ms: unix_ms(),
        trace_id: None,
        event,
    }
}

/// Sixteen hex digits of randomness.
pub(crate) fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
