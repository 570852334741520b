//! The live sandboxes: each with its deadline (a sandbox past it is
//! ended), its metadata, and its running processes, whose stdin and kill
//! other requests reach by pid.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use void_box::sandbox::SandboxProvider;
use void_box::{Sandbox, SandboxConfig};

use crate::metrics::Metrics;
use crate::processes::Processes;
use crate::store::Store;

/// A sandbox the daemon holds.
pub(crate) struct Live {
    pub sandbox: Sandbox,
    pub created_unix_ms: u64,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub image: Option<String>,
    pub snapshot: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// How the E2B API knows it: its template and envd access token.
    pub e2b: Option<E2bIdentity>,
    /// When it ends, and that time for people.
    deadline: Mutex<Option<(Instant, u64)>>,
    /// Its running processes.
    pub processes: Arc<Processes>,
}

/// A sandbox created through the E2B API.
#[derive(Debug)]
pub(crate) struct E2bIdentity {
    /// The template asked for.
    pub template: String,
    /// The token its envd calls carry (`X-Access-Token`).
    pub access_token: String,
    /// The variables every command gets (`envVars` at create), under the
    /// command's own: kept out of the sandbox's configuration, so that
    /// sandboxes from a pool serve any create.
    pub envs: BTreeMap<String, String>,
    /// Its polled directory watchers.
    pub watchers: crate::e2b::Watchers,
}

impl Live {
    /// When it ends (ms since the epoch), if it has a deadline.
    pub fn expires_unix_ms(&self) -> Option<u64> {
        lock(&self.deadline).map(|(_, ms)| ms)
    }

    /// Ends it `after` from now (`None`: never).
    pub fn set_timeout(&self, after: Option<Duration>) {
        *lock(&self.deadline) =
            after.map(|d| (Instant::now() + d, unix_ms() + d.as_millis() as u64));
    }

    fn expired(&self, now: Instant) -> bool {
        lock(&self.deadline).is_some_and(|(at, _)| at <= now)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a sandbox could not be created.
pub(crate) enum CreateError {
    /// As many as allowed are alive.
    Full(usize),
    /// The configuration is refused.
    Config(String),
    /// The boot failed.
    Boot(void_box::Error),
}

/// Every sandbox the daemon holds.
pub(crate) struct Registry {
    provider: Arc<dyn SandboxProvider>,
    sandboxes: Mutex<HashMap<String, Arc<Live>>>,
    /// Creates under way, counted against the limit.
    booting: Mutex<usize>,
    max: usize,
    pub metrics: Arc<Metrics>,
    store: Arc<Store>,
}

impl Registry {
    pub fn new(
        provider: Arc<dyn SandboxProvider>,
        max: usize,
        metrics: Arc<Metrics>,
        store: Arc<Store>,
    ) -> Registry {
        Registry {
            provider,
            sandboxes: Mutex::new(HashMap::new()),
            booting: Mutex::new(0),
            max,
            metrics,
            store,
        }
    }

    /// Boots a sandbox of `config` and holds it.
    pub async fn create(
        &self,
        config: SandboxConfig,
        timeout: Option<Duration>,
        metadata: BTreeMap<String, String>,
        e2b: Option<E2bIdentity>,
        from: Option<&dyn SandboxProvider>,
    ) -> Result<Arc<Live>, CreateError> {
        config
            .validate()
            .map_err(|e| CreateError::Config(e.to_string()))?;
        {
            let mut booting = lock(&self.booting);
            if lock(&self.sandboxes).len() + *booting >= self.max {
                return Err(CreateError::Full(self.max));
            }
            *booting += 1;
        }
        let booted = from.unwrap_or(&*self.provider).boot(&config).await;
        *lock(&self.booting) -= 1;
        let sandbox = booted.map_err(|e| {
            self.metrics.create_failed();
            match e {
                void_box::Error::Config(c) => CreateError::Config(c.to_string()),
                void_box::Error::Snapshot(s) => CreateError::Config(s.to_string()),
                other => CreateError::Boot(other),
            }
        })?;
        self.metrics.created(sandbox.boot_time().as_millis() as u64);
        let live = Arc::new(Live {
            created_unix_ms: unix_ms(),
            memory_mb: config.memory_mb,
            vcpus: config.vcpus,
            image: config.image.clone(),
            snapshot: config.snapshot.clone(),
            metadata,
            e2b,
            deadline: Mutex::new(None),
            processes: Arc::default(),
            sandbox,
        });
        live.set_timeout(timeout);
        let record = serde_json::json!({
            "memory_mb": live.memory_mb,
            "vcpus": live.vcpus,
            "image": live.image,
            "snapshot": live.snapshot,
            "metadata": live.metadata,
            "e2b_template": live.e2b.as_ref().map(|e| &e.template),
        });
        if let Err(e) = self
            .store
            .insert_sandbox(&live.sandbox.id(), live.created_unix_ms, &record)
        {
            tracing::error!("recording a sandbox: {e}");
        }
        lock(&self.sandboxes).insert(live.sandbox.id(), live.clone());
        Ok(live)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        lock(&self.sandboxes).get(id).cloned()
    }

    /// Every sandbox, by id.
    pub fn list(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<Arc<Live>> = lock(&self.sandboxes).values().cloned().collect();
        all.sort_by_key(|l| l.sandbox.id());
        all
    }

    pub fn len(&self) -> usize {
        lock(&self.sandboxes).len()
    }

    /// Ends the sandbox `id` now, for `reason`; whether it was held.
    pub fn end(&self, id: &str, reason: &str) -> bool {
        let Some(live) = lock(&self.sandboxes).remove(id) else {
            return false;
        };
        live.sandbox.kill();
        if let Err(e) = self.store.end_sandbox(id, unix_ms(), reason) {
            tracing::error!("recording a sandbox's end: {e}");
        }
        true
    }

    /// Ends every sandbox (the daemon stops).
    pub fn end_all(&self) {
        let ids: Vec<String> = lock(&self.sandboxes).keys().cloned().collect();
        for id in ids {
            self.end(&id, "the daemon stopped");
        }
    }

    /// Ends sandboxes past their deadline, forever (twice a second).
    pub async fn reap_expired(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = Instant::now();
            let ended: Vec<(String, &str)> = lock(&self.sandboxes)
                .iter()
                .filter_map(|(id, l)| {
                    if l.expired(now) {
                        Some((id.clone(), "its timeout passed"))
                    } else if !l.sandbox.is_alive() {
                        Some((id.clone(), "its VM stopped"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, reason) in ended {
                if self.end(&id, reason) && reason == "its timeout passed" {
                    self.metrics.expired();
                }
            }
        }
    }
}
