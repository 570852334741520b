//! `voidbox shell`: an interactive shell on a real PTY in a fresh sandbox.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use crossterm::terminal;
use tokio::signal::unix::{signal, SignalKind};
use void_box::{Exec, ExecEvent};

use crate::exec::{exit_code, SandboxArgs};

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Shell to run.
    #[arg(long, default_value = "sh")]
    shell: String,
}

/// Restores the terminal however the shell ends.
struct RawMode;

impl RawMode {
    fn enable() -> Result<RawMode> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = terminal::disable_raw_mode();
    }
}

pub async fn run(args: ShellArgs) -> Result<ExitCode> {
    let sandbox = args.sandbox.boot().await?;
    crate::exec::print_header(&sandbox);
    let (cols, rows) = terminal::size().unwrap_or((80, 24));
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let cmd = Exec::new(&args.shell)
        .arg("-l")
        .env("TERM", term)
        .pty(rows, cols);
    let mut stream = sandbox.exec_stream(cmd).await?;
    let stdin = stream.stdin();
    let raw = RawMode::enable()?;

    // Keystrokes go to the PTY as they are typed (Ctrl-C included: the
    // guest's line discipline turns it into SIGINT for the foreground job).
    let input = tokio::spawn(async move { stdin.copy_from(tokio::io::stdin()).await });
    let mut winch = signal(SignalKind::window_change())?;
    // Ctrl-C is a keystroke here; SIGTERM and SIGHUP (the terminal went
    // away) end the shell and its VM.
    let mut stop = crate::stop::StopSignals::new()?;
    let mut stdout = std::io::stdout();
    let status = loop {
        tokio::select! {
            event = stream.next() => match event? {
                Some(ExecEvent::Stdout(data)) | Some(ExecEvent::Stderr(data)) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(ExecEvent::Exit(status)) => break status,
                None => anyhow::bail!("the shell's stream ended without an exit status"),
            },
            _ = winch.recv() => {
                if let Ok((cols, rows)) = terminal::size() {
                    stream.resize(rows, cols)?;
                }
            }
            code = stop.next() => {
                input.abort();
                drop(raw);
                // Dropping the sandbox on the way out kills the VM.
                return Ok(ExitCode::from(code));
            }
        }
    };
    input.abort();
    drop(raw);
    sandbox.shutdown().await?;
    Ok(exit_code(&status))
}
