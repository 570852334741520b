use std::collections::HashMap;

use super::build::build;
use super::*;
use crate::llm::ProviderKind;
use crate::pipeline::Stage;

fn err(text: &str) -> SpecError {
    parse(text, "spec.yaml").expect_err("the spec should be refused")
}

fn at(e: &SpecError) -> (usize, usize) {
    (e.line, e.column)
}

/// Builds with a made-up environment, so no test touches the real one.
fn build_with(spec: &Spec, vars: &[(&str, &str)]) -> Result<(Runnable, Resolved), SpecError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    build(spec, &|k: &str| vars.get(k).cloned())
}

const TWO_BOXES: &str = "\
kind: pipeline
name: p
llm:
  mock: {turns: [{text: hi}]}
pipeline:
  boxes:
    - name: a
      prompt: one
    - name: b
      prompt: two
";

#[test]
fn unknown_field_three_levels_deep_is_placed_and_suggested() {
    let e = err("\
kind: pipeline
name: p
pipeline:
  boxes:
    - name: a
      prompt: hi
      sandbox:
        memroy_mb: 1
");
    assert_eq!(at(&e), (8, 9));
    assert_eq!(e.message, "unknown field `memroy_mb`");
    assert_eq!(e.hint.as_deref(), Some("did you mean `memory_mb`?"));
    assert_eq!(
        e.to_string(),
        "spec.yaml:8:9: unknown field `memroy_mb` (hint: did you mean `memory_mb`?)"
    );
}

#[test]
fn wrong_type_is_placed_with_a_hint() {
    let e = err("kind: agent\nname: a\nsandbox:\n  memory_mb: lots\nagent:\n  prompt: hi\n");
    assert_eq!(at(&e), (4, 14));
    assert!(e.message.contains("u32"), "{e}");
    assert_eq!(
        e.hint.as_deref(),
        Some("expected a whole number of 0 or more")
    );
    let e = err("kind: agent\nname: a\nagent:\n  prompt: hi\n  skills: file:x\n");
    assert_eq!(at(&e), (5, 11));
    assert!(e.hint.unwrap().contains("expected a list"));
}

#[test]
fn bad_enum_values_suggest_or_list() {
    let e = err("kind: agnet\nname: a\n");
    assert_eq!(at(&e), (1, 7));
    assert_eq!(e.message, "unknown variant `agnet`");
    assert_eq!(e.hint.as_deref(), Some("did you mean `agent`?"));
    let e = err("kind: job\nname: a\n");
    assert_eq!(
        e.hint.as_deref(),
        Some("expected one of agent, pipeline, workflow, sandbox")
    );
    let e = err(&TWO_BOXES.replace("pipeline:\n", "pipeline:\n  policy: fail-fast\n"));
    assert_eq!(at(&e), (6, 11));
    assert_eq!(e.hint.as_deref(), Some("did you mean `fail_fast`?"));
}

#[test]
fn missing_required_field_is_placed_at_its_mapping() {
    let e = err("kind: pipeline\nname: p\npipeline:\n  boxes:\n    - name: a\n");
    assert_eq!(e.message, "missing field `prompt`");
    assert_eq!(at(&e), (5, 7));
    assert_eq!(e.hint.as_deref(), Some("add `prompt` here"));
}

#[test]
fn unknown_box_in_a_stage_is_named_and_placed() {
    let e = err(&format!(
        "{TWO_BOXES}  stages:\n    - {{type: box, name: a}}\n    - {{type: box, name: bb}}\n"
    ));
    assert_eq!(e.message, "stage names unknown box `bb`");
    assert_eq!(at(&e), (13, 25));
    assert_eq!(e.hint.as_deref(), Some("did you mean `b`?"));
    let e = err(&format!(
        "{TWO_BOXES}  stages:\n    - {{type: box, name: a}}\n    - {{type: fan_out, boxes: [b, a]}}\n"
    ));
    assert_eq!(e.message, "box `a` is used in two stages");
    assert_eq!(at(&e), (13, 34));
}

#[test]
fn a_fan_out_cannot_come_first() {
    let e = err(&format!(
        "{TWO_BOXES}  stages:\n    - type: fan_out\n      boxes: [a, b]\n"
    ));
    assert_eq!(e.message, "the first stage cannot be a `fan_out`");
    assert_eq!(at(&e), (12, 13));
}

#[test]
fn unsupported_seed_fields_are_named_not_ignored() {
    let e = err("kind: agent\nname: a\nsandbox:\n  guest_image: foo.img\nagent:\n  prompt: hi\n");
    assert_eq!(e.message, "sandbox `guest_image` is not supported yet");
    assert_eq!(at(&e), (4, 16));
    // The seeds' way of saying "none" is harmless.
    parse(
        "kind: agent\nname: a\nsandbox:\n  guest_image: \"\"\n  mounts: []\nagent:\n  prompt: hi\n",
        "spec.yaml",
    )
    .unwrap();
}

#[test]
fn a_snapshot_names_where_a_sandbox_starts_from_for_the_spec_and_per_box() {
    let text = "\
kind: pipeline
name: p
llm:
  mock: {turns: [{text: hi}]}
sandbox:
  snapshot: py-base
pipeline:
  boxes:
    - name: a
      prompt: one
    - name: b
      prompt: two
      sandbox:
        snapshot: other
  stages:
    - {type: box, name: a}
    - {type: box, name: b}
";
    let (_, resolved) = build_with(&parse(text, "p.yaml").unwrap(), &[]).unwrap();
    let view = serde_json::to_value(&resolved).unwrap().to_string();
    assert!(view.contains("\"snapshot\":\"py-base\""), "{view}");
    assert!(view.contains("\"snapshot\":\"other\""), "{view}");
    // The seeds' empty value is none; a bad name or type is refused at it.
    parse(
        "kind: agent\nname: a\nsandbox:\n  snapshot: \"\"\nagent:\n  prompt: hi\n",
        "a.yaml",
    )
    .unwrap();
    let e = err("kind: agent\nname: a\nsandbox:\n  snapshot: ../etc\nagent:\n  prompt: hi\n");
    assert!(e.message.contains("snapshot name"), "{e}");
    assert_eq!(at(&e), (4, 13));
    let e = err("kind: agent\nname: a\nsandbox:\n  snapshot: [a]\nagent:\n  prompt: hi\n");
    assert!(e.message.contains("name of a snapshot"), "{e}");
}

#[test]
fn images_mounts_volumes_and_image_skills_build_into_the_sandbox() {
    let text = "\
kind: pipeline
name: p
sandbox:
  image: python:3.12-slim
  user: app
  overlay_mb: 512
  mounts:
    - {host: data, guest: /data}
  volumes: [{name: cache, guest: /cache}]
llm:
  mock: {turns: [{text: hi}]}
pipeline:
  boxes:
    - name: a
      prompt: one
      skills: [{image: 'localhost:5000/go:1', mount: /skills/go, readonly: true}]
    - name: b
      prompt: two
      sandbox:
        image: node:22
        mounts: [{host: /srv/out, guest: /out, mode: rw}]
";
    let spec = parse(text, "/specs/p.yaml").unwrap();
    let (runnable, resolved) = build_with(&spec, &[]).unwrap();
    let sandbox = &resolved.sandbox;
    assert_eq!(sandbox.image.as_deref(), Some("python:3.12-slim"));
    assert_eq!(sandbox.user.as_deref(), Some("app"));
    assert_eq!(sandbox.mounts[0].host, std::path::Path::new("/specs/data"));
    assert_eq!(sandbox.mounts[0].mode, crate::sandbox::MountMode::Ro);
    assert_eq!(sandbox.volumes[0].name, "cache");
    let Runnable::Pipeline(p) = runnable else {
        panic!("a pipeline")
    };
    let a = p.stages()[0].boxes()[0].sandbox_config();
    assert_eq!(a.image_mounts[0].guest, "/skills/go");
    assert_eq!(a.overlay_mb, Some(512));
    let b = p.stages()[1].boxes()[0].sandbox_config();
    // A box's image replaces the spec's; its mounts add to the spec's.
    assert_eq!(b.image.as_deref(), Some("node:22"));
    assert_eq!(b.mounts.len(), 2);
    assert_eq!(b.mounts[1].mode, crate::sandbox::MountMode::Rw);

    // Bad values are placed where they were written.
    let bad = parse(
        "kind: agent\nname: a\nsandbox:\n  mounts:\n    - {host: ., guest: relative}\nagent:\n  prompt: hi\n  llm: {mock: {turns: [{text: x}]}}\n",
        "spec.yaml",
    )
    .unwrap();
    let e = build_with(&bad, &[]).unwrap_err();
    assert!(
        e.message.contains("guest path `relative` is not absolute"),
        "{e}"
    );
    assert_eq!(at(&e).0, 4);
    let e = err("kind: agent\nname: a\nsandbox:\n  mounts:\n    - {host: ., guest: /w, mod: rw}\nagent:\n  prompt: hi\n");
    assert!(e.message.contains("unknown field `mod`"), "{e}");
    let e = err("kind: agent\nname: a\nagent:\n  prompt: hi\n  skills: [{image: 'x:1', mount: /m, readonly: false}]\n");
    assert!(e.message.contains("read-only"), "{e}");
}

#[test]
fn workflow_cycles_and_unknown_dependencies_name_the_steps() {
    let e = err("\
kind: workflow
name: w
workflow:
  steps:
    - name: a
      run: {program: echo}
    - name: b
      depends_on: [a, c]
      run: {program: cat}
    - name: c
      depends_on: [b]
      run: {program: cat}
");
    assert_eq!(e.message, "dependency cycle between steps `b`, `c`");
    assert_eq!(at(&e), (7, 13));
    let e = err("\
kind: workflow
name: w
workflow:
  steps:
    - name: a
      run: {program: echo}
    - name: b
      depends_on: [a, x]
      run: {program: cat, stdin_from: a}
");
    assert_eq!(e.message, "step `b` depends on unknown step `x`");
    assert_eq!(at(&e), (8, 23));
}

#[test]
fn sections_must_match_the_kind() {
    let e = err("kind: pipeline\nname: p\n");
    assert_eq!(e.message, "kind `pipeline` needs a `pipeline` section");
    assert_eq!(at(&e), (1, 7));
    let e = err("kind: agent\nname: a\nagent:\n  prompt: hi\nrun:\n  program: ls\n");
    assert_eq!(
        e.message,
        "a `run` section is given, but the kind is `agent`"
    );
    assert_eq!(at(&e), (5, 1));
    let e = err("api_version: v2\nkind: agent\nname: a\nagent:\n  prompt: hi\n");
    assert_eq!(at(&e), (1, 14));
}

#[test]
fn skills_parse_and_resolve_against_the_spec_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("skills")).unwrap();
    std::fs::write(
        dir.path().join("skills/notes.md"),
        "---\nname: notes\n---\nbody",
    )
    .unwrap();
    let file = dir.path().join("spec.yaml");
    let text = "\
kind: agent
name: a
llm: {provider: mock, mock: {turns: [{text: ok}]}}
agent:
  prompt: hi
  skills:
    - file:skills/notes.md
    - cli:jq
    - mcp:fixture
    - {mcp: files, command: /usr/bin/mcp-files, args: [--root, /workspace]}
    - {name: style, content: Be brief.}
    - agent:builtin
    - remote:https://example.com/SKILL.md#sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
";
    let spec = parse(text, &file).unwrap();
    let (_, resolved) = build_with(&spec, &[]).unwrap();
    let skills = resolved.agent.unwrap().skills;
    assert_eq!(
        skills[0],
        format!("file:{}", dir.path().join("skills/notes.md").display())
    );
    assert_eq!(
        &skills[1..5],
        ["cli:jq", "mcp:fixture", "mcp:files", "inline:style"]
    );

    let bad = |skill: &str| parse(&text.replace("cli:jq", skill), &file).unwrap_err();
    let e = bad("remote:acme/skills/review");
    assert!(e.message.contains("names a repository"), "{e}");
    assert!(e.hint.unwrap().contains("#sha256="));
    assert_eq!(at(&bad("file:missing.md")), (8, 7));
    assert_eq!(
        bad("fiel:x.md").hint.as_deref(),
        Some("did you mean `file:`?")
    );
    assert!(bad("agent:codex").message.contains("codex"));
    let e = bad("{name: x, contnt: y}");
    assert_eq!(e.message, "unknown field `contnt`");
    assert_eq!(e.hint.as_deref(), Some("did you mean `content`?"));
}

#[test]
fn json_specs_load_and_errors_point_at_the_key() {
    let good = r#"{
  "kind": "pipeline",
  "name": "j",
  "llm": {"provider": "mock", "mock": {"turns": [{"text": "hi"}]}},
  "pipeline": {
    "boxes": [{"name": "a", "prompt": "one"}, {"name": "b", "prompt": "two"}],
    "stages": [{"type": "box", "name": "a"}, {"type": "box", "name": "b"}]
  }
}"#;
    let spec = parse(good, "spec.json").unwrap();
    assert_eq!(spec.summary(), "pipeline j (2 boxes)");
    let e = parse(
        &good.replace("\"prompt\": \"two\"", "\"promt\": \"two\""),
        "spec.json",
    )
    .unwrap_err();
    assert_eq!(e.message, "unknown field `promt`");
    assert_eq!(at(&e), (6, 61));
    assert_eq!(e.hint.as_deref(), Some("did you mean `prompt`?"));
    // Checks after parsing find JSON places by searching the text.
    let e = parse(
        &good.replace("\"name\": \"b\"}]", "\"name\": \"c\"}]"),
        "spec.json",
    )
    .unwrap_err();
    assert_eq!(e.message, "stage names unknown box `c`");
    assert_eq!(at(&e), (7, 70));
}

