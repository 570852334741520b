//! From a checked spec to runnable values and their resolved view. This is
//! where the host's environment comes in: `auto` providers and environment
//! variables copied from the host.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::check::skill;
use super::model::{
    AgentSpec, BoxSandbox, LlmSpec, MockSpec, Mode, MountSpec, Policy, Provider, SkillEntry, Sp,
    StageType, VolumeSpec,
};
use super::resolved::{
    Resolved, ResolvedBox, ResolvedCommand, ResolvedLlm, ResolvedPipeline, ResolvedSandbox,
    ResolvedStep, ResolvedWorkflow,
};
use super::run::SandboxRun;
use super::{Kind, Runnable, Spec, SpecError};
use crate::agent::{AgentError, VoidBox};
use crate::llm::{LlmProvider, MockScript};
use crate::pipeline::{FailurePolicy, Pipeline};
use crate::sandbox::{Accel, GuestImage, Mount, SandboxConfig, VolumeMount};
use crate::skill::SkillKind;
use crate::workflow::{Step, Workflow};

/// Looks up an environment variable (the host's, or a test's).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The model `auto` and `anthropic` use when the spec names none.
pub(super) const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// The sandbox a box or step starts from: the spec's `sandbox` section
/// (a box's own `sandbox` overrides it) as one [`SandboxConfig`], plus
/// what `inspect` shows and where errors point.
#[derive(Clone)]
struct Base {
    mode: &'static str,
    config: SandboxConfig,
    network_at: (usize, usize),
    /// What `inspect` shows for each variable.
    env_view: BTreeMap<String, String>,
    /// What `inspect` shows for each secret: where it comes from and goes.
    secrets_view: BTreeMap<String, String>,
    /// A secret whose host variable is unset, and where it was declared.
    missing_secret: Option<((usize, usize), String)>,
}

impl Base {
    fn view(&self) -> ResolvedSandbox {
        let boot = self.config.boot.as_ref();
        ResolvedSandbox {
            mode: self.mode.into(),
            memory_mb: self.config.memory_mb,
            vcpus: self.config.vcpus,
            network: network_view(&self.config.network),
            ports: self.config.ports.clone(),
            env: self.env_view.clone(),
            secrets: self.secrets_view.clone(),
            kernel: boot.map(|i| i.kernel.display().to_string()),
            initramfs: boot.map(|i| i.initramfs.display().to_string()),
            image: self.config.image.clone(),
            user: self.config.user.clone(),
            mounts: self.config.mounts.clone(),
            volumes: self.config.volumes.clone(),
            snapshot: self.config.snapshot.clone(),
        }
    }

    /// Adds what a `sandbox` section (the spec's or a box's) says about the
    /// root filesystem, the user and the mounts.
    fn add_storage(
        &mut self,
        spec: &Spec,
        image: Option<&Sp<String>>,
        user: Option<&Sp<String>>,
        mounts: &[Sp<MountSpec>],
        volumes: &[Sp<VolumeSpec>],
    ) {
        if let Some(image) = image {
            self.config.image = Some(image.value.clone());
        }
        if let Some(user) = user {
            self.config.user = Some(user.value.clone());
        }
        for m in mounts {
            self.config.mounts.push(Mount {
                host: absolute(&spec.path(&m.value.host)),
                guest: m.value.guest.clone(),
                mode: m.value.mode.unwrap_or_default(),
            });
        }
        for v in volumes {
            self.config.volumes.push(VolumeMount {
                name: v.value.name.clone(),
                guest: v.value.guest.clone(),
                readonly: v.value.readonly,
            });
        }
    }

    fn add_env(&mut self, vars: &BTreeMap<String, String>, env: Env) {
        for (k, v) in vars {
            // A box's value replaces the spec's for the same name.
            self.config.env.retain(|(key, _)| key != k);
            // As in the seeds: an empty value copies the host's variable.
            if v.is_empty() {
                match env(k) {
                    Some(host) => {
                        self.env_view.insert(k.clone(), "(from host)".into());
                        self.config.env.push((k.clone(), host));
                    }
                    None => {
                        self.env_view
                            .insert(k.clone(), "(from host: unset, not passed)".into());
                    }
                }
            } else {
                self.env_view.insert(k.clone(), v.clone());
                self.config.env.push((k.clone(), v.clone()));
            }
        }
    }

