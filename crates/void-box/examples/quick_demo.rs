//! Two stages, each in its own fresh micro-VM: `scout` looks at the guest,
//! `reporter` gets scout's answer and writes a report. The Rust twin of
//! `examples/specs/quick_demo.yaml`.
//!
//! `cargo run -p void-box --example quick_demo` runs offline on scripted
//! turns (their tool calls really run in the VMs); with `ANTHROPIC_API_KEY`
//! or `OLLAMA_MODEL` set, the same boxes use the real provider.

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::Pipeline;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scout = VoidBox::new("scout")
        .llm(LlmProvider::auto(
            None,
            MockScript::new(vec![
                MockTurn::text("Let me look at the guest.").call(
                    "bash",
                    json!({"command": "echo \"$(uname -sr) $(uname -m), $(nproc) CPU, user $(id -un)\""}),
                ),
                MockTurn::text(
                    "Facts: a fresh Linux micro-VM with one CPU; the agent works in /workspace \
                     as an unprivileged user.",
                ),
            ]),
        ))
        .memory_mb(256)
        .prompt("Find out what machine you are running on and list the facts.")
        .build()?;
    let reporter = VoidBox::new("reporter")
        .llm(LlmProvider::auto(
            None,
            MockScript::new(vec![
                MockTurn::text("Writing the report.").call(
                    "write",
                    json!({"path": "report.md", "content": "# Sandbox report\n- one micro-VM per stage\n- tools run unprivileged\n"}),
                ),
                MockTurn::default().call("bash", json!({"command": "wc -l < report.md"})),
                MockTurn::text("The report is in /workspace/report.md (3 lines)."),
            ]),
        ))
        .memory_mb(256)
        .prompt("Turn the facts you receive into a short report file, then summarise it.")
        .build()?;

    let result = Pipeline::named("quick-demo", scout)
        .pipe(reporter)
        .run_streaming(|vm, text| println!("[vm:{vm}] {text}"))
        .await?;
    for b in result.boxes() {
        let r = b.result.as_ref().expect("every box succeeded");
        println!(
            "{:<9} {:?} in {:.1}s, {} tool call(s), {} tokens",
            b.box_name,
            b.status,
            b.duration.as_secs_f64(),
            r.tool_calls.len(),
            r.usage.input_tokens + r.usage.output_tokens
        );
    }
    println!("output: {}", result.output.unwrap_or_default());
    Ok(())
}