// The examples of the seed repository, verbatim.
const SEED_PIPELINE: &str = "api_version: v1\nkind: pipeline\nname: quick-pipeline\n\nsandbox:\n  mode: auto\n  memory_mb: 512\n  vcpus: 1\n  network: true\n\npipeline:\n  boxes:\n    - name: analyst\n      prompt: Extract key facts from the input.\n      skills:\n        - \"agent:claude-code\"\n      timeout_secs: 300\n\n    - name: writer\n      prompt: Turn facts into a concise executive summary.\n      skills:\n        - \"agent:claude-code\"\n      timeout_secs: 300\n\n  stages:\n    - type: box\n      name: analyst\n    - type: box\n      name: writer\n";
const SEED_WORKFLOW: &str = "api_version: v1\nkind: workflow\nname: quick-workflow\n\nsandbox:\n  mode: mock\n  memory_mb: 256\n  vcpus: 1\n  network: false\n\nworkflow:\n  steps:\n    - name: fetch\n      run:\n        program: echo\n        args: [\"hello from workflow\"]\n\n    - name: transform\n      depends_on: [fetch]\n      run:\n        program: tr\n        args: [\"a-z\", \"A-Z\"]\n        stdin_from: fetch\n\n  output_step: transform\n";
const SEED_AGENT: &str = "{\n  \"api_version\": \"v1\",\n  \"kind\": \"agent\",\n  \"name\": \"quick-agent\",\n  \"sandbox\": {\n    \"mode\": \"auto\",\n    \"memory_mb\": 1024,\n    \"vcpus\": 1,\n    \"network\": true\n  },\n  \"llm\": {\n    \"provider\": \"claude\"\n  },\n  \"agent\": {\n    \"prompt\": \"Summarize the latest build output in 3 bullets.\",\n    \"skills\": [\"agent:claude-code\"],\n    \"timeout_secs\": 300\n  }\n}\n";

