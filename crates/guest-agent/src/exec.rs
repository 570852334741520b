//! Running commands: spawn, stream output with flow control, stdin, PTY,
//! timeout and cancel.
//!
//! Every command runs as the unprivileged sandbox user, in a session and
//! process group of its own and a control group of its own, under resource
//! limits and the system-call filter. Timeout, cancel, and the host going
//! away kill the whole control group, so even a process that left the
//! session with `setsid` dies. The leader's exit kills its process group,
//! so that a stray background process cannot hold the output streams
//! open; a process that started a session of its own (a daemon) lives on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use void_box_protocol::flow::{RecvWindow, SendWindow};
use void_box_protocol::{
    ErrorKind, ExecRequest, ExitStatus, GuestMsg, HostMsg, ResourceLimits, CHUNK_LEN,
};

use crate::cgroup::ExecCgroup;
use crate::context::AgentContext;
use crate::pty::{self, PtyMaster};
use crate::reply::Reply;
use crate::spawn;
use void_box_protocol::policy;

/// After the leader exits, how long output may stall (no credit from the
/// host, or a process that escaped the group holding a pipe) before the
/// stream is cut and the exit reported.
const DRAIN_STALL: Duration = Duration::from_secs(10);

/// Environment every command starts from.
const BASE_ENV: [(&str, &str); 6] = [
    (
        "PATH",
        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
    ),
    ("HOME", "/home/sandbox"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
    ("SHELL", "/bin/sh"),
    ("LANG", "C.UTF-8"),
];

type BoxedReader = Box<dyn AsyncRead + Unpin + Send>;
type BoxedWriter = Box<dyn AsyncWrite + Unpin + Send>;
/// An output stream and the message that carries its bytes.
type OutputSource = (BoxedReader, fn(Vec<u8>) -> GuestMsg);

/// The host side of a started process's I/O.
struct ProcessIo {
    outputs: Vec<OutputSource>,
    stdin: Option<BoxedWriter>,
    pty: Option<OwnedFd>,
}

/// Runs one exec request to completion.
pub async fn run(
    ctx: &AgentContext,
    req: ExecRequest,
    mut rx: mpsc::UnboundedReceiver<HostMsg>,
    reply: Reply,
) {
    let live = ctx.live();
    if let Err(message) = policy::check_command(&live.allowed_commands, &req.program) {
        reply.error(ErrorKind::NotAllowed, message).await;
        return;
    }
    let limits = req.limits.or(live.limits);
    let cgroup = match ctx.cgroups.as_ref().map(|c| c.create()).transpose() {
        Ok(cgroup) => cgroup,
        Err(e) => {
            reply
                .error(
                    ErrorKind::Io,
                    format!("cannot make the command's control group: {e}"),
                )
                .await;
            return;
        }
    };
    let release = |cgroup: Option<ExecCgroup>| {
        if let (Some(cgroups), Some(cgroup)) = (&ctx.cgroups, cgroup) {
            cgroups.release(cgroup);
        }
    };
    let (pid, exit_rx, io) = match spawn(ctx, &req, limits, cgroup.as_ref()) {
        Ok(started) => started,
        Err(e) => {
            let kind = match e.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::NotAllowed,
                _ => ErrorKind::Io,
            };
            reply
                .error(kind, format!("cannot run `{}`: {e}", req.program))
                .await;
            release(cgroup);
            return;
        }
    };
    let group = Pid::from_raw(pid).expect("spawned pid is positive");
    let kill_all = || {
        kill_group(group);
        if let Some(cgroup) = &cgroup {
            cgroup.kill();
        }
    };
    if !reply.send(GuestMsg::Started { pid: pid as u32 }).await {
        kill_all();
    }

    let window = SendWindow::new();
    let mut pumps: Vec<_> = io
        .outputs
        .into_iter()
        .map(|(source, wrap)| tokio::spawn(pump(source, window.clone(), reply.clone(), wrap)))
        .collect();
    let mut stdin_tx = io.stdin.map(|sink| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(feed_stdin(sink, rx, reply.clone()));
        tx
    });
    let pty_master = io.pty;

    let deadline = req
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut status = ExitStatus::default();
    let mut host_gone = false;
    let mut exit_rx = exit_rx;
    let exit = loop {
        tokio::select! {
            exit = &mut exit_rx => break exit.ok(),
            msg = rx.recv(), if !host_gone => match msg {
                None => {
                    host_gone = true;
                    status.cancelled = true;
                    kill_all();
                }
                Some(HostMsg::Cancel) => {
                    status.cancelled = true;
                    kill_all();
                }
                Some(msg) => {
                    if !route(msg, &window, &mut stdin_tx, pty_master.as_ref()) {
                        kill_all();
                    }
                }
            },
            _ = sleep_until_opt(deadline), if deadline.is_some() && !status.timed_out => {
                status.timed_out = true;
                kill_all();
            }
        }
    };
    // Stragglers in the group would hold the output pipes open.
    kill_group(group);
    drop(stdin_tx);
    drop(pty_master);
    if let Some(exit) = exit {
        status.code = exit.code;
        status.signal = exit.signal;
    }

    // Drain the output; credit still arrives through `rx`.
    let mut stall = Instant::now() + DRAIN_STALL;
    let drained = async {
        for pump in pumps.iter_mut() {
            let _ = pump.await;
        }
    };
    tokio::pin!(drained);
    loop {
        tokio::select! {
            _ = &mut drained => break,
            msg = rx.recv(), if !host_gone => match msg {
                None => host_gone = true,
                Some(HostMsg::Credit(n)) => {
                    stall = Instant::now() + DRAIN_STALL;
                    if window.grant(n).is_err() {
                        break;
                    }
                }
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(stall) => break,
        }
    }
    window.close();
    for pump in &pumps {
        pump.abort();
    }
    release(cgroup);
    if !host_gone {
        reply.send(GuestMsg::Exited(status)).await;
    }
}

