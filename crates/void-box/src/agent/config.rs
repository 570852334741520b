//! A box's configuration and its builder: the prompt, skills, provider,
//! loop limits, permissions and hooks, and the one [`SandboxConfig`] its
//! stages boot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::hooks::{PostToolAction, PostToolHook, PreToolAction, PreToolHook, ToolCall};
use super::output::OutputSchema;
use super::permissions::{AskHook, Decision, PermissionPolicy, ToolRequest};
use super::tools::{self, ToolOutcome};
use super::{AgentError, Inner, VoidBox};
use crate::llm::LlmProvider;
use crate::sandbox::{Accel, GuestImage, MountMode, SandboxConfig};
use crate::skill::{Skill, SkillKind};

/// The reasoning engine of a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Our agent loop on the host; tools run in the sandbox.
    Builtin,
    /// The claude-code CLI inside the guest (`--output-format stream-json`).
    ClaudeCode,
}

impl Engine {
    fn parse(name: &str) -> Option<Engine> {
        match name {
            "builtin" => Some(Engine::Builtin),
            "claude-code" | "claude_code" => Some(Engine::ClaudeCode),
            _ => None,
        }
    }
}

/// A file placed in the guest before the agent starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GuestFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

#[derive(Clone)]
pub(super) struct Config {
    pub name: String,
    pub prompt: String,
    pub skills: Vec<Skill>,
    pub llm: Option<LlmProvider>,
    pub sandbox: SandboxConfig,
    pub max_turns: u32,
    pub tool_timeout: Duration,
    pub max_tool_output: usize,
    pub output_schema: Option<OutputSchema>,
    pub output_retries: u32,
    pub timeout: Option<Duration>,
    pub permissions: PermissionPolicy,
    pub ask_hook: Option<AskHook>,
    pub pre_hooks: Vec<PreToolHook>,
    pub post_hooks: Vec<PostToolHook>,
    pub files: Vec<GuestFile>,
    pub claude_code_command: String,
    pub output_file: Option<String>,
    pub secret_env: Option<BTreeSet<String>>,
    /// Standing instructions added to the system prompt.
    pub instructions: Option<String>,
}

impl Config {
    pub(super) fn new(name: &str) -> Config {
        Config {
            name: name.into(),
            prompt: String::new(),
            skills: Vec::new(),
            llm: None,
            sandbox: SandboxConfig::default(),
            max_turns: 25,
            tool_timeout: Duration::from_secs(120),
            max_tool_output: 30_000,
            output_schema: None,
            output_retries: 2,
            timeout: None,
            permissions: PermissionPolicy::default(),
            ask_hook: None,
            pre_hooks: Vec::new(),
            post_hooks: Vec::new(),
            files: Vec::new(),
            claude_code_command: "claude".into(),
            output_file: None,
            secret_env: None,
            instructions: None,
        }
    }

    /// The sandbox a run boots: the box's sandbox configuration, with its
    /// CLI and MCP skills' programs and the claude-code command added to
    /// the allowlist.
    pub(super) fn stage_sandbox(&self, engine: Engine) -> SandboxConfig {
        let mut sandbox = self.sandbox.clone();
        for skill in &self.skills {
            match &skill.kind {
                SkillKind::Cli(program) => sandbox = sandbox.allow_command(program),
                SkillKind::Mcp(server) => sandbox = sandbox.allow_command(&server.command),
                SkillKind::Image { reference, mount } => {
                    sandbox = sandbox.image_mount(reference.clone(), mount.clone())
                }
                _ => {}
            }
        }
        if engine == Engine::ClaudeCode {
            sandbox = sandbox.allow_command(&self.claude_code_command);
        }
        sandbox
    }
}

/// Configures a [`VoidBox`]; see [`VoidBox::new`].
#[must_use]
pub struct VoidBoxBuilder {
    pub(super) config: Config,
    pub(super) errors: Vec<String>,
}

impl VoidBoxBuilder {
    /// The task. The previous stage's output, if any, is appended at run time.
    pub fn prompt(mut self, prompt: &str) -> Self {
        self.config.prompt = prompt.into();
        self
    }

