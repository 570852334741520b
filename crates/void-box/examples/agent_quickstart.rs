//! A box with skills and a scripted model, run offline in a fresh VM.
//! Set `ANTHROPIC_API_KEY` to use Claude instead of the scripted model.
//!
//! `cargo run -p void-box --example agent_quickstart`

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::{EventSink, RunEvent};
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::skill::Skill;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let llm = if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
        LlmProvider::anthropic("claude-sonnet-4-5")
    } else {
        // What a model would do: look at the skill, run a command, answer.
        LlmProvider::mock(MockScript::new(vec![
            MockTurn::text("Reading the skill first.")
                .call("read", json!({"path": ".claude/skills/sysinfo/SKILL.md"})),
            MockTurn::text("Now the kernel.").call("bash", json!({"command": "uname -sr"})),
            MockTurn::text("{\"kernel\": \"Linux\", \"isolated\": true}"),
        ]))
    };
    let agent = VoidBox::new("sysinfo")
        .skill(Skill::inline(
            "sysinfo",
            "---\ndescription: How to describe the machine\n---\nUse `uname -sr`.",
        ))
        .llm(llm)
        .memory_mb(512)
        .prompt("Which kernel does your machine run? Answer as JSON {kernel, isolated}.")
        .output_schema(json!({
            "type": "object",
            "properties": {"kernel": {"type": "string"}, "isolated": {"type": "boolean"}},
            "required": ["kernel", "isolated"]
        }))
        .build()?;

    let (sink, mut rx) = EventSink::channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            match event {
                RunEvent::SandboxReady { boot, .. } => {
                    println!("[vm:sysinfo] booted in {boot:?}")
                }
                RunEvent::ToolCallStarted {
                    name, arguments, ..
                } => {
                    println!("[vm:sysinfo] → {name} {arguments}")
                }
                RunEvent::ToolCallFinished { summary, .. } => {
                    println!("[vm:sysinfo] ← {summary}")
                }
                _ => {}
            }
        }
    });
    let result = agent.run_with(None, sink).await?;
    printer.await?;
    println!(
        "output: {}\nturns: {}, tokens: {} in / {} out, {:?}",
        result.output.as_ref().expect("schema given"),
        result.turns,
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.duration
    );
    anyhow::ensure!(result.output.unwrap()["kernel"] == "Linux");
    Ok(())
}
