//! The host end of vsock: Firecracker-style hybrid sockets.
//!
//! The vhost-user vsock backend exposes the guest's vsock ports through one
//! Unix socket: the host connects, writes `CONNECT <port>\n`, and on success
//! reads `OK <host-port>\n`; from then on the Unix stream is the vsock stream.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long the backend may take to answer the CONNECT line.
const CONNECT_ANSWER_DEADLINE: Duration = Duration::from_secs(2);
/// Longest answer line accepted.
const MAX_ANSWER: usize = 64;

/// Connects to `port` in the guest through the hybrid socket at `uds`.
pub async fn connect(uds: &Path, port: u32) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(uds).await?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    let answer = tokio::time::timeout(CONNECT_ANSWER_DEADLINE, read_line(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "vsock backend did not answer CONNECT"))??;
    if answer.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("vsock backend refused port {port}: {answer:?}"),
        ))
    }
}

/// Reads one line byte by byte, so nothing after it is consumed.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() >= MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "overlong CONNECT answer"));
        }
        line.push(byte);
    }
}
