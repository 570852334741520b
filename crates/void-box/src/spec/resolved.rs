//! The effective configuration of a spec, for `voidbox inspect`: what
//! would run after defaults, provider resolution and path resolution.
//! It names environment variables, never their secret values.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Kind, ObserveSpec};

/// The effective configuration of a spec.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// Always `v1`.
    pub api_version: String,
    /// What it runs.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// The spec file, absolute.
    pub file: String,
    /// The sandbox every box and step starts from.
    pub sandbox: ResolvedSandbox,
    /// `kind: agent`: the box.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<ResolvedBox>,
    /// `kind: pipeline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<ResolvedPipeline>,
    /// `kind: workflow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<ResolvedWorkflow>,
    /// `kind: sandbox`: the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<ResolvedCommand>,
    /// Observability settings, as given (not acted on yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observe: Option<ObserveSpec>,
}

impl Resolved {
    /// As YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// As pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// A sandbox's effective settings.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedSandbox {
    /// `auto`, `kvm` or `tcg` as written (`local` reads as `auto`).
    pub mode: String,
    /// Guest RAM in MiB.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Guest networking: its allow and deny rules; `null`: no network.
    pub network: Option<crate::net::Rules>,
    /// Guest ports published on the host's 127.0.0.1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::net::PortMap>,
    /// Guest environment. Values copied from the host show as
    /// `(from host)`, never the value.
    pub env: BTreeMap<String, String>,
    /// Secrets swapped at the network edge: where each comes from and
    /// which hosts get it, never the value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Kernel to boot, when not the cached image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initramfs to boot, when not the cached image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
    /// The OCI image commands run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Who commands run as, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Host directories shared in (host paths made absolute).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::sandbox::Mount>,
    /// Named volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::sandbox::VolumeMount>,
    /// The snapshot it starts from instead of booting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A provider after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedLlm {
    /// `anthropic`, `openai`, `ollama`, `openai-compatible` or `mock`.
    pub provider: String,
    /// What the spec asked for (`auto` included).
    pub requested: String,
    /// The model.
    pub model: String,
    /// The endpoint (none for the mock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable the key is read from (its name only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Why `auto` chose this provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Scripted turns of a mock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mock_turns: Option<usize>,
}

/// A box (agent, pipeline box or agent step) after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedBox {
    /// Box name.
    pub name: String,
    /// The task.
    pub prompt: String,
    /// `builtin` or `claude-code`.
    pub engine: String,
    /// The provider (none for a claude-code box without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<ResolvedLlm>,
    /// Skill labels, paths absolute.
    pub skills: Vec<String>,
    /// Guest RAM in MiB.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Guest networking, as in [`ResolvedSandbox::network`].
    pub network: Option<crate::net::Rules>,
    /// The OCI image its commands run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The snapshot its sandbox starts from instead of booting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Guest environment, as in [`ResolvedSandbox::env`].
    pub env: BTreeMap<String, String>,
    /// Deadline of the run, boot included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Model turns before the run fails.
    pub max_turns: u32,
    /// The schema the answer must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The guest file whose contents become the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

/// A pipeline after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedPipeline {
    /// `fail_fast` or `continue`.
    pub policy: String,
    /// Retries of a failed box.
    pub retries: u32,
    /// Deadline of each box's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_timeout_secs: Option<u64>,
    /// Box names per stage, in order (several: a fan-out).
    pub stages: Vec<Vec<String>>,
    /// The boxes, in declaration order.
    pub boxes: Vec<ResolvedBox>,
}

/// A workflow after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedWorkflow {
    /// Steps (VMs) at once.
    pub max_parallel: usize,
    /// The step whose output is the workflow's.
    pub output_step: String,
    /// The steps, in declaration order.
    pub steps: Vec<ResolvedStep>,
}

/// A workflow step after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedStep {
    /// Step name.
    pub name: String,
    /// Steps it waits for.
    pub depends_on: Vec<String>,
    /// Retries after a failure.
    pub retries: u32,
    /// Deadline of one attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Files handed to dependents (guest paths).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// A command step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<ResolvedCommand>,
    /// An agent step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<ResolvedBox>,
}

/// A command.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedCommand {
    /// Program in the guest.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Whose stdout becomes stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_from: Option<String>,
}