/// Applies one follow-up message; false if the host broke the protocol.
fn route(
    msg: HostMsg,
    window: &SendWindow,
    stdin_tx: &mut Option<mpsc::UnboundedSender<Vec<u8>>>,
    pty_master: Option<&OwnedFd>,
) -> bool {
    match msg {
        HostMsg::Credit(n) => return window.grant(n).is_ok(),
        HostMsg::Stdin(data) => {
            if let Some(tx) = stdin_tx {
                let _ = tx.send(data);
            }
        }
        HostMsg::StdinEof => *stdin_tx = None,
        HostMsg::Resize(size) => {
            if let Some(master) = pty_master {
                let _ = pty::resize(master, size);
            }
        }
        _ => {}
    }
    true
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn kill_group(group: Pid) {
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
}

/// Starts the process and registers it with the reaper.
fn spawn(
    ctx: &AgentContext,
    req: &ExecRequest,
    limits: ResourceLimits,
    cgroup: Option<&ExecCgroup>,
) -> io::Result<(
    i32,
    tokio::sync::oneshot::Receiver<crate::reaper::ChildExit>,
    ProcessIo,
)> {
    let env = environment(&ctx.live().env, &req.env);
    // The host may ask for another user of the root (`Exec::user`).
    let user = req.user.as_ref().unwrap_or(&ctx.user);
    let cwd = req
        .cwd
        .as_deref()
        .or(ctx.config.workdir.as_deref())
        .unwrap_or(void_box_protocol::WORKSPACE_DIR);
    let pipe = || rustix::pipe::pipe_with(PipeFlags::CLOEXEC);
    let spawn_with = |stdio: [BorrowedFd<'_>; 3], controlling_tty| {
        let registration = ctx.reaper.register();
        let pid = spawn::spawn(&spawn::Spawn {
            program: &req.program,
            args: &req.args,
            env: &env,
            cwd,
            stdio,
            uid: user.uid,
            gid: user.gid,
            groups: &user.groups,
            root: ctx.root.chroot.as_deref(),
            limits,
            controlling_tty,
            cgroup_procs: cgroup.map(|c| c.procs_fd()),
        })?;
        io::Result::Ok((pid, registration.watch(pid)))
    };

    if let Some(size) = req.pty {
        let (master, slave) = pty::open(size)?;
        let slave = slave.as_fd();
        let (pid, exit_rx) = spawn_with([slave, slave, slave], true)?;
        let resize_fd = master.try_clone()?;
        let (reader, writer) = tokio::io::split(PtyMaster::new(master)?);
        let io = ProcessIo {
            outputs: vec![(Box::new(reader), GuestMsg::Stdout)],
            stdin: Some(Box::new(writer)),
            pty: Some(resize_fd),
        };
        return Ok((pid, exit_rx, io));
    }

    // The child's ends are closed here once it has exec'd.
    let (stdin_child, stdin_ours) = if req.stdin {
        let (read, write) = pipe()?;
        (read, Some(write))
    } else {
        let null = rustix::fs::open(
            c"/dev/null",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        (null, None)
    };
    let (stdout_ours, stdout_child) = pipe()?;
    let (stderr_ours, stderr_child) = pipe()?;
    let (pid, exit_rx) = spawn_with(
        [
            stdin_child.as_fd(),
            stdout_child.as_fd(),
            stderr_child.as_fd(),
        ],
        false,
    )?;
    let stdin = match stdin_ours {
        Some(fd) => {
            Some(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?) as BoxedWriter)
        }
        None => None,
    };
    let io = ProcessIo {
        outputs: vec![
            (
                Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
                    stdout_ours,
                )?),
                GuestMsg::Stdout,
            ),
            (
                Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
                    stderr_ours,
                )?),
                GuestMsg::Stderr,
            ),
        ],
        stdin,
        pty: None,
    };
    Ok((pid, exit_rx, io))
}

/// The command's environment: the base, then the sandbox's, then the
/// request's; a later value replaces an earlier one.
fn environment(
    sandbox: &[(String, String)],
    request: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let base = BASE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    for (k, v) in base
        .chain(sandbox.iter().cloned())
        .chain(request.iter().cloned())
    {
        match env.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env
}

/// Copies one output stream to the host, spending credit per chunk.
async fn pump(
    mut source: BoxedReader,
    window: SendWindow,
    reply: Reply,
    wrap: fn(Vec<u8>) -> GuestMsg,
) {
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        let n = match source.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if window.reserve(n).await.is_err() || !reply.send(wrap(buf[..n].to_vec())).await {
            break;
        }
    }
}

/// Writes stdin chunks to the process and credits the host for each.
async fn feed_stdin(
    mut sink: BoxedWriter,
    mut chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    reply: Reply,
) {
    let mut window = RecvWindow::new();
    let mut open = true;
    while let Some(data) = chunks.recv().await {
        if window.on_data(data.len()).is_err() {
            break;
        }
        // Once the process closed its stdin, keep crediting so the host's
        // sender finishes instead of waiting forever.
        if open && sink.write_all(&data).await.is_err() {
            open = false;
        }
        if let Some(grant) = window.on_consumed(data.len()) {
            reply.send(GuestMsg::Credit(grant)).await;
        }
    }
    let _ = sink.shutdown().await;
}
