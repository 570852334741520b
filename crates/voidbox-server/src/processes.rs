//! The processes a sandbox runs for its clients: each started command's
//! output pumped by one task to whoever follows it (one follower or
//! several, none at times), its stdin and kill reachable by pid or tag
//! until it ends.
//!
//! A follower's queue is bounded: one that reads slowly slows the command
//! down, never the daemon's memory. A command nobody follows runs on, its
//! output dropped (a background command of the E2B API), unless it was
//! started to die with its last follower (a native stream).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use void_box::sandbox::{ExecStream, StdinWriter};
use void_box::{ExecEvent, ExitStatus};

/// What was asked to run (for listings).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessInfo {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// A name the client gave it, to find it by.
    pub tag: Option<String>,
}

/// One event of a process, as its followers get it.
#[derive(Debug, Clone)]
pub(crate) enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// It ended; nothing follows.
    Exit(ExitStatus),
    /// Following it failed (its sandbox is gone); nothing follows.
    Failed(String),
}

/// Events a follower may have waiting before the command is held back.
const FOLLOWER_QUEUE: usize = 16;

/// A running process.
pub(crate) struct Process {
    pub pid: u32,
    pub info: ProcessInfo,
    stdin: StdinWriter,
    followers: Mutex<Vec<mpsc::Sender<ProcessEvent>>>,
}

impl Process {
    /// Its stdin (write, close) and kill.
    pub fn stdin(&self) -> &StdinWriter {
        &self.stdin
    }

    /// Follows it from now on.
    pub fn follow(&self) -> mpsc::Receiver<ProcessEvent> {
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        lock(&self.followers).push(tx);
        rx
    }
}

/// Resolves once `follower`'s receiver is gone (never without one).
async fn gone(follower: Option<&mpsc::Sender<ProcessEvent>>) {
    match follower {
        Some(f) => f.closed().await,
        None => std::future::pending().await,
    }
}

/// Whether a process outlives its last follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfollowed {
    /// It runs on (the E2B API's commands).
    RunsOn,
    /// It is killed (the native API's streams).
    Killed,
}

/// A sandbox's running processes.
#[derive(Default)]
pub(crate) struct Processes {
    by_pid: Mutex<HashMap<u32, Arc<Process>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Processes {
    /// Takes over `stream`, just started: returns the process and its
    /// first follower, which misses nothing.
    pub fn start(
        self: &Arc<Self>,
        mut stream: ExecStream,
        info: ProcessInfo,
        unfollowed: Unfollowed,
    ) -> (Arc<Process>, mpsc::Receiver<ProcessEvent>) {
        let pid = stream.pid();
        let process = Arc::new(Process {
            pid,
            info,
            stdin: stream.stdin(),
            followers: Mutex::new(Vec::new()),
        });
        let first = process.follow();
        // A command that dies with its follower is killed as soon as the
        // follower goes, even while it prints nothing.
        let sentinel = match unfollowed {
            Unfollowed::Killed => lock(&process.followers).first().cloned(),
            Unfollowed::RunsOn => None,
        };
        lock(&self.by_pid).insert(pid, process.clone());
        let table = self.clone();
        let pumped = process.clone();
        tokio::spawn(async move {
            let mut killed = false;
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    () = gone(sentinel.as_ref()), if !killed => {
                        killed = true;
                        let _ = stream.cancel();
                        continue;
                    }
                };
                let event = match next {
                    Ok(Some(ExecEvent::Stdout(d))) => ProcessEvent::Stdout(d),
                    Ok(Some(ExecEvent::Stderr(d))) => ProcessEvent::Stderr(d),
                    Ok(Some(ExecEvent::Exit(status))) => ProcessEvent::Exit(status),
                    Ok(None) => ProcessEvent::Failed("the command's stream ended".into()),
                    Err(e) => ProcessEvent::Failed(e.to_string()),
                };
                let last = matches!(event, ProcessEvent::Exit(_) | ProcessEvent::Failed(_));
                if last {
                    // Gone from the table before its end is told, so a
                    // client that saw the end never finds it running.
                    lock(&table.by_pid).remove(&pid);
                }
                let followers: Vec<_> = lock(&pumped.followers).clone();
                let mut dropped = Vec::new();
                for (i, follower) in followers.iter().enumerate() {
                    if follower.send(event.clone()).await.is_err() {
                        dropped.push(i);
                    }
                }
                if last {
                    break;
                }
                if !dropped.is_empty() {
                    lock(&pumped.followers).retain(|f| !f.is_closed());
                }
            }
        });
        (process, first)
    }

    /// The running process `pid`.
    pub fn get(&self, pid: u32) -> Option<Arc<Process>> {
        lock(&self.by_pid).get(&pid).cloned()
    }

    /// The running process tagged `tag`.
    pub fn tagged(&self, tag: &str) -> Option<Arc<Process>> {
        lock(&self.by_pid)
            .values()
            .find(|p| p.info.tag.as_deref() == Some(tag))
            .cloned()
    }

    /// Every running process, by pid.
    pub fn list(&self) -> Vec<Arc<Process>> {
        let mut all: Vec<_> = lock(&self.by_pid).values().cloned().collect();
        all.sort_by_key(|p| p.pid);
        all
    }
}
