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
    let mut trail = sandbox.network_events();
    let outcome = forward_network(&sandbox, trail.as_mut(), name, events, work(&sandbox)).await;
    if let Err(e) = sandbox.shutdown().await {
        tracing::debug!(stage = name, "sandbox shutdown: {e}");
    }
    // What the network recorded up to its end, connections still open
    // when the sandbox stopped included.
    if let Some(trail) = trail.as_mut() {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            match trail.try_recv() {
                Ok(connection) => emit_network(events, name, connection),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    }
    Ok(outcome)
}

fn emit_network(events: &EventSink, name: &str, connection: crate::net::NetworkEvent) {
    events.emit(RunEvent::Network {
        box_name: name.to_string(),
        connection,
    })
}

/// Runs `work`, passing the sandbox's network audit trail on as
/// [`RunEvent::Network`] meanwhile.
async fn forward_network<T>(
    sandbox: &Sandbox,
    trail: Option<&mut tokio::sync::broadcast::Receiver<crate::net::NetworkEvent>>,
    name: &str,
    events: &EventSink,
    work: impl std::future::Future<Output = T>,
) -> T {
    use tokio::sync::broadcast::error::RecvError;
    let Some(trail) = trail else {
        return work.await;
    };
    for port in sandbox.published_ports() {
        emit_network(events, name, crate::net::NetworkEvent::published(port));
    }
    tokio::pin!(work);
    let mut open = true;
    loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            next = trail.recv(), if open => match next {
                Ok(event) => emit_network(events, name, event),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(stage = name, "{n} network events were dropped (too many too fast)");
                }
                Err(RecvError::Closed) => open = false,
            },
        }
    }
}
