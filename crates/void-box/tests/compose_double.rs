//! Pipelines, workflows and spec runs on the in-process guest double
//! (`sandbox::fake`): hand-offs, fan-out and its cancellation, failure
//! policies, workflow steps of both kinds booting through the provider,
//! and specs run end to end, with no VM. The `pipeline_vm` and CLI tests
//! prove the same paths on real micro-VMs.

mod common;

use std::time::{Duration, Instant};

use common::mock_llm::{turn, MockLlmServer, Wire};
use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::{BoxStatus, FailurePolicy, Pipeline};
use void_box::sandbox::fake::{FakeGuest, FakeProvider, FakeReply};
use void_box::spec::Runnable;
use void_box::workflow::{Step, Workflow, WorkflowError};
use void_box::OutputStream;

fn scripted(name: &str, turns: Vec<MockTurn>) -> VoidBox {
    VoidBox::new(name)
        .llm(LlmProvider::mock(MockScript::new(turns)))
        .prompt(&format!("You are {name}."))
        .build()
        .unwrap()
}

/// A box that answers at once.
fn says(name: &str, answer: &str) -> VoidBox {
    scripted(name, vec![MockTurn::text(answer)])
}

/// A box whose model call fails at once (the script is empty).
fn failing(name: &str) -> VoidBox {
    scripted(name, vec![])
}

/// A box whose one tool call runs for a minute in the double.
fn slow(name: &str) -> VoidBox {
    scripted(
        name,
        vec![
            MockTurn::default().call("bash", json!({"command": "sleep 60"})),
            MockTurn::text("late"),
        ],
    )
}

fn sleepy_double() -> FakeProvider {
    FakeProvider::with_commands(|_, cmd| match cmd.script() {
        Some("sleep 60") => FakeReply::ok("").after(Duration::from_secs(60)),
        _ => FakeReply::ok(cmd.stdin.clone()),
    })
}

