//! The VMM process: started, watched and killed from one thread that lives
//! exactly as long as it does.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits,
//! not the process; so the fork happens on a dedicated keeper thread that
//! then waits for the child and only ends once it is gone. Every signal
//! goes through a pidfd, which cannot reach a recycled pid.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::sync::{oneshot, watch};

use super::VmExit;
use crate::error::{Error, Result};

/// How long a launch may take to report the VMM's pids.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long `kill` waits for the keeper to reap the VMM.
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// Bubblewrap's `--info-fd` report is a few lines of JSON.
const MAX_INFO: u64 = 4096;

/// One running VMM, possibly inside a confinement wrapper.
pub(crate) struct VmmProcess {
    /// Host pids, the VMM itself first, then its wrapper if any.
    pids: Vec<u32>,
    pidfds: Vec<OwnedFd>,
    exit: watch::Receiver<Option<VmExit>>,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

/// Where the VMM's own pid comes from.
pub(crate) enum VmmPid {
    /// The spawned child is the VMM.
    Child,
    /// The child is a wrapper that writes `{"child-pid": N}` (bubblewrap's
    /// `--info-fd`) to this pipe; the VMM is pid N.
    Reported(OwnedFd),
}

impl VmmProcess {
    /// Spawns `cmd` on a keeper thread. `cmd` must already carry its
    /// `pre_exec` set-up (death signal, descriptors).
    pub(crate) async fn spawn(cmd: Command, vmm_pid: VmmPid, what: String) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (spawned_tx, mut spawned_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let keeper = std::thread::Builder::new()
            .name("voidbox-vmm".into())
            .spawn(move || keep(cmd, vmm_pid, what, spawned_tx, ready_tx, exit_tx))
            .map_err(|e| Error::io("start the VMM keeper thread", e))?;
        let keeper = Mutex::new(Some(keeper));
        let started = match tokio::time::timeout(START_DEADLINE, ready_rx).await {
            Ok(ready) => {
                ready.map_err(|_| Error::Launch("the VMM keeper thread ended early".into()))??
            }
            Err(_) => {
                // A wrapper that never reports: kill it, which ends the keeper too.
                if let Ok(wrapper) = spawned_rx.try_recv() {
                    let _ = pidfd_send_signal(wrapper.as_fd(), Signal::KILL);
                }
                return Err(Error::Launch("the VMM did not start within 10 s".into()));
            }
        };
        Ok(Self {
            pids: started.pids,
            pidfds: started.pidfds,
            exit: exit_rx,
            keeper,
        })
    }

    /// Host pids, the VMM first.
    pub(crate) fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// How the process ended, once it has.
    pub(crate) fn exit(&self) -> watch::Receiver<Option<VmExit>> {
        self.exit.clone()
    }

    /// SIGKILLs the VMM and waits (briefly) until it and its wrapper are
    /// reaped. Safe to call any number of times.
    pub(crate) fn kill(&self) {
        let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
        let Some(running) = keeper.take() else {
            return;
        };
        // The VMM first: its wrapper then reaps it and exits, so both are
        // gone once the keeper is. Only a wrapper that lingers is killed.
        // ESRCH once a process has exited: nothing to do.
        let _ = pidfd_send_signal(self.pidfds[0].as_fd(), Signal::KILL);
        let mut finished = wait_finished(&running, REAP_DEADLINE);
        if !finished {
            for pidfd in &self.pidfds[1..] {
                let _ = pidfd_send_signal(pidfd.as_fd(), Signal::KILL);
            }
            finished = wait_finished(&running, REAP_DEADLINE);
        }
        if finished {
            let _ = running.join();
        } else {
            tracing::warn!(pids = ?self.pids, "the VMM was not reaped within its deadline");
        }
    }
}

fn wait_finished(thread: &JoinHandle<()>, deadline: Duration) -> bool {
    let until = std::time::Instant::now() + deadline;
    while !thread.is_finished() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    thread.is_finished()
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Started {
    pids: Vec<u32>,
    pidfds: Vec<OwnedFd>,
}

/// The keeper thread: fork, report the pids, wait, publish the exit.
fn keep(
    mut cmd: Command,
    vmm_pid: VmmPid,
    what: String,
    spawned: oneshot::Sender<OwnedFd>,
    ready: oneshot::Sender<Result<Started>>,
    exit: watch::Sender<Option<VmExit>>,
) {
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = ready.send(Err(Error::Launch(format!("spawn {what}: {e}"))));
            let _ = exit.send(Some(VmExit {
                status: format!("never started ({e})"),
            }));
            return;
        }
    };
    // Closes our copies of the descriptors passed to the child.
    drop(cmd);
    // The launcher's way to kill the child if it never reports its pids.
    if let Ok(fd) = pid_fd(child.id()) {
        let _ = spawned.send(fd);
    }
    match started(&child, vmm_pid) {
        Ok(started) => {
            let _ = ready.send(Ok(started));
        }
        Err(e) => {
            let _ = child.kill();
            let _ = ready.send(Err(e));
        }
    }
    let status = match child.wait() {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let _ = exit.send(Some(VmExit { status }));
}

/// Opens pidfds for the child and, when a wrapper reports it, the VMM.
/// Nothing reaps the child before this returns, so its pid is still its own.
fn started(child: &Child, vmm_pid: VmmPid) -> Result<Started> {
    let wrapper = pid_fd(child.id())?;
    match vmm_pid {
        VmmPid::Child => Ok(Started {
            pids: vec![child.id()],
            pidfds: vec![wrapper],
        }),
        VmmPid::Reported(info) => {
            let pid = reported_pid(info)?;
            // The wrapper reaps the VMM only once it exits; it was running a
            // moment ago, so this is (all but surely) still its pid.
            let vmm = pid_fd(pid)?;
            Ok(Started {
                pids: vec![pid, child.id()],
                pidfds: vec![vmm, wrapper],
            })
        }
    }
}

fn pid_fd(pid: u32) -> Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::Launch(format!("bad pid {pid}")))?;
    pidfd_open(pid, PidfdFlags::empty())
        .map_err(|e| Error::Launch(format!("pidfd_open({pid:?}): {e}")))
}

/// Reads `{"child-pid": N}` from a wrapper's info pipe. The wrapper writes
/// it and closes the pipe (or dies, which closes it too).
fn reported_pid(info: OwnedFd) -> Result<u32> {
    let mut text = String::new();
    std::fs::File::from(info)
        .take(MAX_INFO)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read the sandbox wrapper's report", e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        Error::Launch(format!(
            "the sandbox wrapper did not report the VMM's pid (it said {text:?})"
        ))
    })?;
    value
        .get("child-pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| Error::Launch(format!("no child-pid in {text:?}")))
}
