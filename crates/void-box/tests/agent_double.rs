//! The agents layer on the in-process guest double (`sandbox::fake`):
//! the loop, the tools, permissions, hooks, skills, structured output,
//! deadlines and events, with no VM. Each test runs in milliseconds; the
//! `agent_vm` tests prove the same paths on real micro-VMs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use void_box::agent::{AgentError, Decision, PostToolAction, PreToolAction, ToolOutcome, VoidBox};
use void_box::event::{EventReceiver, EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::sandbox::fake::{FakeGuest, FakeProvider, FakeReply};
use void_box::skill::Skill;

fn mock(turns: Vec<MockTurn>) -> LlmProvider {
    LlmProvider::mock(MockScript::new(turns))
}

/// A guest whose `sh -c` understands `cat FILE` and `python3 FILE` (which
/// "prints" the file's first line), like enough for the tools.
fn shell_double() -> FakeProvider {
    FakeProvider::with_commands(|guest: &FakeGuest, cmd| {
        let script = cmd.script().unwrap_or_default().to_string();
        let arg = |prefix: &str| script.strip_prefix(prefix).map(str::trim);
        if let Some(path) = arg("cat ") {
            return match guest.file(&absolute(path)) {
                Some(data) => FakeReply::ok(data),
                None => FakeReply::fail(1, format!("cat: {path}: No such file")),
            };
        }
        if let Some(path) = arg("python3 ") {
            let code = guest.file(&absolute(path)).unwrap_or_default();
            let line = String::from_utf8_lossy(&code)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            return FakeReply::ok(format!("{line}\n"));
        }
        FakeReply::fail(127, format!("sh: {script}: not found"))
    })
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/workspace/{path}")
    }
}

fn events() -> (EventSink, EventReceiver) {
    let (sink, rx) = EventSink::channel();
    (sink, rx)
}

fn drain(mut rx: EventReceiver) -> Vec<RunEvent> {
    let mut all = Vec::new();
    while let Some(e) = rx.try_recv() {
        all.push(e);
    }
    all
}

#[tokio::test]
async fn the_agent_writes_edits_and_runs_a_script_in_its_sandbox() {
    let provider = shell_double();
    let agent = VoidBox::new("coder")
        .llm(mock(vec![
            MockTurn::text("Writing.").call(
                "write",
                json!({"path": "job.py", "content": "print('draft')\n"}),
            ),
            MockTurn::default().call(
                "edit",
                json!({"path": "job.py", "old_string": "draft", "new_string": "final"}),
            ),
            MockTurn::default().call("bash", json!({"command": "python3 job.py"})),
            MockTurn::default().call("read", json!({"path": "/workspace/job.py"})),
            MockTurn::text("Done: it prints final."),
        ]))
        .prompt("Write and run a script")
        .build()
        .unwrap();
    let (sink, rx) = events();
    let started = Instant::now();
    let result = agent.run_on(&provider, None, sink).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));

    assert_eq!(result.text, "Done: it prints final.");
    assert_eq!(result.turns, 5);
    let summaries: Vec<&str> = result
        .tool_calls
        .iter()
        .map(|c| c.summary.as_str())
        .collect();
    assert_eq!(
        summaries,
        [
            "wrote 15 bytes to /workspace/job.py",
            "edited /workspace/job.py: 1 replacement(s)",
            "print('final')",
            "print('final')",
        ]
    );
    let guests = provider.guests();
    assert_eq!(guests.len(), 1, "one fresh sandbox per run");
    let guest = &guests[0];
    assert_eq!(
        guest.file("/workspace/job.py").unwrap(),
        b"print('final')\n"
    );
    let ran: Vec<String> = guest
        .commands()
        .iter()
        .filter_map(|c| c.script().map(str::to_string))
        .collect();
    assert_eq!(ran, ["python3 job.py"]);
    assert_eq!(guest.commands()[0].cwd, "/workspace");
    assert!(guest.is_stopped(), "the run shuts its sandbox down");

    let names: Vec<&str> = drain(rx)
        .iter()
        .map(|e| match e {
            RunEvent::StageStarted { .. } => "start",
            RunEvent::SandboxReady { .. } => "ready",
            RunEvent::TurnStarted { .. } => "turn",
            RunEvent::ToolCallStarted { .. } => "call",
            RunEvent::ToolCallFinished { .. } => "done",
            RunEvent::Usage { .. } => "usage",
            RunEvent::StageFinished { success: true, .. } => "end",
            _ => "other",
        })
        .filter(|n| *n != "other")
        .collect();
    assert_eq!(&names[..4], ["start", "ready", "turn", "usage"]);
    assert_eq!(names.last(), Some(&"end"));
    assert_eq!(names.iter().filter(|n| **n == "call").count(), 4);
}

