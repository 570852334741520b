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
mod config;
mod hooks;
mod output;
mod permissions;
mod result;
mod run;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

pub use config::{Engine, VoidBoxBuilder};
pub use hooks::{PostToolAction, PostToolHook, PreToolAction, PreToolHook, ToolCall};
pub use output::{extract_json, OutputSchema};
pub use permissions::{AskHook, Decision, PermissionPolicy, ToolRequest, Verdict};
pub use result::{AgentError, RunResult, ToolCallRecord};
pub use run::MAX_OUTPUT_FILE;
pub use tools::ToolOutcome;

use crate::llm::LlmProvider;
use crate::sandbox::SandboxConfig;
use config::Config;

struct Inner {
    config: Config,
    engine: Engine,
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
            config: Config::new(name),
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

    /// Its permission policy.
    pub fn permissions(&self) -> &PermissionPolicy {
        &self.inner.config.permissions
    }

    /// The same box whose `ask` rules are answered by `hook` (a human in
    /// the loop).
    pub fn with_ask_hook(&self, hook: AskHook) -> VoidBox {
        self.changed(|c| c.ask_hook = Some(hook))
    }

    /// The same box with `text` added to its system prompt (standing
    /// instructions for every turn).
    pub fn with_instructions(&self, text: &str) -> VoidBox {
        let text = text.to_string();
        self.changed(|c| c.instructions = Some(text))
    }

    /// The same box under `policy`.
    pub fn with_permissions(&self, policy: PermissionPolicy) -> VoidBox {
        self.changed(|c| c.permissions = policy)
    }

    fn changed(&self, change: impl FnOnce(&mut Config)) -> VoidBox {
        let mut config = self.inner.config.clone();
        change(&mut config);
        VoidBox {
            inner: Arc::new(Inner {
                config,
                engine: self.inner.engine,
            }),
        }
    }

    /// The sandbox each run boots: the box's sandbox configuration, with
    /// its CLI and MCP skills' programs (and the claude-code command) on
    /// the allowlist.
    pub fn sandbox_config(&self) -> SandboxConfig {
        self.inner.config.stage_sandbox(self.inner.engine)
    }
}
