//! `voidbox`: run commands and agents in fresh micro-VMs.

mod bench;
mod exec;
mod image;
mod run;
mod shell;
mod spec_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "voidbox",
    version,
    about = "Run AI agents and commands inside hardware-isolated micro-VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a fresh sandbox and exit with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive shell in a fresh sandbox.
    Shell(shell::ShellArgs),
    /// Build or inspect the guest image.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Measure start-up and exec figures against the bare-VM floor.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run an agent, pipeline, workflow or sandbox command from a spec file.
    Run(run::RunArgs),
    /// Check a spec file: prints `ok: KIND NAME (N boxes)` or the error with its place.
    Validate(spec_cmd::ValidateArgs),
    /// Print a spec's resolved configuration (defaults, providers, paths).
    Inspect(spec_cmd::InspectArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOIDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| run::LogWriter)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voidbox: cannot start the runtime: {e}");
            return ExitCode::from(125);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Shell(args) => shell::run(args).await,
            Command::Image(cmd) => image::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Run(args) => run::run(args).await,
            Command::Validate(args) => spec_cmd::validate(args),
            Command::Inspect(args) => spec_cmd::inspect(args),
        }
    });
    // `voidbox shell` leaves a blocking read of the terminal behind; do not
    // wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voidbox: {e:#}");
            ExitCode::from(125)
        }
    }
}
