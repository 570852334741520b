//! `voidbox bench`: figures printed beside the floor or baseline they are
//! measured against, in one run. `startup`: cold start, exec round trip,
//! file throughput and memory; `images`: booting from an OCI image, pull
//! and convert, and reading from images and mounts; `network`: download
//! throughput, connect and DNS latency through the guest network;
//! `daemon`: what `voidbox serve` adds to an exec, and its request rate.

mod daemon;
mod e2b;
mod images;
mod network;
mod startup;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Cold start, exec round trip, file throughput and host memory per sandbox.
    Startup {
        /// Boots per measurement (floor and cold start).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Exec round trips to time.
        #[arg(long, default_value_t = 200)]
        execs: usize,
        /// The floor's static init binary.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-gnu/release/floor-init"
        )]
        floor_init: PathBuf,
        /// File size for the throughput figures, in MiB.
        #[arg(long, default_value_t = 32)]
        file_mib: usize,
    },
    /// Cold start from an OCI image against the busybox initramfs and the
    /// floor, pull + convert time, and read throughput from the image and
    /// from a host mount.
    Images {
        /// The image to boot and pull (e.g. the test registry's
        /// `127.0.0.1:5055/python:latest`).
        #[arg(long)]
        image: String,
        /// Boots per measurement.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Pulls (each into an empty cache).
        #[arg(long, default_value_t = 3)]
        pulls: usize,
        /// Size of the file read from the image and the mount, in MiB.
        #[arg(long, default_value_t = 100)]
        file_mib: usize,
        /// The floor's static init binary.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-gnu/release/floor-init"
        )]
        floor_init: PathBuf,
    },
    /// Download throughput into the guest beside the host's, TCP connect
    /// and DNS latency, through the guest network.
    Network {
        /// An image with curl and python3 (e.g. the test registry's
        /// `127.0.0.1:5055/python:latest`).
        #[arg(long)]
        image: String,
        /// Download size, in MiB.
        #[arg(long, default_value_t = 200)]
        size_mib: usize,
        /// TCP connects to time.
        #[arg(long, default_value_t = 200)]
        connects: usize,
        /// DNS look-ups to time.
        #[arg(long, default_value_t = 100)]
        lookups: usize,
    },
    /// The exec round trip through the daemon beside the library's, and
    /// the requests per second of its health route.
    Daemon {
        /// Exec round trips each way.
        #[arg(long, default_value_t = 200)]
        execs: usize,
        /// Seconds of health requests.
        #[arg(long, default_value_t = 3)]
        health_secs: u64,
        /// Concurrent health clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Sandbox starts each way (SDK create to first command, library).
        #[arg(long, default_value_t = 5)]
        starts: usize,
    },
}

pub async fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Startup {
            runs,
            execs,
            floor_init,
            file_mib,
        } => startup::run(runs, execs, floor_init, file_mib).await,
        BenchCommand::Images {
            image,
            runs,
            pulls,
            file_mib,
            floor_init,
        } => images::run(&image, runs, pulls, file_mib, floor_init).await,
        BenchCommand::Network {
            image,
            size_mib,
            connects,
            lookups,
        } => network::run(&image, size_mib, connects, lookups).await,
        BenchCommand::Daemon {
            execs,
            health_secs,
            clients,
            starts,
        } => daemon::run(execs, health_secs, clients, starts).await,
    }
}

fn row(measure: &str, p50: &str, p90: &str, p95: &str, against: &str) {
    println!("{measure:<44} {p50:>10} {p90:>10} {p95:>10}   {against}");
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile.
fn pct(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
