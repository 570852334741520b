//! Checks after parsing that need no host state: sections per kind, names
//! and references, the workflow graph, skills, and the files a spec names.

use std::collections::HashSet;

use super::model::{
    AgentSpec, LlmSpec, Mode, PipelineSpec, Provider, SandboxSpec, SkillEntry, Sp, StageType,
    WorkflowSpec,
};
use super::{error::suggest, Kind, Spec, SpecError};
use crate::agent::OutputSchema;
use crate::skill::Skill;
use crate::workflow::{Step, Workflow, WorkflowError};

pub(super) fn check(spec: &Spec) -> Result<(), SpecError> {
    let raw = &spec.raw;
    if let Some(v) = &raw.api_version {
        if v.value != "v1" {
            return Err(spec
                .error(
                    spec.at(v, &v.value),
                    format!("unsupported api_version `{}`", v.value),
                )
                .hint("this version of voidbox reads `api_version: v1`"));
        }
    }
    if raw.name.value.trim().is_empty() {
        return Err(spec
            .error(spec.at(&raw.name, ""), "the spec's `name` is empty")
            .hint("name it, e.g. `name: my-pipeline`"));
    }
    if let Some(sandbox) = &raw.sandbox {
        check_sandbox(spec, sandbox)?;
    }
    check_sections(spec)?;
    if let Some(llm) = &raw.llm {
        check_llm(spec, llm)?;
    }
    match raw.kind.value {
        Kind::Agent => check_agent(spec, &raw.agent.as_ref().expect("checked").value)?,
        Kind::Pipeline => check_pipeline(spec, raw.pipeline.as_ref().expect("checked"))?,
        Kind::Workflow => check_workflow(spec, raw.workflow.as_ref().expect("checked"))?,
        Kind::Sandbox => {
            let run = raw.run.as_ref().expect("checked");
            let has_image = raw.sandbox.as_ref().is_some_and(|s| s.image.is_some());
            match &run.value.program {
                Some(p) if p.value.trim().is_empty() => {
                    return Err(spec.error(spec.at(p, ""), "`program` is empty"))
                }
                None if !has_image => {
                    return Err(spec
                        .error(spec.key_at("run", 1), "`run` has no `program`")
                        .hint("name a program, or set `sandbox.image` to run the image's Entrypoint and Cmd"))
                }
                _ => {}
            }
            if let Some(from) = &run.value.stdin_from {
                return Err(spec
                    .error(
                        spec.at(from, &from.value),
                        "`stdin_from` is for workflow steps",
                    )
                    .hint("a sandbox command gets `voidbox run --input` as stdin"));
            }
        }
    }
    Ok(())
}

/// Each kind has its section, and no other kind's.
fn check_sections(spec: &Spec) -> Result<(), SpecError> {
    let raw = &spec.raw;
    let kind = raw.kind.value;
    let present = [
        ("agent", Kind::Agent, raw.agent.is_some()),
        ("pipeline", Kind::Pipeline, raw.pipeline.is_some()),
        ("workflow", Kind::Workflow, raw.workflow.is_some()),
        ("run", Kind::Sandbox, raw.run.is_some()),
    ];
    for (section, owner, given) in present {
        if owner == kind && !given {
            return Err(spec
                .error(
                    spec.at(&raw.kind, &kind.to_string()),
                    format!("kind `{kind}` needs a `{section}` section"),
                )
                .hint(match kind {
                    Kind::Agent => "add `agent: {prompt: ..., skills: [...]}`",
                    Kind::Pipeline => "add `pipeline: {boxes: [...], stages: [...]}`",
                    Kind::Workflow => "add `workflow: {steps: [...]}`",
                    Kind::Sandbox => "add `run: {program: ..., args: [...]}`",
                }));
        }
        if owner != kind && given {
            return Err(spec
                .error(
                    spec.key_at(section, 1),
                    format!("a `{section}` section is given, but the kind is `{kind}`"),
                )
                .hint(format!("remove it, or set `kind: {owner}`")));
        }
    }
    if kind == Kind::Sandbox && raw.llm.is_some() {
        return Err(spec
            .error(
                spec.key_at("llm", 1),
                "kind `sandbox` runs no model, so `llm` has no use",
            )
            .hint("remove `llm`, or use kind `agent`"));
    }
    Ok(())
}

