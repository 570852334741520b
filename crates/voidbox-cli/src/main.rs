//! `voidbox`: run commands and agents in fresh micro-VMs.

mod bench;
mod exec;
mod image;
mod pull;
mod remote;
mod report;
mod run;
mod serve;
mod shell;
mod snapshot;
mod spec_cmd;
mod stop;
mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use void_box::observe::{ObserveConfig, Telemetry};

#[derive(Parser)]
#[command(
    name = "voidbox",
    version,
    about = "Run AI agents and commands inside micro-VMs: hardware-isolated with KVM, \
             software-emulated (TCG, not a security boundary) without it"
)]
struct Cli {
    /// Refuse to start a VM without usable KVM instead of falling back to TCG
    /// software emulation (the same as VOIDBOX_ACCEL=kvm).
    #[arg(long, global = true)]
    require_kvm: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a fresh sandbox and exit with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive shell in a fresh sandbox.
    Shell(shell::ShellArgs),
    /// The guest image (build, info) and OCI images (pull, ls, rm, prune, import).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Named volumes: storage that outlives sandboxes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Snapshots: sandboxes saved ready to serve (create, ls, rm, prune).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Measure start-up and exec figures against the bare-VM floor.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run an agent, pipeline, workflow or sandbox command from a spec file.
    Run(run::RunArgs),
    /// Check a spec file: prints `ok: KIND NAME (N boxes)` or the error with its place.
    Validate(spec_cmd::ValidateArgs),
    /// Print a spec's resolved configuration (defaults, providers, paths).
    Inspect(spec_cmd::InspectArgs),
    /// Render a saved run (`voidbox run --output json` lines) as an HTML timeline.
    Report(report::ReportArgs),
    /// Run the daemon: sandboxes over HTTP, on a Unix socket or TCP with a token.
    Serve(serve::ServeArgs),
    /// The daemon's runs, newest first.
    Ps(remote::RemoteArgs),
    /// A daemon run's events, as JSON lines.
    Logs {
        /// The run's id.
        run: String,
        /// Keep following a running run until it ends.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Cancel a daemon run (its VMs are killed).
    Cancel {
        /// The run's id.
        run: String,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.require_kvm {
        // Before any thread exists; every sandbox reads it (`Accel::choose`).
        std::env::set_var("VOIDBOX_ACCEL", "kvm");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voidbox: cannot start the runtime: {e}");
            return ExitCode::from(125);
        }
    };
    // Exporters exist only when an OTLP endpoint is configured; gRPC needs
    // the runtime, hence inside it.
    let telemetry = match runtime.block_on(async { Telemetry::init(&ObserveConfig::from_env()) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("voidbox: {e}; continuing without telemetry export");
            Telemetry::default()
        }
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(|| run::LogWriter)
        .with_target(false)
        .without_time()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOIDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(telemetry.layer())
        .init();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Shell(args) => shell::run(args).await,
            Command::Image(cmd) => image::run(cmd).await,
            Command::Volume(cmd) => volume::run(cmd),
            Command::Snapshot(cmd) => snapshot::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Run(args) => run::run(args).await,
            Command::Validate(args) => spec_cmd::validate(args),
            Command::Inspect(args) => spec_cmd::inspect(args),
            Command::Report(args) => report::run(args),
            Command::Serve(args) => serve::run(args).await,
            Command::Ps(args) => remote::ps(&args).await,
            Command::Logs {
                run,
                follow,
                remote,
            } => remote::logs(&remote, &run, follow).await,
            Command::Cancel { run, remote } => remote::cancel(&remote, &run).await,
        }
    });
    if telemetry.is_enabled() {
        // Flushes spans and metrics; blocking, so off the runtime's threads.
        let _ = runtime.block_on(runtime.spawn_blocking(move || telemetry.shutdown()));
    }
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
