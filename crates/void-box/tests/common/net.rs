//! Helpers of the guest network tests: the Debian test image, commands in
//! the guest, the audit trail, and a header-echoing HTTP server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use void_box::net::NetworkEvent;
use void_box::{Exec, Sandbox};

use super::registry::TestRegistry;

/// A registry on loopback serving the python test image, and its reference.
pub async fn python_image() -> (TestRegistry, String) {
    let registry = TestRegistry::start();
    registry.push("python", "latest", "python");
    let reference = registry.reference("python:latest");
    (registry, reference)
}

/// Runs `script` in the guest: exit code, stdout, stderr.
pub async fn run(sandbox: &Sandbox, script: &str) -> (i32, String, String) {
    let out = sandbox
        .exec(Exec::shell(script).timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    (
        out.status.code.unwrap_or(-1),
        out.stdout_text(),
        out.stderr_text(),
    )
}

/// Runs `script` in the guest, which must succeed; its stdout.
pub async fn ok(sandbox: &Sandbox, script: &str) -> String {
    let (code, out, err) = run(sandbox, script).await;
    assert_eq!(code, 0, "`{script}`: {out}{err}");
    out
}

/// Events received so far.
pub fn drain(trail: &mut broadcast::Receiver<NetworkEvent>) -> Vec<NetworkEvent> {
    let mut events = Vec::new();
    while let Ok(e) = trail.try_recv() {
        events.push(e);
    }
    events
}

/// The first event that matches.
pub fn find(
    events: &[NetworkEvent],
    what: impl Fn(&NetworkEvent) -> bool,
) -> Option<&NetworkEvent> {
    events.iter().find(|e| what(e))
}

/// An HTTP server on `addr` answering every request with `body`.
pub async fn http_server(addr: &str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    at
}

/// A server on loopback that accepts connections and holds them, never
/// reading, answering or closing.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    at
}

/// An HTTP server answering each request (keep-alive) with the request's
/// `Authorization` header.
pub async fn echo_auth_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(echo_auth(conn));
        }
    });
    at
}

/// Serves one connection as [`echo_auth_server`] does.
pub async fn echo_auth<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S) {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_string();
            seen.drain(..end + 4);
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("Authorization: "))
                .unwrap_or("none")
                .to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{auth}",
                auth.len()
            );
            if conn.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            let _ = conn.flush().await;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}