fn unsupported(
    spec: &Spec,
    field: &str,
    value: &Option<Sp<serde_json::Value>>,
) -> Result<(), SpecError> {
    let Some(v) = value else { return Ok(()) };
    // Empty values are what the seeds write for "none": harmless.
    let empty = match &v.value {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if empty {
        return Ok(());
    }
    let at = match v.referenced.line() {
        0 => spec.key_at(field, 1),
        _ => spec.at(v, field),
    };
    Err(spec
        .error(at, format!("sandbox `{field}` is not supported yet"))
        .hint(
            "use `kernel` and `initramfs` to boot another guest image, or `image` for an OCI image",
        ))
}

/// The snapshot a `snapshot:` field names: `None` for none (absent, null
/// or empty, as the seeds write it), an error at the value for anything
/// but a snapshot name.
pub(super) fn snapshot_name(
    spec: &Spec,
    value: &Option<Sp<serde_json::Value>>,
) -> Result<Option<String>, SpecError> {
    let Some(v) = value else { return Ok(None) };
    let at = match v.referenced.line() {
        0 => spec.key_at("snapshot", 1),
        _ => spec.at(v, "snapshot"),
    };
    match &v.value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(name) if name.is_empty() => Ok(None),
        serde_json::Value::String(name) => {
            crate::sandbox::snapshot::check_snapshot_name(name)
                .map_err(|e| spec.error(at, e.to_string()))?;
            Ok(Some(name.clone()))
        }
        _ => Err(spec
            .error(at, "`snapshot` is the name of a snapshot")
            .hint("make one with `voidbox snapshot create NAME`")),
    }
}

fn check_sandbox(spec: &Spec, s: &SandboxSpec) -> Result<(), SpecError> {
    super::host_access::check_env(spec, &s.env)?;
    if let Some(mode) = &s.mode {
        if mode.value == Mode::Mock {
            return Err(spec
                .error(
                    spec.at(mode, "mock"),
                    "sandbox mode `mock` is not supported",
                )
                .hint("every stage runs in a real VM; use auto"));
        }
    }
    unsupported(spec, "guest_image", &s.guest_image)?;
    snapshot_name(spec, &s.snapshot)?;
    match (&s.kernel, &s.initramfs) {
        (Some(k), None) => {
            return Err(spec
                .error(
                    spec.at(k, &k.value),
                    "`kernel` is given without `initramfs`",
                )
                .hint("give both, or neither to use the cached guest image"))
        }
        (None, Some(i)) => {
            return Err(spec
                .error(
                    spec.at(i, &i.value),
                    "`initramfs` is given without `kernel`",
                )
                .hint("give both, or neither to use the cached guest image"))
        }
        _ => {}
    }
    for file in [&s.kernel, &s.initramfs].into_iter().flatten() {
        must_exist(spec, file, "guest image file")?;
    }
    Ok(())
}

fn must_exist(spec: &Spec, p: &Sp<String>, what: &str) -> Result<(), SpecError> {
    let path = spec.path(&p.value);
    if path.exists() {
        return Ok(());
    }
    Err(spec
        .error(
            spec.at(p, &p.value),
            format!("{what} `{}` not found", path.display()),
        )
        .hint(format!(
            "relative paths resolve against the spec's directory, {}",
            spec.dir.display()
        )))
}

