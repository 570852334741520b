//! The spec file as written: serde structs mirroring the YAML/JSON format.
//! Every struct denies unknown fields so a typo is an error, never a
//! silently ignored setting. Names and values that later checks complain
//! about are `Spanned`, so those errors point at them too.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::llm::MockTurn;

/// A value and where it was written (unknown, line 0, for JSON).
pub(crate) type Sp<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpec {
    #[serde(default)]
    pub api_version: Option<Sp<String>>,
    pub kind: Sp<super::Kind>,
    pub name: Sp<String>,
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
    #[serde(default)]
    pub llm: Option<LlmSpec>,
    #[serde(default)]
    pub agent: Option<Sp<AgentSpec>>,
    #[serde(default)]
    pub pipeline: Option<Sp<PipelineSpec>>,
    #[serde(default)]
    pub workflow: Option<Sp<WorkflowSpec>>,
    #[serde(default)]
    pub observe: Option<ObserveSpec>,
    #[serde(default)]
    pub run: Option<Sp<RunSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Auto,
    Kvm,
    Tcg,
    /// Seed value: a simulated sandbox. Refused: every stage runs in a VM.
    Mock,
    /// Seed value: same as `auto`.
    Local,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxSpec {
    #[serde(default)]
    pub mode: Option<Sp<Mode>>,
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub network: Option<Sp<NetworkSpec>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub kernel: Option<Sp<String>>,
    #[serde(default)]
    pub initramfs: Option<Sp<String>>,
    #[serde(default)]
    pub image: Option<Sp<String>>,
    #[serde(default)]
    pub overlay_mb: Option<u32>,
    #[serde(default)]
    pub user: Option<Sp<String>>,
    #[serde(default)]
    pub mounts: Vec<Sp<MountSpec>>,
    #[serde(default)]
    pub volumes: Vec<Sp<VolumeSpec>>,
    #[serde(default)]
    pub ports: Vec<crate::net::PortMap>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Sp<crate::skill::SecretSource>>,
    // Seed fields we cannot honour yet: parsed so the error can name them.
    #[serde(default)]
    pub guest_image: Option<Sp<Value>>,
    #[serde(default)]
    pub snapshot: Option<Sp<Value>>,
}

/// `network: true | false | {allow: [...], deny: [...], max_connections: N}`,
/// its rules parsed as it is read, so a bad one points at its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "NetworkSpecRaw")]
pub(crate) struct NetworkSpec(pub crate::net::NetworkPolicy);

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum NetworkSpecRaw {
    On(bool),
    Rules(NetworkRulesSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkRulesSpec {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    max_connections: Option<u32>,
}

impl TryFrom<NetworkSpecRaw> for NetworkSpec {
    type Error = String;

    fn try_from(raw: NetworkSpecRaw) -> Result<Self, String> {
        use crate::net::{NetworkLimits, NetworkPolicy};
        match raw {
            NetworkSpecRaw::On(on) => Ok(NetworkSpec(NetworkPolicy::from(on))),
            NetworkSpecRaw::Rules(r) => {
                let defaults = NetworkLimits::default();
                let limits = NetworkLimits {
                    max_connections: r.max_connections.unwrap_or(defaults.max_connections),
                    ..defaults
                };
                let policy = NetworkPolicy::rules(&r.allow, &r.deny)
                    .map_err(|e| e.to_string())?
                    .with_limits(limits);
                policy.validate()?;
                Ok(NetworkSpec(policy))
            }
        }
    }
}

/// A host directory shared into the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MountSpec {
    pub host: String,
    pub guest: String,
    #[serde(default)]
    pub mode: Option<crate::sandbox::MountMode>,
}

/// A named volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VolumeSpec {
    pub name: String,
    pub guest: String,
    #[serde(default)]
    pub readonly: bool,
}

/// A pipeline box's changes to the spec's sandbox.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoxSandbox {
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub network: Option<Sp<NetworkSpec>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub image: Option<Sp<String>>,
    #[serde(default)]
    pub user: Option<Sp<String>>,
    #[serde(default)]
    pub mounts: Vec<Sp<MountSpec>>,
    #[serde(default)]
    pub volumes: Vec<Sp<VolumeSpec>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Sp<crate::skill::SecretSource>>,
    #[serde(default)]
    pub snapshot: Option<Sp<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Provider {
    Auto,
    #[serde(alias = "claude")]
    Anthropic,
    #[serde(alias = "open-ai")]
    Openai,
    Ollama,
    #[serde(alias = "custom", alias = "openai_compatible")]
    OpenaiCompatible,
    Mock,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LlmSpec {
    #[serde(default)]
    pub provider: Option<Sp<Provider>>,
    #[serde(default)]
    pub model: Option<Sp<String>>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub mock: Option<Sp<MockSpec>>,
}

/// Scripted turns, inline or from a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MockSpec {
    #[serde(default)]
    pub turns: Option<Vec<MockTurn>>,
    #[serde(default)]
    pub file: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentSpec {
    pub prompt: Sp<String>,
    #[serde(default)]
    pub skills: Vec<Sp<SkillEntry>>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub output_schema: Option<Sp<Value>>,
    #[serde(default)]
    pub max_turns: Option<Sp<u32>>,
    #[serde(default)]
    pub output_file: Option<String>,
    #[serde(default)]
    pub llm: Option<LlmSpec>,
}

/// A skill: a `prefix:value` string or an object.
#[derive(Debug, Clone)]
pub(crate) enum SkillEntry {
    Text(String),
    Object(Box<SkillObject>),
}

/// The object forms: `{name, content}` (inline), `{mcp, command, args}`,
/// and the seeds' OCI `{image, mount, readonly}`; the first two may add
/// `network` and `secrets`, as a SKILL.md's front matter does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SkillObject {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mcp: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub mount: Option<String>,
    #[serde(default)]
    pub readonly: Option<bool>,
    /// Network allow rules the skill needs (as a SKILL.md's `network`).
    #[serde(default)]
    pub network: Vec<String>,
    /// Secrets the skill needs (as a SKILL.md's `secrets`).
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::skill::SecretSource>,
}

impl<'de> Deserialize<'de> for SkillEntry {
    // Hand-written rather than `untagged`, which would lose the field-level
    // error ("unknown field `contnt`") and its location.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = SkillEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a skill: `file:PATH`, `agent:NAME`, `cli:NAME`, `mcp:NAME`, `remote:URL#sha256=HEX`, {name, content} or {mcp, command, args}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SkillEntry, E> {
                Ok(SkillEntry::Text(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<SkillEntry, A::Error> {
                SkillObject::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|o| SkillEntry::Object(Box::new(o)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Policy {
    FailFast,
    Continue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineSpec {
    pub boxes: Vec<BoxSpec>,
    #[serde(default)]
    pub stages: Vec<Sp<StageSpec>>,
    #[serde(default)]
    pub policy: Option<Policy>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub stage_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoxSpec {
    pub name: Sp<String>,
    pub prompt: Sp<String>,
    #[serde(default)]
    pub skills: Vec<Sp<SkillEntry>>,
    #[serde(default)]
    pub llm: Option<LlmSpec>,
    #[serde(default)]
    pub sandbox: Option<BoxSandbox>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub output_schema: Option<Sp<Value>>,
    #[serde(default)]
    pub max_turns: Option<Sp<u32>>,
    #[serde(default)]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StageType {
    Box,
    FanOut,
}

/// A stage. One struct rather than an internally tagged enum, which would
/// lose the locations of errors inside it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageSpec {
    #[serde(rename = "type")]
    pub kind: Sp<StageType>,
    #[serde(default)]
    pub name: Option<Sp<String>>,
    #[serde(default)]
    pub boxes: Option<Vec<Sp<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowSpec {
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub output_step: Option<Sp<String>>,
    #[serde(default)]
    pub max_parallel: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepSpec {
    pub name: Sp<String>,
    #[serde(default)]
    pub run: Option<RunSpec>,
    #[serde(default)]
    pub agent: Option<AgentSpec>,
    #[serde(default)]
    pub depends_on: Vec<Sp<String>>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub outputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunSpec {
    /// Required for workflow steps; a sandbox spec with an image may leave
    /// it out to run the image's `Entrypoint` and `Cmd`.
    #[serde(default)]
    pub program: Option<Sp<String>>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub stdin_from: Option<Sp<String>>,
}

/// Observability settings: kept and shown by `inspect`, not acted on yet.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSpec {
    /// Export traces.
    #[serde(default)]
    pub traces: bool,
    /// Export metrics.
    #[serde(default)]
    pub metrics: bool,
    /// Export logs.
    #[serde(default)]
    pub logs: bool,
    /// OTLP collector endpoint.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Service name in exported telemetry.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Seed field: telemetry buffer size.
    #[serde(default)]
    pub telemetry_buffer_size: Option<usize>,
}