    /// Adds a `secrets` section's secrets, their values read from the
    /// host's environment (a box's secret replaces the spec's of its name).
    fn add_secrets(
        &mut self,
        spec: &Spec,
        secrets: &BTreeMap<String, Sp<crate::skill::SecretSource>>,
        env: Env,
    ) {
        for (name, s) in secrets {
            self.config.secrets.retain(|c| &c.name != name);
            self.secrets_view.insert(
                name.clone(),
                format!(
                    "from ${} for {}",
                    s.value.from_env,
                    s.value.hosts.join(", ")
                ),
            );
            match s.value.read(name, env, Some(&spec.access.pass_env)) {
                Ok(secret) => self.config.secrets.push(secret),
                Err(message) => {
                    if self.missing_secret.is_none() {
                        self.missing_secret = Some((spec.at(s, name), message));
                    }
                }
            }
        }
    }

    /// What the command line grants every sandbox: extra allow rules, an
    /// image, a snapshot. Rules were checked when the spec was read.
    fn add_host_grants(&mut self, spec: &Spec) {
        let access = &spec.access;
        if let Some(image) = &access.image {
            self.config.image = Some(image.clone());
        }
        if let Some(name) = &access.snapshot {
            self.config.snapshot = Some(name.clone());
        }
        let rules = access.allow.iter().filter_map(|r| r.parse().ok()).collect();
        self.config.network = std::mem::take(&mut self.config.network).with_allowed(rules);
    }

    fn with_override(&self, spec: &Spec, o: Option<&BoxSandbox>, env: Env) -> Base {
        let mut b = self.clone();
        if let Some(o) = o {
            b.config.memory_mb = o.memory_mb.unwrap_or(b.config.memory_mb);
            b.config.vcpus = o.vcpus.unwrap_or(b.config.vcpus);
            if let Some(n) = &o.network {
                b.config.network = n.value.0.clone();
                b.network_at = spec.at(n, "network");
            }
            b.add_env(&o.env, env);
            b.add_secrets(spec, &o.secrets, env);
            if let Some(name) = super::check::snapshot_name(spec, &o.snapshot).unwrap_or(None) {
                b.config.snapshot = Some(name);
            }
            b.add_storage(
                spec,
                o.image.as_ref(),
                o.user.as_ref(),
                &o.mounts,
                &o.volumes,
            );
            b.add_host_grants(spec);
        }
        b
    }

    /// Checks a sandbox this base produced, placing the error where the
    /// offending value was written.
    fn check(&self, spec: &Spec, config: &SandboxConfig) -> Result<(), SpecError> {
        if let Some((at, message)) = &self.missing_secret {
            return Err(spec.error(*at, message.clone()));
        }
        config.validate().map_err(|e| {
            if e.field == "network" {
                spec.error(self.network_at, e.to_string())
            } else {
                let at = match spec.key_at(e.field, 1) {
                    (0, _) => spec.key_at("sandbox", 1),
                    found => found,
                };
                spec.error(at, e.to_string())
            }
        })
    }

    /// A sandbox for a command; the command joins the allowlist since the
    /// spec asked for it by name.
    fn command_sandbox(&self, spec: &Spec, program: &str) -> Result<SandboxConfig, SpecError> {
        let config = self.config.clone().allow_command(program);
        self.check(spec, &config)?;
        Ok(config)
    }
}

/// What `inspect` shows of a network: its rules, or nothing when off.
fn network_view(policy: &crate::net::NetworkPolicy) -> Option<crate::net::Rules> {
    match policy {
        crate::net::NetworkPolicy::Off => None,
        crate::net::NetworkPolicy::On { rules, .. } => Some(rules.clone()),
    }
}