pub(super) fn check_llm(spec: &Spec, llm: &LlmSpec) -> Result<(), SpecError> {
    let provider = llm.provider.as_ref().map_or(Provider::Auto, |p| p.value);
    let at = || match &llm.provider {
        Some(p) => spec.at(p, "provider"),
        None => spec.key_at("llm", 1),
    };
    match provider {
        Provider::OpenaiCompatible if llm.base_url.is_none() => {
            return Err(spec
                .error(at(), "provider `openai-compatible` needs a `base_url`")
                .hint("e.g. `base_url: http://localhost:1234/v1`"))
        }
        Provider::OpenaiCompatible if llm.model.is_none() => {
            return Err(spec
                .error(at(), "provider `openai-compatible` needs a `model`")
                .hint("name the model the endpoint serves"))
        }
        Provider::Mock if llm.mock.is_none() => {
            return Err(spec
                .error(at(), "provider `mock` needs a `mock` script")
                .hint("add `mock: {turns: [{text: ...}]}` or `mock: {file: script.yaml}`"))
        }
        _ => {}
    }
    if let Some(mock) = &llm.mock {
        let m = &mock.value;
        let at = spec.at(mock, "mock");
        match (&m.turns, &m.file) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(spec
                    .error(at, "a mock script is either `turns` or `file`")
                    .hint("`mock: {turns: [{text: ...}]}` or `mock: {file: script.yaml}`"))
            }
            (Some(turns), None) if turns.is_empty() => {
                return Err(spec
                    .error(at, "the mock script has no turns")
                    .hint("add at least one `{text: ...}` turn"))
            }
            (None, Some(file)) => must_exist(spec, file, "mock script")?,
            _ => {}
        }
    }
    Ok(())
}

/// The box fields shared by agents, pipeline boxes and agent steps.
fn check_box(
    spec: &Spec,
    prompt: &Sp<String>,
    skills: &[Sp<SkillEntry>],
    llm: Option<&LlmSpec>,
    schema: Option<&Sp<serde_json::Value>>,
    max_turns: Option<&Sp<u32>>,
) -> Result<(), SpecError> {
    if prompt.value.trim().is_empty() {
        return Err(spec
            .error(spec.at(prompt, "prompt"), "the prompt is empty")
            .hint("say what the agent should do"));
    }
    for s in skills {
        skill(spec, s)?;
    }
    if let Some(llm) = llm {
        check_llm(spec, llm)?;
    }
    if let Some(schema) = schema {
        if let Err(e) = OutputSchema::compile(schema.value.clone()) {
            return Err(spec
                .error(spec.at(schema, "output_schema"), e)
                .hint("`output_schema` is a JSON Schema, written in YAML or JSON"));
        }
    }
    if let Some(m) = max_turns.filter(|m| m.value == 0) {
        return Err(spec
            .error(spec.at(m, "max_turns"), "`max_turns` must be at least 1")
            .hint("the default is 25"));
    }
    Ok(())
}

fn check_agent(spec: &Spec, a: &AgentSpec) -> Result<(), SpecError> {
    check_box(
        spec,
        &a.prompt,
        &a.skills,
        a.llm.as_ref(),
        a.output_schema.as_ref(),
        a.max_turns.as_ref(),
    )
}