#[test]
fn seed_examples_load() {
    let p = parse(SEED_PIPELINE, "pipeline.yaml").unwrap();
    assert_eq!(p.summary(), "pipeline quick-pipeline (2 boxes)");
    // `network: true`: the public internet only.
    let (_, r) = build_with(&p, &[]).unwrap();
    let view = serde_json::to_value(&r).unwrap();
    assert_eq!(
        view["sandbox"]["network"],
        serde_json::json!({"allow": ["public"], "deny": []}),
        "{view}"
    );

    let a = parse(SEED_AGENT, "agent.json").unwrap();
    assert_eq!(a.summary(), "agent quick-agent (1 box)");
    let (_, r) = build_with(&a, &[("ANTHROPIC_API_KEY", "sk-secret")]).unwrap();
    let agent = r.agent.unwrap();
    assert_eq!(agent.engine, "claude-code");
    assert_eq!(agent.llm.unwrap().provider, "anthropic");

    // The seed workflow asks for the simulated sandbox, which we refuse.
    let e = parse(SEED_WORKFLOW, "workflow.yaml").unwrap_err();
    assert_eq!(e.message, "sandbox mode `mock` is not supported");
    assert_eq!(
        e.hint.as_deref(),
        Some("every stage runs in a real VM; use auto")
    );
    assert_eq!(at(&e), (6, 9));
    let w = parse(
        &SEED_WORKFLOW.replace("mode: mock", "mode: auto"),
        "workflow.yaml",
    )
    .unwrap();
    assert_eq!(w.summary(), "workflow quick-workflow (2 steps)");
    let Runnable::Workflow(wf) = build_with(&w, &[]).unwrap().0 else {
        panic!("a workflow")
    };
    assert_eq!(wf.steps()[1].dependencies(), ["fetch"]);
}

