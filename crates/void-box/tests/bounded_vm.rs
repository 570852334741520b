//! A guest (or a model) that prints without end cannot grow the host
//! process: 512 MiB through `Sandbox::exec` and through the agent's `bash`
//! tool, checked against this process's peak RSS (twice what it may grow
//! by: kept whole, it would show), and a 1 GiB output file. One test in its
//! own binary, so the peak belongs to nothing else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use void_box::agent::{AgentError, PostToolAction, ToolOutcome, VoidBox};
use void_box::event::EventSink;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::sandbox::DEFAULT_MAX_OUTPUT;
use void_box::{Exec, Sandbox};

const GIB: u64 = 1 << 30;
/// What goes through: enough to show unbounded buffering, half of what
/// it was (the debug host took 2.5 minutes for a GiB twice).
const STREAMED: u64 = 512 << 20;
/// What the host may add to its peak while 512 MiB go by: the 64 MiB kept
/// (head and tail), its copy into the result, and allocator slack.
const MAX_PEAK_GROWTH: u64 = 256 << 20;

/// This process's peak resident set (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

fn assert_peak_within(baseline: u64, what: &str, started: Instant) {
    let growth = peak_rss().saturating_sub(baseline);
    eprintln!(
        "{what}: peak RSS grew by {} MiB ({:.1} s)",
        growth >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(
        growth < MAX_PEAK_GROWTH,
        "{what}: peak RSS grew by {} MiB (limit {} MiB)",
        growth >> 20,
        MAX_PEAK_GROWTH >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_output_costs_the_host_a_bounded_amount() {
    let sandbox = Sandbox::builder()
        .build()
        .await
        .expect("sandbox boots (is the guest image built? `voidbox image build`)");
    sandbox.exec(Exec::shell("true")).await.unwrap();
    let baseline = peak_rss();
    let started = Instant::now();

    // 1. Straight through the Sandbox API, default cap.
    let out = sandbox
        .exec(Exec::shell(format!("head -c {STREAMED} /dev/zero")))
        .await
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), DEFAULT_MAX_OUTPUT);
    let cut = out.stdout_cut.expect("the middle was dropped");
    assert_eq!(cut.at, DEFAULT_MAX_OUTPUT / 2);
    assert_eq!(cut.omitted, STREAMED - DEFAULT_MAX_OUTPUT as u64);
    drop(out);
    assert_peak_within(baseline, "exec", started);
    let started = Instant::now();

    // 2. Through the model's bash tool: the tool result is the head and
    //    tail of the output with a notice, and the host stays bounded.
    let seen_by_hook = Arc::new(Mutex::new(None::<ToolOutcome>));
    let seen = seen_by_hook.clone();
    let agent = VoidBox::new("printer")
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call(
                "bash",
                json!({"command": format!("head -c {STREAMED} /dev/zero | tr '\\0' x; echo END")}),
            ),
            MockTurn::text("Printed."),
        ])))
        .max_tool_output(4000)
        // The bound is on memory, not speed: a debug host on a busy machine
        // may need more than the default 120 s.
        .tool_timeout(Duration::from_secs(900))
        .post_tool(move |_, out| {
            *seen.lock().unwrap() = Some(out.clone());
            PostToolAction::Keep
        })
        .prompt("Print a lot")
        .build()
        .unwrap();
    agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap();
    let out = seen_by_hook.lock().unwrap().take().expect("the tool ran");
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.len() <= 4000, "{} bytes", out.content.len());
    assert!(out.content.starts_with("xxxx"), "{}", out.content);
    let omitted = STREAMED + 4 - (4000 - 128);
    assert!(
        out.content.contains(&format!(
            "[... output truncated: {omitted} bytes omitted ...]"
        )),
        "{}",
        out.content
    );
    assert!(out.content.ends_with("xxEND\n"), "{}", out.content);
    assert_peak_within(baseline, "bash tool", started);
    let started = Instant::now();

    // 3. A 1 GiB output file is refused, not read.
    let agent = VoidBox::new("reporter")
        .llm(LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call(
                "bash",
                json!({"command": format!("truncate -s {GIB} /workspace/report.txt")}),
            ),
            MockTurn::text("Wrote it."),
        ])))
        .output_file("report.txt")
        .prompt("Write a report")
        .build()
        .unwrap();
    let err = agent
        .run_in(&sandbox, None, EventSink::none())
        .await
        .unwrap_err();
    let AgentError::Engine { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains(&format!("is {GIB} bytes; at most 16777216 are accepted")),
        "{message}"
    );
    assert_peak_within(baseline, "output file", started);
    sandbox.shutdown().await.unwrap();
}
