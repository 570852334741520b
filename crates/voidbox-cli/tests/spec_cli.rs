//! `voidbox validate`, `inspect` and `run` on spec files, end to end. The
//! `run` tests boot real VMs; their model is the scripted mock, so they
//! run offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with no provider keys, so `auto` resolves to the mock.
fn voidbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voidbox"));
    cmd.env_remove("ANTHROPIC_API_KEY")
        .env_remove("OLLAMA_MODEL");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    voidbox().args(args).output().unwrap()
}

/// Two stages; the first calls a real tool in its VM.
const TWO_STAGES: &str = "\
api_version: v1
kind: pipeline
name: two-stage
sandbox:
  memory_mb: 256
llm:
  provider: auto
  mock:
    turns:
      - text: Checking the guest.
        tool_calls:
          - name: bash
            input: {command: 'echo marker-$((6*7)) from $(uname -s)'}
      - text: Finished the check.
pipeline:
  boxes:
    - name: first
      prompt: Check the guest.
    - name: second
      prompt: Summarise.
  stages:
    - {type: box, name: first}
    - {type: box, name: second}
";

#[test]
fn validate_accepts_a_good_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "good.yaml", TWO_STAGES);
    let out = run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok: pipeline two-stage (2 boxes)\n");
}

#[test]
fn validate_places_errors_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "bad.yaml",
        &TWO_STAGES.replace("  memory_mb: 256", "  memroy_mb: 256"),
    );
    let out = run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:3: unknown field `memroy_mb` (hint: did you mean `memory_mb`?)",
            spec.display()
        )),
        "{err}"
    );
    // The line it points at, with a caret under the column.
    assert!(err.contains(" 5 |   memroy_mb: 256\n   |   ^\n"), "{err}");

    let spec = write_spec(
        dir.path(),
        "stage.yaml",
        &TWO_STAGES.replace("{type: box, name: second}", "{type: box, name: secnd}"),
    );
    let out = run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(":23:25: stage names unknown box `secnd` (hint: did you mean `second`?)"),
        "{err}"
    );
}

#[test]
fn inspect_shows_the_resolved_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "p.yaml", TWO_STAGES);
    let out = run(&["inspect", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    for needle in [
        "kind: pipeline",
        "provider: mock",
        "requested: auto",
        "neither ANTHROPIC_API_KEY nor OLLAMA_MODEL is set",
        "memory_mb: 256",
        "mock_turns: 2",
    ] {
        assert!(yaml.contains(needle), "{needle} in:\n{yaml}");
    }
    let out = run(&["inspect", "--format", "json", spec.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["pipeline"]["stages"],
        serde_json::json!([["first"], ["second"]])
    );
    assert_eq!(json["pipeline"]["boxes"][1]["llm"]["provider"], "mock");
    // With a key, auto picks Anthropic and names the variable, not the key.
    let out = voidbox()
        .args(["inspect", spec.to_str().unwrap()])
        .env("ANTHROPIC_API_KEY", "sk-ant-do-not-print")
        .output()
        .unwrap();
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("provider: anthropic") && yaml.contains("api_key_env: ANTHROPIC_API_KEY"),
        "{yaml}"
    );
    assert!(!yaml.contains("sk-ant-do-not-print"));
}

#[test]
fn run_streams_prefixed_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "p.yaml", TWO_STAGES);
    let out = run(&["run", "--file", spec.to_str().unwrap(), "--input", "go"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for needle in [
        "[vm:first] booted in",
        "[vm:first] Checking the guest.",
        "[vm:first] → bash echo marker-$((6*7))",
        // The tool really ran in the guest.
        "[vm:first] ← bash ok",
        "marker-42 from Linux",
        "[vm:second] Finished the check.",
        "STAGE",
        "1. first",
        "2. second",
    ] {
        assert!(err.contains(needle), "{needle} in:\n{err}");
    }
    let row = err.lines().find(|l| l.starts_with("2. second")).unwrap();
    assert!(row.contains(" ok ") && row.contains('$'), "{row}");
    assert_eq!(text(&out.stdout), "Finished the check.\n");
}

#[test]
fn run_json_prints_one_object_per_line_then_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "p.yaml", TWO_STAGES);
    let out = run(&["run", "--file", spec.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["ts_ms"].as_u64().is_some()));
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "stage_started").count(), 2);
    assert!(events.contains(&"tool_call_finished") && events.contains(&"usage"));
    let result = lines.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["success"], true);
    assert_eq!(result["output"], "Finished the check.");
    let stages = result["result"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["boxes"][0]["status"], "succeeded");
    assert_eq!(
        stages[0]["boxes"][0]["result"]["tool_calls"][0]["name"],
        "bash"
    );
    // What isolated each box is in its result and its ready event.
    let accel = void_box::vm::Accel::from_env().unwrap().to_string();
    assert_eq!(stages[0]["boxes"][0]["result"]["accel"], accel.as_str());
    let ready = lines
        .iter()
        .find(|l| l["event"] == "sandbox_ready")
        .unwrap();
    assert_eq!(ready["accel"], accel.as_str());
}

#[test]
fn a_failing_run_exits_non_zero_naming_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    // The second box's script ends before the agent is done.
    let body = TWO_STAGES.replace(
        "      prompt: Summarise.\n",
        "      prompt: Summarise.\n      llm:\n        provider: mock\n        mock:\n          turns:\n            - tool_calls: [{name: bash, input: {command: 'true'}}]\n",
    );
    let spec = write_spec(dir.path(), "fail.yaml", &body);
    let out = run(&["run", "--file", spec.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stage 2 (box `second`) failed"), "{err}");
    assert!(err.contains("asked for turn 2"), "{err}");
    let row = err.lines().find(|l| l.starts_with("2. second")).unwrap();
    assert!(row.contains("failed"), "{row}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_example_specs_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/specs");
    for name in [
        "quick_demo.yaml",
        "trading_pipeline.yaml",
        "parallel_pipeline.yaml",
    ] {
        let out = run(&["validate", root.join(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("ok: pipeline "), "{name}");
    }
    let out = run(&[
        "validate",
        root.join("hackernews_agent.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: agent "));
}

#[test]
fn a_sandbox_spec_streams_its_command_and_fails_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "s.yaml",
        "kind: sandbox\nname: cmd\nrun:\n  program: sh\n  args: [-c, 'echo got $(cat); echo oops >&2; exit 3']\n",
    );
    let out = run(&["run", "--file", spec.to_str().unwrap(), "--input", "hello"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[vm:cmd] got hello\n"), "{err}");
    assert!(err.contains("[vm:cmd] oops\n"), "{err}");
    assert!(err.contains("`cmd` exited with code 3"), "{err}");
    assert_eq!(text(&out.stdout), "got hello\n");
}
