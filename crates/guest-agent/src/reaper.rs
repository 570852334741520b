//! Reaps every child of PID 1 and hands exit statuses to whoever waits.
//!
//! As PID 1 the agent inherits every orphan in the guest, so it must reap
//! with `waitpid(-1)`. That rules out tokio's own child handling (which waits
//! per pid); instead the agent spawns with its own [`crate::spawn`] and
//! registers the pid here while holding the table lock, so an exit can never
//! be reaped before its waiter is registered.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::{WaitOptions, WaitStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct ChildExit {
    /// Exit code for a normal exit.
    pub code: Option<i32>,
    /// Signal number when killed by a signal.
    pub signal: Option<i32>,
}

impl From<WaitStatus> for ChildExit {
    fn from(status: WaitStatus) -> Self {
        Self {
            code: status.exit_status(),
            signal: status.terminating_signal(),
        }
    }
}

type Table = HashMap<i32, oneshot::Sender<ChildExit>>;

/// The exit-status table and its SIGCHLD loop.
#[derive(Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

/// Held while spawning: the reaper cannot report an exit until the spawned
/// pid is registered.
pub struct Registration<'a> {
    table: MutexGuard<'a, Table>,
}

impl Registration<'_> {
    /// Registers `pid`; the receiver yields its exit status.
    pub fn watch(mut self, pid: i32) -> oneshot::Receiver<ChildExit> {
        let (tx, rx) = oneshot::channel();
        self.table.insert(pid, tx);
        rx
    }
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping.
    pub fn start() -> io::Result<Self> {
        let reaper = Self {
            table: Arc::default(),
        };
        let mut sigchld = signal(SignalKind::child())?;
        let table = reaper.table.clone();
        tokio::spawn(async move {
            loop {
                reap_all(&table);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Locks the table for the duration of a spawn.
    pub fn register(&self) -> Registration<'_> {
        Registration {
            table: self.table.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

fn reap_all(table: &Mutex<Table>) {
    // Orphans that nobody waits for are reaped and forgotten.
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        let waiter = table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid.as_raw_nonzero().get());
        if let Some(tx) = waiter {
            let _ = tx.send(ChildExit::from(status));
        }
    }
}
