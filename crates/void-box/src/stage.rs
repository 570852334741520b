//! One stage's sandbox lifecycle, shared by every runner (agent boxes,
//! workflow steps, spec commands): boot a fresh sandbox through the
//! provider, announce it, do the stage's work in it, shut it down.

use crate::event::{EventSink, RunEvent};
use crate::sandbox::{SandboxConfig, SandboxProvider};
use crate::Sandbox;

/// Boots a sandbox for stage `name`, emits [`RunEvent::SandboxReady`],
/// runs `work` in it and shuts it down. The work's result stands even if
/// the VM does not stop cleanly (dropping it kills it); dropping this
/// future kills the VM too. Fails only when the sandbox does not boot.
pub(crate) async fn in_fresh_sandbox<T>(
    provider: &dyn SandboxProvider,
    config: &SandboxConfig,
    name: &str,
    events: &EventSink,
    work: impl AsyncFnOnce(&Sandbox) -> T,
) -> crate::Result<T> {
    let sandbox = provider.boot(config).await?;
    events.emit(RunEvent::SandboxReady {
        box_name: name.to_string(),
        boot: sandbox.boot_time(),
        accel: Some(sandbox.accel()),
    });
    let outcome = forward_network(&sandbox, name, events, work(&sandbox)).await;
    if let Err(e) = sandbox.shutdown().await {
        tracing::debug!(stage = name, "sandbox shutdown: {e}");
    }
    Ok(outcome)
}

/// Runs `work`, passing the sandbox's network audit trail on as
/// [`RunEvent::Network`] meanwhile (and what is left of it after).
async fn forward_network<T>(
    sandbox: &Sandbox,
    name: &str,
    events: &EventSink,
    work: impl std::future::Future<Output = T>,
) -> T {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let Some(mut trail) = sandbox.network_events() else {
        return work.await;
    };
    let emit = |connection| {
        events.emit(RunEvent::Network {
            box_name: name.to_string(),
            connection,
        })
    };
    for port in sandbox.published_ports() {
        emit(crate::net::NetworkEvent::published(port));
    }
    tokio::pin!(work);
    let mut open = true;
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            next = trail.recv(), if open => match next {
                Ok(event) => emit(event),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(stage = name, "{n} network events were dropped (too many too fast)");
                }
                Err(RecvError::Closed) => open = false,
            },
        }
    };
    loop {
        match trail.try_recv() {
            Ok(event) => emit(event),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    outcome
}
