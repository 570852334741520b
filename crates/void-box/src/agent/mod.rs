//! Agents: `VoidBox = Agent(Skills) + Isolation`.
//!
//! A [`VoidBox`] is a named agent: a prompt, declared skills, an LLM
//! provider and a sandbox configuration. [`VoidBox::run`] boots a fresh
//! sandbox, provisions exactly the declared skills, runs the agent to
//! completion and returns a [`RunResult`]. The built-in loop runs on the
//! host; only tool calls go into the VM, so API keys never do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), void_box::agent::AgentError> {
//! use void_box::agent::VoidBox;
//! use void_box::llm::{LlmProvider, MockScript};
//! use void_box::skill::Skill;
//!
//! let researcher = VoidBox::new("hn_researcher")
//!     .skill(Skill::inline("notes", "---\ndescription: how to take notes\n---\nUse bullet points."))
//!     .llm(LlmProvider::mock(MockScript::reply("AI agents are trending")))
//!     .memory_mb(1024)
//!     .prompt("Analyze top HN stories for AI engineering trends")
//!     .build()?;
//! let result = researcher.run(None).await?;
//! println!("{} ({} turns)", result.text, result.turns);
//! # Ok(()) }
//! ```

mod builtin;
mod claude_code;
mod events;
mod hooks;
mod output;
mod permissions;
mod result;
pub mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;
use tracing::Instrument;

pub use events::{AgentEvent, EventSink, OutputStream};
pub use hooks::{PostToolAction, PostToolHook, PreToolAction, PreToolHook, ToolCall};
pub use output::{extract_json, OutputSchema};
pub use permissions::{AskHook, Decision, PermissionPolicy, ToolRequest, Verdict};
pub use result::{AgentError, RunResult, ToolCallRecord};
pub use tools::ToolOutcome;

use crate::llm::LlmProvider;
use crate::sandbox::DEFAULT_ALLOWED_COMMANDS;
use crate::skill::provision::{provision, resolve_docs};
use crate::skill::{Skill, SkillKind};
use crate::vm::image::GuestImage;
use crate::vm::Accel;
use crate::{Sandbox, SandboxBuilder};

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
struct GuestFile {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// Configures a [`VoidBox`]; see [`VoidBox::new`].
#[must_use]
pub struct VoidBoxBuilder {
    config: Config,
    errors: Vec<String>,
}

#[derive(Clone)]
struct Config {
    name: String,
    prompt: String,
    skills: Vec<Skill>,
    llm: Option<LlmProvider>,
    memory_mb: u32,
    vcpus: u32,
    env: Vec<(String, String)>,
    network: bool,
    max_turns: u32,
    tool_timeout: Duration,
    max_tool_output: usize,
    output_schema: Option<OutputSchema>,
    output_retries: u32,
    timeout: Option<Duration>,
    permissions: PermissionPolicy,
    ask_hook: Option<AskHook>,
    pre_hooks: Vec<PreToolHook>,
    post_hooks: Vec<PostToolHook>,
    files: Vec<GuestFile>,
    claude_code_command: String,
    output_file: Option<String>,
    image: Option<GuestImage>,
    accel: Option<Accel>,
    boot_timeout: Duration,
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

    /// Guest RAM in MiB (default 512).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.config.memory_mb = mb;
        self
    }

    /// Guest CPUs (default 1).
    pub fn vcpus(mut self, n: u32) -> Self {
        self.config.vcpus = n;
        self
    }

