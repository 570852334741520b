//! Running commands in a sandbox.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use void_box_protocol::flow::RecvWindow;
use void_box_protocol::{
    ExecRequest, ExitStatus, GuestMsg, HostMsg, PtySize, ResourceLimits, CHUNK_LEN,
};

use super::capture::{text_with_notice, Capture, Cut, DEFAULT_MAX_OUTPUT};
use super::client::{Stream, StreamSender};
use super::RequestDeadlines;
use crate::error::{Error, Result};

/// A command to run in the guest.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub(crate) request: ExecRequest,
    pub(crate) stdin: Option<Vec<u8>>,
    /// Cap of each collected stream (host side; `None`: the default).
    pub(crate) max_output: Option<usize>,
    /// Another user to run as (`root`, `UID[:GID]`, `NAME[:GROUP]`).
    pub(crate) user: Option<String>,
}

impl Exec {
    /// Runs `program` (looked up in the guest's `PATH`).
    pub fn new(program: impl Into<String>) -> Exec {
        Exec {
            request: ExecRequest {
                program: program.into(),
                ..Default::default()
            },
            stdin: None,
            max_output: None,
            user: None,
        }
    }

    /// Runs `script` with `sh -c`.
    pub fn shell(script: impl Into<String>) -> Exec {
        Exec::new("sh").arg("-c").arg(script)
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Exec {
        self.request.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for this command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Exec {
        self.request.env.push((key.into(), value.into()));
        self
    }

    /// Working directory (default `/workspace`).
    pub fn cwd(mut self, dir: impl Into<String>) -> Exec {
        self.request.cwd = Some(dir.into());
        self
    }

    /// Kills the command's process group after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Exec {
        self.request.timeout_ms = Some(timeout.as_millis() as u64);
        self
    }

    /// Feeds these bytes to stdin, then closes it ([`Sandbox::exec`](crate::Sandbox::exec) only).
    pub fn stdin_bytes(mut self, data: impl Into<Vec<u8>>) -> Exec {
        self.stdin = Some(data.into());
        self.request.stdin = true;
        self
    }

    /// Keeps stdin open for [`ExecStream::stdin`].
    pub fn stdin_stream(mut self) -> Exec {
        self.request.stdin = true;
        self
    }

    /// Runs on a pseudo-terminal of this size (stdout and stderr merge).
    pub fn pty(mut self, rows: u16, cols: u16) -> Exec {
        self.request.pty = Some(PtySize { rows, cols });
        self.request.stdin = true;
        self
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.request.program
    }

    /// Its arguments.
    pub fn arguments(&self) -> &[String] {
        &self.request.args
    }

    /// The bytes given with [`stdin_bytes`](Self::stdin_bytes).
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// Runs as `user` (`root`, `UID[:GID]` or `NAME[:GROUP]`, resolved
    /// against the sandbox root's `/etc/passwd` and `/etc/group`) instead
    /// of the sandbox's user, with that user's `HOME` and `USER`. The VM
    /// is the boundary: whoever may run commands in a sandbox may run
    /// them as any of its users.
    pub fn user(mut self, user: impl Into<String>) -> Exec {
        self.user = Some(user.into());
        self
    }

    /// Overrides resource limits for this command.
    pub fn limits(mut self, limits: ResourceLimits) -> Exec {
        self.request.limits = limits;
        self
    }

    /// When collected ([`Sandbox::exec`](crate::Sandbox::exec)), keeps at
    /// most `bytes` of each stream: its first and last halves, with the
    /// middle counted in [`Output::stdout_cut`] (default
    /// [`DEFAULT_MAX_OUTPUT`]). The command runs to its end either way.
    pub fn max_output(mut self, bytes: usize) -> Exec {
        self.max_output = Some(bytes);
        self
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for Exec {
    /// `["prog", "arg", ...]`.
    fn from(argv: [S; N]) -> Exec {
        let mut argv = argv.into_iter().map(Into::into);
        let program = argv.next().unwrap_or_default();
        Exec::new(program).args(argv)
    }
}

impl From<&str> for Exec {
    /// A program without arguments.
    fn from(program: &str) -> Exec {
        Exec::new(program)
    }
}

/// The collected result of a command.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to stdout (all of it, or its head and tail; see
    /// [`stdout_cut`](Self::stdout_cut)).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, likewise.
    pub stderr: Vec<u8>,
    /// Where stdout's middle was dropped, when it was longer than the cap.
    pub stdout_cut: Option<Cut>,
    /// Where stderr's middle was dropped.
    pub stderr_cut: Option<Cut>,
}

impl Output {
    /// Stdout as text (lossy), with a notice where its middle was dropped.
    pub fn stdout_text(&self) -> String {
        text_with_notice(&self.stdout, self.stdout_cut)
    }

    /// Stderr as text (lossy), likewise.
    pub fn stderr_text(&self) -> String {
        text_with_notice(&self.stderr, self.stderr_cut)
    }
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes from stdout (or the PTY).
    Stdout(Vec<u8>),
    /// Bytes from stderr.
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exit(ExitStatus),
}

/// Which stream a chunk of command output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output (or the PTY).
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives output chunks as they arrive.
pub type OutputSink<'a> = &'a (dyn Fn(OutputStream, &[u8]) + Send + Sync);

/// A running command whose output arrives as it is produced.
///
/// Output is flow-controlled: the guest sends more only as [`next`](Self::next)
/// consumes it, so a slow consumer slows the command instead of buffering.
pub struct ExecStream {
    stream: Stream,
    window: RecvWindow,
    pid: u32,
    finished: bool,
    /// When the exit must have arrived (a command with a timeout).
    end: Option<(Instant, Duration)>,
    /// The command, for errors.
    what: String,
}

impl ExecStream {
    /// Waits for the guest to start the command (`what`), at most
    /// `deadlines.exec_start`; `end` is when its exit must have arrived.
    pub(crate) async fn start(
        mut stream: Stream,
        deadlines: RequestDeadlines,
        end: Option<Instant>,
        what: String,
    ) -> Result<ExecStream> {
        let first = stream
            .recv_within(deadlines.exec_start, &format!("the start of {what}"))
            .await;
        match first? {
            GuestMsg::Started { pid } => Ok(ExecStream {
                stream,
                window: RecvWindow::new(),
                pid,
                finished: false,
                end: end.map(|end| (end, end.saturating_duration_since(Instant::now()))),
                what,
            }),
            GuestMsg::Error(e) => Err(Error::Guest {
                kind: e.kind,
                message: e.message,
            }),
            other => Err(Error::Disconnected(format!(
                "unexpected answer to exec: {other:?}"
            ))),
        }
    }

    /// Guest pid of the command (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle writing to the command's stdin (needs [`Exec::stdin_stream`] or [`Exec::pty`]).
    pub fn stdin(&self) -> StdinWriter {
        StdinWriter {
            sender: self.stream.sender(),
        }
    }

    /// Kills the command's process group.
    pub fn cancel(&self) -> Result<()> {
        self.stream.send(HostMsg::Cancel)
    }

    /// Resizes the command's PTY.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.stream.send(HostMsg::Resize(PtySize { rows, cols }))
    }

    /// The next event; `None` after [`ExecEvent::Exit`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.finished {
            return Ok(None);
        }
        let msg = match self.end {
            Some((end, limit)) => {
                let what = format!("the end of {}", self.what);
                let msg = self.stream.recv_until(end, limit, &what).await;
                if msg.is_err() {
                    // Whatever the guest still runs of it goes too.
                    let _ = self.stream.send(HostMsg::Cancel);
                    self.finished = true;
                }
                msg?
            }
            None => self.stream.recv().await?,
        };
        let event = match msg {
            GuestMsg::Stdout(data) => ExecEvent::Stdout(self.account(data)?),
            GuestMsg::Stderr(data) => ExecEvent::Stderr(self.account(data)?),
            GuestMsg::Exited(status) => {
                self.finished = true;
                ExecEvent::Exit(status)
            }
            GuestMsg::Error(e) => {
                self.finished = true;
                return Err(Error::Guest {
                    kind: e.kind,
                    message: e.message,
                });
            }
            other => {
                return Err(Error::Disconnected(format!(
                    "unexpected message during exec: {other:?}"
                )))
            }
        };
        Ok(Some(event))
    }

    /// Checks the chunk against the window and hands credit back, since the
    /// caller takes the chunk now.
    fn account(&mut self, data: Vec<u8>) -> Result<Vec<u8>> {
        self.window.on_data(data.len())?;
        if let Some(grant) = self.window.on_consumed(data.len()) {
            self.stream.send(HostMsg::Credit(grant))?;
        }
        Ok(data)
    }

    /// Collects the output until the command ends, keeping at most
    /// [`DEFAULT_MAX_OUTPUT`] of each stream.
    pub async fn collect(self) -> Result<Output> {
        self.collect_with(DEFAULT_MAX_OUTPUT, &|_, _| {}).await
    }

    /// Like [`collect`](Self::collect) with a cap of `max_output` bytes per
    /// stream, also passing each chunk to `on_output` as it arrives.
    pub async fn collect_with(
        mut self,
        max_output: usize,
        on_output: OutputSink<'_>,
    ) -> Result<Output> {
        let mut stdout = Capture::new(max_output);
        let mut stderr = Capture::new(max_output);
        while let Some(event) = self.next().await? {
            match event {
                ExecEvent::Stdout(d) => {
                    on_output(OutputStream::Stdout, &d);
                    stdout.push(&d)
                }
                ExecEvent::Stderr(d) => {
                    on_output(OutputStream::Stderr, &d);
                    stderr.push(&d)
                }
                ExecEvent::Exit(status) => {
                    let (stdout, stdout_cut) = stdout.finish();
                    let (stderr, stderr_cut) = stderr.finish();
                    return Ok(Output {
                        status,
                        stdout,
                        stderr,
                        stdout_cut,
                        stderr_cut,
                    });
                }
            }
        }
        Err(Error::Disconnected(
            "exec stream ended without an exit status".into(),
        ))
    }
}

