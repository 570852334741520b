//! The agents layer end to end: real VMs, and a mock LLM server on
//! 127.0.0.1 speaking the real Anthropic and OpenAI streaming wire formats.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::mock_llm::{turn, MockLlmServer, Reply, Wire};
use serde_json::{json, Value};
use void_box::agent::{AgentError, VoidBox};
use void_box::event::EventSink;
use void_box::skill::Skill;
use void_box::{Exec, Sandbox};

/// Every log line of this test binary, at TRACE, from every crate.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A unique key in a unique variable, so parallel tests cannot mix them up.
fn api_key(var: &str) -> String {
    let key = format!(
        "sk-test-{}-{:016x}",
        var.to_lowercase(),
        rand::random::<u64>()
    );
    std::env::set_var(var, &key);
    key
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Everything a guest process could see: every readable process
/// environment and every file under the writable and config trees, copied
/// out to the host and searched there (so the key itself never goes in).
async fn guest_exposure(sandbox: &Sandbox) -> Vec<u8> {
    let out = sandbox
        .exec(Exec::shell(
            "env; cat /proc/[0-9]*/environ 2>/dev/null; \
             tar cf - /workspace /tmp /home /etc /root 2>/dev/null",
        ))
        .await
        .unwrap();
    // The dump must really hold environments and files to prove anything.
    assert!(
        contains(&out.stdout, "HOME=/home/sandbox"),
        "no environment in the dump"
    );
    assert!(
        contains(&out.stdout, "sandbox:x:1000"),
        "no /etc in the dump"
    );
    out.stdout
}

fn tool_result_texts(body: &Value) -> Vec<String> {
    // Anthropic: user messages with tool_result blocks. OpenAI: role "tool".
    let mut texts = Vec::new();
    for message in body["messages"].as_array().unwrap() {
        if message["role"] == "tool" {
            texts.push(message["content"].as_str().unwrap_or_default().to_string());
        }
        if let Some(blocks) = message["content"].as_array() {
            for block in blocks {
                if block["type"] == "tool_result" {
                    texts.push(block["content"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    texts
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_agent_reads_edits_runs_and_returns_schema_json() {
    let logs = captured_logs();
    let key = api_key("VB_E2E_ANTHROPIC_KEY");
    let server = MockLlmServer::with_turns([
        turn("Reading the report.", &[("read", json!({"path": "report.txt"}))]),
        turn(
            "Fixing the status.",
            &[(
                "edit",
                json!({"path": "report.txt", "old_string": "status: failing", "new_string": "status: ok"}),
            )],
        ),
        turn("", &[("bash", json!({"command": "grep -c ok report.txt"}))]),
        turn("{\"status\": \"ok\", \"ok_lines\": 2}", &[]),
    ])
    .await;
    let schema = json!({
        "type": "object",
        "properties": {"status": {"enum": ["ok", "failing"]}, "ok_lines": {"type": "integer"}},
        "required": ["status", "ok_lines"]
    });
    let agent = VoidBox::new("fixer")
        .llm(server.provider(Wire::Anthropic, "VB_E2E_ANTHROPIC_KEY"))
        .guest_file(
            "/workspace/report.txt",
            "check: ok\nstatus: failing\n",
            0o644,
        )
        .output_schema(schema)
        .prompt("Fix the status line of report.txt, then count the ok lines.")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let result = agent
        .run_in(
            &sandbox,
            Some("previous stage says: hurry"),
            EventSink::none(),
        )
        .await
        .unwrap();

    assert_eq!(result.output, Some(json!({"status": "ok", "ok_lines": 2})));
    assert_eq!(result.turns, 4);
    assert_eq!(result.model, "claude-test");
    assert_eq!(
        (result.usage.input_tokens, result.usage.output_tokens),
        (400, 80)
    );
    let tools: Vec<&str> = result.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(tools, ["read", "edit", "bash"]);
    let file = sandbox.read_file("/workspace/report.txt").await.unwrap();
    assert_eq!(file, b"check: ok\nstatus: ok\n");

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let first = &requests[0].body;
    assert!(first["system"].as_str().unwrap().contains("\"ok_lines\""));
    let task = first["messages"][0]["content"].to_string();
    assert!(
        task.contains("Fix the status line") && task.contains("hurry"),
        "{task}"
    );
    let tool_names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tool_names,
        ["bash", "read", "write", "edit", "grep", "glob", "ls"]
    );
    // Each tool's real result went back to the model.
    let results = tool_result_texts(&requests[3].body);
    assert_eq!(results[0], "check: ok\nstatus: failing\n");
    assert!(results[1].contains("1 replacement"), "{results:?}");
    assert_eq!(results[2].trim(), "2");

    // The key went in the header, and nowhere else: not in request bodies,
    // not in the guest, not in the logs.
    assert!(requests
        .iter()
        .all(|r| r.header("x-api-key") == Some(key.as_str())));
    assert!(requests.iter().all(|r| !r.body.to_string().contains(&key)));
    let exposure = guest_exposure(&sandbox).await;
    assert!(
        contains(&exposure, "status: ok"),
        "the dump must include /workspace"
    );
    assert!(!contains(&exposure, &key), "the API key reached the guest");
    assert!(!sandbox.console_tail(1 << 20).contains(&key));
    let logs = logs.lock().unwrap().clone();
    assert!(contains(&logs, "tool call"), "the loop logs its tool calls");
    assert!(!contains(&logs, &key), "the API key appeared in the logs");
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_denied_tool_is_refused_and_the_model_is_told() {
    let logs = captured_logs();
    let key = api_key("VB_E2E_OPENAI_KEY");
    let server = MockLlmServer::with_turns([
        turn(
            "Cleaning up.",
            &[("bash", json!({"command": "rm -rf /workspace/data"}))],
        ),
        turn("I am not allowed to delete it.", &[]),
    ])
    .await;
    let agent = VoidBox::new("cleaner")
        .llm(server.provider(Wire::OpenAi, "VB_E2E_OPENAI_KEY"))
        .guest_file("/workspace/data/keep.txt", "keep", 0o644)
        .deny_tool("bash(rm *)")
        .prompt("Delete the data directory.")
        .build()
        .unwrap();
    let sandbox = agent.sandbox_config().build().await.unwrap();
    let result = agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    assert_eq!(result.text, "I am not allowed to delete it.");
    assert!(result.tool_calls[0].is_error);
    assert_eq!(
        sandbox.read_file("/workspace/data/keep.txt").await.unwrap(),
        b"keep"
    );

    let requests = server.requests();
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    let told = tool_result_texts(&requests[1].body);
    assert_eq!(told.len(), 1);
    assert!(
        told[0].contains("Permission denied") && told[0].contains("bash(rm *)"),
        "{told:?}"
    );
    let exposure = guest_exposure(&sandbox).await;
    assert!(!contains(&exposure, &key), "the API key reached the guest");
    assert!(!contains(&logs.lock().unwrap(), &key));
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_is_retried_after_retry_after() {
    api_key("VB_E2E_RETRY_KEY");
    let server = MockLlmServer::start().await;
    server.push_status(429, Some("1"));
    server.push_turn(turn("done after waiting", &[]));
    let agent = VoidBox::new("patient")
        .llm(server.provider(Wire::Anthropic, "VB_E2E_RETRY_KEY"))
        .prompt("hi")
        .build()
        .unwrap();
    let result = agent.run(None).await.unwrap();
    assert_eq!(result.text, "done after waiting");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received_at - requests[0].received_at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_streams_fail_the_run_clearly() {
    api_key("VB_E2E_MALFORMED_KEY");
    for (wire, reply) in [
        (Wire::Anthropic, Reply::MalformedJson),
        (Wire::OpenAi, Reply::EndEarly(turn("partial", &[]))),
    ] {
        let server = MockLlmServer::start().await;
        server.push(reply);
        let agent = VoidBox::new("victim")
            .llm(server.provider(wire, "VB_E2E_MALFORMED_KEY"))
            .prompt("hi")
            .build()
            .unwrap();
        let err = agent.run(None).await.unwrap_err();
        assert!(matches!(err, AgentError::Llm { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("box `victim`") && msg.contains("malformed"),
            "{msg}"
        );
        assert_eq!(
            server.request_count(),
            1,
            "a malformed stream is not retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_skill_tools_are_offered_and_called() {
    api_key("VB_E2E_MCP_KEY");
    let server = MockLlmServer::with_turns([
        turn("Adding.", &[("mcp__calc__add", json!({"a": 3, "b": 4}))]),
        turn("3 + 4 = 7", &[]),
    ])
    .await;
    let agent = VoidBox::new("calculator")
        .skill(Skill::mcp("calc", common::MCP_FIXTURE).upload(common::mcp_fixture_path()))
        .llm(server.provider(Wire::Anthropic, "VB_E2E_MCP_KEY"))
        .prompt("What is 3 + 4?")
        .build()
        .unwrap();
    let result = agent.run(None).await.unwrap();
    assert_eq!(result.text, "3 + 4 = 7");
    assert_eq!(result.tool_calls[0].name, "mcp__calc__add");
    assert!(!result.tool_calls[0].is_error, "{:?}", result.tool_calls[0]);
    let requests = server.requests();
    let offered: Vec<String> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    for tool in ["mcp__calc__add", "mcp__calc__shout", "mcp__calc__fail"] {
        assert!(offered.iter().any(|o| o == tool), "{offered:?}");
    }
    assert_eq!(tool_result_texts(&requests[1].body), ["7"]);
}
