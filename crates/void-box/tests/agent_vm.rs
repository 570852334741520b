//! End-to-end tests of the agents layer with real VMs and the scripted mock
//! provider: the loop, tools in the guest, permissions, hooks, structured
//! output, skills and the claude-code engine.

use std::sync::{Arc, Mutex};

use serde_json::json;
use void_box::agent::{AgentError, Decision, PostToolAction, PreToolAction, ToolOutcome, VoidBox};
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::skill::Skill;

fn mock(turns: Vec<MockTurn>) -> LlmProvider {
    LlmProvider::mock(MockScript::new(turns))
}

async fn guest_text(sandbox: &void_box::Sandbox, path: &str) -> String {
    String::from_utf8(sandbox.read_file(path).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_edits_runs_and_returns_schema_valid_json() {
    let schema = json!({
        "type": "object",
        "properties": {"count": {"type": "integer"}, "lines": {"type": "integer"}},
        "required": ["count", "lines"],
        "additionalProperties": false
    });
    let agent = VoidBox::new("editor")
        .guest_file("/workspace/notes.txt", "title: demo\ncount: 1\n", 0o644)
        .llm(mock(vec![
            MockTurn::text("Reading.").call("read", json!({"path": "notes.txt"})),
            MockTurn::text("Editing.").call(
                "edit",
                json!({"path": "notes.txt", "old_string": "count: 1", "new_string": "count: 2"}),
            ),
            MockTurn::default().call(
                "bash",
                json!({"command": "wc -l < notes.txt; grep count notes.txt"}),
            ),
            // Not valid against the schema: goes back to the model once.
            MockTurn::text("{\"count\": \"two\"}"),
            MockTurn::text("```json\n{\"count\": 2, \"lines\": 2}\n```"),
        ]))
        .output_schema(schema)
        .prompt("Bump the count in notes.txt")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let (sink, mut rx) = EventSink::channel();
    let result = agent.run_in(&sandbox, None, sink).await.unwrap();

    assert_eq!(result.output, Some(json!({"count": 2, "lines": 2})));
    assert_eq!(result.turns, 5);
    let names: Vec<&str> = result.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["read", "edit", "bash"]);
    assert!(
        result.tool_calls.iter().all(|c| !c.is_error),
        "{:?}",
        result.tool_calls
    );
    assert_eq!(result.tool_calls[0].summary, "title: demo (+1 lines)");
    assert_eq!(result.tool_calls[2].summary, "2 (+1 lines)");
    assert!(result.usage.input_tokens > 0 && result.usage.output_tokens > 0);
    assert_eq!(result.cost_usd, Some(0.0));
    // The edit really happened in the guest.
    assert_eq!(
        guest_text(&sandbox, "/workspace/notes.txt").await,
        "title: demo\ncount: 2\n"
    );

    let mut events = Vec::new();
    while let Some(e) = rx.try_recv() {
        events.push(e);
    }
    let started = events
        .iter()
        .filter(|e| matches!(e, RunEvent::ToolCallStarted { .. }))
        .count();
    let finished = events
        .iter()
        .filter(|e| matches!(e, RunEvent::ToolCallFinished { .. }))
        .count();
    assert_eq!((started, finished), (3, 3));
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::TextDelta { text, .. } if text == "Editing.")));
    assert!(events.iter().any(|e| matches!(e, RunEvent::Usage { .. })));
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_failures_are_bounded() {
    let agent = VoidBox::new("stubborn")
        .llm(mock(vec![
            MockTurn::text("nope"),
            MockTurn::text("[1]"),
            MockTurn::text("{}"),
        ]))
        .output_schema(json!({"type": "object", "required": ["answer"]}))
        .output_retries(1)
        .prompt("answer")
        .build()
        .unwrap();
    let err = agent.run(None).await.unwrap_err();
    match &err {
        AgentError::InvalidOutput {
            attempts, errors, ..
        } => {
            assert_eq!(*attempts, 2);
            assert!(errors[0].contains("object"), "{errors:?}");
        }
        other => panic!("unexpected: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_hooks_and_truncation() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked_in_hook = asked.clone();
    let seen_by_post_hook = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_by_post_hook.clone();
    let agent = VoidBox::new("guarded")
        .guest_file("/workspace/keep.txt", "precious", 0o644)
        .llm(mock(vec![
            MockTurn::default()
                .call("bash", json!({"command": "rm -f keep.txt"}))
                .call("write", json!({"path": "ok.txt", "content": "yes"}))
                .call("write", json!({"path": "secret/no.txt", "content": "no"}))
                .call("bash", json!({"command": "echo original"}))
                .call("bash", json!({"command": "seq 1 20000"}))
                .call("ls", json!({"path": "/workspace"})),
            MockTurn::text("done"),
        ]))
        .deny_tool("bash(rm *)")
        .ask_tool("write")
        .on_ask(move |req| {
            let asked = asked_in_hook.clone();
            Box::pin(async move {
                let path = req.arguments["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                asked.lock().unwrap().push(path.clone());
                if path.starts_with("secret/") {
                    Decision::Deny
                } else {
                    Decision::Allow
                }
            })
        })
        .pre_tool(|call| match call.arguments["command"].as_str() {
            Some("echo original") => PreToolAction::Rewrite(json!({"command": "echo rewritten"})),
            _ if call.tool == "ls" => PreToolAction::Block("listing is not needed".into()),
            _ => PreToolAction::Continue,
        })
        .post_tool(move |call, out| {
            seen.lock().unwrap().push(out.content.clone());
            if call.tool == "write" && !out.is_error {
                PostToolAction::Replace(ToolOutcome::ok("write acknowledged by hook"))
            } else {
                PostToolAction::Keep
            }
        })
        .max_tool_output(2000)
        .prompt("try things")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let result = agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    let calls = &result.tool_calls;
    assert_eq!(calls.len(), 6);
    assert!(
        calls[0].is_error && calls[0].summary.contains("Permission denied"),
        "{:?}",
        calls[0]
    );
    assert!(calls[0].summary.contains("bash(rm *)"));
    assert_eq!(
        guest_text(&sandbox, "/workspace/keep.txt").await,
        "precious"
    );
    assert_eq!(calls[1].summary, "write acknowledged by hook");
    assert_eq!(guest_text(&sandbox, "/workspace/ok.txt").await, "yes");
    assert!(calls[2].is_error && calls[2].summary.contains("needs approval"));
    assert!(sandbox.stat("/workspace/secret/no.txt").await.is_err());
    assert_eq!(*asked.lock().unwrap(), ["ok.txt", "secret/no.txt"]);
    assert_eq!(calls[3].arguments, json!({"command": "echo rewritten"}));
    assert_eq!(calls[3].summary, "rewritten");
    assert!(calls[4].summary.starts_with("1 ("), "{:?}", calls[4]);
    // `seq 1 20000` prints 108 894 bytes; the host keeps 2000 - 128 of
    // them (room for the notice) and the model gets head, notice, tail.
    let seq_output = seen_by_post_hook.lock().unwrap()[4].clone();
    assert!(seq_output.len() < 2000, "{}", seq_output.len());
    assert!(
        seq_output.contains("[... output truncated: 107022 bytes omitted ...]"),
        "{seq_output}"
    );
    assert!(seq_output.starts_with("1\n2\n") && seq_output.ends_with("19999\n20000\n"));
    assert!(calls[5].is_error && calls[5].summary.contains("listing is not needed"));
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn skills_exist_only_when_declared() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hn-api.md");
    std::fs::write(
        &file,
        "---\nname: hn-api\ndescription: HN API via curl + jq\n---\n# HN\nUse curl.\n",
    )
    .unwrap();
    let agent = VoidBox::new("skilled")
        .skill(Skill::file(&file))
        .skill(Skill::inline("style", "Write short sentences.").description("house style"))
        .skill(Skill::cli("sed"))
        .llm(mock(vec![
            MockTurn::default().call("bash", json!({"command": "ls /workspace/.claude/skills"})),
            MockTurn::text("ok"),
        ]))
        .prompt("list skills")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let result = agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    assert_eq!(result.tool_calls[0].summary, "hn-api (+1 lines)");
    assert!(
        guest_text(&sandbox, "/workspace/.claude/skills/hn-api/SKILL.md")
            .await
            .contains("Use curl.")
    );
    assert_eq!(
        guest_text(&sandbox, "/workspace/.claude/skills/style/SKILL.md").await,
        "Write short sentences."
    );

    // A box without skills has no skills directory at all.
    let bare = VoidBox::new("bare")
        .llm(mock(vec![MockTurn::text("ok")]))
        .build()
        .unwrap();
    let bare_sandbox = bare.sandbox_config().build().await.unwrap();
    bare.run_in(&bare_sandbox, None, EventSink::none())
        .await
        .unwrap();
    assert!(bare_sandbox.stat("/workspace/.claude").await.is_err());
    sandbox.shutdown().await.unwrap();
    bare_sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_cli_skill_fails_before_the_agent_starts() {
    let agent = VoidBox::new("needs-jq")
        .skill(Skill::cli("jq"))
        .llm(mock(vec![]))
        .build()
        .unwrap();
    let err = agent.run(None).await.unwrap_err().to_string();
    assert!(
        err.contains("cli:jq") && err.contains("not in the guest image"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_turns_and_unknown_tools() {
    let agent = VoidBox::new("looper")
        .llm(mock(vec![
            MockTurn::default().call("teleport", json!({})),
            MockTurn::default().call("bash", json!({"command": "true"})),
            MockTurn::text("never reached"),
        ]))
        .max_turns(2)
        .build()
        .unwrap();
    let err = agent.run(None).await.unwrap_err();
    assert!(
        matches!(err, AgentError::MaxTurns { max_turns: 2, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_engine_parses_stream_json() {
    let standin = include_str!("fixtures/claude-standin.sh");
    let agent = VoidBox::new("cc")
        .skill(Skill::agent("claude-code"))
        .skill(Skill::inline("notes", "---\ndescription: notes\n---\nbody"))
        .guest_file("/workspace/bin/claude", standin, 0o755)
        .claude_code_command("/workspace/bin/claude")
        .output_schema(json!({"type": "object", "required": ["skills"]}))
        .prompt("What skills do you have?")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let (sink, mut rx) = EventSink::channel();
    let result = agent
        .run_in(&sandbox, Some("from stage one"), sink)
        .await
        .unwrap();
    assert_eq!(result.output, Some(json!({"skills": "notes"})));
    assert_eq!(result.turns, 2);
    assert_eq!(result.usage.input_tokens, 230);
    assert_eq!(result.usage.output_tokens, 35);
    assert_eq!(result.cost_usd, Some(0.0042));
    assert_eq!(result.model, "claude-sonnet-4-5");
    assert_eq!(result.tool_calls.len(), 1);
    assert_eq!(result.tool_calls[0].name, "Bash");
    assert_eq!(result.tool_calls[0].summary, "notes");
    let prompt = guest_text(&sandbox, "/tmp/claude-prompt.txt").await;
    assert!(prompt.starts_with("What skills do you have?") && prompt.ends_with("from stage one"));
    let mut kinds = Vec::new();
    while let Some(e) = rx.try_recv() {
        kinds.push(match e {
            RunEvent::TextDelta { .. } => "text",
            RunEvent::ToolCallStarted { .. } => "tool_start",
            RunEvent::ToolCallFinished { .. } => "tool_end",
            RunEvent::Usage { .. } => "usage",
            _ => "other",
        });
    }
    assert_eq!(
        kinds,
        ["usage", "text", "tool_start", "tool_end", "usage", "text"]
    );
    sandbox.shutdown().await.unwrap();

    let missing = VoidBox::new("cc-missing")
        .skill(Skill::agent("claude-code"))
        .build()
        .unwrap();
    let err = missing.run(None).await.unwrap_err().to_string();
    assert!(err.contains("`claude` is not in the guest image"), "{err}");
}

#[test]
fn bad_configuration_is_refused_at_build() {
    let err = VoidBox::new("x").build().unwrap_err().to_string();
    assert!(err.contains("no LLM provider"), "{err}");
    let err = VoidBox::new("x")
        .llm(mock(vec![]))
        .network(
            void_box::net::NetworkPolicy::public().with_limits(void_box::net::NetworkLimits {
                max_connections: 0,
                ..Default::default()
            }),
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("network"), "{err}");
    let err = VoidBox::new("x")
        .skill(Skill::agent("gpt-engineer"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown agent engine `gpt-engineer`"), "{err}");
    let err = VoidBox::new("x")
        .llm(mock(vec![]))
        .output_schema(json!({"type": 5}))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid output schema"), "{err}");
    let err = VoidBox::new("x")
        .llm(mock(vec![]))
        .deny_tool("bash(rm")
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing `)`"), "{err}");
}

/// Serves `body` at `/skill.md` on 127.0.0.1 until the returned sender drops.
async fn serve_skill(body: &'static str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = axum::Router::new().route(
        "/hn/SKILL.md",
        axum::routing::get(move || async move { body }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hn/SKILL.md", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_skills_are_pinned_by_hash_and_cached() {
    use sha2::{Digest, Sha256};
    // Unique per run so the cache cannot answer before the server does.
    let body: &'static str = Box::leak(
        format!(
            "---\nname: hn\ndescription: remote HN skill\n---\nnonce {}\n",
            std::process::id() as u64 * 1_000_003 + rand::random::<u32>() as u64
        )
        .into_boxed_str(),
    );
    let good = hex::encode(Sha256::digest(body.as_bytes()));
    let (url, stop) = serve_skill(body).await;

    let wrong = VoidBox::new("pinned")
        .skill(Skill::remote(&url).sha256(&"0".repeat(64)))
        .llm(mock(vec![MockTurn::text("unreachable")]))
        .build()
        .unwrap();
    let err = wrong.run(None).await.unwrap_err();
    assert!(matches!(err, AgentError::Skill { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("SHA-256 mismatch") && msg.contains(&good),
        "{msg}"
    );

    let unpinned = VoidBox::new("unpinned")
        .skill(Skill::remote(&url))
        .llm(mock(vec![MockTurn::text("unreachable")]))
        .build()
        .unwrap();
    let msg = unpinned.run(None).await.unwrap_err().to_string();
    assert!(msg.contains("must pin its hash"), "{msg}");

    let agent = VoidBox::new("pinned-ok")
        .skill(Skill::remote(&url).sha256(&good))
        .llm(mock(vec![MockTurn::text("ok")]))
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    assert_eq!(
        guest_text(&sandbox, "/workspace/.claude/skills/hn/SKILL.md").await,
        body
    );
    // With the server gone, the verified copy in the cache serves the next run.
    drop(stop);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    sandbox.shutdown().await.unwrap();
}
