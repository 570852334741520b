//! Watching a directory, as envd's `WatchDir` stream and its polled
//! `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` serve it. Our
//! guest has no notification API: a watcher lists the directory (to the
//! depth asked) every [`POLL`] and reports what appeared, changed or went
//! away since. Events are coarser than inotify's (a file written twice
//! between polls is one `WRITE`) and as late as one poll.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use void_box::Sandbox;
use void_box_protocol::{FileKind, FileStat};

use super::connect::{Code, ConnectError};
use super::filesystem::walk;
use crate::registry::Live;

/// How often a watcher looks.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// Watchers a sandbox may have at once (polled ones and streams).
const MAX_WATCHERS: usize = 16;
/// Events a polled watcher keeps until they are fetched; the oldest go
/// first.
const MAX_PENDING: usize = 10_000;

/// What a watcher knows of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: FileKind,
    size: u64,
    mode: u32,
    mtime_ns: i64,
}

impl From<&FileStat> for Seen {
    fn from(s: &FileStat) -> Seen {
        Seen {
            kind: s.kind,
            size: s.size,
            mode: s.mode,
            mtime_ns: s.mtime_unix_ns,
        }
    }
}

/// A directory as last seen: each entry by its path relative to it, with
/// its stat.
type Listing = BTreeMap<String, (Seen, FileStat)>;

/// One watch: the directory, how deep, and what it last saw.
pub(crate) struct Watch {
    dir: String,
    depth: u32,
    last: Listing,
}

impl Watch {
    /// Starts watching `dir` (recursively: to the walk's depth bound).
    pub async fn start(
        sandbox: &Sandbox,
        dir: &str,
        recursive: bool,
    ) -> Result<Watch, ConnectError> {
        let dir = dir.trim_end_matches('/').to_string();
        let depth = if recursive {
            super::filesystem::MAX_DEPTH
        } else {
            1
        };
        let last = listing(sandbox, &dir, depth).await?;
        Ok(Watch { dir, depth, last })
    }

    /// What changed since the last look, as envd's `FilesystemEvent`s.
    pub async fn changes(&mut self, sandbox: &Sandbox) -> Result<Vec<Value>, ConnectError> {
        let now = listing(sandbox, &self.dir, self.depth).await?;
        let mut events = Vec::new();
        for (name, (seen, _)) in &now {
            let kind = match self.last.get(name) {
                None => "EVENT_TYPE_CREATE",
                Some((before, _)) if before.kind != seen.kind => "EVENT_TYPE_CREATE",
                Some((before, _))
                    if (before.size, before.mtime_ns) != (seen.size, seen.mtime_ns) =>
                {
                    "EVENT_TYPE_WRITE"
                }
                Some((before, _)) if before.mode != seen.mode => "EVENT_TYPE_CHMOD",
                Some(_) => continue,
            };
            events.push(json!({"name": name, "type": kind}));
        }
        for name in self.last.keys().filter(|n| !now.contains_key(*n)) {
            events.push(json!({"name": name, "type": "EVENT_TYPE_REMOVE"}));
        }
        self.last = now;
        Ok(events)
    }
}

async fn listing(sandbox: &Sandbox, dir: &str, depth: u32) -> Result<Listing, ConnectError> {
    let prefix = format!("{dir}/");
    let mut out = Listing::new();
    for (path, stat) in walk(sandbox, dir, depth).await? {
        let name = path.strip_prefix(&prefix).unwrap_or(&path).to_string();
        out.insert(name, (Seen::from(&stat), stat));
    }
    Ok(out)
}

/// A polled watcher: a task looks every [`POLL`] and keeps what it found
/// until fetched.
struct Polled {
    pending: Arc<Mutex<Pending>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Pending {
    events: VecDeque<Value>,
    /// Why the watch ended (its directory or sandbox went away).
    failed: Option<ConnectError>,
}

impl Drop for Polled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A sandbox's polled watchers, by id.
#[derive(Default)]
pub(crate) struct Watchers {
    by_id: Mutex<HashMap<String, Polled>>,
    /// `WatchDir` streams open now.
    streams: AtomicUsize,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watchers({})", lock(&self.by_id).len())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watchers {
    fn in_use(&self) -> usize {
        lock(&self.by_id).len() + self.streams.load(Ordering::Acquire)
    }

    fn full() -> ConnectError {
        ConnectError::new(
            Code::ResourceExhausted,
            format!("a sandbox has at most {MAX_WATCHERS} watchers"),
        )
    }

    /// Takes a place for a `WatchDir` stream; [`Self::stream_ended`] frees it.
    pub fn stream_started(&self) -> Result<(), ConnectError> {
        if self.in_use() >= MAX_WATCHERS {
            return Err(Self::full());
        }
        self.streams.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub fn stream_ended(&self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }

    /// `CreateWatcher`: watches `dir` until removed (or the sandbox ends).
    pub async fn create(
        &self,
        live: Arc<Live>,
        dir: &str,
        recursive: bool,
    ) -> Result<String, ConnectError> {
        if self.in_use() >= MAX_WATCHERS {
            return Err(Self::full());
        }
        let mut watch = Watch::start(&live.sandbox, dir, recursive).await?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let filling = pending.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                match watch.changes(&live.sandbox).await {
                    Ok(events) => {
                        let mut p = lock(&filling);
                        p.events.extend(events);
                        while p.events.len() > MAX_PENDING {
                            p.events.pop_front();
                        }
                    }
                    Err(e) => {
                        lock(&filling).failed = Some(e);
                        return;
                    }
                }
            }
        });
        let id = format!("watcher-{:016x}", rand::random::<u64>());
        lock(&self.by_id).insert(id.clone(), Polled { pending, task });
        Ok(id)
    }

    /// `GetWatcherEvents`: what it saw since the last call.
    pub fn take(&self, id: &str) -> Result<Vec<Value>, ConnectError> {
        let watchers = lock(&self.by_id);
        let polled = watchers
            .get(id)
            .ok_or_else(|| ConnectError::not_found(format!("no watcher `{id}`")))?;
        let mut pending = lock(&polled.pending);
        let events: Vec<Value> = pending.events.drain(..).collect();
        match pending.failed.clone() {
            Some(e) if events.is_empty() => Err(e),
            _ => Ok(events),
        }
    }

    /// `RemoveWatcher`.
    pub fn remove(&self, id: &str) -> Result<(), ConnectError> {
        lock(&self.by_id)
            .remove(id)
            .map(drop)
            .ok_or_else(|| ConnectError::not_found(format!("no watcher `{id}`")))
    }
}
