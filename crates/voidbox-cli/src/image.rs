//! `voidbox image build|info`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use void_box::vm::image::{self, ImageBuilder};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the kernel and initramfs (only what changed) and make them current.
    Build {
        /// Guest agent binary (static). Default: VOIDBOX_GUEST_AGENT, or `guest-agent` beside voidbox.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Kernel source tarball.
        #[arg(long, default_value = image::DEFAULT_KERNEL_SOURCE)]
        kernel_source: PathBuf,
        /// Use this kernel instead of building one (e.g. a distro vmlinux).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Static busybox binary.
        #[arg(long, default_value = image::DEFAULT_BUSYBOX)]
        busybox: PathBuf,
        /// Parallel kernel build jobs (default: all CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Show what is cached, where, sizes and hashes.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Build {
            agent,
            kernel_source,
            kernel,
            busybox,
            jobs,
        } => {
            let mut builder = ImageBuilder::new();
            if let Some(agent) = agent {
                builder.agent = agent;
            }
            builder.kernel_source = kernel_source;
            builder.prebuilt_kernel = kernel;
            builder.busybox = busybox;
            if let Some(jobs) = jobs {
                builder.jobs = jobs;
            }
            let record = tokio::task::spawn_blocking(move || {
                builder.build(&mut |line| eprintln!("image: {line}"))
            })
            .await??;
            println!("kernel     {}", record.image.kernel.display());
            println!("initramfs  {}", record.image.initramfs.display());
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Info { json } => {
            let cache = void_box::cache_dir();
            let files = image::cached_files(&cache);
            if json {
                println!("{}", serde_json::to_string_pretty(&files)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("cache: {}", cache.display());
            if files.is_empty() {
                println!("(empty: run `voidbox image build`)");
            }
            for f in &files {
                println!(
                    "{} {:<9} {:<16} {:>8.1} MiB  {}",
                    if f.current { "*" } else { " " },
                    f.kind,
                    f.hash,
                    f.size as f64 / (1024.0 * 1024.0),
                    f.path.display()
                );
            }
            for (name, var) in [
                ("kernel", "VOIDBOX_KERNEL"),
                ("initramfs", "VOIDBOX_INITRAMFS"),
            ] {
                if let Ok(path) = std::env::var(var) {
                    println!("{name} overridden by {var}={path}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
