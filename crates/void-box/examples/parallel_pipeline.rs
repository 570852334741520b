//! A diamond: `planner`, then `bull_case` and `bear_case` in parallel (two
//! VMs at once, each with its own model), then `judge`, which receives
//! their answers as a JSON array. The Rust twin of
//! `examples/specs/parallel_pipeline.yaml`.
//!
//! `cargo run -p void-box --example parallel_pipeline` runs offline on
//! scripted turns; with `ANTHROPIC_API_KEY` set each box uses its model.

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::{FailurePolicy, Pipeline};

fn reviewer(name: &str, model: &str, prompt: &str, turns: Vec<MockTurn>) -> VoidBox {
    VoidBox::new(name)
        .llm(LlmProvider::auto(Some(model), MockScript::new(turns)))
        .memory_mb(256)
        .prompt(prompt)
        .build()
        .expect("valid box")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let planner = reviewer(
        "planner",
        "claude-sonnet-4-5",
        "Frame the question \"should we adopt micro-VM sandboxes for our agents?\" for two reviewers.",
        vec![MockTurn::text(
            "Question: adopt micro-VM sandboxes for agent tool calls? One reviewer argues for, one against.",
        )],
    );
    let bull = reviewer(
        "bull_case",
        "claude-haiku-4-5",
        "Argue for adoption, with a measurement from your sandbox.",
        vec![
            MockTurn::text("Measuring how clean a fresh sandbox is.").call(
                "bash",
                json!({"command": "echo \"$(ls -A /workspace | wc -l) files in /workspace, $(ps | wc -l) processes\""}),
            ),
            MockTurn::text("For: every stage starts from an empty workspace in its own kernel."),
        ],
    );
    let bear = reviewer(
        "bear_case",
        "claude-sonnet-4-5",
        "Argue against adoption, with a measurement from your sandbox.",
        vec![
            MockTurn::text("Measuring the guest's footprint.").call(
                "bash",
                json!({"command": "awk '/MemTotal/ {print $2/1024 \" MiB\"}' /proc/meminfo"}),
            ),
            MockTurn::text("Against: each stage pays a VM boot and its own memory."),
        ],
    );
    let judge = reviewer(
        "judge",
        "claude-sonnet-4-5",
        "Weigh the two cases you receive and give a recommendation.",
        vec![MockTurn::text(
            "Recommendation: adopt; the boot cost is paid once per stage and buys full isolation.",
        )],
    );

    let result = Pipeline::named("parallel-review", planner)
        .fan_out(vec![bull, bear])
        .pipe(judge)
        .policy(FailurePolicy::FailFast)
        .run_streaming(|vm, text| println!("[vm:{vm}] {text}"))
        .await?;
    let fan_out = &result.stages[1];
    println!(
        "fan-out: {} in {:.1}s and {} in {:.1}s (in parallel); whole run {:.1}s",
        fan_out.boxes[0].box_name,
        fan_out.boxes[0].duration.as_secs_f64(),
        fan_out.boxes[1].box_name,
        fan_out.boxes[1].duration.as_secs_f64(),
        result.duration.as_secs_f64()
    );
    println!("verdict: {}", result.output.unwrap_or_default());
    Ok(())
}
