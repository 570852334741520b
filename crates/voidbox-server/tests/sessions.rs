//! Agent sessions on guest doubles with a scripted model: turns that go
//! on from the history (generate, stream, generate_object), history,
//! context, compact and clear; human-in-the-loop confirmations approved,
//! denied and timed out; 50 turns queued in the generate lane and a cancel
//! answering in under 100 ms; a session going on after a restart.

mod common;
#[path = "../../void-box/tests/common/mock_llm.rs"]
mod mock_llm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json, lane_metric, read_sse, Daemon};
use reqwest::Method;
use serde_json::{json as j, Value};
use void_box::sandbox::fake::{FakeProvider, FakeReply};

/// Guests whose shell echoes what it ran; `sleep` sleeps ten minutes.
fn guests() -> Arc<FakeProvider> {
    Arc::new(FakeProvider::with_commands(|_, cmd| {
        let script = cmd.script().unwrap_or_default().to_string();
        if script.starts_with("sleep") {
            return FakeReply::ok("").after(Duration::from_secs(600));
        }
        FakeReply::ok(format!("ran: {script}\n"))
    }))
}

/// An agent spec whose model plays `turns` (YAML flow items).
fn spec(turns: &[&str]) -> String {
    format!(
        "api_version: v1\nkind: agent\nname: helper\nllm:\n  provider: mock\n  mock:\n    turns:\n{}agent:\n  prompt: You help.\n",
        turns
            .iter()
            .map(|t| format!("      - {t}\n"))
            .collect::<String>()
    )
}

