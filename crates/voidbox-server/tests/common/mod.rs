//! A daemon on loopback for the tests, stopped (with its sandboxes) when
//! dropped, and a client for it.

#![allow(dead_code)]

use std::sync::Arc;

use reqwest::{Client, RequestBuilder, Response};
use void_box::sandbox::SandboxProvider;
use voidbox_server::{Bound, Listen, ServeConfig};

pub const TOKEN: &str = "a-test-token-of-some-length";

pub struct Daemon {
    pub base: String,
    client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// A daemon on 127.0.0.1 with [`TOKEN`], booting with `provider`.
    pub async fn start(provider: Arc<dyn SandboxProvider>, max_sandboxes: usize) -> Daemon {
        Daemon::start_in(provider, max_sandboxes, None).await
    }

    /// The same, keeping its state in `state_dir`.
    pub async fn start_in(
        provider: Arc<dyn SandboxProvider>,
        max_sandboxes: usize,
        state_dir: Option<&std::path::Path>,
    ) -> Daemon {
        Daemon::start_with(provider, |config| {
            config.max_sandboxes = max_sandboxes;
            config.state_dir = state_dir.map(|d| d.to_path_buf());
        })
        .await
    }

    /// A daemon on 127.0.0.1 with [`TOKEN`], its configuration changed by
    /// `configure`.
    pub async fn start_with(
        provider: Arc<dyn SandboxProvider>,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Daemon {
        let mut config = ServeConfig::new(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            Some(TOKEN.into()),
        );
        config.provider = provider;
        configure(&mut config);
        let bound = Bound::bind(config).await.unwrap();
        let base = format!("http://{}", bound.address().strip_prefix("tcp:").unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            bound
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Daemon {
            base,
            client: Client::new(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// A request with the token.
    pub fn call(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// A request without it.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Stops the daemon and waits until it has ended its sandboxes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The JSON body of `response`, after checking its status.
pub async fn json(response: Response, status: u16) -> serde_json::Value {
    let got = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    /// Its `id`, when it has one.
    pub id: Option<u64>,
    /// Its `event`.
    pub event: String,
    /// Its `data`, parsed.
    pub data: serde_json::Value,
}

/// The events of `response` (keep-alive comments skipped), each shown to
/// `on_event`, until one named `exit`, `error` or `end`, or `limit` of
/// them.
pub async fn read_sse(
    response: Response,
    limit: usize,
    mut on_event: impl FnMut(&Sse),
) -> Vec<Sse> {
    use futures::StreamExt;
    assert_eq!(response.status().as_u16(), 200);
    let mut out = Vec::new();
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(60), body.next())
        .await
        .expect("events keep coming")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                let field = |p: &str| line.strip_prefix(p).map(|v| v.trim_start().to_string());
                if let Some(v) = field("id:") {
                    id = v.parse().ok();
                } else if let Some(v) = field("event:") {
                    event = v;
                } else if let Some(v) = field("data:") {
                    data.push_str(&v);
                }
            }
            if event.is_empty() {
                continue;
            }
            let sse = Sse {
                id,
                data: serde_json::from_str(&data).unwrap(),
                event,
            };
            on_event(&sse);
            let last = matches!(sse.event.as_str(), "exit" | "error" | "end");
            out.push(sse);
            if last || out.len() == limit {
                return out;
            }
        }
    }
    out
}

/// The value of `metric{lane="LANE"}` in the daemon's `/metrics`.
pub async fn lane_metric(d: &Daemon, metric: &str, lane: &str) -> u64 {
    let text = d
        .call(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{metric}{{lane=\"{lane}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}
