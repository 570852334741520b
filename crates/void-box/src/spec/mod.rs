//! Specs: agents, pipelines, workflows and sandbox commands declared in a
//! YAML or JSON file (API version `v1`) and turned into runnable values.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = void_box::spec::load("examples/specs/quick_demo.yaml")?;
//! println!("{}", spec.summary()); // pipeline quick-demo (2 boxes)
//! match spec.runnable()? {
//!     void_box::spec::Runnable::Pipeline(p) => {
//!         let result = p.run().await?;
//!         println!("{}", result.output.unwrap_or_default());
//!     }
//!     _ => unreachable!(),
//! }
//! # Ok(()) }
//! ```
//!
//! [`load`] parses and checks everything that does not depend on the host
//! (field names and types, sections per kind, stage and step references,
//! the workflow graph, skills, files the spec names); every error carries
//! the file, line and column and, where we can tell, a hint.
//! [`Spec::runnable`] then resolves providers from the environment and
//! builds the boxes. The format is described in `docs/specs.md`.

mod build;
mod check;
mod error;
mod host_access;
mod model;
mod outcome;
mod resolved;
mod run;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::SpecError;
pub use host_access::{looks_like_credential, HostAccess};
pub use model::ObserveSpec;
pub use outcome::{Ending, RunOutcome};
pub use resolved::{
    Resolved, ResolvedBox, ResolvedCommand, ResolvedLlm, ResolvedPipeline, ResolvedSandbox,
    ResolvedStep, ResolvedWorkflow,
};
pub use run::{SandboxResult, SandboxRun};

use crate::agent::VoidBox;
use crate::pipeline::Pipeline;
use crate::workflow::Workflow;
use model::{RawSpec, Sp};

/// What a spec runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One agent box.
    Agent,
    /// Boxes in stages (`pipeline` section).
    Pipeline,
    /// A DAG of command and agent steps (`workflow` section).
    Workflow,
    /// One command in a sandbox (`run` section).
    Sandbox,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Agent => "agent",
            Kind::Pipeline => "pipeline",
            Kind::Workflow => "workflow",
            Kind::Sandbox => "sandbox",
        })
    }
}

/// A spec's runnable form, built by [`Spec::runnable`].
#[derive(Debug, Clone)]
pub enum Runnable {
    /// `kind: agent` (its `output_file`, if any, is part of the box).
    Agent(VoidBox),
    /// `kind: pipeline`.
    Pipeline(Pipeline),
    /// `kind: workflow`.
    Workflow(Workflow),
    /// `kind: sandbox`.
    Sandbox(SandboxRun),
}

impl Runnable {
    /// Every sandbox configuration it boots (a box's, a step's, the
    /// command's), in declaration order.
    pub fn sandboxes(&self) -> Vec<crate::SandboxConfig> {
        match self {
            Runnable::Agent(a) => vec![a.sandbox_config()],
            Runnable::Pipeline(p) => p
                .stages()
                .iter()
                .flat_map(|s| s.boxes().iter().map(VoidBox::sandbox_config))
                .collect(),
            Runnable::Workflow(w) => w
                .steps()
                .iter()
                .map(|s| match s.action() {
                    crate::workflow::StepAction::Command(c) => c.sandbox.clone(),
                    crate::workflow::StepAction::Agent(b) => b.sandbox_config(),
                })
                .collect(),
            Runnable::Sandbox(s) => vec![s.sandbox_config().clone()],
        }
    }

    /// The OCI images it needs (roots and image mounts), each once.
    pub fn images(&self) -> Vec<String> {
        let mut images: Vec<String> = Vec::new();
        for config in self.sandboxes() {
            let named = config
                .image
                .into_iter()
                .chain(config.image_mounts.into_iter().map(|m| m.image));
            for image in named {
                if !images.contains(&image) {
                    images.push(image);
                }
            }
        }
        images
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

/// A parsed and checked spec.
#[derive(Debug)]
pub struct Spec {
    file: PathBuf,
    dir: PathBuf,
    text: String,
    format: Format,
    raw: RawSpec,
    access: HostAccess,
}

/// Reads, parses and checks the spec at `path` (`.json`: JSON, anything
/// else: YAML). Relative paths in it resolve against its directory.
pub fn load(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
    load_with(path, HostAccess::default())
}

/// [`load`], granting the spec `access` to the host beyond the default
/// (credential-like variables it may copy, files outside its directory).
pub fn load_with(path: impl AsRef<Path>, access: HostAccess) -> Result<Spec, SpecError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(path, (0, 0), format!("cannot read the spec: {e}")))?;
    parse_with(&text, path, access)
}

/// Parses and checks spec text as if it were read from `path` (which
/// chooses the format and the directory relative paths resolve against).
pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Spec, SpecError> {
    parse_with(text, path, HostAccess::default())
}

