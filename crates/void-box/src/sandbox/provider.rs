//! The seam between orchestration and VMs: workflows boot sandboxes through
//! a [`SandboxProvider`] and drive them as [`GuestSession`]s. The product
//! uses [`VmProvider`] (real micro-VMs); tests and benchmarks of the
//! scheduler may plug in a double.

use futures::future::BoxFuture;

use super::{Exec, Output, OutputSink, Sandbox, SandboxBuilder};
use crate::Result;

/// The part of a sandbox that workflow steps use.
pub trait GuestSession: Send + Sync {
    /// Runs a command to completion.
    fn exec(&self, cmd: Exec) -> BoxFuture<'_, Result<Output>>;
    /// Runs a command to completion, passing output to `on_output` as it
    /// arrives. A double may pass it all at the end (the default).
    fn exec_streaming<'a>(
        &'a self,
        cmd: Exec,
        on_output: OutputSink<'a>,
    ) -> BoxFuture<'a, Result<Output>> {
        Box::pin(async move {
            let out = self.exec(cmd).await?;
            for (is_stderr, data) in [(false, &out.stdout), (true, &out.stderr)] {
                if !data.is_empty() {
                    on_output(is_stderr, data);
                }
            }
            Ok(out)
        })
    }
    /// Writes a whole file.
    fn write_file<'a>(&'a self, path: &'a str, data: &'a [u8]) -> BoxFuture<'a, Result<()>>;
    /// Reads a whole file.
    fn read_file<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>>>;
    /// Creates a directory and its parents.
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Stops the sandbox.
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

/// Boots sandboxes.
pub trait SandboxProvider: Send + Sync {
    /// Boots one sandbox configured by `builder`.
    fn boot<'a>(
        &'a self,
        builder: &'a SandboxBuilder,
    ) -> BoxFuture<'a, Result<Box<dyn GuestSession>>>;
}

/// Boots real micro-VMs.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmProvider;

impl SandboxProvider for VmProvider {
    fn boot<'a>(
        &'a self,
        builder: &'a SandboxBuilder,
    ) -> BoxFuture<'a, Result<Box<dyn GuestSession>>> {
        Box::pin(async move {
            let sandbox = builder.clone().build().await?;
            Ok(Box::new(sandbox) as Box<dyn GuestSession>)
        })
    }
}

impl GuestSession for Sandbox {
    fn exec(&self, cmd: Exec) -> BoxFuture<'_, Result<Output>> {
        Box::pin(Sandbox::exec(self, cmd))
    }

    fn exec_streaming<'a>(
        &'a self,
        cmd: Exec,
        on_output: OutputSink<'a>,
    ) -> BoxFuture<'a, Result<Output>> {
        Box::pin(Sandbox::exec_with_output(self, cmd, on_output))
    }

    fn write_file<'a>(&'a self, path: &'a str, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(Sandbox::write_file(self, path, data))
    }

    fn read_file<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(Sandbox::read_file(self, path))
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Sandbox::mkdir(self, path))
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(Sandbox::shutdown(*self))
    }
}
