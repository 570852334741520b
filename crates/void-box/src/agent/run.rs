//! Running a box: in a fresh sandbox from a provider (with its deadline,
//! span, metrics and stage events), or in a sandbox the caller owns.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{builtin, claude_code, AgentError, Engine, RunResult, VoidBox};
use crate::event::{EventSink, RunEvent};
use crate::sandbox::{SandboxConfig, SandboxProvider, VmProvider};
use crate::skill::provision::{provision, resolve_docs};
use crate::skill::SkillDoc;
use crate::Sandbox;

/// The largest output file a box may return: it becomes a result and the
/// next stage's input, so it is held whole.
pub const MAX_OUTPUT_FILE: u64 = 16 << 20;

impl VoidBox {
    /// Runs the agent in a fresh micro-VM. `input` is the previous stage's output.
    pub async fn run(&self, input: Option<&str>) -> Result<RunResult, AgentError> {
        self.run_on(&VmProvider, input, EventSink::none()).await
    }

    /// Like [`run`](Self::run), sending events to `events`.
    pub async fn run_with(
        &self,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<RunResult, AgentError> {
        self.run_on(&VmProvider, input, events).await
    }

    /// Runs the agent in a fresh sandbox from `provider`, sending events to
    /// `events`. Dropping the future kills the sandbox.
    pub async fn run_on(
        &self,
        provider: &dyn SandboxProvider,
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
        events.emit(RunEvent::StageStarted {
            box_name: name.clone(),
        });
        let run = self.boot_and_run(provider, input, &events, started);
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
        events.emit(RunEvent::StageFinished {
            box_name: name,
            success: result.is_ok(),
            duration: started.elapsed(),
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        result
    }

    async fn boot_and_run(
        &self,
        provider: &dyn SandboxProvider,
        input: Option<&str>,
        events: &EventSink,
        started: Instant,
    ) -> Result<RunResult, AgentError> {
        let name = self.name();
        // Everything that can fail on the host fails before a VM boots.
        let docs = self.resolve_docs().await?;
        if let Some(llm) = &self.inner.config.llm {
            if self.inner.engine == Engine::Builtin {
                llm.connect().map_err(|source| AgentError::Llm {
                    box_name: name.to_string(),
                    source,
                })?;
            }
        }
        let mut config = self.config_with_skills(&docs)?;
        if self.inner.engine == Engine::ClaudeCode {
            config = self.claude_code_route(config)?;
        }
        let result =
            crate::stage::in_fresh_sandbox(provider, &config, name, events, async |sandbox| {
                tokio::select! {
                    result = self.run_prepared(sandbox, input, events, docs) => result,
                    never = sample_guest(sandbox, name) => match never {},
                }
            })
            .await
            .map_err(|source| AgentError::Sandbox {
                box_name: name.to_string(),
                source,
            })?;
        result.map(|mut r| {
            r.duration = started.elapsed();
            r
        })
    }

    /// The sandbox configuration with what the box's skills declare: the
    /// hosts they reach join the network (and only this way), their
    /// secrets the box's (its own of a name win).
    fn config_with_skills(&self, docs: &[SkillDoc]) -> Result<SandboxConfig, AgentError> {
        let name = self.name();
        let skill_err = |source| AgentError::Skill {
            box_name: name.into(),
            source,
        };
        let declared =
            crate::skill::declared_network(&self.inner.config.skills, docs).map_err(skill_err)?;
        let secrets = crate::skill::declared_secrets(
            &self.inner.config.skills,
            docs,
            &|k| std::env::var(k).ok(),
            self.inner.config.secret_env.as_ref(),
        )
        .map_err(skill_err)?;
        let mut config = self.sandbox_config();
        config.network = config.network.with_allowed(declared);
        for secret in secrets {
            if !config.secrets.iter().any(|s| s.name == secret.name) {
                config.secrets.push(secret);
            }
        }
        Ok(config)
    }

    /// The sandbox a conversation ([`converse_in`](Self::converse_in))
    /// needs: [`sandbox_config`](Self::sandbox_config) with what the box's
    /// skills declare (their hosts on the network, their secrets).
    pub async fn conversation_sandbox(&self) -> Result<SandboxConfig, AgentError> {
        let docs = self.resolve_docs().await?;
        self.config_with_skills(&docs)
    }

    /// Runs the agent in a sandbox the caller owns (it stays up afterwards).
    /// The sandbox must allow the box's CLI and MCP commands; see
    /// [`sandbox_config`](Self::sandbox_config).
    pub async fn run_in(
        &self,
        sandbox: &Sandbox,
        input: Option<&str>,
        events: EventSink,
    ) -> Result<RunResult, AgentError> {
        let started = Instant::now();
        let docs = self.resolve_docs().await?;
        let mut result = self.run_prepared(sandbox, input, &events, docs).await?;
        result.duration = started.elapsed();
        Ok(result)
    }

    /// One turn of a conversation in a sandbox the caller owns: `history`
    /// (the conversation so far, as this returned it before), then the
    /// user's `message` (after the box's prompt, on the first turn); model
    /// and tool calls until the model answers
    /// without tools, that answer a JSON value valid against `schema` when
    /// one is given. Returns the turn's result and the whole conversation
    /// after it. The built-in engine only; the box's skills are set up for
    /// the turn and closed after it.
    pub async fn converse_in(
        &self,
        sandbox: &Sandbox,
        mut history: Vec<crate::llm::Message>,
        message: &str,
        schema: Option<&super::OutputSchema>,
        events: EventSink,
    ) -> Result<(RunResult, Vec<crate::llm::Message>), AgentError> {
        if self.inner.engine != Engine::Builtin {
            return Err(AgentError::Engine {
                box_name: self.name().into(),
                engine: "claude-code",
                message: "conversations need the built-in engine".into(),
            });
        }
        let started = Instant::now();
        let docs = self.resolve_docs().await?;
        let provisioned = provision(
            sandbox,
            &self.inner.config.skills,
            docs,
            self.inner.config.tool_timeout,
        )
        .await
        .map_err(|source| AgentError::Skill {
            box_name: self.name().into(),
            source,
        })?;
        // The box's prompt opens the conversation.
        let prompt = &self.inner.config.prompt;
        let message = if history.is_empty() && !prompt.is_empty() {
            format!("{prompt}\n\n{message}")
        } else {
            message.to_string()
        };
        history.push(crate::llm::Message::user_text(message));
        let schema = schema.or(self.inner.config.output_schema.as_ref());
        let result = builtin::converse(self, sandbox, &provisioned, history, schema, &events).await;
        provisioned.close().await;
        result.map(|(mut r, messages)| {
            r.duration = started.elapsed();
            (r, messages)
        })
    }

    /// Opens the way from claude-code in the guest to the box's model:
    /// its endpoint, and its key as an edge secret (the guest gets a
    /// placeholder); quiet settings unless the box sets its own.
    fn claude_code_route(&self, mut config: SandboxConfig) -> Result<SandboxConfig, AgentError> {
        let Some(llm) = &self.inner.config.llm else {
            return Ok(config);
        };
        let fail = |message: String| AgentError::Engine {
            box_name: self.name().into(),
            engine: "claude-code",
            message,
        };
        let Some(route) = claude_code::model_route(llm).map_err(fail)? else {
            return Ok(config);
        };
        for (name, value) in claude_code::QUIET_ENV {
            if !config.env.iter().any(|(n, _)| n == name) {
                config = config.env(name, value);
            }
        }
        config = config.env("ANTHROPIC_BASE_URL", &route.base_url);
        match &route.key {
            Some(key) => config = config.secret("ANTHROPIC_API_KEY", key, &[&route.host_rule]),
            None => {
                let rule = route.host_rule.parse().map_err(|e| fail(format!("{e}")))?;
                config.network = config.network.with_allowed(vec![rule]);
            }
        }
        Ok(config)
    }

    async fn resolve_docs(&self) -> Result<Vec<SkillDoc>, AgentError> {
        resolve_docs(&self.inner.config.skills)
            .await
            .map_err(|source| AgentError::Skill {
                box_name: self.name().into(),
                source,
            })
    }

    async fn run_prepared(
        &self,
        sandbox: &Sandbox,
        input: Option<&str>,
        events: &EventSink,
        docs: Vec<SkillDoc>,
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
            match sandbox.read_file_limited(path, MAX_OUTPUT_FILE).await {
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
    pub(super) fn task(&self, input: Option<&str>) -> String {
        let prompt = &self.inner.config.prompt;
        match input {
            Some(input) if !input.is_empty() => {
                format!("{prompt}\n\n## Input from the previous stage\n\n{input}")
            }
            _ => prompt.clone(),
        }
    }
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