#[test]
fn auto_resolves_anthropic_then_ollama_then_the_mock() {
    let text = "\
kind: agent
name: a
llm:
  provider: auto
  model: claude-haiku-4-5
  mock: {turns: [{text: one}, {text: two}]}
agent:
  prompt: hi
";
    let spec = parse(text, "spec.yaml").unwrap();
    let llm = |vars: &[(&str, &str)]| {
        build_with(&spec, vars)
            .unwrap()
            .1
            .agent
            .unwrap()
            .llm
            .unwrap()
    };

    let key = "sk-ant-must-not-leak";
    let r = llm(&[("ANTHROPIC_API_KEY", key), ("OLLAMA_MODEL", "qwen3")]);
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("anthropic", "claude-haiku-4-5")
    );
    assert_eq!(r.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(r.reason.as_deref(), Some("auto: ANTHROPIC_API_KEY is set"));
    let view = build_with(&spec, &[("ANTHROPIC_API_KEY", key)]).unwrap().1;
    assert!(!view.to_yaml().contains(key) && !view.to_json().contains(key));

    let r = llm(&[("ANTHROPIC_API_KEY", ""), ("OLLAMA_MODEL", "qwen3")]);
    assert_eq!((r.provider.as_str(), r.model.as_str()), ("ollama", "qwen3"));

    let r = llm(&[]);
    assert_eq!((r.provider.as_str(), r.mock_turns), ("mock", Some(2)));
    assert!(r
        .reason
        .unwrap()
        .contains("neither ANTHROPIC_API_KEY nor OLLAMA_MODEL"));
    let Runnable::Agent(run) = build_with(&spec, &[]).unwrap().0 else {
        panic!("an agent")
    };
    assert!(matches!(run.llm().unwrap().kind(), ProviderKind::Mock(_)));

    // No llm anywhere is `auto`; with nothing to fall back on, it says so.
    let bare = parse("kind: agent\nname: a\nagent:\n  prompt: hi\n", "spec.yaml").unwrap();
    let e = build_with(&bare, &[]).unwrap_err();
    assert_eq!(e.message, "box `a`: no LLM provider is available");
    assert!(e
        .hint
        .unwrap()
        .contains("ANTHROPIC_API_KEY or OLLAMA_MODEL"));
    let r = build_with(&bare, &[("ANTHROPIC_API_KEY", "k")]).unwrap().1;
    assert_eq!(r.agent.unwrap().llm.unwrap().model, "claude-sonnet-4-5");
}