fn base(spec: &Spec, env: Env) -> Base {
    let s = spec.raw.sandbox.as_ref();
    let mode = s
        .and_then(|s| s.mode.as_ref())
        .map_or(Mode::Auto, |m| m.value);
    let config = SandboxConfig {
        accel: match mode {
            Mode::Kvm => Some(Accel::Kvm),
            Mode::Tcg => Some(Accel::Tcg),
            _ => None,
        },
        ..SandboxConfig::default()
    };
    let mut b = Base {
        mode: match mode {
            Mode::Kvm => "kvm",
            Mode::Tcg => "tcg",
            _ => "auto",
        },
        config,
        network_at: (0, 0),
        env_view: BTreeMap::new(),
        secrets_view: BTreeMap::new(),
        missing_secret: None,
    };
    if let Some(s) = s {
        b.config.memory_mb = s.memory_mb.unwrap_or(b.config.memory_mb);
        b.config.vcpus = s.vcpus.unwrap_or(b.config.vcpus);
        if let Some(n) = &s.network {
            b.config.network = n.value.0.clone();
            b.network_at = spec.at(n, "network");
        }
        b.add_env(&s.env, env);
        b.add_secrets(spec, &s.secrets, env);
        b.config.overlay_mb = s.overlay_mb;
        b.config.ports = s.ports.clone();
        // Checked when the spec was read.
        b.config.snapshot = super::check::snapshot_name(spec, &s.snapshot).unwrap_or(None);
        b.add_storage(
            spec,
            s.image.as_ref(),
            s.user.as_ref(),
            &s.mounts,
            &s.volumes,
        );
        if let (Some(k), Some(i)) = (&s.kernel, &s.initramfs) {
            b.config.boot = Some(GuestImage {
                kernel: absolute(&spec.path(&k.value)),
                initramfs: absolute(&spec.path(&i.value)),
            });
        }
    }
    b.add_host_grants(spec);
    b
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What a box is made of, whichever section declared it.
struct BoxInput<'a> {
    name: &'a str,
    at: (usize, usize),
    prompt: &'a str,
    skills: &'a [Sp<SkillEntry>],
    llm: Option<&'a LlmSpec>,
    timeout_secs: Option<u64>,
    output_schema: Option<&'a Sp<serde_json::Value>>,
    max_turns: Option<u32>,
    output_file: Option<&'a str>,
}

impl<'a> BoxInput<'a> {
    fn agent(name: &'a str, at: (usize, usize), a: &'a AgentSpec) -> Self {
        BoxInput {
            name,
            at,
            prompt: &a.prompt.value,
            skills: &a.skills,
            llm: a.llm.as_ref(),
            timeout_secs: a.timeout_secs,
            output_schema: a.output_schema.as_ref(),
            max_turns: a.max_turns.as_ref().map(|m| m.value),
            output_file: a.output_file.as_deref(),
        }
    }
}

fn make_box(
    spec: &Spec,
    env: Env,
    input: BoxInput<'_>,
    base: &Base,
) -> Result<(VoidBox, ResolvedBox), SpecError> {
    let mut skills = Vec::new();
    for s in input.skills {
        skills.push(skill(spec, s)?);
    }
    let claude_code = skills.iter().any(
        |s| matches!(&s.kind, SkillKind::Agent(e) if e == "claude-code" || e == "claude_code"),
    );
    // A box's own `llm` replaces the spec's entirely (seed behaviour).
    let default = LlmSpec::default();
    let llm_spec = input.llm.or(spec.raw.llm.as_ref()).unwrap_or(&default);
    let llm = match resolve_llm(spec, env, llm_spec, input.name, input.at) {
        Ok(found) => Some(found),
        // claude-code brings its own model; a provider is optional there.
        Err(_) if claude_code => None,
        Err(e) => return Err(e),
    };
    let mut vbox = VoidBox::new(input.name)
        .prompt(input.prompt)
        .sandbox(base.config.clone())
        .secret_env(spec.access.pass_env.iter().cloned());
    for s in &skills {
        vbox = vbox.skill(s.clone());
    }
    if let Some((provider, _)) = &llm {
        vbox = vbox.llm(provider.clone());
    }
    if let Some(secs) = input.timeout_secs {
        vbox = vbox.timeout(Duration::from_secs(secs));
    }
    if let Some(schema) = input.output_schema {
        vbox = vbox.output_schema(schema.value.clone());
    }
    if let Some(n) = input.max_turns {
        vbox = vbox.max_turns(n);
    }
    if let Some(path) = input.output_file {
        vbox = vbox.output_file(path);
    }
    base.check(spec, &base.config)?;
    let vbox = vbox.build().map_err(|e| {
        let message = match e {
            AgentError::Config { message, .. } => message,
            other => other.to_string(),
        };
        spec.error(input.at, format!("box `{}`: {message}", input.name))
    })?;
    let view = ResolvedBox {
        name: input.name.into(),
        prompt: input.prompt.into(),
        engine: if claude_code {
            "claude-code"
        } else {
            "builtin"
        }
        .into(),
        llm: llm.map(|(_, view)| view),
        skills: skills.iter().map(|s| s.label()).collect(),
        memory_mb: base.config.memory_mb,
        vcpus: base.config.vcpus,
        network: network_view(&base.config.network),
        image: base.config.image.clone(),
        snapshot: base.config.snapshot.clone(),
        env: base.env_view.clone(),
        timeout_secs: input.timeout_secs,
        max_turns: input.max_turns.unwrap_or(25),
        output_schema: input.output_schema.map(|s| s.value.clone()),
        output_file: input.output_file.map(str::to_string),
    };
    Ok((vbox, view))
}

