//! `voidbox validate` and `voidbox inspect`: check a spec, show what it
//! would run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use void_box::spec::{self, Spec, SpecError};

/// What a spec may take from the host beyond the default.
#[derive(Args, Debug, Clone, Default)]
pub struct HostAccessArgs {
    /// Let the spec use this host variable: its `env: {NAME: ""}` may copy
    /// it into the guest although it looks like a credential, and its
    /// `secrets` (and its skills') may send it to the hosts they name
    /// (repeatable).
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Let `file:` skills read files outside the spec's directory.
    #[arg(long)]
    allow_host_files: bool,
    /// Add this network allow rule to every sandbox of the spec, e.g.
    /// `host.voidbox.internal:8080` for a service on this host
    /// (repeatable; a sandbox without a network gets one that reaches
    /// only these).
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,
    /// Run every sandbox of the spec on this OCI image instead of the
    /// spec's.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Start every sandbox of the spec from this snapshot (`voidbox
    /// snapshot create`) instead of booting it.
    #[arg(long, value_name = "NAME")]
    snapshot: Option<String>,
}

impl HostAccessArgs {
    fn access(&self) -> spec::HostAccess {
        spec::HostAccess {
            pass_env: self.pass_env.iter().cloned().collect(),
            files_outside: self.allow_host_files,
            allow: self.allow.clone(),
            image: self.image.clone(),
            snapshot: self.snapshot.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The spec file (`.json`: JSON, anything else: YAML).
    file: PathBuf,
    #[command(flatten)]
    access: HostAccessArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The spec file (`.json`: JSON, anything else: YAML).
    file: PathBuf,
    /// How to print the resolved configuration.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
    #[command(flatten)]
    access: HostAccessArgs,
}

/// Loads a spec and builds its runnable form, so everything short of
/// booting is checked (providers included).
pub fn load_checked(
    file: &Path,
    access: &HostAccessArgs,
) -> Result<(Spec, spec::Runnable), SpecError> {
    let spec = spec::load_with(file, access.access())?;
    let runnable = spec.runnable()?;
    Ok((spec, runnable))
}

pub fn validate(args: ValidateArgs) -> Result<ExitCode> {
    match load_checked(&args.file, &args.access) {
        Ok((spec, _)) => {
            println!("ok: {}", spec.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_error(&e);
            Ok(ExitCode::from(1))
        }
    }
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let resolved = spec::load_with(&args.file, args.access.access()).and_then(|s| s.resolved());
    match resolved {
        Ok(r) => {
            match args.format {
                Format::Yaml => print!("{}", r.to_yaml()),
                Format::Json => println!("{}", r.to_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_error(&e);
            Ok(ExitCode::from(1))
        }
    }
}

/// The error on one line (`file:line:column: message (hint: ...)`), then
/// the line it points at with a caret under the column.
pub fn print_error(e: &SpecError) {
    eprintln!("{e}");
    if e.line == 0 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&e.file) else {
        return;
    };
    if let Some(row) = text.lines().nth(e.line - 1) {
        let number = e.line.to_string();
        let pad = " ".repeat(number.len());
        eprintln!(" {number} | {row}");
        let caret: String = row
            .chars()
            .take(e.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        eprintln!(" {pad} | {caret}^");
    }
}