    /// Declares a skill.
    pub fn skill(mut self, skill: Skill) -> Self {
        self.config.skills.push(skill);
        self
    }

    /// The LLM provider of this box.
    pub fn llm(mut self, llm: LlmProvider) -> Self {
        self.config.llm = Some(llm);
        self
    }

    /// The whole sandbox configuration of this box's stages (replaces what
    /// the sandbox setters below set so far).
    pub fn sandbox(mut self, sandbox: SandboxConfig) -> Self {
        self.config.sandbox = sandbox;
        self
    }

    /// Guest RAM in MiB (default 512).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.config.sandbox.memory_mb = mb;
        self
    }

    /// Guest CPUs (default 1).
    pub fn vcpus(mut self, n: u32) -> Self {
        self.config.sandbox.vcpus = n;
        self
    }

    /// An environment variable for every command in the guest. Never put
    /// secrets here: they would be visible to the guest.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.config.sandbox = self.config.sandbox.env(key, value);
        self
    }

    /// Guest networking: `true` is the public internet only; a
    /// [`NetworkPolicy`](crate::net::NetworkPolicy) says exactly what the
    /// box's commands may reach.
    pub fn network(mut self, policy: impl Into<crate::net::NetworkPolicy>) -> Self {
        self.config.sandbox.network = policy.into();
        self
    }

    /// Boots this kernel and initramfs instead of the cached guest image.
    pub fn guest_image(mut self, image: GuestImage) -> Self {
        self.config.sandbox.boot = Some(image);
        self
    }

    /// Forces an accelerator (default: `VOIDBOX_ACCEL`, else auto-detect).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.config.sandbox.accel = Some(accel);
        self
    }

    /// How long booting may take (default 30 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.config.sandbox.boot_timeout = timeout;
        self
    }

    /// Runs the agent's tools in this OCI image (`python:3.12-slim`).
    pub fn image(mut self, reference: &str) -> Self {
        self.config.sandbox.image = Some(reference.into());
        self
    }

    /// Shares a host directory at `guest` (read-only unless `mode` is `Rw`).
    pub fn mount(
        mut self,
        host: impl Into<std::path::PathBuf>,
        guest: &str,
        mode: MountMode,
    ) -> Self {
        self.config.sandbox = self.config.sandbox.mount(host, guest, mode);
        self
    }

    /// Mounts the named volume at `guest`.
    pub fn volume(mut self, name: &str, guest: &str) -> Self {
        self.config.sandbox = self.config.sandbox.volume(name, guest);
        self
    }

    /// Model turns before the run fails (default 25).
    pub fn max_turns(mut self, n: u32) -> Self {
        self.config.max_turns = n;
        self
    }

    /// Deadline of each tool call (default 120 s).
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.config.tool_timeout = timeout;
        self
    }

    /// Tool results longer than this many bytes are cut, with a notice
    /// (default 30 000).
    pub fn max_tool_output(mut self, bytes: usize) -> Self {
        self.config.max_tool_output = bytes.max(256);
        self
    }

    /// Makes the final answer a JSON value validated against `schema`.
    pub fn output_schema(mut self, schema: Value) -> Self {
        match OutputSchema::compile(schema) {
            Ok(s) => self.config.output_schema = Some(s),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// How many invalid answers go back to the model before the run fails
    /// (default 2).
    pub fn output_retries(mut self, n: u32) -> Self {
        self.config.output_retries = n;
        self
    }

    /// Deadline of the whole run, boot included (default none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Adds an `allow` permission rule: `tool` or `tool(argument-glob)`.
    pub fn allow_tool(mut self, rule: &str) -> Self {
        self.edit_policy(|p| p.allow(rule));
        self
    }

    /// Adds a `deny` permission rule (deny wins over allow and ask).
    pub fn deny_tool(mut self, rule: &str) -> Self {
        self.edit_policy(|p| p.deny(rule));
        self
    }

    /// Adds an `ask` permission rule, answered by [`on_ask`](Self::on_ask).
    pub fn ask_tool(mut self, rule: &str) -> Self {
        self.edit_policy(|p| p.ask(rule));
        self
    }

    /// What calls that match no rule get (default allow: the VM is the boundary).
    pub fn default_permission(mut self, decision: Decision) -> Self {
        self.config.permissions.default = decision;
        self
    }

    /// What `ask` calls get when no hook answers (default deny).
    pub fn unattended(mut self, decision: Decision) -> Self {
        self.config.permissions.unattended = decision;
        self
    }

    fn edit_policy(
        &mut self,
        f: impl FnOnce(PermissionPolicy) -> Result<PermissionPolicy, String>,
    ) {
        match f(self.config.permissions.clone()) {
            Ok(p) => self.config.permissions = p,
            Err(e) => self.errors.push(e),
        }
    }

    /// Answers `ask` rules (human in the loop).
    pub fn on_ask<F>(mut self, hook: F) -> Self
    where
        F: Fn(ToolRequest) -> BoxFuture<'static, Decision> + Send + Sync + 'static,
    {
        self.config.ask_hook = Some(Arc::new(hook));
        self
    }

    /// Runs before every tool call; may block or rewrite it.
    pub fn pre_tool<F>(mut self, hook: F) -> Self
    where
        F: Fn(&ToolCall<'_>) -> PreToolAction + Send + Sync + 'static,
    {
        self.config.pre_hooks.push(Arc::new(hook));
        self
    }

    /// Runs after every tool call; may replace its result.
    pub fn post_tool<F>(mut self, hook: F) -> Self
    where
        F: Fn(&ToolCall<'_>, &ToolOutcome) -> PostToolAction + Send + Sync + 'static,
    {
        self.config.post_hooks.push(Arc::new(hook));
        self
    }

    /// Places a file in the guest (under `/workspace` or `/tmp`) before the
    /// agent starts.
    pub fn guest_file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.config.files.push(GuestFile {
            path: path.into(),
            data: data.into(),
            mode,
        });
        self
    }

    /// A guest file (relative paths are under `/workspace`) whose contents
    /// are the box's output: read before the VM stops, returned as
    /// [`RunResult::file`](super::RunResult::file) and handed to the next stage.
    /// One over [`MAX_OUTPUT_FILE`](super::MAX_OUTPUT_FILE) fails the run.
    pub fn output_file(mut self, path: &str) -> Self {
        self.config.output_file = Some(tools::guest_path(path));
        self
    }

    /// Only these host variables may be read for the secrets its skills
    /// declare (a spec from elsewhere gets `voidbox run --pass-env`'s
    /// list); without this call, any may.
    pub fn secret_env<I, S>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.secret_env = Some(vars.into_iter().map(Into::into).collect());
        self
    }

    /// The claude-code program in the guest (default `claude`).
    pub fn claude_code_command(mut self, command: &str) -> Self {
        self.config.claude_code_command = command.into();
        self
    }

    /// Checks the configuration, the sandbox's included.
    pub fn build(self) -> Result<VoidBox, AgentError> {
        let config = self.config;
        let fail = |message: String| AgentError::Config {
            box_name: config.name.clone(),
            message,
        };
        if let Some(e) = self.errors.into_iter().next() {
            return Err(fail(e));
        }
        if config.name.is_empty() {
            return Err(fail("a box needs a name".into()));
        }
        let mut engine = Engine::Builtin;
        for skill in &config.skills {
            if let SkillKind::Agent(name) = &skill.kind {
                engine = Engine::parse(name).ok_or_else(|| {
                    fail(format!(
                        "unknown agent engine `{name}`; use `builtin` or `claude-code`"
                    ))
                })?;
            }
        }
        config
            .stage_sandbox(engine)
            .validate()
            .map_err(|e| fail(e.to_string()))?;
        if engine == Engine::Builtin && config.llm.is_none() {
            return Err(fail("no LLM provider: call .llm(..)".into()));
        }
        if config.max_turns == 0 {
            return Err(fail("max_turns must be at least 1".into()));
        }
        Ok(VoidBox {
            inner: Arc::new(Inner { config, engine }),
        })
    }
}