/// The provider a box uses. `auto`: Anthropic when its key is set, else
/// Ollama when `OLLAMA_MODEL` is set, else the spec's scripted mock.
pub(super) fn resolve_llm(
    spec: &Spec,
    env: Env,
    llm: &LlmSpec,
    box_name: &str,
    box_at: (usize, usize),
) -> Result<(LlmProvider, ResolvedLlm), SpecError> {
    let requested = llm.provider.as_ref().map_or(Provider::Auto, |p| p.value);
    let at = llm
        .provider
        .as_ref()
        .map_or(box_at, |p| spec.at(p, "provider"));
    let model = llm.model.as_ref().map(|m| m.value.clone());
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let view =
        |p: &LlmProvider, name: &str, reason: Option<String>, turns: Option<usize>| ResolvedLlm {
            provider: name.into(),
            requested: provider_name(requested).into(),
            model: p.model().into(),
            base_url: (!p.endpoint().is_empty()).then(|| p.endpoint().to_string()),
            api_key_env: p.key_env().map(str::to_string),
            reason,
            mock_turns: turns,
        };
    let with_overrides = |mut p: LlmProvider| {
        if let Some(url) = &llm.base_url {
            p = p.base_url(url);
        }
        if let Some(key) = &llm.api_key_env {
            p = p.api_key_env(key);
        }
        p
    };
    let anthropic = |reason| {
        let p = with_overrides(LlmProvider::anthropic(
            model.as_deref().unwrap_or(DEFAULT_ANTHROPIC_MODEL),
        ));
        let v = view(&p, "anthropic", reason, None);
        (p, v)
    };
    let ollama = |m: &str, reason| {
        let mut p = LlmProvider::ollama(m);
        if let Some(url) = &llm.base_url {
            p = p.base_url(url);
        }
        let v = view(&p, "ollama", reason, None);
        (p, v)
    };
    let mock = |m: &Sp<MockSpec>, reason| -> Result<(LlmProvider, ResolvedLlm), SpecError> {
        let script = match (&m.value.turns, &m.value.file) {
            (Some(turns), _) => MockScript::new(turns.clone()),
            (None, Some(file)) => MockScript::from_file(&spec.path(&file.value))
                .map_err(|e| spec.error(spec.at(file, &file.value), e.to_string()))?,
            (None, None) => MockScript::default(),
        };
        let turns = script.turns.len();
        let p = LlmProvider::mock(script);
        let v = view(&p, "mock", reason, Some(turns));
        Ok((p, v))
    };
    match requested {
        Provider::Anthropic => Ok(anthropic(None)),
        Provider::Openai => {
            let p = with_overrides(LlmProvider::openai(
                model.as_deref().unwrap_or(DEFAULT_OPENAI_MODEL),
            ));
            let v = view(&p, "openai", None, None);
            Ok((p, v))
        }
        Provider::Ollama => match model.or_else(|| set("OLLAMA_MODEL")) {
            Some(m) => Ok(ollama(&m, None)),
            None => Err(spec
                .error(
                    at,
                    format!("box `{box_name}`: provider `ollama` needs a model"),
                )
                .hint("set `llm.model` or OLLAMA_MODEL")),
        },
        Provider::OpenaiCompatible => {
            let url = llm.base_url.as_deref().unwrap_or_default();
            let mut p = LlmProvider::openai_compatible(url, model.as_deref().unwrap_or_default());
            if let Some(key) = &llm.api_key_env {
                p = p.api_key_env(key);
            }
            let v = view(&p, "openai-compatible", None, None);
            Ok((p, v))
        }
        Provider::Mock => mock(llm.mock.as_ref().expect("checked"), None),
        Provider::Auto => {
            let key_env = llm.api_key_env.as_deref().unwrap_or("ANTHROPIC_API_KEY");
            if set(key_env).is_some() {
                return Ok(anthropic(Some(format!("auto: {key_env} is set"))));
            }
            if let Some(m) = set("OLLAMA_MODEL") {
                return Ok(ollama(
                    &m,
                    Some(format!("auto: {key_env} is not set; OLLAMA_MODEL is set")),
                ));
            }
            match &llm.mock {
                Some(m) => mock(
                    m,
                    Some(format!(
                        "auto: neither {key_env} nor OLLAMA_MODEL is set; using the spec's scripted turns"
                    )),
                ),
                None => Err(spec
                    .error(at, format!("box `{box_name}`: no LLM provider is available"))
                    .hint(format!(
                        "`auto` needs {key_env} or OLLAMA_MODEL set, or scripted `llm.mock` turns for offline runs"
                    ))),
            }
        }
    }
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Auto => "auto",
        Provider::Anthropic => "anthropic",
        Provider::Openai => "openai",
        Provider::Ollama => "ollama",
        Provider::OpenaiCompatible => "openai-compatible",
        Provider::Mock => "mock",
    }
}