#[tokio::test]
async fn denied_and_refused_calls_never_reach_the_guest() {
    let provider = shell_double();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let agent = VoidBox::new("careful")
        .llm(mock(vec![
            MockTurn::default().call("bash", json!({"command": "rm -rf /workspace"})),
            MockTurn::default().call("bash", json!({"command": "cat secret.txt"})),
            MockTurn::default().call("write", json!({"path": "notes.md", "content": "x"})),
            MockTurn::text("ok"),
        ]))
        .deny_tool("bash(rm *)")
        .ask_tool("bash(cat *)")
        .ask_tool("write")
        .on_ask(move |req| {
            log.lock().unwrap().push(req.tool.clone());
            // Approve writes, refuse the cat.
            let answer = if req.tool == "write" {
                Decision::Allow
            } else {
                Decision::Deny
            };
            Box::pin(async move { answer })
        })
        .prompt("p")
        .build()
        .unwrap();
    let result = agent
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    let calls = &result.tool_calls;
    assert!(calls[0].is_error && calls[0].summary.starts_with("Permission denied"));
    assert!(calls[1].is_error && calls[1].summary.contains("needs approval"));
    assert!(!calls[2].is_error);
    assert_eq!(*asked.lock().unwrap(), ["bash", "write"]);
    let guest = &provider.guests()[0];
    assert!(guest.commands().is_empty(), "{:?}", guest.commands());
    assert_eq!(guest.file("/workspace/notes.md").unwrap(), b"x");
}

#[tokio::test]
async fn an_unanswered_ask_gets_the_unattended_default() {
    let provider = shell_double();
    let agent = |unattended| {
        VoidBox::new("alone")
            .llm(mock(vec![
                MockTurn::default().call("bash", json!({"command": "cat a"})),
                MockTurn::text("ok"),
            ]))
            .ask_tool("bash")
            .unattended(unattended)
            .prompt("p")
            .build()
            .unwrap()
    };
    let denied = agent(Decision::Deny)
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    assert!(denied.tool_calls[0].is_error);
    let allowed = agent(Decision::Allow)
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    // Allowed: it ran (and failed: there is no file `a`).
    assert_eq!(allowed.tool_calls[0].summary, "[stderr] (+2 lines)");
    assert_eq!(provider.guests()[1].commands().len(), 1);
}

#[tokio::test]
async fn hooks_rewrite_block_and_replace_but_deny_still_wins() {
    let provider = shell_double();
    let agent = VoidBox::new("hooked")
        .llm(mock(vec![
            MockTurn::default().call("bash", json!({"command": "cat draft.txt"})),
            MockTurn::default().call("bash", json!({"command": "cat other.txt"})),
            MockTurn::default().call("bash", json!({"command": "cat blocked.txt"})),
            MockTurn::default().call("ls", json!({})),
            MockTurn::text("ok"),
        ]))
        .guest_file("/workspace/final.txt", "final text\n", 0o644)
        .deny_tool("bash(cat /etc/*)")
        .pre_tool(|call| match call.arguments["command"].as_str() {
            Some("cat draft.txt") => PreToolAction::Rewrite(json!({"command": "cat final.txt"})),
            // A rewrite into a denied call is refused, not run.
            Some("cat other.txt") => PreToolAction::Rewrite(json!({"command": "cat /etc/shadow"})),
            Some("cat blocked.txt") => PreToolAction::Block("not today".into()),
            _ => PreToolAction::Continue,
        })
        .post_tool(|call, _| {
            if call.tool == "ls" {
                PostToolAction::Replace(ToolOutcome::ok("listing hidden"))
            } else {
                PostToolAction::Keep
            }
        })
        .prompt("p")
        .build()
        .unwrap();
    let result = agent
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    let calls = &result.tool_calls;
    assert_eq!(calls[0].summary, "final text");
    assert_eq!(calls[0].arguments, json!({"command": "cat final.txt"}));
    assert!(
        calls[1].summary.starts_with("Permission denied"),
        "{}",
        calls[1].summary
    );
    assert_eq!(calls[2].summary, "Blocked by a hook: not today");
    assert_eq!(calls[3].summary, "listing hidden");
    let ran: Vec<String> = provider.guests()[0]
        .commands()
        .iter()
        .filter_map(|c| c.script().map(str::to_string))
        .collect();
    assert_eq!(ran, ["cat final.txt"]);
}

