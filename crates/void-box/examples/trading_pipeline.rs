//! Four sequential stages, each in its own VM with its own SKILL.md:
//! market data → quant analysis → risk sizing → portfolio decision (a
//! schema-checked JSON order). The Rust twin of
//! `examples/specs/trading_pipeline.yaml`.
//!
//! `cargo run -p void-box --example trading_pipeline` runs offline on
//! scripted turns whose tool calls really run in the VMs; with
//! `ANTHROPIC_API_KEY` or `OLLAMA_MODEL` set, the real provider decides.

use std::time::Duration;

use serde_json::json;
use void_box::agent::VoidBox;
use void_box::llm::{LlmProvider, MockScript, MockTurn};
use void_box::pipeline::Pipeline;
use void_box::skill::Skill;

const SKILLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/specs/skills");
const CLOSES: &str = "100.00 101.50 100.80 102.30 103.10 102.60 104.20 105.00 104.40 106.10";

fn stage(name: &str, skill: &str, prompt: &str, turns: Vec<MockTurn>) -> VoidBox {
    VoidBox::new(name)
        .skill(Skill::file(format!("{SKILLS}/{skill}.md")))
        .llm(LlmProvider::auto(None, MockScript::new(turns)))
        .memory_mb(256)
        .prompt(prompt)
        .build()
        .expect("valid box")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let market_data = stage(
        "market_data",
        "market-data",
        "Collect ACME's last ten daily closes as CSV.",
        vec![
            MockTurn::text("Writing the close series.").call(
                "bash",
                json!({"command": format!("echo day,close > prices.csv; i=0; for c in {CLOSES}; do i=$((i+1)); echo $i,$c >> prices.csv; done; cat prices.csv")}),
            ),
            MockTurn::text(format!("ACME closes, days 1-10: {CLOSES}")),
        ],
    );
    let quant = stage(
        "quant_analyst",
        "quant-analysis",
        "Compute SMA-5, total return and the trend signal for the series you receive.",
        vec![
            MockTurn::text("Computing the signals.").call(
                "bash",
                json!({"command": format!("echo {CLOSES} | tr ' ' '\\n' | awk '{{c[NR]=$1}} END {{for (i=NR-4; i<=NR; i++) s+=c[i]; printf \"last=%.2f sma5=%.2f return=%.2f%%\\n\", c[NR], s/5, (c[NR]/c[1]-1)*100}}'")}),
            ),
            MockTurn::text("last=106.10 sma5=104.46 return=6.10%; signal: bullish"),
        ],
    );
    let risk = stage(
        "risk_manager",
        "risk-management",
        "Size an ACME position for 100000 USD equity from the analysis you receive.",
        vec![
            MockTurn::text("Stop and size at 1% risk.").call(
                "bash",
                json!({"command": "awk 'BEGIN {stop=104.12; printf \"stop=%.2f qty=%d\\n\", stop, 1000/(106.10-stop)}'"}),
            ),
            MockTurn::text("stop 104.12, quantity 505 (1% of equity at risk)"),
        ],
    );
    let portfolio = VoidBox::new("portfolio_manager")
        .skill(Skill::file(format!("{SKILLS}/portfolio-decision.md")))
        .llm(LlmProvider::auto(
            None,
            MockScript::reply(
                r#"{"symbol": "ACME", "action": "buy", "quantity": 505, "stop": 104.12, "reason": "bullish trend, 1% of equity at risk"}"#,
            ),
        ))
        .memory_mb(256)
        .prompt("Decide the order for ACME from the sizing you receive.")
        .output_schema(json!({
            "type": "object",
            "required": ["symbol", "action", "quantity", "stop", "reason"],
            "properties": {
                "symbol": {"type": "string"},
                "action": {"enum": ["buy", "hold", "sell"]},
                "quantity": {"type": "integer", "minimum": 0},
                "stop": {"type": "number"},
                "reason": {"type": "string"}
            }
        }))
        .build()?;

    let result = Pipeline::named("trading-desk", market_data)
        .pipe(quant)
        .pipe(risk)
        .pipe(portfolio)
        .stage_timeout(Duration::from_secs(180))
        .run_streaming(|vm, text| println!("[vm:{vm}] {text}"))
        .await?;
    let order: serde_json::Value =
        serde_json::from_str(result.output.as_deref().unwrap_or("null"))?;
    println!("order: {order}");
    anyhow::ensure!(order["symbol"] == "ACME", "unexpected order: {order}");
    Ok(())
}
