//! A minimal QMP client: enough to quit, stop, continue and migrate.
//!
//! QMP is JSON lines over a Unix socket: a greeting, `qmp_capabilities`,
//! then commands whose answers are lines holding `return` or `error`
//! (interleaved with asynchronous events, which are skipped). A dependency
//! for a handful of commands is not worth it.

use std::io;
use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(path: &Path) -> io::Result<Qmp> {
        let stream = UnixStream::connect(path).await?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
        };
        qmp.read_json().await?; // greeting
        qmp.execute("qmp_capabilities").await?;
        Ok(qmp)
    }

    /// Connects once QEMU listens (it makes the socket as it starts),
    /// trying until `limit` passes.
    pub async fn connect_within(path: &Path, limit: std::time::Duration) -> io::Result<Qmp> {
        let until = std::time::Instant::now() + limit;
        loop {
            match Qmp::connect(path).await {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && std::time::Instant::now() < until =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await
                }
                other => return other,
            }
        }
    }

    /// Runs a command without arguments and returns its `return` value.
    pub async fn execute(&mut self, command: &str) -> io::Result<Value> {
        self.execute_with(command, Value::Object(Default::default()))
            .await
    }

    /// Runs a command with `arguments` and returns its `return` value.
    pub async fn execute_with(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let mut line = serde_json::json!({"execute": command, "arguments": arguments}).to_string();
        line.push('\n');
        self.reader.get_mut().write_all(line.as_bytes()).await?;
        loop {
            let msg = self.read_json().await?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                return Err(io::Error::other(format!("QMP {command}: {err}")));
            }
        }
    }

    async fn read_json(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP closed"));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}
