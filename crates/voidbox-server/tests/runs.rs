//! Runs through the daemon on guest doubles: a spec submitted inline, its
//! events followed as SSE and resumed after a dropped connection without
//! losing one, its result and a stage's output; bad specs refused with
//! their place.

mod common;

use std::sync::Arc;

use common::{json, Daemon};
use reqwest::Method;
use serde_json::json as j;
use void_box::sandbox::fake::FakeProvider;

const PIPELINE: &str = "\
api_version: v1
kind: pipeline
name: two-boxes
llm:
  provider: mock
  mock:
    turns:
      - text: looking
        tool_calls: [{name: bash, input: {command: echo hi}}]
      - text: all done
pipeline:
  boxes:
    - {name: scout, prompt: look}
    - {name: reporter, prompt: report}
  stages:
    - {type: box, name: scout}
    - {type: box, name: reporter}
";

async fn read_events(
    response: reqwest::Response,
    limit: usize,
) -> Vec<(Option<u64>, String, serde_json::Value)> {
    common::read_sse(response, limit, |_| {})
        .await
        .into_iter()
        .map(|e| (e.id, e.event, e.data))
        .collect()
}

#[tokio::test]
async fn a_run_is_followed_resumed_without_loss_and_read_back() {
    let d = Daemon::start(Arc::new(FakeProvider::default()), 4).await;
    let run = json(
        d.call(Method::POST, "/v1/runs")
            .json(&j!({"spec": PIPELINE, "input": "start here"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(
        (run["name"].clone(), run["kind"].clone()),
        (j!("two-boxes"), j!("pipeline"))
    );
    let events_at = format!("/v1/runs/{id}/events");

    // A reader that drops after three events, then resumes after the last
    // it saw: together, every event once, in order.
    let first = read_events(d.call(Method::GET, &events_at).send().await.unwrap(), 3).await;
    assert_eq!(first.len(), 3);
    let last_seen = first.last().unwrap().0.unwrap();
    let rest = read_events(
        d.call(Method::GET, &events_at)
            .header("Last-Event-ID", last_seen.to_string())
            .send()
            .await
            .unwrap(),
        usize::MAX,
    )
    .await;
    let (end, numbered) = rest.split_last().unwrap();
    assert_eq!(end.1, "end");
    assert_eq!(end.2["status"], "succeeded", "{end:?}");
    let ids: Vec<u64> = first.iter().chain(numbered).map(|e| e.0.unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{ids:?}");
    // The same, read whole, from the start.
    let whole = read_events(
        d.call(Method::GET, &events_at).send().await.unwrap(),
        usize::MAX,
    )
    .await;
    assert_eq!(whole.len(), ids.len() + 1);
    let kinds: Vec<&str> = whole.iter().map(|e| e.1.as_str()).collect();
    for kind in ["stage_started", "tool_call_started", "stage_finished"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }

    let done = json(
        d.call(Method::GET, &format!("/v1/runs/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"], "all done");
    assert!(done["result"]["stages"].is_array(), "{done}");
    let stage = json(
        d.call(Method::GET, &format!("/v1/runs/{id}/stages/scout/output"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(stage, "all done");
    json(
        d.call(Method::GET, &format!("/v1/runs/{id}/stages/nobody/output"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let listed = json(d.call(Method::GET, "/v1/runs").send().await.unwrap(), 200).await;
    assert_eq!(listed[0]["id"], id);
    let again = json(
        d.call(Method::POST, &format!("/v1/runs/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(
        again["message"].as_str().unwrap().contains("ended"),
        "{again}"
    );
    d.stop().await;
}

#[tokio::test]
async fn bad_specs_are_refused_with_their_place_and_start_nothing() {
    let d = Daemon::start(Arc::new(FakeProvider::default()), 4).await;
    let submit = |body: serde_json::Value| d.call(Method::POST, "/v1/runs").json(&body).send();
    let broken = PIPELINE.replace("prompt: report", "promt: report");
    let e = json(submit(j!({"spec": broken})).await.unwrap(), 422).await;
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("promt") && message.contains("spec.yaml:"),
        "{message}"
    );
    for (body, status, says) in [
        (j!({}), 400, "either"),
        (j!({"spec": "a: 1", "path": "/x.yaml"}), 400, "either"),
        (j!({"path": "relative.yaml"}), 400, "absolute"),
        (j!({"path": "/nonexistent/spec.yaml"}), 422, "nonexistent"),
        (j!({"spec": "{}", "format": "toml"}), 400, "toml"),
        (j!({"spec": PIPELINE, "extra": 1}), 422, "extra"),
    ] {
        let e = json(submit(body.clone()).await.unwrap(), status).await;
        assert!(e["message"].as_str().unwrap().contains(says), "{body}: {e}");
    }
    let listed = json(d.call(Method::GET, "/v1/runs").send().await.unwrap(), 200).await;
    assert_eq!(listed, j!([]));
    json(
        d.call(Method::GET, "/v1/runs/run-nope/events")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    d.stop().await;
}

#[tokio::test]
async fn a_finished_run_and_its_events_are_there_after_a_restart() {
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("state");
    let provider: Arc<dyn void_box::sandbox::SandboxProvider> = Arc::new(FakeProvider::default());
    let first = Daemon::start_in(provider.clone(), 4, Some(&state)).await;
    let run = json(
        first
            .call(Method::POST, "/v1/runs")
            .json(&j!({"spec": PIPELINE}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = run["id"].as_str().unwrap().to_string();
    let events_at = format!("/v1/runs/{id}/events");
    let before = read_events(
        first.call(Method::GET, &events_at).send().await.unwrap(),
        usize::MAX,
    )
    .await;
    // Runs' events hold prompts and output: the state is this user's alone.
    use std::os::unix::fs::PermissionsExt;
    for (name, want) in [
        ("", 0o700),
        ("voidbox.db", 0o600),
        ("voidbox.db-wal", 0o600),
    ] {
        let path = state.join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{}", path.display());
    }
    first.stop().await;

    let second = Daemon::start_in(provider, 4, Some(&state)).await;
    let again = json(
        second
            .call(Method::GET, &format!("/v1/runs/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["output"], "all done");
    let after = read_events(
        second.call(Method::GET, &events_at).send().await.unwrap(),
        usize::MAX,
    )
    .await;
    let ids = |e: &[(Option<u64>, String, serde_json::Value)]| -> Vec<Option<u64>> {
        e.iter().map(|x| x.0).collect()
    };
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(after.last().unwrap().1, "end");
    second.stop().await;
}
