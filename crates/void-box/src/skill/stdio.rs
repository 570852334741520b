//! A guest command's stdin and stdout as tokio byte streams, for protocols
//! spoken over a process's stdio (MCP).
//!
//! Two pump tasks move bytes between the command's [`ExecStream`] and two
//! in-memory pipes (each a `tokio::io::duplex` used one way): stdout chunks
//! are written into one pipe, whose other end is the `AsyncRead`; whatever
//! is written into the second pipe (the `AsyncWrite`) is forwarded with
//! [`StdinWriter`]. Dropping either end of a pipe is end-of-file for its
//! peer (split simplex halves would need an explicit shutdown, which the
//! SDK does not do when it drops its writer). The pipes are small,
//! so a reader that stops reading stops the pump, and the guest's flow
//! control then holds the command: nothing buffers without bound. Stderr,
//! and what the command printed on stdout, are kept as bounded tails for
//! error messages.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::sandbox::{ExecEvent, ExecStream, StdinWriter};
use crate::tail::Tail;

/// Bytes each pipe holds before its writer waits.
const PIPE_CAPACITY: usize = 64 * 1024;
/// Stderr kept for error messages.
const STDERR_TAIL: usize = 4096;
/// Stdout kept, to show what a server printed instead of the protocol.
const STDOUT_TAIL: usize = 1024;

/// The command's stdout, to read.
pub(crate) type GuestStdout = DuplexStream;
/// The command's stdin, to write.
pub(crate) type GuestStdin = DuplexStream;

struct State {
    stdout: Tail,
    stderr: Tail,
    /// How the command ended, once it has.
    end: Option<String>,
}

/// A running guest command whose stdio is exposed as byte streams.
///
/// Dropping it kills the command and stops the pumps.
pub(crate) struct GuestStdio {
    state: Arc<Mutex<State>>,
    ended: watch::Receiver<bool>,
    stdin: StdinWriter,
    tasks: [JoinHandle<()>; 2],
}

impl GuestStdio {
    /// Starts the pumps of a command started with
    /// [`Exec::stdin_stream`](crate::Exec::stdin_stream).
    pub(crate) fn start(stream: ExecStream) -> (GuestStdio, GuestStdout, GuestStdin) {
        let state = Arc::new(Mutex::new(State {
            stdout: Tail::new(STDOUT_TAIL),
            stderr: Tail::new(STDERR_TAIL),
            end: None,
        }));
        let (ended_tx, ended) = watch::channel(false);
        let stdin = stream.stdin();
        let (stdout_read, stdout_write) = tokio::io::duplex(PIPE_CAPACITY);
        let (stdin_read, stdin_write) = tokio::io::duplex(PIPE_CAPACITY);
        let output = tokio::spawn(pump_output(stream, stdout_write, state.clone(), ended_tx));
        let input = tokio::spawn(pump_input(stdin_read, stdin.clone()));
        let stdio = GuestStdio {
            state,
            ended,
            stdin,
            tasks: [output, input],
        };
        (stdio, stdout_read, stdin_write)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The last bytes the command wrote to stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        self.state().stderr.text()
    }

    /// The last bytes the command wrote to stdout.
    pub(crate) fn stdout_tail(&self) -> String {
        self.state().stdout.text()
    }

    /// How the command ended ("exited with code 3"), once it has.
    pub(crate) fn end(&self) -> Option<String> {
        self.state().end.clone()
    }

    /// Kills the command's process group.
    pub(crate) fn cancel(&self) {
        // Fails only when the connection is gone, and the command with it.
        let _ = self.stdin.cancel_command();
    }

    /// Waits up to `limit` for the command's end; true if it ended.
    pub(crate) async fn wait_end(&self, limit: Duration) -> bool {
        let mut ended = self.ended.clone();
        // An error means the pump is gone, so nothing more will come either.
        let waited = tokio::time::timeout(limit, ended.wait_for(|e| *e)).await;
        waited.is_ok()
    }
}

impl Drop for GuestStdio {
    fn drop(&mut self) {
        if !*self.ended.borrow() {
            self.cancel();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stdout into the pipe, stderr into the tail, until the command ends.
async fn pump_output(
    mut stream: ExecStream,
    pipe: DuplexStream,
    state: Arc<Mutex<State>>,
    ended: watch::Sender<bool>,
) {
    let mut pipe = Some(pipe);
    let end = loop {
        match stream.next().await {
            Ok(Some(ExecEvent::Stdout(data))) => {
                lock(&state).stdout.push(&data);
                if let Some(writer) = pipe.as_mut() {
                    if writer.write_all(&data).await.is_err() {
                        // Nobody reads any more (the session is closing):
                        // keep draining, to see the end.
                        pipe = None;
                    }
                }
            }
            Ok(Some(ExecEvent::Stderr(data))) => lock(&state).stderr.push(&data),
            Ok(Some(ExecEvent::Exit(status))) => break status.to_string(),
            Ok(None) => break "ended".into(),
            Err(e) => break format!("was lost ({e})"),
        }
    };
    // The end is recorded before the reader sees end-of-file, so whoever
    // fails on that EOF can tell why.
    lock(&state).end = Some(end);
    drop(pipe);
    ended.send_replace(true);
}

/// The pipe into the command's stdin; end-of-file closes stdin.
async fn pump_input(mut pipe: DuplexStream, stdin: StdinWriter) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = stdin.close();
                return;
            }
            Ok(n) => {
                // Fails once the command is gone; the writer then sees a
                // broken pipe.
                if stdin.write(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
