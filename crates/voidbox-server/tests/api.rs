//! The daemon's HTTP API on guest doubles (no VM): authentication, bad
//! input, limits, the file and process routes, timeouts, the document.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{json, Daemon};
use reqwest::Method;
use serde_json::json as j;
use void_box::sandbox::fake::FakeProvider;

async fn daemon(max: usize) -> Daemon {
    Daemon::start(Arc::new(FakeProvider::default()), max).await
}

#[tokio::test]
async fn the_token_is_required_but_for_health_and_bad_input_changes_nothing() {
    let d = daemon(4).await;
    let health = json(
        d.anonymous(Method::GET, "/v1/health").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(health["status"], "ok");
    for call in [
        d.anonymous(Method::GET, "/v1/sandboxes"),
        d.anonymous(Method::GET, "/v1/sandboxes")
            .bearer_auth("a-test-token-of-some-lengtX"),
        d.anonymous(Method::GET, "/metrics"),
    ] {
        let body = json(call.send().await.unwrap(), 401).await;
        assert!(
            body["message"].as_str().unwrap().contains("Bearer"),
            "{body}"
        );
    }

    // Malformed, unknown fields, a bad configuration, a bad timeout: each
    // refused with what is wrong, and no sandbox made.
    let post = |body: &str| {
        d.call(Method::POST, "/v1/sandboxes")
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let cases = [
        ("{not json", 400, "JSON"),
        (r#"{"confg": {}}"#, 422, "unknown field `confg`"),
        (r#"{"config": {"memory_mb": 1}}"#, 422, "memory_mb"),
        (r#"{"config": {"memroy_mb": 512}}"#, 422, "memroy_mb"),
        (r#"{"config": {"snapshot": "../x"}}"#, 422, "snapshot"),
        (r#"{"timeout_secs": 0}"#, 400, "timeout_secs"),
    ];
    for (body, status, says) in cases {
        let got = json(post(body).send().await.unwrap(), status).await;
        assert!(
            got["message"].as_str().unwrap().contains(says),
            "{body}: {got}"
        );
        assert_eq!(got["code"], status);
    }
    // Oversized: refused before it is read.
    let big = format!(r#"{{"metadata": {{"a": "{}"}}}}"#, "x".repeat(2 << 20));
    assert_eq!(post(&big).send().await.unwrap().status().as_u16(), 413);
    let list = json(
        d.call(Method::GET, "/v1/sandboxes").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(list, j!([]));
    // An unknown sandbox, everywhere.
    for (method, path) in [
        (Method::GET, "/v1/sandboxes/nope"),
        (Method::DELETE, "/v1/sandboxes/nope"),
        (Method::GET, "/v1/sandboxes/nope/files?path=/workspace/a"),
    ] {
        let got = json(d.call(method, path).send().await.unwrap(), 404).await;
        assert!(got["message"].as_str().unwrap().contains("nope"), "{got}");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_sandbox_runs_commands_keeps_files_and_ends_when_asked_or_at_its_timeout() {
    let d = daemon(2).await;
    let made = json(
        d.call(Method::POST, "/v1/sandboxes")
            .json(&j!({"config": {"memory_mb": 256}, "metadata": {"owner": "test"}}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["memory_mb"], 256);
    assert_eq!(made["metadata"]["owner"], "test");
    let at = |p: &str| format!("/v1/sandboxes/{id}{p}");

    // The double echoes stdin.
    let ran = json(
        d.call(Method::POST, &at("/exec"))
            .json(&j!({"command": ["cat"], "stdin": "hello"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (ran["exit_code"].clone(), ran["stdout"].clone()),
        (j!(0), j!("hello"))
    );
    let bad = json(
        d.call(Method::POST, &at("/exec"))
            .json(&j!({}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        bad["message"].as_str().unwrap().contains("command"),
        "{bad}"
    );

    // Files: write, stat, list, rename, read, remove.
    let put = d
        .call(Method::PUT, &at("/files?path=/workspace/d/a.txt"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let stat = json(
        d.call(Method::GET, &at("/files/stat?path=/workspace/d/a.txt"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (stat["kind"].clone(), stat["size"].clone()),
        (j!("file"), j!(4))
    );
    let renamed = d
        .call(Method::POST, &at("/files/rename"))
        .json(&j!({"from": "/workspace/d/a.txt", "to": "/workspace/b.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status().as_u16(), 204);
    let read = d
        .call(Method::GET, &at("/files?path=/workspace/b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"data");
    let listed = json(
        d.call(Method::GET, &at("/files/list?path=/workspace"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"b.txt"), "{listed}");
    let escape = json(
        d.call(Method::GET, &at("/files?path=/etc/passwd"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert!(
        escape["message"].as_str().unwrap().contains("/etc/passwd"),
        "{escape}"
    );
    let removed = d
        .call(Method::DELETE, &at("/files?path=/workspace/b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    json(
        d.call(Method::GET, &at("/files/stat?path=/workspace/b.txt"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // The limit: two alive at once.
    let second = d
        .call(Method::POST, "/v1/sandboxes")
        .json(&j!({}))
        .send()
        .await
        .unwrap();
    let second_id = json(second, 201).await["id"].as_str().unwrap().to_string();
    let third = d
        .call(Method::POST, "/v1/sandboxes")
        .json(&j!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.headers()["retry-after"], "5");
    let third = json(third, 429).await;
    assert!(
        third["message"].as_str().unwrap().contains("2 sandboxes"),
        "{third}"
    );

    // A timeout ends one; a delete the other.
    let set = d
        .call(Method::POST, &format!("/v1/sandboxes/{second_id}/timeout"))
        .json(&j!({"timeout_secs": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    json(
        d.call(Method::GET, &format!("/v1/sandboxes/{second_id}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let deleted = d.call(Method::DELETE, &at("")).send().await.unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    json(d.call(Method::GET, &at("")).send().await.unwrap(), 404).await;
    let metrics = d
        .call(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("voidbox_sandboxes_created_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("voidbox_sandboxes_expired_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("voidbox_sandboxes_live 0"), "{metrics}");
    d.stop().await;
}

#[tokio::test]
async fn the_served_document_is_the_one_in_the_repository() {
    let d = daemon(1).await;
    let served = d
        .call(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, voidbox_server::openapi::document());
    d.stop().await;
}

#[tokio::test]
async fn a_unix_socket_is_made_for_its_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/voidbox.sock");
    let mut config =
        voidbox_server::ServeConfig::new(voidbox_server::Listen::Unix(path.clone()), None);
    config.provider = Arc::new(FakeProvider::default());
    let bound = voidbox_server::Bound::bind(config.clone()).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let parent = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(parent, 0o700);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));
    // A second daemon on the same socket is refused.
    let err = voidbox_server::Bound::bind(config).await.err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
    let mut conn = tokio::net::UnixStream::connect(&path).await.unwrap();
    conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: voidbox\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket outlived the daemon");
}
