//! Pipelines and workflows end to end with real VMs and the scripted
//! provider: hand-offs, fan-out/fan-in, failure policies, timeouts, and
//! files passed between workflow steps.

mod common;

use std::time::{Duration, Instant};

use common::mock_llm::{turn, MockLlmServer, Wire};

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::{BoxStatus, FailurePolicy, Pipeline};
use void_box::workflow::{Step, Workflow, WorkflowError};
use void_box::OutputStream;

fn scripted(name: &str, turns: Vec<MockTurn>) -> VoidBox {
    VoidBox::new(name)
        .llm(LlmProvider::mock(MockScript::new(turns)))
        .prompt(&format!("You are {name}."))
        .build()
        .unwrap()
}

/// A box that runs `cmd` in its VM and answers with the command's output
/// prefixed by its name (the mock cannot see tool results, so the answer
/// is fixed; the command proves the VM did the work).
fn answering(name: &str, answer: &str) -> VoidBox {
    scripted(
        name,
        vec![
            MockTurn::default().call(
                "bash",
                json!({"command": "cat /proc/sys/kernel/random/boot_id"}),
            ),
            MockTurn::text(answer),
        ],
    )
}

/// A box whose model call fails at once.
fn failing(name: &str) -> VoidBox {
    scripted(name, vec![])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stages_hand_off_and_each_runs_in_its_own_vm() {
    let streamed = std::sync::Mutex::new(Vec::new());
    let result = Pipeline::named("two", answering("first", "facts: 42"))
        .pipe(answering("second", "summary of facts"))
        .run_streaming(|box_name, text| {
            streamed
                .lock()
                .unwrap()
                .push(format!("[vm:{box_name}] {text}"))
        })
        .await
        .unwrap();
    assert_eq!(
        *streamed.lock().unwrap(),
        ["[vm:first] facts: 42", "[vm:second] summary of facts"]
    );
    assert!(result.success);
    assert_eq!(result.output.as_deref(), Some("summary of facts"));
    let boxes: Vec<_> = result.boxes().collect();
    assert_eq!(boxes.len(), 2);
    // Different boot ids: each box had a fresh VM with its own kernel.
    let boot_id = |i: usize| {
        boxes[i].result.as_ref().unwrap().tool_calls[0]
            .summary
            .clone()
    };
    assert_ne!(boot_id(0), boot_id(1));
    assert_eq!(boot_id(0).len(), 36, "{}", boot_id(0));
    let (input_tokens, _) = result.total_tokens();
    assert!(input_tokens > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn diamond_fans_out_in_parallel_and_joins_in_order() {
    let sink = scripted("sink", vec![MockTurn::text("merged")]);
    let started = Instant::now();
    let result = Pipeline::named("diamond", answering("source", "topic"))
        .fan_out(vec![
            answering("left", "{\"side\": \"left\"}"),
            answering("right", "right text"),
        ])
        .pipe(sink)
        .run()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let stages = &result.stages;
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[1].boxes[0].box_name, "left");
    assert_eq!(stages[1].boxes[1].box_name, "right");
    // The sink got the fan-out's outputs as a JSON array in declaration order.
    assert_eq!(result.output.as_deref(), Some("merged"));
    let left = stages[1].boxes[0].duration;
    let right = stages[1].boxes[1].duration;
    let fan_out_wall = elapsed - stages[0].boxes[0].duration - stages[2].boxes[0].duration;
    assert!(
        fan_out_wall < left + right,
        "fan-out ran sequentially: {fan_out_wall:?} vs {left:?} + {right:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_output_is_a_json_array_for_the_next_stage() {
    // The joining box talks to the HTTP mock, which shows us its input.
    std::env::set_var("VB_PIPELINE_JOIN_KEY", "sk-join");
    let server = MockLlmServer::with_turns([turn("joined", &[])]).await;
    let join = VoidBox::new("join")
        .llm(server.provider(Wire::Anthropic, "VB_PIPELINE_JOIN_KEY"))
        .prompt("Join these.")
        .build()
        .unwrap();
    // Structured output goes in as JSON; text (even JSON-looking) as a string.
    let structured = VoidBox::new("b")
        .llm(LlmProvider::mock(MockScript::reply("{\"n\": 1}")))
        .output_schema(json!({"type": "object"}))
        .build()
        .unwrap();
    let result = Pipeline::named("fan", answering("a", "x"))
        .fan_out(vec![structured, answering("c", "{\"n\": 2}")])
        .pipe(join)
        .run()
        .await
        .unwrap();
    assert_eq!(result.output.as_deref(), Some("joined"));
    let task = server.requests()[0].body["messages"][0]["content"].to_string();
    assert!(task.contains(r#"[{\"n\":1},\"{\\\"n\\\": 2}\"]"#), "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_middle_stage_under_both_policies() {
    let build = |policy| {
        Pipeline::named("fragile", answering("one", "ok one"))
            .pipe(failing("two"))
            .pipe(answering("three", "ok three"))
            .policy(policy)
    };
    let err = build(FailurePolicy::FailFast).run().await.unwrap_err();
    assert_eq!((err.stage, err.box_name.as_str()), (1, "two"));
    let msg = err.to_string();
    assert!(
        msg.contains("stage 2 (box `two`) failed") && msg.contains("script has 0 turn"),
        "{msg}"
    );
    let statuses: Vec<BoxStatus> = err.report.boxes().map(|b| b.status).collect();
    assert_eq!(
        statuses,
        [BoxStatus::Succeeded, BoxStatus::Failed, BoxStatus::Skipped]
    );
    assert_eq!(err.report.output, None);

    let err = build(FailurePolicy::Continue).run().await.unwrap_err();
    let statuses: Vec<BoxStatus> = err.report.boxes().map(|b| b.status).collect();
    assert_eq!(
        statuses,
        [
            BoxStatus::Succeeded,
            BoxStatus::Failed,
            BoxStatus::Succeeded
        ]
    );
    assert_eq!(err.report.output.as_deref(), Some("ok three"));
    assert!(!err.report.success);
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_timeout_kills_the_box_and_retries_are_bounded() {
    let slow = scripted(
        "slow",
        vec![
            MockTurn::default().call("bash", json!({"command": "sleep 60"})),
            MockTurn::text("never"),
        ],
    );
    let started = Instant::now();
    let err = Pipeline::named("impatient", slow)
        .stage_timeout(Duration::from_secs(6))
        .retries(1)
        .retry_backoff(Duration::from_millis(100))
        .run()
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.cause.contains("timed out after 6s"), "{err}");
    let report = err.report.boxes().next().unwrap().clone();
    assert_eq!(report.attempts, 2);
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_steps_pass_files_and_stdout_to_dependents() {
    let workflow = Workflow::named("files")
        .step(
            Step::shell("produce", "mkdir -p out && seq 1 5 > out/numbers.txt && echo produced")
                .output("out/numbers.txt"),
        )
        .step(
            Step::shell("square", "while read n; do echo $((n*n)); done < out/numbers.txt > squares.txt; cat squares.txt")
                .depends_on(["produce"])
                .output("squares.txt"),
        )
        .step(
            Step::shell("count", "wc -l < out/numbers.txt; cat /workspace/inputs/produce/stdout")
                .depends_on(["produce"]),
        )
        .step(
            Step::shell("total", "awk '{s+=$1} END {print s}' squares.txt; cat")
                .depends_on(["square", "count"])
                .stdin_from("count"),
        )
        // An agent step: reads a dependency's file in its own VM, writes one
        // that its dependent reads.
        .step(
            Step::agent(
                "note",
                scripted(
                    "noter",
                    vec![
                        MockTurn::default().call("read", json!({"path": "out/numbers.txt"})),
                        MockTurn::default().call("write", json!({"path": "note.txt", "content": "five numbers\n"})),
                        MockTurn::text("noted"),
                    ],
                ),
            )
            .depends_on(["produce"])
            .output("note.txt"),
        )
        .step(Step::shell("show", "cat note.txt /workspace/inputs/note/stdout").depends_on(["note"]))
        .output_step("total")
        .max_parallel(2);
    let (sink, mut rx) = EventSink::channel();
    let result = workflow.run_with(None, sink).await.unwrap();
    // Each step's output was streamed under its name, and each booted a VM.
    let mut streamed = String::new();
    let mut booted = 0;
    while let Some(event) = rx.try_recv() {
        match event {
            RunEvent::Output {
                box_name,
                stream: OutputStream::Stdout,
                text,
            } if box_name == "square" => streamed.push_str(&text),
            RunEvent::SandboxReady { .. } => booted += 1,
            _ => {}
        }
    }
    assert_eq!(streamed, "1\n4\n9\n16\n25\n");
    assert_eq!(booted, 6);
    assert!(result.success);
    assert_eq!(result.output.as_deref(), Some("55\n5\nproduced\n"));
    let note = &result.steps[4];
    let read = &note.result.as_ref().unwrap().tool_calls[0];
    assert_eq!(
        (read.name.as_str(), read.summary.as_str()),
        ("read", "1 (+4 lines)")
    );
    assert_eq!(
        result.steps[5].stdout.as_deref(),
        Some("five numbers\nnoted")
    );
    let square = &result.steps[1];
    assert_eq!(square.stdout.as_deref(), Some("1\n4\n9\n16\n25\n"));
    assert_eq!(square.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_failure_skips_dependents_and_retries() {
    let workflow = Workflow::named("broken")
        .step(
            Step::shell("flaky", "echo trying >&2; exit 3")
                .retries(1)
                .retry_backoff(Duration::from_millis(50)),
        )
        .step(Step::shell("after", "true").depends_on(["flaky"]));
    match workflow.run().await.unwrap_err() {
        WorkflowError::StepFailed {
            step,
            cause,
            report,
        } => {
            assert_eq!(step, "flaky");
            assert!(
                cause.contains("exited with code 3") && cause.contains("trying"),
                "{cause}"
            );
            assert_eq!(report.steps[0].attempts, 2);
            assert_eq!(report.steps[1].status, BoxStatus::Skipped);
        }
        other => panic!("unexpected: {other}"),
    }
    // A failure cancels steps in flight and skips the rest.
    let workflow = Workflow::named("parallel-failure")
        .step(Step::shell("slow", "sleep 30"))
        .step(Step::shell("fails", "sleep 1; exit 1"))
        .step(Step::shell("later", "true").depends_on(["slow"]))
        .max_parallel(2);
    let started = Instant::now();
    match workflow.run().await.unwrap_err() {
        WorkflowError::StepFailed { step, report, .. } => {
            assert_eq!(step, "fails");
            let status: Vec<BoxStatus> = report.steps.iter().map(|s| s.status).collect();
            assert_eq!(
                status,
                [BoxStatus::Cancelled, BoxStatus::Failed, BoxStatus::Skipped]
            );
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the slow step was not cancelled"
    );
    let cyclic = Workflow::named("cyclic")
        .step(Step::shell("a", "true").depends_on(["b"]))
        .step(Step::shell("b", "true").depends_on(["a"]));
    let err = cyclic.run().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "workflow `cyclic`: dependency cycle between steps `a`, `b`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_output_file_is_the_stage_output() {
    let writer = VoidBox::new("writer")
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call(
                "write",
                json!({"path": "out/report.md", "content": "# Report\nall good\n"}),
            ),
            MockTurn::text("I wrote the report."),
        ])))
        .output_file("out/report.md")
        .build()
        .unwrap();
    let result = Pipeline::named("files", writer).run().await.unwrap();
    let run = result.boxes().next().unwrap().result.clone().unwrap();
    assert_eq!(run.text, "I wrote the report.");
    assert_eq!(run.file.as_deref(), Some("# Report\nall good\n"));
    assert_eq!(result.output.as_deref(), Some("# Report\nall good\n"));

    let forgetful = VoidBox::new("forgetful")
        .llm(LlmProvider::mock(MockScript::reply("done")))
        .output_file("missing.md")
        .build()
        .unwrap();
    let err = Pipeline::named("files", forgetful).run().await.unwrap_err();
    assert!(
        err.cause
            .contains("/workspace/missing.md could not be read"),
        "{err}"
    );
}