#[test]
fn pipelines_build_with_fan_outs_and_box_level_overrides() {
    let text = "\
kind: pipeline
name: diamond
sandbox:
  memory_mb: 256
  env: {MODE: demo, HOME_COPY: ''}
llm:
  mock: {turns: [{text: top}]}
pipeline:
  policy: continue
  retries: 1
  boxes:
    - name: plan
      prompt: plan
    - name: left
      prompt: left
      llm: {provider: openai-compatible, base_url: 'http://localhost:1/v1', model: m}
      sandbox: {memory_mb: 384, env: {SIDE: left}}
    - name: right
      prompt: right
    - name: merge
      prompt: merge
  stages:
    - {type: box, name: plan}
    - {type: fan_out, boxes: [left, right]}
    - {type: box, name: merge}
";
    let spec = parse(text, "spec.yaml").unwrap();
    let (runnable, resolved) = build_with(&spec, &[("HOME_COPY", "/home/me")]).unwrap();
    let Runnable::Pipeline(p) = runnable else {
        panic!("a pipeline")
    };
    let shape: Vec<usize> = p.stages().iter().map(|s| s.boxes().len()).collect();
    assert_eq!(shape, [1, 2, 1]);
    assert!(matches!(p.stages()[1], Stage::FanOut(_)));
    let view = resolved.pipeline.unwrap();
    assert_eq!(view.stages[1], ["left", "right"]);
    assert_eq!(view.policy, "continue");
    let left = &view.boxes[1];
    // A box's llm replaces the spec's; its sandbox changes add to it.
    assert_eq!(left.llm.as_ref().unwrap().provider, "openai-compatible");
    assert_eq!(left.memory_mb, 384);
    assert_eq!(left.env["SIDE"], "left");
    assert_eq!(left.env["MODE"], "demo");
    assert_eq!(left.env["HOME_COPY"], "(from host)");
    assert_eq!(view.boxes[2].llm.as_ref().unwrap().provider, "mock");
    assert_eq!(view.boxes[2].memory_mb, 256);
    // No stages: every box in order.
    let spec = parse(TWO_BOXES, "spec.yaml").unwrap();
    let view = build_with(&spec, &[]).unwrap().1.pipeline.unwrap();
    assert_eq!(view.stages, [["a"], ["b"]]);
}

