//! Runs: specs the daemon runs the way `voidbox run` does. Each run and
//! its numbered events go to the store as they happen, so readers come,
//! go and come back (and a restarted daemon still has them); what is only
//! in memory is what a running run needs: its task, to be cancelled, and a
//! signal for the readers that wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use void_box::event::{EventLine, EventSink};
use void_box::sandbox::SandboxProvider;
use void_box::spec::Runnable;

use crate::lanes::{Full, Lane, Lanes};
use crate::registry::unix_ms;
use crate::store::{Store, StoreError, StoredRun};

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The generate lane's queue is full.
    #[error("the generate lane is full")]
    Full(Full),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Events a run keeps at most, and their bytes; beyond, they are counted
/// and dropped (the run goes on).
const MAX_EVENTS: u64 = 100_000;
const MAX_EVENT_BYTES: usize = 64 << 20;
/// Runs kept in the store; the oldest ended ones go first.
const MAX_KEPT: usize = 1000;

/// A run in flight.
struct Running {
    task: Option<tokio::task::JoinHandle<()>>,
    /// Events numbered so far (kept or dropped), their kept bytes, and
    /// how many were dropped.
    numbered: u64,
    kept_bytes: usize,
    dropped: u64,
    /// Its end is recorded (by its task, or by a cancel).
    ended: bool,
}

pub(crate) struct Run {
    id: String,
    state: Mutex<Running>,
    /// Bumped at each event kept and when the run ends.
    changed: watch::Sender<()>,
}

impl Run {
    fn state(&self) -> MutexGuard<'_, Running> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every run: the running ones here, all of them in the store.
pub(crate) struct Runs {
    provider: Arc<dyn SandboxProvider>,
    store: Arc<Store>,
    lanes: Arc<Lanes>,
    running: Mutex<HashMap<String, Arc<Run>>>,
}

impl Runs {
    pub fn new(provider: Arc<dyn SandboxProvider>, store: Arc<Store>, lanes: Arc<Lanes>) -> Runs {
        Runs {
            provider,
            store,
            lanes,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `runnable` (named `name`, of `kind`) with `input`: `queued`
    /// until the generate lane has a turn for it, then `running`.
    pub fn start(
        self: &Arc<Self>,
        name: String,
        kind: String,
        runnable: Runnable,
        input: Option<String>,
    ) -> Result<StoredRun, StartError> {
        let place = self.lanes.enter(Lane::Generate).map_err(StartError::Full)?;
        let record = StoredRun {
            id: format!("run-{:016x}", rand::random::<u64>()),
            name,
            kind,
            status: "queued".into(),
            created_unix_ms: unix_ms(),
            ended_unix_ms: None,
            output: None,
            error: None,
            result: None,
            events_dropped: 0,
            events: 0,
        };
        self.store.forget_runs_beyond(MAX_KEPT)?;
        self.store.insert_run(&record)?;
        let run = Arc::new(Run {
            id: record.id.clone(),
            state: Mutex::new(Running {
                task: None,
                numbered: 0,
                kept_bytes: 0,
                dropped: 0,
                ended: false,
            }),
            changed: watch::channel(()).0,
        });
        self.running().insert(run.id.clone(), run.clone());
        let runs = self.clone();
        let worker = run.clone();
        let mut ending = record.clone();
        let task = tokio::spawn(async move {
            let _turn = place.admitted().await;
            if let Err(e) = runs.store.set_run_running(&worker.id) {
                tracing::error!(run = %worker.id, "recording a run's start: {e}");
            }
            worker.changed.send_replace(());
            let (sink, mut events) = EventSink::channel();
            let going = runnable.run_on(&*runs.provider, input.as_deref(), sink);
            tokio::pin!(going);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut going => break outcome,
                    Some(event) = events.recv() => runs.keep(&worker, event),
                }
            };
            while let Some(event) = events.try_recv() {
                runs.keep(&worker, event);
            }
            let end = outcome.ending();
            ending.status = if end.error.is_none() {
                "succeeded"
            } else {
                "failed"
            }
            .into();
            ending.output = end.output;
            ending.error = end.error;
            ending.result = end.report;
            runs.end(&worker, ending);
        });
        run.state().task = Some(task);
        Ok(record)
    }

    /// Numbers `event` and keeps it, within the bounds.
    fn keep(&self, run: &Run, event: void_box::event::RunEvent) {
        let line = EventLine {
            ts_ms: unix_ms(),
            trace_id: None,
            event,
        };
        let json = serde_json::to_string(&line).unwrap_or_default();
        let mut state = run.state();
        state.numbered += 1;
        let full = state.numbered > MAX_EVENTS || state.kept_bytes + json.len() > MAX_EVENT_BYTES;
        if full
            || self
                .store
                .add_event(&run.id, state.numbered, &json)
                .is_err()
        {
            state.dropped += 1;
            return;
        }
        state.kept_bytes += json.len();
        drop(state);
        run.changed.send_replace(());
    }

    /// Records how `run` ended and lets it go.
    fn end(&self, run: &Run, mut record: StoredRun) {
        let mut state = run.state();
        if state.ended {
            return;
        }
        state.ended = true;
        state.task = None;
        record.events_dropped = state.dropped;
        drop(state);
        record.ended_unix_ms = Some(unix_ms());
        if let Err(e) = self.store.end_run(&record) {
            tracing::error!(run = %record.id, "recording the end of a run: {e}");
        }
        self.running().remove(&run.id);
        run.changed.send_replace(());
    }

    /// The run `id`, from the store.
    pub fn get(&self, id: &str) -> Option<StoredRun> {
        self.store.run(id).ok().flatten()
    }

    /// The newest runs, newest first.
    pub fn list(&self) -> Vec<StoredRun> {
        self.store.runs(MAX_KEPT).unwrap_or_default()
    }

    /// Waits for news of a running run; `None` once it is not running
    /// (or never was here).
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<()>> {
        self.running().get(id).map(|r| r.changed.subscribe())
    }

    /// At most `limit` kept events of `id` after number `after`.
    pub fn events_after(&self, id: &str, after: u64, limit: usize) -> Vec<(u64, String)> {
        self.store
            .events_after(id, after, limit)
            .unwrap_or_default()
    }

    /// Cancels the queued or running run `id` (its VMs are killed);
    /// whether it was.
    pub fn cancel(&self, id: &str) -> bool {
        let Some(run) = self.running().get(id).cloned() else {
            return false;
        };
        let Some(task) = run.state().task.take() else {
            return false;
        };
        task.abort();
        if let Some(mut record) = self.get(id) {
            record.status = "cancelled".into();
            record.error = Some("cancelled".into());
            self.end(&run, record);
        }
        true
    }

    /// Cancels every running run (the daemon stops).
    pub fn cancel_all(&self) {
        let ids: Vec<String> = self.running().keys().cloned().collect();
        for id in ids {
            self.cancel(&id);
        }
    }
}