fn check_pipeline(spec: &Spec, p: &Sp<PipelineSpec>) -> Result<(), SpecError> {
    let pipeline = &p.value;
    if pipeline.boxes.is_empty() {
        return Err(spec
            .error(spec.key_at("boxes", 1), "the pipeline has no boxes")
            .hint("declare at least one box under `pipeline.boxes`"));
    }
    let mut names: Vec<String> = Vec::new();
    for b in &pipeline.boxes {
        let name = &b.name.value;
        if name.trim().is_empty() {
            return Err(spec.error(spec.at(&b.name, ""), "a box has an empty name"));
        }
        if names.contains(name) {
            return Err(spec
                .error(
                    spec.at(&b.name, name),
                    format!("two boxes are named `{name}`"),
                )
                .hint("box names must be unique"));
        }
        names.push(name.clone());
        check_box(
            spec,
            &b.prompt,
            &b.skills,
            b.llm.as_ref(),
            b.output_schema.as_ref(),
            b.max_turns.as_ref(),
        )?;
        if let Some(sb) = &b.sandbox {
            snapshot_name(spec, &sb.snapshot)?;
            super::host_access::check_env(spec, &sb.env)?;
        }
    }
    let mut used: HashSet<&str> = HashSet::new();
    let mut use_box = |r: &Sp<String>| -> Result<(), SpecError> {
        let at = spec.at(r, &r.value);
        if !names.contains(&r.value) {
            let err = spec.error(at, format!("stage names unknown box `{}`", r.value));
            return Err(match suggest(&r.value, &names) {
                Some(best) => err.hint(format!("did you mean `{best}`?")),
                None => err.hint(format!("the boxes are {}", names.join(", "))),
            });
        }
        if !used.insert(names.iter().find(|n| **n == r.value).expect("known")) {
            return Err(spec
                .error(at, format!("box `{}` is used in two stages", r.value))
                .hint("each box runs once; declare another box to run it again"));
        }
        Ok(())
    };
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let s = &stage.value;
        let at = spec.at(&s.kind, "type");
        match s.kind.value {
            StageType::Box => {
                let Some(name) = &s.name else {
                    return Err(spec
                        .error(at, "a `box` stage needs the box's `name`")
                        .hint("`{type: box, name: BOX}`"));
                };
                if s.boxes.is_some() {
                    return Err(spec
                        .error(at, "a `box` stage takes `name`, not `boxes`")
                        .hint("use `type: fan_out` to run several boxes in parallel"));
                }
                use_box(name)?;
            }
            StageType::FanOut => {
                if i == 0 {
                    return Err(spec
                        .error(at, "the first stage cannot be a `fan_out`")
                        .hint("start with a `box` stage that the fan-out's boxes all receive"));
                }
                if s.name.is_some() {
                    return Err(spec
                        .error(at, "a `fan_out` stage takes `boxes`, not `name`")
                        .hint("`{type: fan_out, boxes: [a, b]}`"));
                }
                let boxes = s.boxes.as_deref().unwrap_or_default();
                if boxes.is_empty() {
                    return Err(spec
                        .error(at, "a `fan_out` stage needs `boxes`")
                        .hint("`{type: fan_out, boxes: [a, b]}`"));
                }
                for b in boxes {
                    use_box(b)?;
                }
            }
        }
    }
    if !pipeline.stages.is_empty() {
        if let Some(b) = pipeline
            .boxes
            .iter()
            .find(|b| !used.contains(b.name.value.as_str()))
        {
            return Err(spec
                .error(
                    spec.at(&b.name, &b.name.value),
                    format!("box `{}` is in no stage", b.name.value),
                )
                .hint("add it to `stages`, or remove it"));
        }
    }
    Ok(())
}

fn check_workflow(spec: &Spec, w: &Sp<WorkflowSpec>) -> Result<(), SpecError> {
    let wf = &w.value;
    if wf.steps.is_empty() {
        return Err(spec
            .error(spec.key_at("steps", 1), "the workflow has no steps")
            .hint("declare at least one step under `workflow.steps`"));
    }
    // A skeleton of command steps: enough for the graph checks, which
    // belong to `Workflow::validate` so the API and specs agree.
    let mut skeleton = Workflow::named(&spec.raw.name.value);
    for step in &wf.steps {
        let at = spec.at(&step.name, &step.name.value);
        match (&step.run, &step.agent) {
            (Some(_), Some(_)) => {
                return Err(spec
                    .error(
                        at,
                        format!("step `{}` has both `run` and `agent`", step.name.value),
                    )
                    .hint("a step runs a command or an agent; split it in two"))
            }
            (None, None) => {
                return Err(spec
                    .error(
                        at,
                        format!("step `{}` has neither `run` nor `agent`", step.name.value),
                    )
                    .hint("add `run: {program: ..., args: [...]}` or `agent: {prompt: ...}`"))
            }
            (Some(run), None) => match &run.program {
                Some(p) if !p.value.trim().is_empty() => {}
                Some(p) => {
                    return Err(spec.error(
                        spec.at(p, ""),
                        format!("step `{}` has an empty `program`", step.name.value),
                    ))
                }
                None => {
                    return Err(spec
                        .error(at, format!("step `{}` has no `program`", step.name.value))
                        .hint("add `program: NAME` to its `run`"))
                }
            },
            (None, Some(a)) => check_agent(spec, a)?,
        }
        let mut s = Step::command(&step.name.value, "true", Vec::<String>::new())
            .depends_on(step.depends_on.iter().map(|d| d.value.clone()));
        if let Some(from) = step.run.as_ref().and_then(|r| r.stdin_from.as_ref()) {
            s = s.stdin_from(&from.value);
        }
        skeleton = skeleton.step(s);
    }
    if let Some(out) = &wf.output_step {
        skeleton = skeleton.output_step(&out.value);
    }
    if let Err(WorkflowError::Invalid { message, .. }) = skeleton.validate() {
        return Err(spec.error(graph_error_at(spec, wf, &message), message));
    }
    Ok(())
}

