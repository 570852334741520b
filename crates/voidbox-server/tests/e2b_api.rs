//! The E2B API's edges on guest doubles: who may call what (the daemon's
//! key for the control plane, each sandbox's own token for its envd and
//! no other's), bad input answered in the shape the SDKs read and
//! changing nothing, and the Connect framing's failures.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{Daemon, TOKEN};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use void_box::sandbox::fake::{FakeProvider, FakeReply};

async fn daemon() -> Daemon {
    let guests = FakeProvider::with_commands(|_, cmd| FakeReply::ok(cmd.argv().join(" ")));
    Daemon::start_with(Arc::new(guests), |_| {}).await
}

/// A control-plane call with the daemon's key, as the SDKs send it.
fn control(d: &Daemon, method: Method, path: &str) -> RequestBuilder {
    d.anonymous(method, path).header("x-api-key", TOKEN)
}

/// An envd call for sandbox `id` with `token`.
fn envd(d: &Daemon, path: &str, id: &str, token: &str) -> RequestBuilder {
    d.anonymous(Method::POST, path)
        .header("e2b-sandbox-id", id)
        .header("e2b-sandbox-port", "49983")
        .header("x-access-token", token)
}

async fn body(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a sandbox through the E2B API: (id, access token).
async fn create(d: &Daemon) -> (String, String) {
    let (status, made) = call(control(d, Method::POST, "/v2/sandboxes")
            // The doubles have no network.
            .json(&json!({"templateID": "base", "metadata": {"k": "v"}, "envVars": {"A": "1"}, "allow_internet_access": false})))
    .await;
    assert_eq!(status, 201, "{made}");
    for key in ["templateID", "sandboxID", "clientID", "envdVersion"] {
        assert!(made.get(key).is_some(), "{key} in {made}");
    }
    assert_ne!(made["domain"], "e2b.app", "never E2B's own domain");
    (
        made["sandboxID"].as_str().unwrap().into(),
        made["envdAccessToken"].as_str().unwrap().into(),
    )
}

/// A request's status and JSON answer.
async fn call(request: RequestBuilder) -> (u16, Value) {
    body(request.send().await.unwrap()).await
}

/// A unary envd call's status and JSON answer.
async fn rpc(d: &Daemon, path: &str, id: &str, token: &str, request: Value) -> (u16, Value) {
    call(envd(d, path, id, token).json(&request)).await
}

/// A server-streaming request body: one envelope.
fn envelope(message: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap();
    let mut out = vec![0];
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// The messages of a stream's body, and its end-of-stream JSON.
fn envelopes(bytes: &[u8]) -> (Vec<Value>, Value) {
    let (mut messages, mut at) = (Vec::new(), 0);
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        let json: Value = serde_json::from_slice(&bytes[at + 5..at + 5 + len]).unwrap();
        if bytes[at] & 2 != 0 {
            return (messages, json);
        }
        messages.push(json);
        at += 5 + len;
    }
    panic!("no end-of-stream envelope in {bytes:?}");
}

#[tokio::test]
async fn the_control_plane_wants_the_daemons_key_and_refuses_bad_input_whole() {
    let d = daemon().await;
    for key in [None, Some("e2b_not-the-token")] {
        let mut request = d.anonymous(Method::POST, "/v2/sandboxes");
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let (status, _) = call(request.json(&json!({"templateID": "base"}))).await;
        assert_eq!(status, 401, "key {key:?}");
    }
    let refusals = [
        (
            json!({"templateID": "no-such-template"}),
            404,
            "template 'no-such-template'",
        ),
        (json!({"templateID": "base", "timeout": 0}), 400, "timeout"),
        (
            json!({"templateID": "base", "timeout": 999_999}),
            400,
            "timeout",
        ),
        (json!({"timeout": 30}), 400, "templateID"),
    ];
    for (request, want, says) in refusals {
        let (status, answer) =
            call(control(&d, Method::POST, "/v2/sandboxes").json(&request)).await;
        assert_eq!(
            (status, answer["code"].as_u64()),
            (want, Some(want as u64)),
            "{answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (_, listed) = call(control(&d, Method::GET, "/v2/sandboxes")).await;
    assert_eq!(listed, json!([]), "nothing was made");

    let (id, _) = create(&d).await;
    // A native sandbox is not an E2B one: the E2B API does not see it.
    let native = common::json(
        d.call(Method::POST, "/v1/sandboxes")
            .json(&json!({"config": {"memory_mb": 256}}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let (_, listed) = call(control(&d, Method::GET, "/v2/sandboxes")).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let native_at = format!("/sandboxes/{}", native["id"].as_str().unwrap());
    let (status, answer) = call(control(&d, Method::DELETE, &native_at)).await;
    assert_eq!((status, answer["code"].clone()), (404, json!(404)));
    // Filters, pages.
    let (_, none) = call(control(&d, Method::GET, "/v2/sandboxes?metadata=k%3Dother")).await;
    assert_eq!(none, json!([]));
    let (status, _) = call(control(&d, Method::GET, "/v2/sandboxes?limit=0")).await;
    assert_eq!(status, 400);
    let (status, _) =
        call(control(&d, Method::POST, &format!("/sandboxes/{id}/timeout")).body("{not json"))
            .await;
    assert_eq!(status, 400);
    let (status, _) = call(control(&d, Method::DELETE, &format!("/sandboxes/{id}"))).await;
    assert_eq!(status, 204);
    let (status, answer) = call(control(&d, Method::DELETE, &format!("/sandboxes/{id}"))).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (404, json!(404)),
        "a second kill is 404: the SDK's False"
    );
    d.stop().await;
}

#[tokio::test]
async fn an_envd_call_needs_its_own_sandboxs_token_and_no_other() {
    let d = daemon().await;
    let (a, a_token) = create(&d).await;
    let (b, b_token) = create(&d).await;
    let list = "/process.Process/List";
    let (status, listed) = call(envd(&d, list, &a, &a_token).json(&json!({}))).await;
    assert_eq!((status, listed), (200, json!({"processes": []})));

    let attempts = [
        (a.as_str(), b_token.as_str(), 401), // another sandbox's token
        (a.as_str(), "", 401),               // none
        (a.as_str(), TOKEN, 401),            // the daemon's own is not a sandbox's
        ("voidbox-gone", a_token.as_str(), 502), // no such sandbox
    ];
    for (id, token, want) in attempts {
        let (status, answer) = call(envd(&d, list, id, token).json(&json!({}))).await;
        assert_eq!(status, want, "id {id} token {token:?}: {answer}");
        if want == 502 {
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("was not found"),
                "{answer}"
            );
        }
    }
    // Without the routing headers, the token alone names its sandbox.
    let (status, _) = call(
        d.anonymous(Method::POST, list)
            .header("x-access-token", &b_token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        d.anonymous(Method::POST, list)
            .header("e2b-sandbox-id", &b)
            .header("e2b-sandbox-port", "8080")
            .header("x-access-token", &b_token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 502, "user ports are not proxied");
    // The files route and health answer the same way.
    let files = d
        .anonymous(Method::GET, "/files?path=/home/user/x")
        .header("e2b-sandbox-id", &a)
        .header("x-access-token", &b_token)
        .send()
        .await
        .unwrap();
    assert_eq!(files.status().as_u16(), 401);
    let health = |id: &str, token: &str| {
        d.anonymous(Method::GET, "/health")
            .header("e2b-sandbox-id", id)
            .header("x-access-token", token)
            .send()
    };
    assert_eq!(health(&a, &a_token).await.unwrap().status().as_u16(), 204);
    control(&d, Method::DELETE, &format!("/sandboxes/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(health(&a, &a_token).await.unwrap().status().as_u16(), 502);
    d.stop().await;
}

#[tokio::test]
async fn bad_connect_calls_get_connect_errors_and_files_stay_in_their_roots() {
    let d = daemon().await;
    let (id, token) = create(&d).await;
    // A stream whose request is no envelope: 200 and the error at its end.
    let start = "/process.Process/Start";
    for bad in [
        b"{}".to_vec(),
        vec![0, 0, 0, 0, 9, b'{'],
        vec![1, 0, 0, 0, 2, b'{', b'}'],
    ] {
        let response = envd(&d, start, &id, &token)
            .header("content-type", "application/connect+json")
            .body(bad.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/connect+json"
        );
        let (messages, end) = envelopes(&response.bytes().await.unwrap());
        assert!(messages.is_empty());
        let code = end["error"]["code"].as_str().unwrap();
        assert!(
            ["invalid_argument", "unimplemented"].contains(&code),
            "{bad:?}: {end}"
        );
    }
    // A command followed to its end: start, its output, end, end-of-stream.
    let response = envd(&d, start, &id, &token)
        .header("content-type", "application/connect+json")
        .body(envelope(
            &json!({"process": {"cmd": "echo", "args": ["hi"]}, "stdin": false}),
        ))
        .send()
        .await
        .unwrap();
    let (messages, end) = envelopes(&response.bytes().await.unwrap());
    assert!(
        messages[0]["event"]["start"]["pid"].as_u64().is_some(),
        "{messages:?}"
    );
    assert_eq!(messages.last().unwrap()["event"]["end"]["exitCode"], 0);
    assert_eq!(end, json!({}));
    // Unary errors are JSON with a code name.
    for (method, request, want, code) in [
        ("/process.Process/Nope", json!({}), 501, "unimplemented"),
        (
            "/process.Process/SendSignal",
            json!({"process": {"pid": 4242}, "signal": "SIGNAL_SIGKILL"}),
            404,
            "not_found",
        ),
        (
            "/process.Process/SendSignal",
            json!({"process": {"pid": 1}, "signal": "SIGNAL_SIGHUP"}),
            400,
            "invalid_argument",
        ),
        (
            "/process.Process/SendInput",
            json!({"process": {"pid": 1}, "input": {"stdin": "%%%"}}),
            400,
            "invalid_argument",
        ),
        (
            "/filesystem.Filesystem/Stat",
            json!({"path": "/etc/passwd"}),
            403,
            "permission_denied",
        ),
        (
            "/filesystem.Filesystem/Stat",
            json!({"path": "../../etc/passwd"}),
            403,
            "permission_denied",
        ),
        (
            "/filesystem.Filesystem/Stat",
            json!({"path": "missing.txt"}),
            404,
            "not_found",
        ),
        (
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": "watcher-0"}),
            404,
            "not_found",
        ),
    ] {
        let (status, answer) = call(envd(&d, method, &id, &token).json(&request)).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (want, Some(code)),
            "{method} {request}: {answer}"
        );
    }
    let (status, _) = rpc(
        &d,
        "/filesystem.Filesystem/MakeDir",
        &id,
        &token,
        json!({"path": "/home/user/made"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, answer) = rpc(
        &d,
        "/filesystem.Filesystem/MakeDir",
        &id,
        &token,
        json!({"path": "made"}),
    )
    .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (409, json!("already_exists"))
    );

    // Watchers are bounded: polled ones and streams together.
    let mut watchers = Vec::new();
    for _ in 0..15 {
        let (status, made) = rpc(
            &d,
            "/filesystem.Filesystem/CreateWatcher",
            &id,
            &token,
            json!({"path": "/home/user"}),
        )
        .await;
        assert_eq!(status, 200, "{made}");
        watchers.push(made["watcherId"].as_str().unwrap().to_string());
    }
    let stream = envd(&d, "/filesystem.Filesystem/WatchDir", &id, &token)
        .header("content-type", "application/connect+json")
        .body(envelope(&json!({"path": "/home/user"})))
        .send()
        .await
        .unwrap();
    let (status, refused) = rpc(
        &d,
        "/filesystem.Filesystem/CreateWatcher",
        &id,
        &token,
        json!({"path": "/home/user"}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].clone()),
        (429, json!("resource_exhausted")),
        "the 17th"
    );
    drop(stream);
    let (status, _) = rpc(
        &d,
        "/filesystem.Filesystem/RemoveWatcher",
        &id,
        &token,
        json!({"watcherId": watchers[0]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rpc(
        &d,
        "/filesystem.Filesystem/CreateWatcher",
        &id,
        &token,
        json!({"path": "/home/user"}),
    )
    .await;
    assert_eq!(status, 200, "a removed watcher's place is free again");

    // Uploads: outside the roots refused, a gzip bomb stopped at the limit.
    let upload = |path: &str| {
        d.anonymous(Method::POST, &format!("/files?path={path}"))
            .header("e2b-sandbox-id", &id)
            .header("x-access-token", &token)
    };
    let (status, _) = call(
        upload("/etc/evil")
            .header("content-type", "application/octet-stream")
            .body("x"),
    )
    .await;
    assert_eq!(status, 403);
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..257 {
        bomb.write_all(&zeros).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let (status, answer) = call(
        upload("bomb.bin")
            .header("content-type", "application/octet-stream")
            .header("content-encoding", "gzip")
            .body(bomb),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let (status, _) = rpc(
        &d,
        "/filesystem.Filesystem/Stat",
        &id,
        &token,
        json!({"path": "bomb.bin"}),
    )
    .await;
    assert_eq!(status, 404, "nothing was written");
    let (status, written) = call(
        upload("gz.txt")
            .header("content-type", "application/octet-stream")
            .header("content-encoding", "gzip")
            .body({
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(b"inflated").unwrap();
                gz.finish().unwrap()
            }),
    )
    .await;
    assert_eq!(
        (status, written),
        (
            200,
            json!([{"name": "gz.txt", "path": "/home/user/gz.txt", "type": "file"}])
        )
    );
    let read = d
        .anonymous(Method::GET, "/files?path=gz.txt")
        .header("e2b-sandbox-id", &id)
        .header("x-access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.bytes().await.unwrap(), "inflated");
    d.stop().await;
}

#[tokio::test]
async fn a_pooled_create_takes_a_ready_sandbox_and_its_envs_reach_its_commands() {
    // Each command answers with the variables it was given.
    let guests = FakeProvider::with_commands(|_, cmd| {
        FakeReply::ok(
            cmd.env
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        )
    });
    let d = Daemon::start_with(Arc::new(guests.clone()), |config| {
        config.e2b.pool = 1;
    })
    .await;
    let settled = |want: usize| {
        let guests = guests.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while guests.guests().len() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} guests, not {want}",
                    guests.guests().len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert_eq!(guests.guests().len(), want, "and no more");
        }
    };
    let make = |greeting: &'static str| {
        control(&d, Method::POST, "/v2/sandboxes").json(&json!({
            "templateID": "base", "envVars": {"GREETING": greeting}, "allow_internet_access": false
        }))
    };
    let (status, first) = call(make("hi")).await;
    assert_eq!(status, 201, "{first}");
    // The first create booted one; the pool boots the next ahead.
    settled(2).await;
    let (status, second) = call(make("ho")).await;
    assert_eq!(status, 201, "{second}");
    // The second took the ready one; the pool boots another.
    settled(3).await;
    let (id, token) = (
        second["sandboxID"].as_str().unwrap(),
        second["envdAccessToken"].as_str().unwrap(),
    );
    let response = envd(&d, "/process.Process/Start", id, token)
        .header("content-type", "application/connect+json")
        .body(envelope(
            &json!({"process": {"cmd": "env", "envs": {"OWN": "1"}}}),
        ))
        .send()
        .await
        .unwrap();
    let (messages, _) = envelopes(&response.bytes().await.unwrap());
    let stdout: String = messages
        .iter()
        .filter_map(|m| m["event"]["data"]["stdout"].as_str())
        .map(|b| {
            use base64::Engine;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        })
        .collect();
    assert!(
        stdout.contains("GREETING=ho\n") && stdout.contains("OWN=1\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("GREETING=hi"),
        "another create's variables: {stdout}"
    );
    d.stop().await;
}