    /// An environment variable for every command in the guest. Never put
    /// secrets here: they would be visible to the guest.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.config.env.push((key.into(), value.into()));
        self
    }

    /// Guest networking. Sandboxes have no network device yet, so `true`
    /// is refused at [`build`](Self::build) rather than silently ignored.
    pub fn network(mut self, enabled: bool) -> Self {
        self.config.network = enabled;
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
    /// [`RunResult::file`] and handed to the next stage.
    pub fn output_file(mut self, path: &str) -> Self {
        self.config.output_file = Some(tools::guest_path(path));
        self
    }

    /// The claude-code program in the guest (default `claude`).
    pub fn claude_code_command(mut self, command: &str) -> Self {
        self.config.claude_code_command = command.into();
        self
    }

    /// Boots this guest image instead of the cached one.
    pub fn image(mut self, image: GuestImage) -> Self {
        self.config.image = Some(image);
        self
    }

    /// Forces an accelerator (default: `VOIDBOX_ACCEL`, else auto-detect).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.config.accel = Some(accel);
        self
    }

    /// How long booting may take (default 30 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.config.boot_timeout = timeout;
        self
    }

    /// Checks the configuration.
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
        if config.network {
            return Err(fail(
                "network(true) is not supported yet: sandboxes have no network device".into(),
            ));
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

struct Inner {
    config: Config,
    engine: Engine,
}

/// Samples the guest's CPU and memory every second while a stage runs,
/// when metrics are exported. Never returns; the stage's end drops it.
async fn sample_guest(sandbox: &Sandbox, box_name: &str) -> std::convert::Infallible {
    const USER_HZ: f64 = 100.0;
    let mut previous: Option<crate::TelemetrySnapshot> = None;
    loop {
        if crate::observe::enabled() {
            if let Ok(now) = sandbox.telemetry().await {
                if let Some(before) = &previous {
                    let busy = (now.cpu_user_ticks + now.cpu_system_ticks)
                        .saturating_sub(before.cpu_user_ticks + before.cpu_system_ticks);
                    let elapsed_s = now.uptime_ms.saturating_sub(before.uptime_ms) as f64 / 1000.0;
                    let capacity = elapsed_s * USER_HZ * f64::from(now.cpu_count.max(1));
                    if capacity > 0.0 {
                        crate::observe::metrics::guest_sample(
                            box_name,
                            (busy as f64 / capacity).min(1.0),
                            now.mem_total_bytes.saturating_sub(now.mem_available_bytes),
                        );
                    }
                }
                previous = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The guest's allowlist matches program basenames.
fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// A named agent with its skills, provider and sandbox configuration.
/// Cheap to clone; every run gets a fresh sandbox.
#[derive(Clone)]
pub struct VoidBox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VoidBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("VoidBox")
            .field("name", &c.name)
            .field("engine", &self.inner.engine)
            .field("llm", &c.llm)
            .field("skills", &c.skills)
            .finish_non_exhaustive()
    }
}

impl VoidBox {
    /// Starts configuring a box called `name`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: &str) -> VoidBoxBuilder {
        VoidBoxBuilder {
            config: Config {
                name: name.into(),
                prompt: String::new(),
                skills: Vec::new(),
                llm: None,
                memory_mb: 512,
                vcpus: 1,
                env: Vec::new(),
                network: false,
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
                image: None,
                accel: None,
                boot_timeout: Duration::from_secs(30),
            },
            errors: Vec::new(),
        }
    }

    /// The box's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The reasoning engine.
    pub fn engine(&self) -> Engine {
        self.inner.engine
    }

    /// The run's deadline, if one is set.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.config.timeout
    }

    /// The LLM provider, if one is set.
    pub fn llm(&self) -> Option<&LlmProvider> {
        self.inner.config.llm.as_ref()
    }

    /// The sandbox this box boots: its resources, environment, and an
    /// allowlist of the base tools plus its CLI and MCP skills.
    pub fn sandbox_builder(&self) -> SandboxBuilder {
        let c = &self.inner.config;
        let mut builder = Sandbox::builder()
            .memory_mb(c.memory_mb)
            .vcpus(c.vcpus)
            .boot_timeout(c.boot_timeout)
            .allowed_commands(DEFAULT_ALLOWED_COMMANDS.iter().copied());
        for (k, v) in &c.env {
            builder = builder.env(k, v);
        }
        for skill in &c.skills {
            match &skill.kind {
                SkillKind::Cli(program) => builder = builder.allow_command(basename(program)),
                SkillKind::Mcp(server) => {
                    builder = builder.allow_command(basename(&server.command))
                }
                _ => {}
            }
        }
        if self.inner.engine == Engine::ClaudeCode {
            builder = builder.allow_command(basename(&c.claude_code_command));
        }
        if let Some(image) = &c.image {
            builder = builder.image(image.clone());
        }
        if let Some(accel) = c.accel {
            builder = builder.accel(accel);
        }
        builder
    }

    /// Runs the agent in a fresh sandbox. `input` is the previous stage's output.
    pub async fn run(&self, input: Option<&str>) -> Result<RunResult, AgentError> {
        self.run_with(input, EventSink::none()).await
    }

    /// Like [`run`](Self::run), sending events to `events`.
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<RunResult, AgentError> {
        let name = self.name().to_string();
        let started = Instant::now();
        let span = tracing::info_span!(
            "stage",
            otel.name = %format!("stage {name}"),
            voidbox.r#box = %name,
            voidbox.engine = ?self.inner.engine,
            gen_ai.request.model = self.llm().map(|l| l.model()).unwrap_or(""),
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            voidbox.cost_usd = tracing::field::Empty,
            voidbox.turns = tracing::field::Empty,
            voidbox.success = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        events.emit(AgentEvent::StageStarted {
            box_name: name.clone(),
        });
        let run = self.boot_and_run(input, &events, started);
        let run = async {
            match self.inner.config.timeout {
                None => run.await,
                // Dropping the future drops the sandbox, which kills the VM.
                Some(limit) => {
                    tokio::time::timeout(limit, run)
                        .await
                        .unwrap_or(Err(AgentError::Timeout {
                            box_name: name.clone(),
                            after: limit,
                        }))
                }
            }
        };
        let result = run.instrument(span.clone()).await;
        span.record("voidbox.success", result.is_ok());
        match &result {
            Ok(r) => {
                span.record("gen_ai.usage.input_tokens", r.usage.input_tokens as i64);
                span.record("gen_ai.usage.output_tokens", r.usage.output_tokens as i64);
                span.record("voidbox.turns", i64::from(r.turns));
                if let Some(cost) = r.cost_usd {
                    span.record("voidbox.cost_usd", cost);
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        crate::observe::metrics::stage_finished(&name, result.is_ok(), started.elapsed());
        events.emit(AgentEvent::StageFinished {
            box_name: name,
            success: result.is_ok(),
            duration: started.elapsed(),
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        result
    }

    async fn boot_and_run(
        &self,
        input: Option<&str>,
        events: &EventSink,
        started: Instant,
    ) -> Result<RunResult, AgentError> {
        let name = self.name().to_string();
        // Everything that can fail on the host fails before a VM boots.
        let docs = resolve_docs(&self.inner.config.skills)
            .await
            .map_err(|source| AgentError::Skill {
                box_name: name.clone(),
                source,
            })?;
        if let Some(llm) = &self.inner.config.llm {
            if self.inner.engine == Engine::Builtin {
                llm.connect().map_err(|source| AgentError::Llm {
                    box_name: name.clone(),
                    source,
                })?;
            }
        }
        let sandbox_err = |source| AgentError::Sandbox {
            box_name: name.clone(),
            source,
        };
        let sandbox = self.sandbox_builder().build().await.map_err(sandbox_err)?;
        events.emit(AgentEvent::SandboxReady {
            box_name: name.clone(),
            boot: sandbox.boot_time(),
        });
        let result = tokio::select! {
            result = self.run_prepared(&sandbox, input, events, docs) => result,
            never = sample_guest(&sandbox, &name) => match never {},
        };
        // The result stands even if the VM does not stop cleanly; drop kills it.
        if let Err(e) = sandbox.shutdown().await {
            tracing::debug!(box_name = %name, "sandbox shutdown: {e}");
        }
        result.map(|mut r| {
            r.duration = started.elapsed();
            r
        })
    }

    /// Runs the agent in a sandbox the caller owns (it stays up afterwards).
    /// The sandbox must allow the box's CLI and MCP commands; see
    /// [`sandbox_builder`](Self::sandbox_builder).
    pub async fn run_in(
        &self,
        sandbox: &Sandbox,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<RunResult, AgentError> {
        let started = Instant::now();
        let docs = resolve_docs(&self.inner.config.skills)
            .await
            .map_err(|source| AgentError::Skill {
                box_name: self.name().into(),
                source,
            })?;
        let mut result = self.run_prepared(sandbox, input, &events, docs).await?;
        result.duration = started.elapsed();
        Ok(result)
    }

    async fn run_prepared(
        &self,
        sandbox: &Sandbox,
        input: Option<&str>,
        events: &EventSink,
        docs: Vec<crate::skill::SkillDoc>,
    ) -> Result<RunResult, AgentError> {
        let c = &self.inner.config;
        let sandbox_err = |source| AgentError::Sandbox {
            box_name: c.name.clone(),
            source,
        };
        for file in &c.files {
            if let Some((parent, _)) = file.path.rsplit_once('/') {
                if !parent.is_empty() {
                    sandbox.mkdir(parent).await.map_err(sandbox_err)?;
                }
            }
            sandbox
                .write_file_mode(&file.path, &file.data, file.mode)
                .await
                .map_err(sandbox_err)?;
        }
        let provisioned = provision(sandbox, &c.skills, docs, c.tool_timeout)
            .await
            .map_err(|source| AgentError::Skill {
                box_name: c.name.clone(),
                source,
            })?;
        let mut result = match self.inner.engine {
            Engine::Builtin => builtin::run(self, sandbox, &provisioned, input, events).await,
            Engine::ClaudeCode => {
                claude_code::run(self, sandbox, &provisioned, input, events).await
            }
        };
        provisioned.close().await;
        if let (Ok(r), Some(path)) = (&mut result, &c.output_file) {
            match sandbox.read_file(path).await {
                Ok(data) => r.file = Some(String::from_utf8_lossy(&data).into_owned()),
                Err(e) => {
                    return Err(AgentError::Engine {
                        box_name: c.name.clone(),
                        engine: "output_file",
                        message: format!("the declared output file {path} could not be read: {e}"),
                    })
                }
            }
        }
        result
    }

    /// The first user message: the prompt, then the previous stage's output.
    fn task(&self, input: Option<&str>) -> String {
        let prompt = &self.inner.config.prompt;
        match input {
            Some(input) if !input.is_empty() => {
                format!("{prompt}\n\n## Input from the previous stage\n\n{input}")
            }
            _ => prompt.clone(),
        }
    }
}