/// Writes to a running command's stdin, waiting for the guest's credit.
#[derive(Clone)]
pub struct StdinWriter {
    sender: StreamSender,
}

impl StdinWriter {
    /// Writes all of `data`.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        self.sender.send_data(data, HostMsg::Stdin).await
    }

    /// Closes stdin (the command reads end-of-file).
    pub fn close(&self) -> Result<()> {
        self.sender.send(HostMsg::StdinEof)
    }

    /// Kills the command's process group, as [`ExecStream::cancel`] does,
    /// from wherever this handle went.
    pub fn kill_command(&self) -> Result<()> {
        self.sender.send(HostMsg::Cancel)
    }

    /// Writes `data` and closes stdin from a task of its own, so a command
    /// that reads late never stalls the caller reading its output. A
    /// command that ends without reading just drops the rest.
    pub fn write_all_and_close(&self, data: Vec<u8>) {
        let writer = self.clone();
        tokio::spawn(async move {
            if writer.write(&data).await.is_ok() {
                let _ = writer.close();
            }
        });
    }

    /// Copies `source` into stdin until it ends or fails, then closes
    /// stdin (the command reads end-of-file either way). Stops early when
    /// the command is gone.
    pub async fn copy_from(&self, mut source: impl AsyncRead + Unpin) -> Result<()> {
        let mut buf = vec![0u8; CHUNK_LEN];
        loop {
            match source.read(&mut buf).await {
                Ok(0) => return self.close(),
                Ok(n) => self.write(&buf[..n]).await?,
                Err(e) => {
                    let _ = self.close();
                    return Err(Error::io("read the input for the command's stdin", e));
                }
            }
        }
    }

    /// Kills the command's process group, like [`ExecStream::cancel`]: lets
    /// whoever holds only the writer (the stream moved into a task) stop the
    /// command, e.g. from a `Drop`.
    pub(crate) fn cancel_command(&self) -> Result<()> {
        self.sender.send(HostMsg::Cancel)
    }
}