/// [`parse`] with `access` to the host beyond the default.
pub fn parse_with(
    text: &str,
    path: impl AsRef<Path>,
    access: HostAccess,
) -> Result<Spec, SpecError> {
    let file = path.as_ref().to_path_buf();
    for rule in &access.allow {
        rule.parse::<crate::net::Rule>()
            .map_err(|e| SpecError::new(&file, (0, 0), format!("--allow {rule}: {e}")))?;
    }
    if let Some(image) = &access.image {
        crate::oci::parse_reference(image)
            .map_err(|e| SpecError::new(&file, (0, 0), format!("--image {image}: {e}")))?;
    }
    let json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let raw: RawSpec = if json {
        serde_json::from_str(text).map_err(|e| SpecError::from_json(&file, text, &e))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| SpecError::from_yaml(&file, &e))?
    };
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let spec = Spec {
        file,
        dir,
        text: text.to_string(),
        format: if json { Format::Json } else { Format::Yaml },
        raw,
        access,
    };
    check::check(&spec)?;
    Ok(spec)
}

impl Spec {
    /// What it runs.
    pub fn kind(&self) -> Kind {
        self.raw.kind.value
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.raw.name.value
    }

    /// The file it was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many boxes (agent, pipeline), steps (workflow) or commands
    /// (sandbox) it declares.
    pub fn units(&self) -> usize {
        match self.kind() {
            Kind::Agent | Kind::Sandbox => 1,
            Kind::Pipeline => self
                .raw
                .pipeline
                .as_ref()
                .map_or(0, |p| p.value.boxes.len()),
            Kind::Workflow => self
                .raw
                .workflow
                .as_ref()
                .map_or(0, |w| w.value.steps.len()),
        }
    }

    /// `pipeline quick-demo (2 boxes)`.
    pub fn summary(&self) -> String {
        let n = self.units();
        let unit = match self.kind() {
            Kind::Agent | Kind::Pipeline => "box",
            Kind::Workflow => "step",
            Kind::Sandbox => "command",
        };
        let plural = match (n, unit) {
            (1, _) => unit.to_string(),
            (_, "box") => "boxes".into(),
            _ => format!("{unit}s"),
        };
        format!("{} {} ({n} {plural})", self.kind(), self.name())
    }

    /// The `observe` section (kept, not acted on yet).
    pub fn observe(&self) -> Option<&ObserveSpec> {
        self.raw.observe.as_ref()
    }

    /// Builds what the spec runs, resolving `auto` providers and copied
    /// environment variables from this process's environment. Nothing boots.
    pub fn runnable(&self) -> Result<Runnable, SpecError> {
        Ok(build::build(self, &host_env)?.0)
    }

    /// The effective configuration: defaults filled in, providers resolved
    /// (with the reason for `auto`'s choice), paths made absolute. Holds
    /// environment variable names, never API key values.
    pub fn resolved(&self) -> Result<Resolved, SpecError> {
        Ok(build::build(self, &host_env)?.1)
    }

    /// The variables the spec's providers read their keys from.
    fn key_vars(&self) -> Vec<&str> {
        let mut llms: Vec<&model::LlmSpec> = self.raw.llm.iter().collect();
        if let Some(agent) = &self.raw.agent {
            llms.extend(&agent.value.llm);
        }
        if let Some(pipeline) = &self.raw.pipeline {
            llms.extend(pipeline.value.boxes.iter().filter_map(|b| b.llm.as_ref()));
        }
        llms.iter()
            .filter_map(|l| l.api_key_env.as_deref())
            .collect()
    }

    /// An error at `at`.
    fn error(&self, at: (usize, usize), message: impl Into<String>) -> SpecError {
        SpecError::new(&self.file, at, message.into())
    }

    /// Where a spanned value was written. JSON values carry no location,
    /// so there we search the text for `needle` (as JSON) instead.
    fn at<T>(&self, sp: &Sp<T>, needle: &str) -> (usize, usize) {
        let line = sp.referenced.line() as usize;
        if line > 0 {
            return (line, sp.referenced.column() as usize);
        }
        self.find(&serde_json::Value::String(needle.into()).to_string())
    }

    /// Where a key of the spec is written: `key:` (YAML) or `"key"` (JSON),
    /// first occurrence at or after line `from`.
    fn key_at(&self, key: &str, from: usize) -> (usize, usize) {
        let needle = match self.format {
            Format::Json => format!("\"{key}\""),
            Format::Yaml => format!("{key}:"),
        };
        for (i, row) in self.text.lines().enumerate().skip(from.saturating_sub(1)) {
            let trimmed = row.trim_start().trim_start_matches("- ");
            if trimmed.starts_with(&needle)
                || (self.format == Format::Json && row.contains(&needle))
            {
                let col = row.find(&needle).unwrap_or(0);
                return (i + 1, row[..col].chars().count() + 1);
            }
        }
        (0, 0)
    }

    /// First occurrence of `needle` in the text.
    fn find(&self, needle: &str) -> (usize, usize) {
        for (i, row) in self.text.lines().enumerate() {
            if let Some(col) = row.find(needle) {
                return (i + 1, row[..col].chars().count() + 1);
            }
        }
        (0, 0)
    }

    /// A path from the spec, relative to its directory.
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

fn host_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