#[test]
fn sandbox_kind_needs_run_and_builds_the_command() {
    let e = err("kind: sandbox\nname: s\n");
    assert_eq!(e.message, "kind `sandbox` needs a `run` section");
    let spec = parse(
        "kind: sandbox\nname: s\nrun:\n  program: uname\n  args: [-a]\n",
        "spec.yaml",
    )
    .unwrap();
    let Runnable::Sandbox(run) = build_with(&spec, &[]).unwrap().0 else {
        panic!("a sandbox")
    };
    assert_eq!(run.command(), (Some("uname"), &["-a".to_string()][..]));
    assert_eq!(spec.summary(), "sandbox s (1 command)");
}

#[test]
fn resolved_view_renders_as_yaml() {
    let spec = parse(TWO_BOXES, "spec.yaml").unwrap();
    let yaml = build_with(&spec, &[]).unwrap().1.to_yaml();
    assert!(yaml.contains("kind: pipeline"), "{yaml}");
    assert!(yaml.contains("provider: mock"), "{yaml}");
    assert!(yaml.contains("memory_mb: 512"), "{yaml}");
}

#[test]
fn network_rules_are_read_and_a_bad_one_points_at_its_line() {
    let spec = |network: &str| {
        format!(
            "kind: workflow\nname: w\nsandbox:\n  network:\n{network}\nworkflow:\n  steps:\n    - name: a\n      run: {{program: echo}}\n"
        )
    };
    let good = spec("    allow: [api.github.com, \"*.pypi.org:443\", host.voidbox.internal:11434]\n    deny: [10.0.0.0/8]\n    max_connections: 8");
    let (_, r) = build_with(&parse(&good, "w.yaml").unwrap(), &[]).unwrap();
    let view = serde_json::to_value(&r).unwrap();
    assert_eq!(
        view["sandbox"]["network"],
        serde_json::json!({
            "allow": ["api.github.com", "*.pypi.org:443", "host.voidbox.internal:11434"],
            "deny": ["10.0.0.0/8"]
        })
    );
    let e = parse(&spec("    allow: [\"api.github.com:http\"]"), "w.yaml").unwrap_err();
    assert!(e.message.contains("`http` is not a port"), "{e}");
    assert_eq!(e.line, 5, "{e}");
    let e = parse(
        &spec("    allow: [public]\n    max_connections: 0"),
        "w.yaml",
    )
    .unwrap_err();
    assert!(e.message.contains("max_connections"), "{e}");
    let e = parse(&spec("    allowed: [public]"), "w.yaml").unwrap_err();
    assert!(e.line >= 4, "{e}");
}

