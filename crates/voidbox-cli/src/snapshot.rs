//! `voidbox snapshot create|ls|rm|prune`: sandboxes saved ready to serve.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use void_box::sandbox::snapshot::{SnapshotStore, StoredSnapshot};
use void_box::{Exec, OutputStream};

use crate::exec::SandboxArgs;

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Boot a sandbox, run the set-up commands in it, and save it ready to
    /// serve: `voidbox exec --snapshot NAME` (spec: `sandbox.snapshot`)
    /// then starts from it instead of booting.
    Create {
        /// 1-64 of [A-Za-z0-9_.-].
        name: String,
        #[command(flatten)]
        sandbox: Box<SandboxArgs>,
        /// A shell command to run before saving (repeatable, in order; each
        /// must succeed).
        #[arg(long = "setup", value_name = "CMD")]
        setup: Vec<String>,
    },
    /// List snapshots: size, what they were made from, and whether they
    /// can be used here.
    #[command(alias = "list")]
    Ls,
    /// Delete a snapshot.
    Rm {
        /// The snapshot.
        name: String,
    },
    /// Delete the snapshots that can no longer be used (damaged, or made
    /// with another guest image, QEMU or accelerator); with `--all`, every
    /// snapshot.
    Prune {
        /// Every snapshot, usable or not.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(cmd: SnapshotCommand) -> Result<ExitCode> {
    let store = SnapshotStore::default_location();
    match cmd {
        SnapshotCommand::Create {
            name,
            sandbox,
            setup,
        } => create(&store, &name, &sandbox, &setup).await?,
        SnapshotCommand::Ls => list(&store)?,
        SnapshotCommand::Rm { name } => {
            store.remove(&name)?;
            println!("removed {name}");
        }
        SnapshotCommand::Prune { all } => {
            for (name, got) in store.list()? {
                let unusable = match &got {
                    Ok(stored) => stored.check_usable().err().map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if all || unusable.is_some() {
                    store.remove(&name)?;
                    match unusable {
                        Some(why) => println!("removed {name} ({why})"),
                        None => println!("removed {name}"),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(
    store: &SnapshotStore,
    name: &str,
    args: &SandboxArgs,
    setup: &[String],
) -> Result<()> {
    if args.snapshot.is_some() {
        bail!("a snapshot is made from a boot, not from another snapshot");
    }
    void_box::sandbox::snapshot::check_snapshot_name(name)?;
    if store.contains(name) {
        bail!("a snapshot named `{name}` exists (voidbox snapshot rm {name} first)");
    }
    let started = Instant::now();
    let sandbox = args.boot().await?;
    let booted = started.elapsed();
    for cmd in setup {
        eprintln!("voidbox: setup: {cmd}");
        let out = sandbox
            .exec_with_output(Exec::shell(cmd), &|stream, data| {
                let text = String::from_utf8_lossy(data);
                match stream {
                    OutputStream::Stderr => eprint!("{text}"),
                    OutputStream::Stdout => print!("{text}"),
                }
            })
            .await
            .with_context(|| format!("setup `{cmd}`"))?;
        if !out.status.success() {
            bail!("setup `{cmd}` failed ({:?}); nothing was saved", out.status);
        }
    }
    let set_up = started.elapsed();
    let made = sandbox
        .save_snapshot(store, name, setup)
        .await
        .context("saving the snapshot")?;
    println!(
        "created {name}: {} on disk in {:.1} s (boot {:.1} s, setup {:.1} s, save {:.2} s)",
        mib(made.disk_bytes),
        started.elapsed().as_secs_f64(),
        booted.as_secs_f64(),
        (set_up - booted).as_secs_f64(),
        (started.elapsed() - set_up).as_secs_f64()
    );
    Ok(())
}

fn list(store: &SnapshotStore) -> Result<()> {
    println!(
        "{:<24} {:>10} {:>7}  {:<32} STATUS",
        "NAME", "SIZE", "MEMORY", "IMAGE"
    );
    for (name, got) in store.list()? {
        match got {
            Ok(stored) => println!("{}", row(&name, &stored)),
            Err(e) => println!("{name:<24} {:>10} {:>7}  {:<32} {e}", "-", "-", "-"),
        }
    }
    Ok(())
}

fn row(name: &str, stored: &StoredSnapshot) -> String {
    let s = &stored.snapshot.machine;
    let image = s
        .image
        .as_ref()
        .map_or("(guest busybox)".to_string(), |i| i.reference.clone());
    let status = match stored.check_usable() {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    format!(
        "{name:<24} {:>10} {:>4} MiB  {image:<32} {status}",
        mib(stored.disk_bytes),
        s.memory_mb
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