#[tokio::test]
async fn stages_hand_off_and_a_fan_out_joins_in_declaration_order() {
    std::env::set_var("VB_DOUBLE_JOIN_KEY", "sk-join");
    let server = MockLlmServer::with_turns([turn("joined", &[])]).await;
    let join = VoidBox::new("join")
        .llm(server.provider(Wire::Anthropic, "VB_DOUBLE_JOIN_KEY"))
        .prompt("Join these.")
        .build()
        .unwrap();
    let provider = FakeProvider::default();
    let result = Pipeline::named("diamond", says("source", "topic"))
        .fan_out(vec![says("left", "L"), says("right", "R")])
        .pipe(join)
        .run_on(&provider, Some("start"), EventSink::none())
        .await
        .unwrap();
    assert_eq!(result.output.as_deref(), Some("joined"));
    assert_eq!(provider.guests().len(), 4, "a fresh sandbox per box");
    assert!(provider.guests().iter().all(FakeGuest::is_stopped));
    let task = server.requests()[0].body["messages"][0]["content"].to_string();
    assert!(task.contains(r#"[\"L\",\"R\"]"#), "{task}");
}

#[tokio::test]
async fn fail_fast_cancels_running_siblings_and_kills_their_sandboxes() {
    let provider = sleepy_double();
    let started = Instant::now();
    let err = Pipeline::named("fragile", says("a", "x"))
        .fan_out(vec![slow("slow"), failing("broken")])
        .pipe(says("never", "n"))
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let stages = &err.report.stages;
    assert_eq!(stages[1].boxes[0].status, BoxStatus::Cancelled);
    assert_eq!(stages[1].boxes[1].status, BoxStatus::Failed);
    assert_eq!(stages[2].boxes[0].status, BoxStatus::Skipped);
    // Three boxes booted; none is left running.
    assert_eq!(provider.guests().len(), 3);
    assert!(provider.guests().iter().all(FakeGuest::is_stopped));
}

#[tokio::test]
async fn continue_hands_on_the_last_good_output_and_retries_a_box() {
    let provider = FakeProvider::default();
    let err = Pipeline::named("lenient", says("one", "ok one"))
        .pipe(failing("two"))
        .pipe(says("three", "ok three"))
        .policy(FailurePolicy::Continue)
        .retries(1)
        .retry_backoff(Duration::from_millis(1))
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    let report = &err.report;
    assert_eq!(report.output.as_deref(), Some("ok three"));
    assert_eq!(report.stages[1].boxes[0].attempts, 2);
    // one, two twice, three.
    assert_eq!(provider.guests().len(), 4);
}

#[tokio::test]
async fn workflow_steps_of_both_kinds_boot_through_the_provider() {
    let provider = FakeProvider::with_commands(|guest, cmd| match cmd.argv().as_slice() {
        ["tr", ..] => FakeReply::ok(String::from_utf8_lossy(&cmd.stdin).to_uppercase()),
        ["sh", "-c", "make-file"] => {
            guest.put_file("/workspace/out/data.txt", "payload");
            FakeReply::ok("made\n")
        }
        _ => FakeReply::ok(cmd.stdin.clone()),
    });
    let reader = scripted(
        "reader",
        vec![
            MockTurn::default().call("read", json!({"path": "out/data.txt"})),
            MockTurn::text("read it"),
        ],
    );
    let workflow = Workflow::named("flow")
        .step(Step::shell("make", "make-file").output("out/data.txt"))
        .step(Step::command("upper", "tr", ["a-z", "A-Z"]).depends_on(["make"]))
        .step(Step::agent("think", reader).depends_on(["make"]))
        .output_step("upper");
    let (sink, mut rx) = EventSink::channel();
    let result = workflow.run_on(&provider, None, sink).await.unwrap();
    assert_eq!(result.output.as_deref(), Some("MADE\n"));
    let think = result.steps.iter().find(|s| s.name == "think").unwrap();
    let summary = &think.result.as_ref().unwrap().tool_calls[0].summary;
    assert_eq!(
        summary, "payload",
        "the agent step saw its dependency's file"
    );
    // Every step, the agent step included, booted through the provider.
    assert_eq!(provider.guests().len(), 3);
    let mut output = String::new();
    while let Some(e) = rx.try_recv() {
        if let RunEvent::Output {
            box_name,
            stream: OutputStream::Stdout,
            text,
        } = e
        {
            output.push_str(&format!("{box_name}:{text}"));
        }
    }
    assert!(output.contains("upper:MADE"), "{output}");
}

#[tokio::test]
async fn a_failed_workflow_step_cancels_the_rest() {
    let provider = FakeProvider::with_commands(|_, cmd| match cmd.program.as_str() {
        "false" => FakeReply::fail(3, "it broke"),
        _ => FakeReply::ok("").after(Duration::from_secs(60)),
    });
    let err = Workflow::named("w")
        .step(Step::command("bad", "false", Vec::<String>::new()))
        .step(Step::command("slow", "sleep", ["60"]))
        .step(Step::command("after", "true", Vec::<String>::new()).depends_on(["bad"]))
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap_err();
    let WorkflowError::StepFailed {
        step,
        cause,
        report,
    } = err
    else {
        panic!("expected a step failure");
    };
    assert_eq!(step, "bad");
    assert_eq!(cause, "`false` exited with code 3: it broke");
    let status = |n: &str| report.steps.iter().find(|s| s.name == n).unwrap().status;
    assert_eq!(status("slow"), BoxStatus::Cancelled);
    assert_eq!(status("after"), BoxStatus::Skipped);
    assert!(provider.guests().iter().all(FakeGuest::is_stopped));
}

#[tokio::test]
async fn a_sandbox_spec_runs_its_command_with_input_and_streams_output() {
    let spec = void_box::spec::parse(
        "api_version: v1\nkind: sandbox\nname: shout\nsandbox: {memory_mb: 256, env: {MODE: loud}}\n\
         run: {program: tr, args: [a-z, A-Z]}\n",
        "shout.yaml",
    )
    .unwrap();
    let Runnable::Sandbox(run) = spec.runnable().unwrap() else {
        panic!("a sandbox spec");
    };
    let provider = FakeProvider::with_commands(|_, cmd| {
        FakeReply::ok(String::from_utf8_lossy(&cmd.stdin).to_uppercase())
    });
    let (sink, mut rx) = EventSink::channel();
    let result = run.run_on(&provider, Some("hello"), sink).await.unwrap();
    assert!(result.success);
    assert_eq!(result.stdout, "HELLO");
    let guest = &provider.guests()[0];
    assert_eq!(guest.memory_mb(), 256);
    assert!(guest.config().env.contains(&("MODE".into(), "loud".into())));
    assert!(guest.config().allowed_commands.contains(&"tr".into()));
    let mut events = Vec::new();
    while let Some(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(matches!(events[0], RunEvent::StageStarted { .. }));
    assert!(matches!(events[1], RunEvent::SandboxReady { .. }));
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Output { text, .. } if text == "HELLO")));

    // A command that fails is a result, and its ending says how.
    let failing = FakeProvider::with_commands(|_, _| FakeReply::fail(4, "nope"));
    let result = run.run_on(&failing, None, EventSink::none()).await.unwrap();
    assert!(!result.success);
    assert_eq!(result.ending(), "`shout` exited with code 4");
}

#[tokio::test]
async fn a_pipeline_spec_runs_its_boxes_each_in_a_fresh_sandbox() {
    let spec = void_box::spec::parse(
        r#"
api_version: v1
kind: pipeline
name: demo
sandbox: {memory_mb: 256}
llm:
  provider: mock
  mock: {turns: [{text: "Looking.", tool_calls: [{name: bash, input: {command: uname -a}}]}, {text: "Linux."}]}
pipeline:
  boxes:
    - {name: scout, prompt: Look around.}
    - {name: reporter, prompt: Report., sandbox: {memory_mb: 384}}
"#,
        "demo.yaml",
    )
    .unwrap();
    let Runnable::Pipeline(pipeline) = spec.runnable().unwrap() else {
        panic!("a pipeline spec");
    };
    let provider = FakeProvider::with_commands(|_, _| FakeReply::ok("Linux voidbox 6.12\n"));
    let result = pipeline
        .run_on(&provider, None, EventSink::none())
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(result.output.as_deref(), Some("Linux."));
    let guests = provider.guests();
    assert_eq!(guests.len(), 2);
    assert_eq!((guests[0].memory_mb(), guests[1].memory_mb()), (256, 384));
    for guest in &guests {
        let ran: Vec<String> = guest
            .commands()
            .iter()
            .filter_map(|c| c.script().map(str::to_string))
            .collect();
        assert_eq!(ran, ["uname -a"]);
    }
}