#[tokio::test]
async fn skills_are_provisioned_and_their_programs_allowed() {
    let provider = FakeProvider::with_commands(|_, cmd| {
        // `command -v jq` finds jq; nothing else is installed.
        match cmd.args.get(3).map(String::as_str) {
            Some("jq") => FakeReply::ok("/usr/bin/jq\n"),
            _ => FakeReply::fail(1, ""),
        }
    });
    let agent = VoidBox::new("skilled")
        .llm(mock(vec![MockTurn::text("ok")]))
        .skill(Skill::inline(
            "notes",
            "---\ndescription: how to take notes\n---\nUse bullets.",
        ))
        .skill(Skill::cli("jq"))
        .prompt("p")
        .build()
        .unwrap();
    agent
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    let guest = &provider.guests()[0];
    assert!(guest.config().allowed_commands.contains(&"jq".to_string()));
    let doc = guest
        .file("/workspace/.claude/skills/notes/SKILL.md")
        .unwrap();
    assert!(String::from_utf8(doc).unwrap().contains("Use bullets."));

    // A CLI skill the image lacks fails the run before the model is called.
    let missing = VoidBox::new("missing")
        .llm(mock(vec![MockTurn::text("never")]))
        .skill(Skill::cli("yq"))
        .prompt("p")
        .build()
        .unwrap();
    let err = missing
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Skill { .. }), "{err}");
    assert!(
        err.to_string().contains("`yq` is not in the guest image"),
        "{err}"
    );
    assert!(provider.guests()[1].is_stopped());
}

#[tokio::test]
async fn schema_output_gets_retries_and_then_fails() {
    let provider = FakeProvider::default();
    let schema =
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    let agent = |turns| {
        VoidBox::new("typed")
            .llm(mock(turns))
            .output_schema(schema.clone())
            .output_retries(1)
            .prompt("p")
            .build()
            .unwrap()
    };
    let ok = agent(vec![
        MockTurn::text("{\"n\": \"x\"}"),
        MockTurn::text("{\"n\": 3}"),
    ])
    .run_on(&provider, None, EventSink::none())
    .await
    .unwrap();
    assert_eq!(ok.output, Some(json!({"n": 3})));
    let err = agent(vec![MockTurn::text("no"), MockTurn::text("still no")])
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::InvalidOutput { attempts: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_turn_budget_and_the_run_deadline_end_a_run_and_its_sandbox() {
    let provider =
        FakeProvider::with_commands(|_, _| FakeReply::ok("slow").after(Duration::from_secs(600)));
    let looping = VoidBox::new("looping")
        .llm(mock(vec![
            MockTurn::default().call("ls", json!({})),
            MockTurn::default().call("ls", json!({})),
        ]))
        .max_turns(2)
        .prompt("p")
        .build()
        .unwrap();
    let err = looping
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::MaxTurns { max_turns: 2, .. }),
        "{err}"
    );

    let slow = VoidBox::new("slow")
        .llm(mock(vec![
            MockTurn::default().call("bash", json!({"command": "sleep 600"})),
            MockTurn::text("never"),
        ]))
        .timeout(Duration::from_millis(300))
        .prompt("p")
        .build()
        .unwrap();
    let started = Instant::now();
    let err = slow
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let guests = provider.guests();
    assert!(
        guests.iter().all(FakeGuest::is_stopped),
        "no sandbox outlives its run"
    );
}

