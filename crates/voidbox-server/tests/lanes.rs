//! The lanes on guest doubles: 50 runs queued behind two that hold the
//! generate lane, a cancel that answers in under 100 ms meanwhile, the
//! 51st waiting one refused with 429 and Retry-After; a full execute lane
//! refuses an exec while a delete (control) still goes through; queue
//! depths in the metrics.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json, lane_metric, Daemon};
use reqwest::Method;
use serde_json::json as j;
use void_box::sandbox::fake::{FakeProvider, FakeReply};

/// Every command "runs" ten minutes, until cancelled.
fn slow_guests() -> Arc<FakeProvider> {
    Arc::new(FakeProvider::with_commands(|_, _| {
        FakeReply::ok("").after(Duration::from_secs(600))
    }))
}

const LONG_RUN: &str =
    "kind: sandbox\nname: long\nsandbox: {memory_mb: 256}\nrun: {program: sleep}\n";

async fn submit(d: &Daemon) -> reqwest::Response {
    d.call(Method::POST, "/v1/runs")
        .json(&j!({ "spec": LONG_RUN }))
        .send()
        .await
        .unwrap()
}

async fn status(d: &Daemon, id: &str) -> String {
    let run = json(
        d.call(Method::GET, &format!("/v1/runs/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    run["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn fifty_queued_runs_do_not_delay_a_cancel_and_one_more_is_refused() {
    let d = Daemon::start_with(slow_guests(), |config| {
        config.max_sandboxes = 64;
        config.lanes.parse_into("generate=2:50").unwrap();
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..52 {
        let run = json(submit(&d).await, 201).await;
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    // Two take the lane's turns; fifty wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lane_metric(&d, "voidbox_lane_running", "generate").await < 2 {
        assert!(Instant::now() < deadline, "two runs start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&d, &ids[0]).await, "running");
    assert_eq!(status(&d, &ids[51]).await, "queued");
    assert_eq!(
        lane_metric(&d, "voidbox_lane_waiting", "generate").await,
        50
    );

    let refused = submit(&d).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("generate lane is full"),
        "{body}"
    );
    assert_eq!(
        json(d.call(Method::GET, "/v1/runs").send().await.unwrap(), 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        52,
        "the refused run left nothing behind"
    );
    assert_eq!(
        lane_metric(&d, "voidbox_lane_rejected_total", "generate").await,
        1
    );

    // A cancel is a control request: it does not wait behind the runs.
    let started = Instant::now();
    let cancel = d
        .call(Method::POST, &format!("/v1/runs/{}/cancel", ids[30]))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        cancel.status().as_u16(),
        200,
        "{}",
        cancel.text().await.unwrap()
    );
    assert!(took < Duration::from_millis(100), "a cancel took {took:?}");
    assert_eq!(status(&d, &ids[30]).await, "cancelled");
    let started = Instant::now();
    json(d.call(Method::GET, "/v1/health").send().await.unwrap(), 200).await;
    assert!(started.elapsed() < Duration::from_millis(100));

    // Its place is free, and a running run's end lets the first waiting one go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lane_metric(&d, "voidbox_lane_waiting", "generate").await != 49 {
        assert!(
            Instant::now() < deadline,
            "the cancelled run left the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    json(
        d.call(Method::POST, &format!("/v1/runs/{}/cancel", ids[0]))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&d, &ids[2]).await != "running" {
        assert!(Instant::now() < deadline, "the first waiting run starts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&d, &ids[3]).await, "queued", "in order");
    json(submit(&d).await, 201).await;
    d.stop().await;
}

#[tokio::test]
async fn a_full_execute_lane_refuses_an_exec_but_not_a_delete() {
    let d = Daemon::start_with(slow_guests(), |config| {
        config.lanes.parse_into("execute=1:0").unwrap();
    })
    .await;
    // The create itself is an execute request; it is alone.
    let sandbox = json(
        d.call(Method::POST, "/v1/sandboxes")
            .json(&j!({"config": {"memory_mb": 256}}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = sandbox["id"].as_str().unwrap().to_string();
    let exec_at = format!("/v1/sandboxes/{id}/exec");
    let busy = tokio::spawn(
        d.call(Method::POST, &exec_at)
            .json(&j!({"command": ["sleep"]}))
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while lane_metric(&d, "voidbox_lane_running", "execute").await < 1 {
        assert!(Instant::now() < deadline, "the exec runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = d
        .call(Method::POST, &exec_at)
        .json(&j!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");

    let started = Instant::now();
    let deleted = d
        .call(Method::DELETE, &format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(started.elapsed() < Duration::from_millis(100));
    // The exec it ended answers, and frees the lane.
    let ended = tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .expect("the exec ends with its sandbox")
        .unwrap()
        .unwrap();
    assert_ne!(ended.status().as_u16(), 200);
    assert_eq!(lane_metric(&d, "voidbox_lane_running", "execute").await, 0);
    d.stop().await;
}
