//! A warm pool: sandboxes booted (or restored from a snapshot) ahead of
//! time, each primed with one command, and kept ready per configuration,
//! refilled in the background. Each is handed out once and never taken
//! back, so every stage still gets a fresh VM; the pool only moves the
//! boot off the critical path.
//!
//! The pool is a [`SandboxProvider`]: pipelines, workflows and agents run
//! on it with `run_on(&pool, ...)`, and a configuration it has not seen
//! boots at once and starts its own supply.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};

use super::{Sandbox, SandboxConfig, SandboxProvider, VmProvider};
use crate::error::Result;

/// Configurations the pool keeps sandboxes for at most; beyond it the one
/// used longest ago is dropped with its sandboxes.
pub const MAX_CONFIGS: usize = 8;
/// Sandboxes booting in the background at once, whatever the
/// configuration (each takes a core under TCG).
const FILLING_AT_ONCE: usize = 2;

/// Ready sandboxes per configuration, refilled in the background.
#[derive(Clone)]
pub struct SandboxPool {
    shared: Arc<Shared>,
}

struct Shared {
    /// Ready sandboxes kept per configuration.
    size: usize,
    provider: Arc<dyn SandboxProvider>,
    supplies: Mutex<Vec<Supply>>,
    filling: Arc<Semaphore>,
    /// A background boot ended.
    changed: Notify,
}

/// What the pool keeps for one configuration.
struct Supply {
    config: SandboxConfig,
    ready: VecDeque<Sandbox>,
    booting: usize,
    used: Instant,
    /// The last background boot failed: the supply waits for the next
    /// acquire instead of booting in a loop.
    failed: Option<String>,
}

/// What the pool holds now, for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Sandboxes ready to hand out.
    pub ready: usize,
    /// Sandboxes booting for it.
    pub booting: usize,
    /// Why the last background boot failed, if it did.
    pub failed: Option<String>,
}

impl SandboxPool {
    /// A pool keeping `size` real micro-VMs ready per configuration.
    pub fn new(size: usize) -> SandboxPool {
        SandboxPool::with_provider(Arc::new(VmProvider), size)
    }

    /// A pool over `provider` (a test's guest doubles, say).
    pub fn with_provider(provider: Arc<dyn SandboxProvider>, size: usize) -> SandboxPool {
        SandboxPool {
            shared: Arc::new(Shared {
                size,
                provider,
                supplies: Mutex::new(Vec::new()),
                filling: Arc::new(Semaphore::new(FILLING_AT_ONCE)),
                changed: Notify::new(),
            }),
        }
    }

    /// Starts keeping `config`'s sandboxes ready, before anything asks.
    pub fn warm(&self, config: &SandboxConfig) {
        let mut supplies = self.shared.lock();
        let at = supply_of(&mut supplies, config);
        supplies[at].failed = None;
        self.shared.refill(&mut supplies, at);
    }

    /// A sandbox of `config`: a ready one, handed out once; else the next
    /// of its supply's boots to finish; else one booted now. The supply is
    /// refilled either way.
    pub async fn acquire(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let mut refilled = false;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            {
                let mut supplies = self.shared.lock();
                let at = supply_of(&mut supplies, config);
                let supply = &mut supplies[at];
                supply.used = Instant::now();
                if !refilled {
                    supply.failed = None;
                }
                // A VM that died while it waited is dropped, not handed out.
                let ready = loop {
                    match supply.ready.pop_front() {
                        Some(sandbox) if sandbox.is_alive() => break Some(sandbox),
                        Some(_) => continue,
                        None => break None,
                    }
                };
                let booting = supply.booting > 0;
                if !refilled || ready.is_some() {
                    self.shared.refill(&mut supplies, at);
                    refilled = true;
                }
                if let Some(sandbox) = ready {
                    return Ok(sandbox);
                }
                if !booting && supplies[at].booting == 0 {
                    break;
                }
                changed.as_mut().enable();
            }
            // A boot of the supply is under way: take it when it is done.
            changed.await;
        }
        self.shared.provider.boot(config).await
    }

    /// What the pool holds for `config`.
    pub fn status(&self, config: &SandboxConfig) -> PoolStatus {
        let supplies = self.shared.lock();
        match supplies.iter().find(|s| &s.config == config) {
            Some(s) => PoolStatus {
                ready: s.ready.len(),
                booting: s.booting,
                failed: s.failed.clone(),
            },
            None => PoolStatus {
                ready: 0,
                booting: 0,
                failed: None,
            },
        }
    }
}

impl SandboxProvider for SandboxPool {
    fn boot<'a>(&'a self, config: &'a SandboxConfig) -> BoxFuture<'a, Result<Sandbox>> {
        Box::pin(self.acquire(config))
    }
}

