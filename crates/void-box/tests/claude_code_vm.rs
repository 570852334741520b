//! The real claude-code CLI (npm's `@anthropic-ai/claude-code`, in the
//! claude-code test image) runs in the guest against a scripted
//! Anthropic-compatible server on the host's loopback: its requests go out
//! through the guest's own network, its key is a placeholder swapped at the
//! edge, its tool calls run in the guest, and traffic beyond the model is
//! refused and audited. Needs `scripts/setup.sh --with-test-tools`.

mod common;

use std::time::Duration;

use common::mock_llm::{turn, MockLlmServer, Wire};
use common::registry::TestRegistry;
use serde_json::json;
use void_box::agent::VoidBox;
use void_box::event::{EventSink, RunEvent};
use void_box::net::NetworkPolicy;
use void_box::skill::Skill;

#[tokio::test(flavor = "multi_thread")]
async fn the_real_claude_code_runs_in_the_guest_with_its_key_swapped_at_the_edge() {
    let registry = TestRegistry::start();
    registry.push("claude-code", "latest", "claude-code");
    let image = registry.reference("claude-code:latest");
    let server = MockLlmServer::with_turns([
        turn(
            "Writing the file.",
            &[(
                "Bash",
                json!({
                    "command": "echo from-claude | tee /workspace/out.txt; id -u; hostname; \
                                curl -sS --max-time 10 https://example.com/ || echo no-way-out",
                    "description": "write a file and try the internet"
                }),
            )],
        ),
        turn("Done: out.txt holds from-claude.", &[]),
    ])
    .await;
    let key = "sk-ant-real-key-0123456789";
    std::env::set_var("VOIDBOX_TEST_CLAUDE_KEY", key);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let agent = VoidBox::new("cc")
        .skill(Skill::agent("claude-code"))
        .llm(server.provider(Wire::Anthropic, "VOIDBOX_TEST_CLAUDE_KEY"))
        .image(&image)
        .memory_mb(2048)
        // The model's endpoint on the host, by an explicit rule.
        .network(
            NetworkPolicy::rules(&[format!("host.voidbox.internal:{port}")], &[] as &[&str])
                .unwrap(),
        )
        .timeout(Duration::from_secs(600))
        .prompt("Write out.txt.")
        .build()
        .unwrap();
    let (sink, mut rx) = EventSink::channel();
    let result = agent.run_with(None, sink).await.unwrap();
    assert!(result.text.contains("Done: out.txt"), "{result:?}");
    assert_eq!(result.tool_calls.len(), 1, "{result:?}");
    assert_eq!(result.tool_calls[0].name, "Bash");

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one request per turn");
    for r in &requests {
        // The edge put the real key in; the guest only had a placeholder.
        assert_eq!(r.header("x-api-key"), Some(key));
        assert!(r
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("claude-cli/")));
    }
    // The tool ran in the guest: its output went back to the model.
    let second = requests[1].body.to_string();
    assert!(second.contains("from-claude"), "{second}");
    assert!(second.contains("voidbox"), "the guest's hostname: {second}");
    assert!(second.contains("no-way-out"), "{second}");

    // The audit trail: the model's route allowed, the rest refused.
    let mut network = Vec::new();
    while let Some(e) = rx.try_recv() {
        if let RunEvent::Network { connection, .. } = e {
            network.push(connection);
        }
    }
    assert!(
        network
            .iter()
            .any(|c| c.allowed && c.port.to_string() == port),
        "{network:?}"
    );
    assert!(
        network
            .iter()
            .any(|c| !c.allowed && c.host.as_deref() == Some("example.com")),
        "{network:?}"
    );
    let trail = serde_json::to_string(&network).unwrap();
    assert!(!trail.contains(key), "{trail}");
}
