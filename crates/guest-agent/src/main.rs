//! The void-box guest agent.
//!
//! Runs as PID 1 in every sandbox VM: prepares the guest (mounts, hostname,
//! configuration), reaps every process, and serves the host's requests over
//! its virtio-serial port after an authenticated handshake. It must never exit: PID 1
//! exiting panics the guest kernel, so fatal errors reboot the VM instead
//! (QEMU runs with `-no-reboot`, so a reboot ends it).

mod cgroup;
mod channel;
mod context;
mod exec;
mod files;
mod init;
mod pty;
mod reaper;
mod reply;
mod rootfs;
mod seccomp;
mod server;
mod spawn;
mod telemetry;

use std::sync::Arc;

fn main() {
    let is_init = rustix::process::getpid().is_init();
    let config = match init::prepare_guest(is_init) {
        Ok(config) => config,
        Err(e) => init::fatal(&format!("guest preparation failed: {e}")),
    };
    let root = match rootfs::prepare(&config) {
        Ok(root) => root,
        Err(e) => init::fatal(&format!("preparing the command root failed: {e}")),
    };
    // The host's name for the port arrives shortly after the device.
    let channel = match channel::Channel::open(std::time::Duration::from_secs(10)) {
        Ok(channel) => channel,
        Err(e) => init::fatal(&format!("cannot open the host's port: {e}")),
    };
    // At least two workers: with one vCPU, one blocked worker would leave
    // no one to answer heartbeats.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => init::fatal(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        let reaper = reaper::Reaper::start()?;
        let ctx = Arc::new(context::AgentContext::new(config, root, reaper, is_init)?);
        // Booted: from here on the agent and all it starts run filtered.
        seccomp::CommandFilter::new()?.install()?;
        server::serve(ctx, channel).await
    });
    match result {
        Ok(()) => init::power_off(),
        Err(e) => init::fatal(&format!("agent stopped: {e}")),
    }
}
