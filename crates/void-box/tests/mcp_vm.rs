//! MCP skills against real VMs: the static `voidbox-mcp-fixture` server is
//! uploaded into a fresh guest and driven over its stdio. Needs the guest
//! image (`voidbox image build`) and the fixture, built static by
//! `scripts/build-guest.sh` (or pointed to by `VOIDBOX_MCP_FIXTURE`).

use std::time::{Duration, Instant};

mod common;

use serde_json::json;
use void_box::skill::McpSession;
use void_box::{Error, Exec, Sandbox};

const FIXTURE: &str = common::MCP_FIXTURE;
const GUEST_FIXTURE: &str = "/workspace/bin/voidbox-mcp-fixture";
const DEADLINE: Duration = Duration::from_secs(20);

fn fixture_binary() -> Vec<u8> {
    std::fs::read(common::mcp_fixture_path()).expect("read the MCP fixture")
}

async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .allow_command(FIXTURE)
        .build()
        .await
        .expect("sandbox boots (is the guest image built? `voidbox image build`)")
}

/// Guest processes whose command line mentions the fixture.
async fn fixture_processes(sb: &Sandbox) -> String {
    let ps = sb
        .exec(Exec::shell(format!(
            "ps -o pid,args | grep {FIXTURE} | grep -v grep || true"
        )))
        .await
        .unwrap();
    ps.stdout_text()
}

#[tokio::test(flavor = "multi_thread")]
async fn fixture_tools_list_call_and_close() {
    let fixture = fixture_binary();
    let sb = sandbox().await;
    sb.write_file_mode(GUEST_FIXTURE, &fixture, 0o755)
        .await
        .unwrap();

    let started = Instant::now();
    let session = McpSession::start(&sb, "calc", GUEST_FIXTURE, &[], DEADLINE)
        .await
        .unwrap();
    let start_time = started.elapsed();
    assert_eq!(session.name(), "calc");

    // The fixture lists two tools per page: all three means every page was read.
    let mut names: Vec<_> = session.tools().iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["mcp__calc__add", "mcp__calc__fail", "mcp__calc__shout"]
    );
    let add = session
        .tools()
        .iter()
        .find(|t| t.name == "mcp__calc__add")
        .unwrap();
    assert_eq!(add.description, "Adds two numbers");
    assert_eq!(add.input_schema["type"], "object");
    assert!(
        add.input_schema["properties"]["a"].is_object()
            && add.input_schema["properties"]["b"].is_object(),
        "{}",
        add.input_schema
    );
    let shout = session
        .tools()
        .iter()
        .find(|t| t.name == "mcp__calc__shout")
        .unwrap();
    assert!(shout.input_schema["properties"]["text"].is_object());

    let started = Instant::now();
    let sum = session
        .call("mcp__calc__add", json!({"a": 3, "b": 4}), DEADLINE)
        .await
        .unwrap();
    let call_time = started.elapsed();
    assert_eq!(sum.text, "7");
    assert!(!sum.is_error);

    let loud = session
        .call("mcp__calc__shout", json!({"text": "hello mcp"}), DEADLINE)
        .await
        .unwrap();
    assert_eq!(loud.text, "HELLO MCP");
    assert!(!loud.is_error);

    let failed = session
        .call("mcp__calc__fail", json!({}), DEADLINE)
        .await
        .unwrap();
    assert!(failed.is_error, "{failed:?}");
    assert_eq!(failed.text, "this tool always fails");

    // Arguments the schema rejects come back as an error result, not an Err.
    let bad = session
        .call("mcp__calc__add", json!({"a": "three"}), DEADLINE)
        .await
        .unwrap();
    assert!(bad.is_error, "{bad:?}");
    let unknown = session.call("add", json!({}), DEADLINE).await.unwrap_err();
    assert!(unknown.to_string().contains("no tool `add`"), "{unknown}");

    assert!(fixture_processes(&sb).await.contains(FIXTURE));
    let started = Instant::now();
    session.close().await;
    let close_time = started.elapsed();
    let left = fixture_processes(&sb).await;
    assert!(
        left.trim().is_empty(),
        "the MCP server outlived close():\n{left}"
    );
    eprintln!("MCP timings: start {start_time:?}, add call {call_time:?}, close {close_time:?}");

    // Dropping a session without close() kills its server too.
    let dropped = McpSession::start(&sb, "again", GUEST_FIXTURE, &[], DEADLINE)
        .await
        .unwrap();
    assert!(fixture_processes(&sb).await.contains(FIXTURE));
    drop(dropped);
    let gone = async {
        while !fixture_processes(&sb).await.trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("dropping the session killed its server");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_exits_fails_start_with_its_stderr() {
    let sb = sandbox().await;
    let started = Instant::now();
    let err = McpSession::start(
        &sb,
        "broken",
        "sh",
        &["-c".into(), "echo nope >&2; exit 3".into()],
        DEADLINE,
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Skill { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("`broken`"), "{message}");
    assert!(message.contains("nope"), "{message}");
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(elapsed < DEADLINE, "took {elapsed:?}");
    eprintln!("exiting server failed start in {elapsed:?}: {message}");

    // A command the sandbox does not allow is refused by the guest, naming the skill.
    let err = McpSession::start(&sb, "forbidden", "/workspace/nothing", &[], DEADLINE)
        .await
        .unwrap_err();
    assert!(err.guest_kind().is_some(), "{err}");
    assert!(err.to_string().contains("`forbidden`"), "{err}");
    sb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_printing_garbage_fails_start_within_the_deadline() {
    let sb = sandbox().await;

    // Garbage, then silence: the SDK skips lines that are not JSON, so
    // only the deadline ends this.
    let deadline = Duration::from_secs(5);
    let started = Instant::now();
    let err = McpSession::start(
        &sb,
        "noisy",
        "sh",
        &[
            "-c".into(),
            "echo this is not json; echo 'still starting' >&2; exec sleep 600".into(),
        ],
        deadline,
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("`noisy`"), "{message}");
    assert!(message.contains("this is not json"), "{message}");
    assert!(message.contains("still starting"), "{message}");
    assert!(
        elapsed < deadline + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    eprintln!("garbage-then-silent server failed start in {elapsed:?}: {message}");
    // The timed-out server was killed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ps = sb
        .exec(Exec::shell("ps -o args | grep -c '^sleep 600' || true"))
        .await
        .unwrap();
    assert_eq!(ps.stdout_text().trim(), "0", "the hung server survived");

    // Garbage, then exit: fails at once.
    let started = Instant::now();
    let err = McpSession::start(
        &sb,
        "garbage",
        "sh",
        &["-c".into(), "echo '<html>not an MCP server</html>'".into()],
        DEADLINE,
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Skill { .. }), "{message}");
    assert!(message.contains("not an MCP server"), "{message}");
    assert!(message.contains("exited with code 0"), "{message}");
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
    sb.shutdown().await.unwrap();
}