/// Places a graph error from `Workflow::validate`: at the reference it
/// complains about when there is one, else at the first step it names.
fn graph_error_at(spec: &Spec, wf: &WorkflowSpec, message: &str) -> (usize, usize) {
    let names: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if let (Some(&step), Some(&target)) = (names.first(), names.get(1)) {
        if message.contains("unknown step") || message.contains("itself") {
            if let Some(s) = wf.steps.iter().find(|s| s.name.value == step) {
                if let Some(d) = s.depends_on.iter().find(|d| d.value == target) {
                    return spec.at(d, &d.value);
                }
            }
        }
        if message.contains("stdin from") {
            if let Some(from) = wf
                .steps
                .iter()
                .find(|s| s.name.value == step)
                .and_then(|s| s.run.as_ref()?.stdin_from.as_ref())
            {
                return spec.at(from, &from.value);
            }
        }
    }
    if message.starts_with("output_step") {
        if let Some(out) = &wf.output_step {
            return spec.at(out, &out.value);
        }
    }
    if message.starts_with("two steps are named") {
        if let Some(&dup) = names.first() {
            if let Some(s) = wf.steps.iter().filter(|s| s.name.value == dup).nth(1) {
                return spec.at(&s.name, &s.name.value);
            }
        }
    }
    names
        .iter()
        .find_map(|n| wf.steps.iter().find(|s| s.name.value == *n))
        .map_or((0, 0), |s| spec.at(&s.name, &s.name.value))
}

const SKILL_PREFIXES: [&str; 5] = ["file", "agent", "cli", "mcp", "remote"];

