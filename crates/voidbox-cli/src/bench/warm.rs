//! The warm-start rows of `voidbox bench startup`: a snapshot restored to
//! its first exec, the exec round trips right after a restore (a cold
//! translation cache under TCG is part of the cost), a fork of a running
//! sandbox, a pool's acquire, a pause and a resume, and the snapshot's
//! size, measured in the same run as the floor and the cold start they are
//! set against.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use void_box::sandbox::snapshot::SnapshotStore;
use void_box::sandbox::SandboxPool;
use void_box::{Sandbox, SandboxConfig};

/// Round trips measured right after each restore.
const EXECS_AFTER_RESTORE: usize = 10;

/// What was measured.
pub struct Warm {
    pub save: Duration,
    pub devices_bytes: u64,
    pub disk_bytes: u64,
    /// Restore call to the first exec's exit.
    pub restore: Vec<Duration>,
    /// The first exec after each restore.
    pub first_exec: Vec<Duration>,
    /// The next ones.
    pub later_execs: Vec<Duration>,
    /// Fork call to the copy's first exec.
    pub fork: Vec<Duration>,
    /// Pool acquire call to the first exec's exit.
    pub acquire: Vec<Duration>,
    /// Pause call to its return (state on disk, VM gone).
    pub pause: Vec<Duration>,
    /// Resume call to the first exec.
    pub resume: Vec<Duration>,
}

/// Removes the bench's snapshot however the bench ends.
struct Named<'a>(&'a SnapshotStore, String);

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove(&self.1);
    }
}

pub async fn measure(runs: usize) -> Result<Warm> {
    let store = SnapshotStore::default_location();
    let name = format!("voidbox-bench-{}", std::process::id());
    let _ = store.remove(&name);
    let source = Sandbox::builder().build().await?;
    let started = Instant::now();
    let made = source.save_snapshot(&store, &name, &[]).await?;
    let save = started.elapsed();
    let _cleanup = Named(&store, name.clone());
    let config = SandboxConfig::default().snapshot(&name);

    let (mut restore, mut first_exec, mut later_execs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let sandbox = config.build().await?;
        let exec_started = Instant::now();
        check(sandbox.exec("true").await?)?;
        restore.push(started.elapsed());
        first_exec.push(exec_started.elapsed());
        for _ in 0..EXECS_AFTER_RESTORE {
            let started = Instant::now();
            check(sandbox.exec("true").await?)?;
            later_execs.push(started.elapsed());
        }
        sandbox.shutdown().await?;
    }

    let parent = config.build().await?;
    let mut fork = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let copy = parent
            .fork(1, &SandboxConfig::default())
            .await?
            .pop()
            .expect("one copy");
        check(copy.exec("true").await?)?;
        fork.push(started.elapsed());
        copy.shutdown().await?;
    }
    parent.shutdown().await?;

    // A pool of one restored sandbox, refilled between the runs.
    let pool = SandboxPool::new(1);
    pool.warm(&config);
    let mut acquire = Vec::new();
    for _ in 0..runs {
        let ready = Instant::now();
        while pool.status(&config).ready == 0 {
            if ready.elapsed() > Duration::from_secs(60) {
                bail!("the pool did not refill: {:?}", pool.status(&config));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let sandbox = pool.acquire(&config).await?;
        check(sandbox.exec("true").await?)?;
        acquire.push(started.elapsed());
        sandbox.shutdown().await?;
    }
    drop(pool);

    let (mut pause, mut resume) = (Vec::new(), Vec::new());
    let mut sandbox = config.build().await?;
    for _ in 0..runs {
        let started = Instant::now();
        let id = sandbox.pause().await?;
        pause.push(started.elapsed());
        let started = Instant::now();
        sandbox = Sandbox::resume(&id, &SandboxConfig::default()).await?;
        check(sandbox.exec("true").await?)?;
        resume.push(started.elapsed());
    }
    sandbox.shutdown().await?;
    Ok(Warm {
        save,
        devices_bytes: made.snapshot.devices_bytes,
        disk_bytes: made.disk_bytes,
        restore,
        first_exec,
        later_execs,
        fork,
        acquire,
        pause,
        resume,
    })
}

fn check(out: void_box::Output) -> Result<()> {
    if !out.status.success() {
        bail!("`true` failed in the guest: {:?}", out.status);
    }
    Ok(())
}
