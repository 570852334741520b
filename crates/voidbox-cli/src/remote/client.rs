//! A client of `voidbox serve`: HTTP/1.1 over its Unix socket or TCP,
//! with its bearer token; JSON answers, and Server-Sent Events read as
//! they come.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long connecting, and each request's answer head, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JSON answer read.
const MAX_ANSWER: usize = 64 << 20;
/// The largest single Server-Sent Event.
const MAX_EVENT: usize = 16 << 20;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`.
    Tcp(String),
    /// A socket path.
    Unix(PathBuf),
}

impl Address {
    /// `unix:PATH`, `tcp:HOST:PORT` or `http://HOST:PORT`.
    pub fn parse(text: &str) -> Result<Address> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let host = text
            .strip_prefix("tcp:")
            .or_else(|| text.strip_prefix("http://"))
            .map(|h| h.trim_end_matches('/'))
            .filter(|h| h.contains(':') && !h.contains('/'))
            .ok_or_else(|| {
                anyhow!("`{text}`: expected unix:PATH, tcp:HOST:PORT or http://HOST:PORT")
            })?;
        Ok(Address::Tcp(host.to_string()))
    }
}

/// A daemon to talk to.
pub struct Remote {
    address: Address,
    token: Option<String>,
}

impl Remote {
    pub fn new(address: Address, token: Option<String>) -> Remote {
        Remote { address, token }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let what = format!("{} {}", request.method(), request.uri());
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            match &self.address {
                Address::Tcp(host) => {
                    let stream = tokio::net::TcpStream::connect(host)
                        .await
                        .with_context(|| format!("connecting to {host}"))?;
                    stream.set_nodelay(true)?;
                    handshake(stream).await
                }
                Address::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .with_context(|| format!("connecting to {}", path.display()))?;
                    handshake(stream).await
                }
            }
        })
        .await
        .map_err(|_| anyhow!("the daemon did not answer within {CONNECT_TIMEOUT:?}"))??;
        let mut sender = connected;
        tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| anyhow!("{what}: no answer within {CONNECT_TIMEOUT:?}"))?
            .with_context(|| what)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Request<Full<Bytes>>> {
        let host = match &self.address {
            Address::Tcp(h) => h.as_str(),
            Address::Unix(_) => "voidbox",
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(&json)?))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(builder.body(body)?)
    }

    /// A JSON call; an error answer becomes an error with its message.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let response = self.send(self.request(method, path, body)?).await?;
        let status = response.status();
        let bytes = read_limited(response.into_body(), MAX_ANSWER).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the daemon's answer ({status}) is not JSON"))?;
        if !status.is_success() {
            bail!(
                "the daemon answered {status}: {}",
                value["message"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(value)
    }

    /// Follows Server-Sent Events at `path` (after event `last_seen`),
    /// giving each (name, id, data) to `on_event` until it returns `false`
    /// or the stream ends.
    pub async fn events(
        &self,
        path: &str,
        last_seen: Option<&str>,
        mut on_event: impl FnMut(&str, Option<&str>, &str) -> bool,
    ) -> Result<()> {
        let mut request = self.request(Method::GET, path, None)?;
        if let Some(id) = last_seen {
            request.headers_mut().insert("last-event-id", id.parse()?);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = read_limited(body, MAX_ANSWER).await?;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            bail!(
                "the daemon answered {status}: {}",
                value["message"].as_str().unwrap_or("(no message)")
            );
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = find(&pending, b"\n\n") {
                let block: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut name, mut id, mut data) = ("message", None, String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                if !on_event(name, id, &data) {
                    return Ok(());
                }
            }
            if pending.len() > MAX_EVENT {
                bail!("an event of more than {MAX_EVENT} bytes");
            }
        }
        Ok(())
    }
}

async fn handshake<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn read_limited(mut body: Incoming, max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
            if out.len() > max {
                bail!("the daemon's answer is over {max} bytes");
            }
        }
    }
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_or_refused() {
        assert_eq!(
            Address::parse("unix:/run/v.sock").unwrap(),
            Address::Unix("/run/v.sock".into())
        );
        assert_eq!(
            Address::parse("http://127.0.0.1:3000/").unwrap(),
            Address::Tcp("127.0.0.1:3000".into())
        );
        assert_eq!(
            Address::parse("tcp:localhost:80").unwrap(),
            Address::Tcp("localhost:80".into())
        );
        for bad in ["https://x:1", "127.0.0.1", "http://host", "http://h:1/path"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
