//! `voidbox image`: the guest image (`build`, `info`) and OCI images
//! (`pull`, `ls`, `rm`, `prune`, `import`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use void_box::oci::{self, ImageConfig, Store};
use void_box::vm::image::{self, ImageBuilder};

use crate::pull::{self, Show};

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
        /// Static busybox binary. Default: the musl build of
        /// scripts/build-busybox.sh when it is there (`target/guest/busybox`),
        /// else Debian's `/bin/busybox`.
        #[arg(long)]
        busybox: Option<PathBuf>,
        /// Parallel kernel build jobs (default: all CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Show the cached kernel and initramfs: where, sizes and hashes.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull an OCI image (`python:3.12`, `ghcr.io/o/r@sha256:...`,
    /// `localhost:5000/x:y`) and convert it for sandboxes.
    Pull {
        /// The image reference.
        reference: String,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List the cached OCI images, their digests and sizes.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a reference (and its image, when nothing else names it).
    Rm {
        /// The image reference.
        reference: String,
    },
    /// Remove images no reference names and unfinished pulls.
    Prune {
        /// Remove every image.
        #[arg(long)]
        all: bool,
    },
    /// Make an image from local tarballs: a rootfs tarball, or layer
    /// tarballs in order (plain, gzip or zstd), without a registry.
    Import {
        /// The tarballs.
        #[arg(required = true)]
        tarballs: Vec<PathBuf>,
        /// The reference to name it by (e.g. `local/mytools:1`).
        #[arg(long)]
        tag: String,
        /// `Env` of the image (repeatable).
        #[arg(long = "env", value_name = "K=V", value_parser = crate::exec::parse_env)]
        env: Vec<(String, String)>,
        /// `WorkingDir`.
        #[arg(long)]
        workdir: Option<String>,
        /// `User`.
        #[arg(long)]
        user: Option<String>,
        /// `Cmd` (repeatable, in order).
        #[arg(long = "cmd")]
        cmd: Vec<String>,
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
            if let Some(busybox) = busybox {
                builder.busybox = busybox;
            }
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
        ImageCommand::Pull { reference, json } => {
            let show = if json { Show::Json } else { Show::Human };
            let store = Store::default_location();
            let image = oci::pull(&store, &reference, Some(pull::progress(show))).await?;
            if !json {
                println!("{} {}", image.record.digest, image.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls { json } => list(json),
        ImageCommand::Rm { reference } => {
            let store = Store::default_location();
            let name = oci::parse_reference(&reference)?.whole();
            if store.remove(&name)? {
                println!("removed {name}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("voidbox: no cached image named {name}");
                Ok(ExitCode::from(1))
            }
        }
        ImageCommand::Prune { all } => {
            let freed = Store::default_location().prune(all)?;
            println!("freed {:.1} MiB", freed as f64 / (1024.0 * 1024.0));
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Import {
            tarballs,
            tag,
            env,
            workdir,
            user,
            cmd,
        } => {
            let config = ImageConfig {
                env,
                working_dir: workdir,
                user,
                entrypoint: Vec::new(),
                cmd,
            };
            let store = Store::default_location();
            let image =
                tokio::task::spawn_blocking(move || oci::import(&store, &tag, &tarballs, config))
                    .await
                    .context("the import failed")??;
            println!(
                "{} {} {}",
                image.record.reference,
                image.record.digest,
                image.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(json: bool) -> Result<ExitCode> {
    let store = Store::default_location();
    let images = store.images();
    let refs = store.references();
    if json {
        let rows: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let names: Vec<&str> = refs
                    .iter()
                    .filter(|r| r.digest == i.record.digest)
                    .map(|r| r.reference.as_str())
                    .collect();
                serde_json::json!({
                    "references": names,
                    "digest": i.record.digest,
                    "size_bytes": i.record.size_bytes,
                    "layers": i.record.layers.len(),
                    "pulled_at": i.record.pulled_at,
                    "path": i.path,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<48} {:<19} {:>10}", "REFERENCE", "DIGEST", "SIZE");
    let mut total = 0;
    for image in &images {
        total += image.record.size_bytes;
        let names: Vec<&str> = refs
            .iter()
            .filter(|r| r.digest == image.record.digest)
            .map(|r| r.reference.as_str())
            .collect();
        let names = if names.is_empty() {
            vec!["<none>"]
        } else {
            names
        };
        for name in names {
            println!(
                "{:<48} {:<19} {:>6.1} MiB",
                name,
                &image.record.digest[..image.record.digest.len().min(19)],
                image.record.size_bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }
    println!(
        "{} image(s), {:.1} MiB in {}",
        images.len(),
        total as f64 / (1024.0 * 1024.0),
        store.root().display()
    );
    Ok(ExitCode::SUCCESS)
}
