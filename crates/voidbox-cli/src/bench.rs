use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    Startup,
}
pub async fn run(_c: BenchCommand) -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