pub(super) fn build(spec: &Spec, env: Env) -> Result<(Runnable, Resolved), SpecError> {
    let raw = &spec.raw;
    let base = base(spec, env);
    let name = raw.name.value.as_str();
    let name_at = spec.at(&raw.name, name);
    let mut resolved = Resolved {
        api_version: "v1".into(),
        kind: raw.kind.value,
        name: name.into(),
        file: absolute(&spec.file).display().to_string(),
        sandbox: base.view(),
        agent: None,
        pipeline: None,
        workflow: None,
        run: None,
        observe: raw.observe.clone(),
    };
    let runnable = match raw.kind.value {
        Kind::Agent => {
            let a = &raw.agent.as_ref().expect("checked").value;
            let (vbox, view) = make_box(spec, env, BoxInput::agent(name, name_at, a), &base)?;
            resolved.agent = Some(view);
            Runnable::Agent(vbox)
        }
        Kind::Pipeline => {
            let p = &raw.pipeline.as_ref().expect("checked").value;
            let mut built = Vec::new();
            let mut views = Vec::new();
            for b in &p.boxes {
                let base = base.with_override(spec, b.sandbox.as_ref(), env);
                let input = BoxInput {
                    name: &b.name.value,
                    at: spec.at(&b.name, &b.name.value),
                    prompt: &b.prompt.value,
                    skills: &b.skills,
                    llm: b.llm.as_ref(),
                    timeout_secs: b.timeout_secs,
                    output_schema: b.output_schema.as_ref(),
                    max_turns: b.max_turns.as_ref().map(|m| m.value),
                    output_file: b.output_file.as_deref(),
                };
                let (vbox, view) = make_box(spec, env, input, &base)?;
                built.push(vbox);
                views.push(view);
            }
            let by_name = |n: &str| {
                built
                    .iter()
                    .find(|b| b.name() == n)
                    .cloned()
                    .expect("stage names were checked")
            };
            // No stages: every box in order (seed behaviour).
            let stages: Vec<Vec<String>> = if p.stages.is_empty() {
                built.iter().map(|b| vec![b.name().to_string()]).collect()
            } else {
                p.stages
                    .iter()
                    .map(|s| match s.value.kind.value {
                        StageType::Box => {
                            vec![s.value.name.as_ref().expect("checked").value.clone()]
                        }
                        StageType::FanOut => s
                            .value
                            .boxes
                            .iter()
                            .flatten()
                            .map(|b| b.value.clone())
                            .collect(),
                    })
                    .collect()
            };
            let mut pipeline = Pipeline::named(name, by_name(&stages[0][0]));
            for (i, stage) in stages.iter().enumerate().skip(1) {
                let fan_out =
                    !p.stages.is_empty() && p.stages[i].value.kind.value == StageType::FanOut;
                pipeline = if fan_out {
                    pipeline.fan_out(stage.iter().map(|n| by_name(n)).collect())
                } else {
                    pipeline.pipe(by_name(&stage[0]))
                };
            }
            let policy = p.policy.unwrap_or(Policy::FailFast);
            pipeline = pipeline
                .policy(match policy {
                    Policy::FailFast => FailurePolicy::FailFast,
                    Policy::Continue => FailurePolicy::Continue,
                })
                .retries(p.retries.unwrap_or(0));
            if let Some(secs) = p.stage_timeout_secs {
                pipeline = pipeline.stage_timeout(Duration::from_secs(secs));
            }
            resolved.pipeline = Some(ResolvedPipeline {
                policy: match policy {
                    Policy::FailFast => "fail_fast",
                    Policy::Continue => "continue",
                }
                .into(),
                retries: p.retries.unwrap_or(0),
                stage_timeout_secs: p.stage_timeout_secs,
                stages,
                boxes: views,
            });
            Runnable::Pipeline(pipeline)
        }
        Kind::Workflow => {
            let w = &raw.workflow.as_ref().expect("checked").value;
            let mut workflow = Workflow::named(name);
            let mut steps = Vec::new();
            for s in &w.steps {
                let step_name = s.name.value.as_str();
                let at = spec.at(&s.name, step_name);
                let (mut step, run, agent) = match (&s.run, &s.agent) {
                    (Some(run), _) => {
                        let program = &run.program.as_ref().expect("checked").value;
                        let mut step = Step::command(step_name, program, run.args.clone())
                            .sandbox(base.command_sandbox(spec, program)?);
                        if let Some(from) = &run.stdin_from {
                            step = step.stdin_from(&from.value);
                        }
                        let view = ResolvedCommand {
                            program: program.clone(),
                            args: run.args.clone(),
                            stdin_from: run.stdin_from.as_ref().map(|f| f.value.clone()),
                        };
                        (step, Some(view), None)
                    }
                    (None, Some(a)) => {
                        let (vbox, view) =
                            make_box(spec, env, BoxInput::agent(step_name, at, a), &base)?;
                        (Step::agent(step_name, vbox), None, Some(view))
                    }
                    (None, None) => unreachable!("checked"),
                };
                step = step
                    .depends_on(s.depends_on.iter().map(|d| d.value.clone()))
                    .retries(s.retries.unwrap_or(0));
                for out in &s.outputs {
                    step = step.output(out);
                }
                if let Some(secs) = s.timeout_secs {
                    step = step.timeout(Duration::from_secs(secs));
                }
                workflow = workflow.step(step);
                steps.push(ResolvedStep {
                    name: step_name.into(),
                    depends_on: s.depends_on.iter().map(|d| d.value.clone()).collect(),
                    retries: s.retries.unwrap_or(0),
                    timeout_secs: s.timeout_secs,
                    outputs: s
                        .outputs
                        .iter()
                        .map(|o| crate::agent::tools::guest_path(o))
                        .collect(),
                    run,
                    agent,
                });
            }
            let max_parallel = w.max_parallel.unwrap_or(4).max(1);
            workflow = workflow.max_parallel(max_parallel);
            let output_step = match &w.output_step {
                Some(o) => o.value.clone(),
                None => w.steps.last().expect("checked").name.value.clone(),
            };
            workflow = workflow.output_step(&output_step);
            resolved.workflow = Some(ResolvedWorkflow {
                max_parallel,
                output_step,
                steps,
            });
            Runnable::Workflow(workflow)
        }
        Kind::Sandbox => {
            let run = &raw.run.as_ref().expect("checked").value;
            let program = run.program.as_ref().map(|p| p.value.clone());
            let config = match &program {
                Some(program) => base.command_sandbox(spec, program)?,
                None => {
                    base.check(spec, &base.config)?;
                    base.config.clone()
                }
            };
            resolved.run = Some(ResolvedCommand {
                program: program
                    .clone()
                    .unwrap_or_else(|| "(the image's Entrypoint and Cmd)".into()),
                args: run.args.clone(),
                stdin_from: None,
            });
            Runnable::Sandbox(SandboxRun::new(name, config, program, run.args.clone()))
        }
    };
    Ok((runnable, resolved))
}