/// The index of `config`'s supply, made (and the oldest dropped past
/// [`MAX_CONFIGS`]) when there is none.
fn supply_of(supplies: &mut Vec<Supply>, config: &SandboxConfig) -> usize {
    if let Some(at) = supplies.iter().position(|s| &s.config == config) {
        return at;
    }
    if supplies.len() >= MAX_CONFIGS {
        let oldest = (0..supplies.len())
            .min_by_key(|&i| supplies[i].used)
            .expect("a full pool has supplies");
        // Its sandboxes end as they drop.
        supplies.remove(oldest);
    }
    supplies.push(Supply {
        config: config.clone(),
        ready: VecDeque::new(),
        booting: 0,
        used: Instant::now(),
        failed: None,
    });
    supplies.len() - 1
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Supply>> {
        self.supplies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the boots that bring supply `at` back to the pool's size.
    fn refill(self: &Arc<Self>, supplies: &mut [Supply], at: usize) {
        let supply = &mut supplies[at];
        if supply.failed.is_some() {
            return;
        }
        while supply.ready.len() + supply.booting < self.size {
            supply.booting += 1;
            let config = supply.config.clone();
            // The task holds the pool weakly: a dropped pool stops filling.
            let pool = Arc::downgrade(self);
            let filling = self.filling.clone();
            let provider = self.provider.clone();
            tokio::spawn(async move {
                let Ok(_turn) = filling.acquire_owned().await else {
                    return;
                };
                if pool.strong_count() == 0 {
                    return;
                }
                let booted = match provider.boot(&config).await {
                    Ok(sandbox) => prime(sandbox).await,
                    Err(e) => Err(e),
                };
                let Some(pool) = pool.upgrade() else { return };
                let mut supplies = pool.lock();
                // Gone meanwhile (pushed out by newer configurations): the
                // sandbox drops with `booted`.
                let Some(supply) = supplies.iter_mut().find(|s| s.config == config) else {
                    return;
                };
                supply.booting -= 1;
                match booted {
                    Ok(sandbox) => supply.ready.push_back(sandbox),
                    Err(e) => supply.failed = Some(e.to_string()),
                }
                drop(supplies);
                pool.changed.notify_waiters();
            });
        }
    }
}

/// Runs one command in a new sandbox before it waits in the pool: under
/// TCG the first command after a boot or restore costs tens of
/// milliseconds of code translation, which a ready sandbox has paid. A
/// configuration that does not allow `true` primes all the same (the
/// refusal runs most of the way).
async fn prime(sandbox: Sandbox) -> Result<Sandbox> {
    match sandbox.exec("true").await {
        Ok(_) => Ok(sandbox),
        Err(e) if e.guest_kind() == Some(crate::ErrorKind::NotAllowed) => Ok(sandbox),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::FakeProvider;
    use std::collections::HashSet;
    use std::time::Duration;

    async fn until(pool: &SandboxPool, config: &SandboxConfig, ready: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.status(config).ready < ready {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the pool refills");
    }

    #[tokio::test]
    async fn a_sandbox_is_handed_out_once_and_the_pool_refills() {
        let provider = Arc::new(FakeProvider::default());
        let pool = SandboxPool::with_provider(provider.clone(), 2);
        let config = SandboxConfig::default();
        pool.warm(&config);
        until(&pool, &config, 2).await;
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        for _ in 0..6 {
            let sandbox = pool.acquire(&config).await.unwrap();
            assert!(
                seen.insert(sandbox.id()),
                "{} handed out twice",
                sandbox.id()
            );
            held.push(sandbox);
        }
        until(&pool, &config, 2).await;
        assert_eq!(pool.status(&config).ready, 2);
        // Every VM the provider booted is either held or waiting: none was
        // handed out twice, none lost.
        assert_eq!(provider.guests().len(), held.len() + 2);
    }

    #[tokio::test]
    async fn an_acquire_while_the_supply_boots_takes_that_boot() {
        let provider = Arc::new(FakeProvider::default());
        let pool = SandboxPool::with_provider(provider.clone(), 1);
        let config = SandboxConfig::default();
        pool.warm(&config);
        let first = pool.acquire(&config).await.unwrap();
        assert!(first.is_alive());
        until(&pool, &config, 1).await;
        // One taken, one ready: no boot beyond the pool's.
        assert_eq!(provider.guests().len(), 2);
    }

    #[tokio::test]
    async fn configurations_have_their_own_supplies_and_the_oldest_goes() {
        let pool = SandboxPool::with_provider(Arc::new(FakeProvider::default()), 1);
        let configs: Vec<SandboxConfig> = (0..=MAX_CONFIGS)
            .map(|i| SandboxConfig::default().env("N", i.to_string()))
            .collect();
        for config in &configs {
            pool.warm(config);
            until(&pool, config, 1).await;
        }
        let newest = pool.acquire(&configs[MAX_CONFIGS]).await.unwrap();
        assert!(newest.is_alive());
        assert_eq!(pool.shared.lock().len(), MAX_CONFIGS);
        assert_eq!(pool.status(&configs[0]).ready, 0, "the oldest was dropped");
        assert_eq!(pool.status(&configs[1]).ready, 1);
    }

    #[tokio::test]
    async fn a_failing_configuration_is_not_booted_in_a_loop() {
        let pool = SandboxPool::with_provider(Arc::new(FakeProvider::default()), 2);
        let bad = SandboxConfig::default().memory_mb(1);
        pool.warm(&bad);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = pool.status(&bad);
        assert_eq!((status.ready, status.booting), (0, 0));
        assert!(status.failed.unwrap().contains("memory_mb"));
        assert!(pool.acquire(&bad).await.is_err());
    }
}