#[tokio::test]
async fn a_declared_output_file_is_the_result() {
    let provider = FakeProvider::with_commands(|guest, _| {
        guest.put_file("/workspace/out/report.md", "# Report\n");
        FakeReply::ok("")
    });
    let agent = VoidBox::new("reporter")
        .llm(mock(vec![
            MockTurn::default().call("bash", json!({"command": "make report"})),
            MockTurn::text("wrote it"),
        ]))
        .output_file("out/report.md")
        .prompt("p")
        .build()
        .unwrap();
    let result = agent
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    assert_eq!(result.file.as_deref(), Some("# Report\n"));
    assert_eq!(result.handoff(), "# Report\n");

    // Missing file: the run fails and says which file.
    let nothing = FakeProvider::default();
    let err = agent
        .run_on(&nothing, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/workspace/out/report.md"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_sandbox_configuration_fails_at_build_time() {
    let err = VoidBox::new("tiny")
        .llm(mock(vec![]))
        .memory_mb(8)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("memory_mb"), "{err}");
    let err = VoidBox::new("net")
        .llm(mock(vec![]))
        .network(
            void_box::net::NetworkPolicy::public().with_limits(void_box::net::NetworkLimits {
                max_connections: 0,
                ..Default::default()
            }),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("network"), "{err}");
}

#[tokio::test]
async fn an_edit_that_would_amplify_a_file_is_refused_before_it_is_built() {
    let provider = shell_double();
    let file = vec![b'a'; 1 << 20];
    let agent = VoidBox::new("amplifier")
        .guest_file("/workspace/a.txt", file.clone(), 0o644)
        .llm(mock(vec![
            // 1 MiB of `a`, each replaced by 1 KiB: 1 GiB asked of the host.
            MockTurn::default().call(
                "edit",
                json!({"path": "a.txt", "old_string": "a", "new_string": "b".repeat(1024),
                       "replace_all": true}),
            ),
            MockTurn::text("Gave up."),
        ]))
        .prompt("Amplify")
        .build()
        .unwrap();
    let result = agent
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    let call = &result.tool_calls[0];
    assert!(call.is_error, "{call:?}");
    assert!(
        call.summary
            .contains("1073741824 bytes, over the 8388608-byte limit"),
        "{}",
        call.summary
    );
    let guest = &provider.guests()[0];
    assert_eq!(guest.file("/workspace/a.txt").unwrap(), file, "unchanged");
}

#[tokio::test]
async fn a_conversation_goes_on_turn_after_turn_with_its_history() {
    use void_box::sandbox::SandboxProvider;
    let provider = shell_double();
    let agent = VoidBox::new("chat")
        .llm(mock(vec![
            MockTurn::text("Writing it down.")
                .call("write", json!({"path": "note.txt", "content": "one\n"})),
            MockTurn::text("Noted."),
            MockTurn::text(r#"{"notes": 1}"#),
        ]))
        .prompt("Keep notes")
        .build()
        .unwrap();
    let sandbox = provider.boot(&agent.sandbox_config()).await.unwrap();
    let (first, history) = agent
        .converse_in(&sandbox, Vec::new(), "note one", None, EventSink::none())
        .await
        .unwrap();
    assert_eq!(first.text, "Noted.");
    assert_eq!(first.tool_calls.len(), 1);
    // user, assistant (the call), user (its result), assistant.
    assert_eq!(history.len(), 4);
    assert_eq!(
        provider.guests()[0].file("/workspace/note.txt").unwrap(),
        b"one\n"
    );

    // The next turn sees the whole conversation and answers in the shape asked.
    let schema = void_box::agent::OutputSchema::compile(json!({
        "type": "object", "required": ["notes"],
        "properties": {"notes": {"type": "integer"}}
    }))
    .unwrap();
    let (second, history) = agent
        .converse_in(
            &sandbox,
            history,
            "how many?",
            Some(&schema),
            EventSink::none(),
        )
        .await
        .unwrap();
    assert_eq!(second.output, Some(json!({"notes": 1})));
    assert_eq!(history.len(), 6);
    assert_eq!(history[4], void_box::llm::Message::user_text("how many?"));
}
