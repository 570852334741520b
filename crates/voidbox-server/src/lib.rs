//! `voidbox serve`: one daemon that owns sandboxes and serves them over
//! HTTP.
//!
//! - [`listen`]: where it listens: a Unix socket only its user may open
//!   (the default), or TCP with a bearer token;
//! - `auth`: the token, compared in constant time;
//! - `access`: one JSON line per request on stderr;
//! - `registry`: the live sandboxes, their deadlines and running processes;
//! - [`lanes`]: the four queues every request and run waits in;
//! - `sessions`: agent sessions, their turns and confirmations;
//! - `runs`: specs run as `voidbox run` runs them, their events kept;
//! - `store`: what outlives the daemon (runs, their events, sandboxes),
//!   one SQLite file in its state directory;
//! - [`e2b`]: E2B's control plane and envd's API, for the E2B SDKs;
//! - `api/`: the routes (health and metrics, sandboxes, processes, files);
//! - [`openapi`]: the document served at `/openapi.json`, kept in
//!   `docs/openapi.json`.
//!
//! Every sandbox is a real micro-VM (or whatever [`SandboxProvider`] the
//! daemon is given); stopping the daemon ends every one of them.

mod access;
mod api;
mod auth;
pub mod e2b;
pub mod lanes;
pub mod listen;
mod metrics;
pub mod openapi;
mod processes;
mod registry;
mod runs;
mod sessions;
mod spec_text;
mod store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use void_box::sandbox::{SandboxProvider, VmProvider};

pub use lanes::{Lane, LaneLimit, LaneLimits};
pub use listen::Listen;

/// How the daemon runs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Where it listens.
    pub listen: Listen,
    /// The bearer token every request must carry; required on TCP.
    pub token: Option<String>,
    /// Most sandboxes alive at once; a create beyond it is refused (429).
    pub max_sandboxes: usize,
    /// What boots sandboxes.
    pub provider: Arc<dyn SandboxProvider>,
    /// Where `voidbox.db` is kept; `None`: in memory, gone with the daemon.
    pub state_dir: Option<PathBuf>,
    /// Each lane's concurrency and queue bound.
    pub lanes: LaneLimits,
    /// The E2B API's templates and sandbox size.
    pub e2b: e2b::E2bConfig,
}

impl ServeConfig {
    /// Real micro-VMs, at most 16 at once, on `listen`.
    pub fn new(listen: Listen, token: Option<String>) -> ServeConfig {
        ServeConfig {
            listen,
            token,
            max_sandboxes: 16,
            provider: Arc::new(VmProvider),
            state_dir: None,
            lanes: LaneLimits::default(),
            e2b: e2b::E2bConfig::default(),
        }
    }
}

/// Why the daemon cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A daemon bound to its address, not yet serving.
pub struct Bound {
    listener: listen::Listener,
    state: api::AppState,
}

impl Bound {
    /// Binds `config.listen`.
    pub async fn bind(config: ServeConfig) -> Result<Bound, ServeError> {
        if matches!(config.listen, Listen::Tcp(_)) && config.token.is_none() {
            return Err(ServeError::Config(
                "a TCP listener needs a token (--token-file)".into(),
            ));
        }
        if config.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ServeError::Config(
                "the token must have at least 16 characters".into(),
            ));
        }
        let now = registry::unix_ms();
        let store = match &config.state_dir {
            Some(dir) => {
                private_db_file(dir).map_err(|source| ServeError::Io {
                    context: format!("prepare {}", dir.join("voidbox.db").display()),
                    source,
                })?;
                store::Store::open(&dir.join("voidbox.db"), now)
            }
            None => store::Store::in_memory(now),
        }
        .map_err(|e| ServeError::Config(e.to_string()))?;
        let listener = listen::Listener::bind(&config.listen).await?;
        let state = api::AppState::new(&config, Arc::new(store));
        Ok(Bound { listener, state })
    }

    /// Where it listens (`tcp:127.0.0.1:PORT` with the port it got, or
    /// `unix:PATH`).
    pub fn address(&self) -> String {
        self.listener.address()
    }

    /// Serves until `shutdown` resolves, then ends every sandbox.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let registry = self.state.registry.clone();
        let runs = self.state.runs.clone();
        let sessions = self.state.sessions.clone();
        let reaper = tokio::spawn(registry.clone().reap_expired());
        let router = api::router(self.state);
        let served = self.listener.serve(router, shutdown).await;
        reaper.abort();
        runs.cancel_all();
        sessions.end_all().await;
        registry.end_all();
        served
    }
}

/// The state directory (made 0700 when new) and `voidbox.db` (0600, tightened when
/// it was looser): runs' events hold prompts and output. SQLite gives its WAL and
/// shared-memory files the database file's mode.
fn private_db_file(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let db = dir.join("voidbox.db");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&db)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
