//! `voidbox volume create|ls|rm`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use void_box::volume::Volumes;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (sandboxes also create one on first use).
    Create {
        /// 1-64 of [A-Za-z0-9_.-].
        name: String,
    },
    /// List volumes and what they hold.
    #[command(alias = "list")]
    Ls,
    /// Delete a volume and everything in it.
    Rm {
        /// The volume.
        name: String,
    },
}

pub fn run(cmd: VolumeCommand) -> Result<ExitCode> {
    let volumes = Volumes::default_location();
    match cmd {
        VolumeCommand::Create { name } => {
            let new = volumes.create(&name)?;
            println!("{} {name}", if new { "created" } else { "exists" });
        }
        VolumeCommand::Ls => {
            println!("{:<32} {:>10}  PATH", "NAME", "SIZE");
            for v in volumes.list()? {
                println!(
                    "{:<32} {:>6.1} MiB  {}",
                    v.name,
                    v.size_bytes as f64 / (1024.0 * 1024.0),
                    v.path.display()
                );
            }
        }
        VolumeCommand::Rm { name } => {
            volumes.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