async fn create(d: &Daemon, body: Value) -> String {
    let made = json(
        d.call(Method::POST, "/v1/sessions")
            .json(&body)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    made["id"].as_str().unwrap().to_string()
}

async fn turn(d: &Daemon, id: &str, route: &str, body: Value) -> reqwest::Response {
    d.call(Method::POST, &format!("/v1/sessions/{id}/{route}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_goes_on_from_its_history_and_keeps_it_in_shape() {
    let d = Daemon::start(guests(), 4).await;
    let id = create(
        &d,
        j!({"spec": spec(&[
            "{text: Looking., tool_calls: [{name: bash, input: {command: ls}}]}",
            "{text: Found it.}",
            "{text: Second answer.}",
            "{text: '{\"count\": 2}'}",
            "{text: We looked around twice.}",
        ])}),
    )
    .await;
    let first = json(
        turn(&d, &id, "generate", j!({"message": "look"})).await,
        200,
    )
    .await;
    assert_eq!(first["text"], "Found it.");
    assert!(
        first["tool_calls"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("ran: ls"),
        "{first}"
    );

    let events = read_sse(
        turn(&d, &id, "stream", j!({"message": "again"})).await,
        100,
        |_| {},
    )
    .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        names.contains(&"text_delta") && names.contains(&"usage"),
        "{names:?}"
    );
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["result"]["text"], "Second answer.");

    let schema =
        j!({"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}});
    let object = json(
        turn(
            &d,
            &id,
            "generate_object",
            j!({"message": "how many?", "schema": schema}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(object["output"], j!({"count": 2}));

    let history = json(
        d.call(Method::GET, &format!("/v1/sessions/{id}/history"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(history.as_array().unwrap().len(), 8);
    assert!(
        history[0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("You help."),
        "the prompt opens the conversation: {}",
        history[0]
    );
    let context = json(
        d.call(Method::GET, &format!("/v1/sessions/{id}/context"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (
            context["messages"].clone(),
            context["totals"]["turns"].clone()
        ),
        (j!(8), j!(3))
    );

    let compacted = json(turn(&d, &id, "compact", j!({})).await, 200).await;
    assert_eq!(compacted, j!({"messages_before": 8, "messages_after": 2}));
    // The next turn goes on from the summary (the scripted model plays by
    // the number of answers in the conversation: one, after compacting).
    let after = json(
        turn(&d, &id, "generate", j!({"message": "more"})).await,
        200,
    )
    .await;
    assert_eq!(after["text"], "Found it.");
    let history = json(
        d.call(Method::GET, &format!("/v1/sessions/{id}/history"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(history[0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("We looked around twice."));

    let cleared = turn(&d, &id, "clear", j!({})).await;
    assert_eq!(cleared.status().as_u16(), 204);
    let info = json(
        d.call(Method::GET, &format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(info["messages"], 0);

    // Bad input is refused and changes nothing.
    for (route, body, status) in [
        ("generate_object", j!({"message": "x"}), 400),
        (
            "generate_object",
            j!({"message": "x", "schema": {"type": 7}}),
            400,
        ),
        ("generate", j!({"message": "  "}), 400),
        ("generate", j!({"mesage": "typo"}), 422),
    ] {
        let answer = turn(&d, &id, route, body.clone()).await;
        assert_eq!(answer.status().as_u16(), status, "{route} {body}");
    }
    assert_eq!(
        turn(&d, "session-nope", "generate", j!({"message": "x"}))
            .await
            .status()
            .as_u16(),
        404
    );
    for bad in [
        j!({"spec": "kind: sandbox\nname: s\nrun: {program: true}\n"}),
        j!({"spec": "kind: agent\nname: [\n"}),
        j!({"spec": spec(&[]), "permissions": {"ask": ["bash("]}}),
    ] {
        let answer = d
            .call(Method::POST, "/v1/sessions")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 422, "{bad}");
    }
    let listed = json(
        d.call(Method::GET, "/v1/sessions").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let gone = d
        .call(Method::DELETE, &format!("/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 204);
    let gone = d
        .call(Method::DELETE, &format!("/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    d.stop().await;
}

/// Reads a stream's events until `confirmation_required`, returning its id.
async fn until_confirmation(
    body: &mut futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: &mut String,
) -> Value {
    use futures::StreamExt;
    let mut called = false;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            called |= block.contains("event: tool_call\n") || block.contains("event:tool_call\n");
            if block.contains("event: confirmation_required")
                || block.contains("event:confirmation_required")
            {
                assert!(called, "the call comes before its confirmation");
                let data = block.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("events keep coming")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The rest of a stream's events, as (name, data).
async fn rest(
    mut body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    mut buf: String,
) -> Vec<(String, Value)> {
    use futures::StreamExt;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next())
        .await
        .expect("the turn ends")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    buf.split("\n\n")
        .filter_map(|block| {
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))?
                .trim()
                .to_string();
            let data = block.lines().find_map(|l| l.strip_prefix("data:"))?.trim();
            Some((name, serde_json::from_str(data).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn an_ask_rule_waits_for_the_client_and_its_deadline() {
    use futures::StreamExt;
    let d = Daemon::start(guests(), 4).await;
    let call = "{tool_calls: [{name: bash, input: {command: 'touch /workspace/x'}}]}";
    let id = create(
        &d,
        j!({
            "spec": spec(&[call, "{text: one}", call, "{text: two}", call, "{text: three}"]),
            "permissions": {"ask": ["bash"]},
            "confirm_timeout_secs": 1,
        }),
    )
    .await;
    for (answer, by, refused) in [
        (Some("allow"), "client", false),
        (Some("deny"), "client", true),
        (None, "deadline", true),
    ] {
        let response = turn(&d, &id, "stream", j!({"message": "go"})).await;
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.bytes_stream().boxed();
        let mut buf = String::new();
        let asked = until_confirmation(&mut body, &mut buf).await;
        assert_eq!(asked["tool"], "bash");
        assert_eq!(asked["arguments"]["command"], "touch /workspace/x");
        // One turn at a time.
        assert_eq!(
            turn(&d, &id, "generate", j!({"message": "meanwhile"}))
                .await
                .status()
                .as_u16(),
            409
        );
        if let Some(decision) = answer {
            let started = Instant::now();
            let confirmed = d
                .call(
                    Method::POST,
                    &format!(
                        "/v1/sessions/{id}/confirmations/{}",
                        asked["id"].as_str().unwrap()
                    ),
                )
                .json(&j!({"decision": decision}))
                .send()
                .await
                .unwrap();
            assert_eq!(confirmed.status().as_u16(), 204);
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "a confirmation is a control request"
            );
        }
        let events = rest(body, buf).await;
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        let at = |name: &str| names.iter().position(|n| *n == name);
        assert!(
            at("confirmation_answered") < at("tool_result"),
            "in order: {names:?}"
        );
        let answered = events
            .iter()
            .find(|(n, _)| n == "confirmation_answered")
            .expect("answered");
        assert_eq!(answered.1["by"], by);
        let result = events
            .iter()
            .find(|(n, _)| n == "tool_result")
            .expect("a result");
        assert_eq!(result.1["is_error"], refused, "{events:?}");
        assert_eq!(events.last().unwrap().0, "done");
    }
    let stale = d
        .call(
            Method::POST,
            &format!("/v1/sessions/{id}/confirmations/confirm-0"),
        )
        .json(&j!({"decision": "allow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 404);
    d.stop().await;
}

#[tokio::test]
async fn fifty_queued_turns_and_a_cancel_in_under_100_ms() {
    let d = Arc::new(
        Daemon::start_with(guests(), |config| {
            config.max_sandboxes = 64;
            config.lanes.parse_into("generate=2:50").unwrap();
        })
        .await,
    );
    let slow = spec(&[
        "{tool_calls: [{name: bash, input: {command: 'sleep 600'}}]}",
        "{text: never}",
    ]);
    let mut ids = Vec::new();
    for _ in 0..53 {
        ids.push(create(&d, j!({"spec": slow})).await);
    }
    let mut waiting = Vec::new();
    for id in &ids[..52] {
        let (d, id) = (d.clone(), id.clone());
        waiting.push(tokio::spawn(async move {
            turn(&d, &id, "generate", j!({"message": "go"}))
                .await
                .status()
                .as_u16()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while lane_metric(&d, "voidbox_lane_waiting", "generate").await < 50
        || lane_metric(&d, "voidbox_lane_running", "generate").await < 2
    {
        assert!(Instant::now() < deadline, "two turns run, fifty wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = turn(&d, &ids[52], "generate", j!({"message": "one more"})).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");

    // A cancel is a control request: it does not wait behind the turns.
    // Whether it ends a running turn or a waiting one, a place frees.
    let info = json(
        d.call(Method::GET, &format!("/v1/sessions/{}", ids[0]))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(info["busy"], true);
    let started = Instant::now();
    let answer = d
        .call(Method::POST, &format!("/v1/sessions/{}/cancel", ids[0]))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status().as_u16(), 204);
    assert!(took < Duration::from_millis(100), "a cancel took {took:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), waiting.remove(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 409, "the cancelled turn's caller is told");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lane_metric(&d, "voidbox_lane_waiting", "generate").await != 49 {
        assert!(Instant::now() < deadline, "a place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lane_metric(&d, "voidbox_lane_running", "generate").await, 2);
    for id in &ids {
        d.call(Method::DELETE, &format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap();
    }
    for handle in waiting {
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    Arc::try_unwrap(d).ok().unwrap().stop().await;
}

#[tokio::test]
async fn a_session_goes_on_after_a_restart_in_a_fresh_sandbox() {
    let state = tempfile::tempdir().unwrap();
    let provider = guests();
    let first = Daemon::start_in(provider.clone(), 4, Some(state.path())).await;
    let id = create(
        &first,
        j!({"spec": spec(&["{text: first}", "{text: second}"])}),
    )
    .await;
    let answer = json(
        turn(&first, &id, "generate", j!({"message": "one"})).await,
        200,
    )
    .await;
    assert_eq!(answer["text"], "first");
    first.stop().await;
    let booted = provider.guests().len();

    let second = Daemon::start_in(provider.clone(), 4, Some(state.path())).await;
    let info = json(
        second
            .call(Method::GET, &format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(info["messages"], 2);
    let answer = json(
        turn(&second, &id, "generate", j!({"message": "two"})).await,
        200,
    )
    .await;
    assert_eq!(answer["text"], "second", "the conversation went on");
    assert_eq!(
        provider.guests().len(),
        booted + 1,
        "in a sandbox of its own"
    );
    second.stop().await;
}

#[tokio::test]
async fn a_session_talks_to_a_model_over_the_anthropic_wire_format() {
    // The key's variable is the daemon's own environment, as in production.
    std::env::set_var("VOIDBOX_SESSION_TEST_KEY", "sk-session-test");
    let model = mock_llm::MockLlmServer::with_turns([
        mock_llm::turn("Bonjour.", &[]),
        mock_llm::turn("Encore bonjour.", &[]),
    ])
    .await;
    let d = Daemon::start(guests(), 4).await;
    let spec = format!(
        "api_version: v1\nkind: agent\nname: speaker\nllm:\n  provider: anthropic\n  model: claude-test\n  base_url: {}\n  api_key_env: VOIDBOX_SESSION_TEST_KEY\nagent:\n  prompt: Greet.\n",
        model.anthropic_url()
    );
    let id = create(&d, j!({"spec": spec, "system": "Answer in French."})).await;
    let first = json(turn(&d, &id, "generate", j!({"message": "hi"})).await, 200).await;
    assert_eq!(first["text"], "Bonjour.");
    let second = json(
        turn(&d, &id, "generate", j!({"message": "again"})).await,
        200,
    )
    .await;
    assert_eq!(second["text"], "Encore bonjour.");

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].header("x-api-key"), Some("sk-session-test"));
    let system = requests[1].body["system"].to_string();
    assert!(system.contains("Answer in French."), "{system}");
    // The second call carries the whole conversation: the prompt and the
    // first exchange, then the new message.
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].to_string().contains("Greet.") && messages[0].to_string().contains("hi"));
    assert!(messages[1].to_string().contains("Bonjour."));
    assert!(messages[2].to_string().contains("again"));
    let totals = json(
        d.call(Method::GET, &format!("/v1/sessions/{id}/context"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        totals["totals"]["input_tokens"], 200,
        "the server's usage, counted"
    );
    d.stop().await;
}
