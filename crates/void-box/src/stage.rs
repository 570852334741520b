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
    let outcome = work(&sandbox).await;
    if let Err(e) = sandbox.shutdown().await {
        tracing::debug!(stage = name, "sandbox shutdown: {e}");
    }
    Ok(outcome)
}
