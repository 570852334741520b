//! The signals that ask `voidbox` to stop: SIGINT (Ctrl-C), SIGTERM (a
//! service manager, `kill`) and SIGHUP (a closed terminal). Each is handled
//! the same way: the work is cancelled, every VM is killed and its files
//! removed, and the exit code is 128 + the signal's number.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens for the stop signals from the moment it is made.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    /// Starts listening (the default action, dying on the spot, is off).
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at the next stop signal with the exit code it calls for.
    pub async fn next(&mut self) -> u8 {
        let number = tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        };
        128 + number as u8
    }
}