/// A skill entry as a [`Skill`]; `file:` paths resolve against the spec's
/// directory and must exist.
pub(super) fn skill(spec: &Spec, entry: &Sp<SkillEntry>) -> Result<Skill, SpecError> {
    let text = match &entry.value {
        SkillEntry::Text(t) => t.clone(),
        SkillEntry::Object(o) => o
            .mcp
            .clone()
            .or(o.name.clone())
            .or(o.image.clone())
            .unwrap_or_default(),
    };
    let at = spec.at(entry, &text);
    let fail = |message: String| spec.error(at, message);
    match &entry.value {
        SkillEntry::Text(t) => {
            let Some((prefix, value)) = t.split_once(':') else {
                return Err(fail(format!("skill `{t}` has no kind"))
                    .hint("write `file:PATH`, `agent:NAME`, `cli:NAME`, `mcp:NAME` or `remote:URL#sha256=HEX`"));
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(fail(format!(
                    "skill `{t}` is missing its value after `{prefix}:`"
                )));
            }
            match prefix {
                "file" => {
                    let path = spec.path(value);
                    if !path.is_file() {
                        return Err(fail(format!("skill file `{}` not found", path.display()))
                            .hint(format!(
                                "relative paths resolve against the spec's directory, {}",
                                spec.dir.display()
                            )));
                    }
                    if let Some(why) = super::host_access::outside_dir(spec, &path) {
                        return Err(fail(why).hint(
                            "a skill file goes into the model's prompt; copy it next to the \
                             spec, or pass `--allow-host-files` (Rust: HostAccess::files_outside)",
                        ));
                    }
                    Ok(Skill::file(path))
                }
                "agent" => match value {
                    "builtin" | "claude-code" | "claude_code" => Ok(Skill::agent(value)),
                    other => Err(fail(format!("unknown agent engine `{other}`"))
                        .hint("use `agent:builtin` or `agent:claude-code`")),
                },
                "cli" => Ok(Skill::cli(value)),
                "mcp" => Ok(Skill::mcp(value, value)),
                "remote" => remote(value).map_err(|(m, h)| fail(m).hint(h)),
                other => {
                    let names: Vec<String> = SKILL_PREFIXES.iter().map(|s| s.to_string()).collect();
                    let err = fail(format!("unknown skill kind `{other}:`"));
                    Err(match suggest(other, &names) {
                        Some(best) => err.hint(format!("did you mean `{best}:`?")),
                        None => err.hint("expected one of file:, agent:, cli:, mcp:, remote:"),
                    })
                }
            }
        }
        SkillEntry::Object(o) if o.image.is_some() || o.mount.is_some() => {
            let (Some(image), Some(mount)) = (&o.image, &o.mount) else {
                return Err(fail("an image skill needs both `image` and `mount`".into())
                    .hint("write {image: REF, mount: /skills/NAME}"));
            };
            if o.readonly == Some(false) {
                return Err(fail("image skills are mounted read-only".into())
                    .hint("remove `readonly: false`; use a volume for writable storage"));
            }
            crate::oci::parse_reference(image).map_err(|e| fail(e.to_string()))?;
            crate::sandbox::check_guest_path(mount).map_err(fail)?;
            Ok(Skill::image(image, mount))
        }
        SkillEntry::Object(o) => {
            if o.readonly.is_some() {
                return Err(fail("`readonly` belongs to image skills".into())
                    .hint("write {image: REF, mount: /skills/NAME, readonly: true}"));
            }
            let mut skill = match (&o.mcp, &o.name, &o.content) {
                (Some(name), None, None) => {
                    let mut s = Skill::mcp(name, o.command.as_deref().unwrap_or(name));
                    for a in &o.args {
                        s = s.arg(a);
                    }
                    s
                }
                (None, Some(name), Some(content)) if o.command.is_none() && o.args.is_empty() => {
                    Skill::inline(name, content)
                }
                _ => {
                    return Err(fail("a skill object is `{name, content}` or `{mcp, command, args}`".into())
                        .hint("inline skills take `name` and `content`; MCP servers take `mcp`, `command` and `args`"))
                }
            };
            if let Some(d) = &o.description {
                skill = skill.description(d);
            }
            for rule in &o.network {
                rule.parse::<crate::net::Rule>()
                    .map_err(|e| fail(e.to_string()))?;
                skill = skill.network(rule);
            }
            for (name, source) in &o.secrets {
                let hosts: Vec<&str> = source.hosts.iter().map(String::as_str).collect();
                skill = skill.secret(name, &source.from_env, &hosts);
            }
            Ok(skill)
        }
    }
}

/// `URL#sha256=HEX`. The seeds' `owner/repo/skill` form is not pinned and
/// so refused.
fn remote(value: &str) -> Result<Skill, (String, String)> {
    let pinned_form =
        "write `remote:https://HOST/PATH/SKILL.md#sha256=HEX` (the SHA-256 of the file)";
    let Some((url, hash)) = value.split_once("#sha256=") else {
        if !value.contains("://") {
            return Err((
                format!("remote skill `{value}` names a repository, not a pinned URL"),
                pinned_form.into(),
            ));
        }
        return Err((
            format!("remote skill `{value}` is not pinned"),
            pinned_form.into(),
        ));
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err((
            format!("remote skill URL `{url}` is not http(s)"),
            pinned_form.into(),
        ));
    }
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err((
            format!("remote skill hash `{hash}` is not a SHA-256 (64 hex digits)"),
            pinned_form.into(),
        ));
    }
    Ok(Skill::remote(url).sha256(hash))
}