#[test]
fn secrets_come_from_the_host_environment_and_never_show() {
    let spec = |secrets: &str| {
        format!(
            "kind: workflow\nname: w\nsandbox:\n  secrets:\n{secrets}\nworkflow:\n  steps:\n    - name: a\n      run: {{program: echo}}\n"
        )
    };
    let good = spec("    GITHUB_TOKEN:\n      from_env: HOST_GH\n      hosts: [api.github.com]");
    // A spec sends a host variable to hosts of its choosing only when
    // `--pass-env` grants that variable.
    let e = build_with(
        &parse(&good, "w.yaml").unwrap(),
        &[("HOST_GH", "ghp_secret_value")],
    )
    .err()
    .unwrap();
    assert!(
        e.message.contains("`HOST_GH` to api.github.com")
            && e.message.contains("--pass-env HOST_GH"),
        "{e}"
    );
    assert_eq!(e.line, 6, "at the secret's entry: {e}");
    let granted = |vars: &[&str]| HostAccess {
        pass_env: vars.iter().map(|v| v.to_string()).collect(),
        ..HostAccess::default()
    };
    let parsed = parse_with(&good, "w.yaml", granted(&["HOST_GH"])).unwrap();
    let (_, r) = build_with(&parsed, &[("HOST_GH", "ghp_secret_value")]).unwrap();
    let view = serde_json::to_string(&r).unwrap();
    assert!(!view.contains("ghp_secret_value"), "{view}");
    assert!(
        view.contains("\"GITHUB_TOKEN\":\"from $HOST_GH for api.github.com\""),
        "{view}"
    );
    // Unset on the host: refused before anything boots, at its line.
    let e = build_with(&parsed, &[]).err().unwrap();
    assert!(e.message.contains("`HOST_GH` is unset"), "{e}");
    assert_eq!(e.line, 6, "at the secret's entry: {e}");
    // An address is not a host a secret may go to.
    let e = build_with(
        &parse_with(
            &spec("    T:\n      from_env: V\n      hosts: [10.0.0.1]"),
            "w.yaml",
            granted(&["V"]),
        )
        .unwrap(),
        &[("V", "x")],
    )
    .err()
    .unwrap();
    assert!(e.message.contains("not a host name"), "{e}");
    let e = parse(
        &spec("    T:\n      env: V\n      hosts: [a.example]"),
        "w.yaml",
    )
    .unwrap_err();
    assert!(e.line >= 4, "{e}");
}

#[test]
fn a_skill_entry_may_declare_its_network_and_secrets() {
    let spec = |extra: &str| {
        format!(
            "kind: agent\nname: a\nllm: {{provider: mock, mock: {{turns: [{{text: ok}}]}}}}\nagent:\n  prompt: hi\n  skills:\n    - name: gh\n      content: \"---\\ndescription: GitHub\\n---\\n\"\n{extra}"
        )
    };
    let good = spec("      network: [api.github.com]\n      secrets:\n        GITHUB_TOKEN: {from_env: GH_PAT, hosts: [api.github.com]}\n");
    build_with(&parse(&good, "a.yaml").unwrap(), &[]).unwrap();
    let e = parse(
        &spec("      network: [\"api.github.com:http\"]\n"),
        "a.yaml",
    )
    .unwrap_err();
    assert!(e.message.contains("not a port"), "{e}");
    assert_eq!(e.line, 7, "at the skill: {e}");
}
