//! The daemon with real micro-VMs: a command followed as Server-Sent
//! Events with its stdin written and another killed by pid, files, and a
//! stopped daemon taking every VM along.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{json, Daemon};
use reqwest::Method;
use serde_json::json as j;
use void_box::sandbox::VmProvider;

/// The SSE events of a followed command, as (event, data) pairs, until
/// `exit` or `error`.
async fn follow(
    response: reqwest::Response,
    mut on_event: impl FnMut(&str, &serde_json::Value),
) -> Vec<(String, serde_json::Value)> {
    common::read_sse(response, usize::MAX, |e| on_event(&e.event, &e.data))
        .await
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect()
}

fn decoded(events: &[(String, serde_json::Value)], stream: &str) -> String {
    let bytes: Vec<u8> = events
        .iter()
        .filter(|(n, _)| n == stream)
        .flat_map(|(_, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// The tests count the machine's QEMU processes: one at a time.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// QEMU processes alive now.
fn qemus() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_followed_fed_and_killed_in_a_real_vm_and_the_daemon_takes_its_vms_along() {
    let _one = COUNTING.lock().await;
    let before = qemus();
    let d = Daemon::start(Arc::new(VmProvider), 4).await;
    let made = json(
        d.call(Method::POST, "/v1/sandboxes")
            .json(&j!({"config": {"memory_mb": 256}, "timeout_secs": 600}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert!(made["expires_unix_ms"].as_u64().unwrap() > made["created_unix_ms"].as_u64().unwrap());
    let at = |p: &str| format!("/v1/sandboxes/{id}{p}");

    // `cat` followed, fed through its pid, ends when stdin closes.
    let response = d
        .call(Method::POST, &at("/exec/stream"))
        .json(&j!({"command": ["cat"], "stdin_open": true}))
        .send()
        .await
        .unwrap();
    let feeder = {
        let client = reqwest::Client::new();
        let base = d.base.clone();
        let at = at("");
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel::<u64>();
        let task = tokio::spawn(async move {
            let pid = pid_rx.await.unwrap();
            for (body, eof) in [("hello ", false), ("from the host\n", true)] {
                let r = client
                    .post(format!("{base}{at}/processes/{pid}/stdin?eof={eof}"))
                    .bearer_auth(common::TOKEN)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 204);
            }
        });
        (pid_tx, task)
    };
    let (pid_tx, task) = feeder;
    let mut pid_tx = Some(pid_tx);
    let events = follow(response, |name, value| {
        if name == "started" {
            pid_tx
                .take()
                .unwrap()
                .send(value["pid"].as_u64().unwrap())
                .unwrap();
        }
    })
    .await;
    task.await.unwrap();
    assert_eq!(decoded(&events, "stdout"), "hello from the host\n");
    assert_eq!(events.last().unwrap().1["exit_code"], 0, "{events:?}");

    // A long command killed by pid: its stream ends with the signal.
    let response = d
        .call(Method::POST, &at("/exec/stream"))
        .json(&j!({"shell": "echo up; sleep 600"}))
        .send()
        .await
        .unwrap();
    let killer = reqwest::Client::new();
    let base = d.base.clone();
    let kill_at = at("");
    let mut kills = Vec::new();
    let events = follow(response, |name, value| {
        if name == "started" {
            let url = format!("{base}{kill_at}/processes/{}", value["pid"]);
            let killer = killer.clone();
            kills.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                killer
                    .delete(url)
                    .bearer_auth(common::TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    })
    .await;
    for k in kills {
        assert_eq!(k.await.unwrap(), 204);
    }
    let exit = &events.last().unwrap().1;
    assert_eq!(exit["exit_code"], j!(null), "{events:?}");
    assert_eq!(exit["signal"], 9, "{events:?}");

    // A silent command whose follower goes away goes too.
    let response = d
        .call(Method::POST, &at("/exec/stream"))
        .json(&j!({"command": ["sleep", "607"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    drop(response);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = json(
            d.call(Method::POST, &at("/exec"))
                .json(&j!({"shell": "ps -o args | grep -c '^sleep 607' || true"}))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        if left["stdout"] == "0\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unfollowed sleep still runs: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Collected output and files, for real.
    let ran = json(
        d.call(Method::POST, &at("/exec"))
            .json(&j!({"shell": "echo $X > /workspace/x; cat /workspace/x; uname -s", "env": {"X": "42"}}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(ran["stdout"], "42\nLinux\n");
    let read = d
        .call(Method::GET, &at("/files?path=/workspace/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"42\n");
    let escape = json(
        d.call(Method::GET, &at("/files?path=/workspace/../etc/passwd"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert!(
        escape["message"].as_str().unwrap().contains("passwd"),
        "{escape}"
    );

    // Stopping the daemon ends the VM.
    assert!(qemus() > before);
    d.stop().await;
    let gone = std::time::Instant::now();
    while qemus() > before {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "a VM outlived the daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_in_a_real_vm_ends_with_its_output_and_a_cancelled_one_takes_its_vm_along() {
    let _one = COUNTING.lock().await;
    let d = Daemon::start(Arc::new(VmProvider), 4).await;
    let submit = |spec: &str| {
        d.call(Method::POST, "/v1/runs")
            .json(&j!({"spec": spec}))
            .send()
    };
    let quick = json(
        submit("kind: sandbox\nname: hello\nsandbox: {memory_mb: 256}\nrun: {program: uname, args: [-s]}\n")
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = quick["id"].as_str().unwrap().to_string();
    let ended = std::time::Instant::now();
    let done = loop {
        let got = json(
            d.call(Method::GET, &format!("/v1/runs/{id}"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        if got["status"] != "running" {
            break got;
        }
        assert!(ended.elapsed() < Duration::from_secs(60), "{got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "Linux\n", "{done}");

    let before = qemus();
    let long = json(
        submit("kind: sandbox\nname: long\nsandbox: {memory_mb: 256}\nrun: {program: sleep, args: ['600']}\n")
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = long["id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    while qemus() == before {
        assert!(started.elapsed() < Duration::from_secs(30), "no VM started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled = json(
        d.call(Method::POST, &format!("/v1/runs/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    let gone = std::time::Instant::now();
    while qemus() > before {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the cancelled run's VM lives on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_turns_share_a_real_vm_until_it_is_destroyed() {
    let _counting = COUNTING.lock().await;
    let d = Daemon::start(Arc::new(VmProvider), 4).await;
    let spec = "api_version: v1\nkind: agent\nname: keeper\nsandbox: {memory_mb: 256}\nllm:\n  provider: mock\n  mock:\n    turns:\n      - {tool_calls: [{name: bash, input: {command: 'echo kept > /workspace/note; uname -s'}}]}\n      - {text: written}\n      - {tool_calls: [{name: bash, input: {command: 'cat /workspace/note'}}]}\n      - {text: read}\nagent:\n  prompt: Keep a note.\n";
    let before = qemus();
    let made = json(
        d.call(Method::POST, "/v1/sessions")
            .json(&j!({"spec": spec}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    let turn = |message: &'static str| {
        d.call(Method::POST, &format!("/v1/sessions/{id}/generate"))
            .json(&j!({"message": message}))
            .send()
    };
    let first = json(turn("write it").await.unwrap(), 200).await;
    assert!(
        first["tool_calls"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("Linux"),
        "a real kernel answered: {first}"
    );
    let during = qemus();
    assert!(during > before, "the session's VM stays between turns");
    let second = json(turn("read it").await.unwrap(), 200).await;
    assert_eq!(qemus(), during, "the same VM, no other");
    assert!(
        second["tool_calls"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("kept"),
        "the second turn sees the first's file: {second}"
    );
    let gone = d
        .call(Method::DELETE, &format!("/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while qemus() > before {
        assert!(std::time::Instant::now() < deadline, "its VM ends with it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop().await;
}
