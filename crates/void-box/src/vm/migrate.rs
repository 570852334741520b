//! A VM's whole state (memory and devices) saved to a file and loaded back:
//! QEMU's migration stream over a Unix socket in the VM's runtime
//! directory, copied to or from the file by us and hashed on the way, so a
//! damaged file is caught before the VM it would make runs (ADR 0010).
//!
//! QEMU finds zero pages itself and writes only a flag for each, so a file
//! holds about what the guest really used.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UnixListener;

use super::confine::Identity;
use super::qmp::Qmp;
use crate::error::{Error, Result};

/// The migration socket in the runtime directory.
const SOCKET: &str = "migrate.sock";
/// How long a save or a load may take at most (a few GiB of used guest
/// memory take seconds).
const DEADLINE: Duration = Duration::from_secs(120);
/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

/// A saved VM state on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
}

/// Stops the VM behind `qmp` and writes its state to the new file `to`.
/// The VM stays stopped.
pub(super) async fn save(
    qmp: &Path,
    dir: &Path,
    identity: Option<Identity>,
    to: &Path,
) -> Result<SavedState> {
    let fail = |what: &str, e: std::io::Error| Error::io(format!("save the VM: {what}"), e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| fail(&format!("create {}", to.display()), e))?;
    let socket = dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| fail("listen for QEMU", e))?;
    if let Some(id) = identity {
        std::os::unix::fs::chown(&socket, Some(id.uid), Some(id.gid))
            .map_err(|e| fail("hand the socket to QEMU's user", e))?;
    }
    let started = Instant::now();
    let mut qmp = Qmp::connect(qmp).await.map_err(|e| fail("QMP", e))?;
    qmp.execute("stop").await.map_err(|e| fail("stop", e))?;
    // QEMU's default cap (128 MiB/s) is for networks, not a local file.
    qmp.execute_with(
        "migrate-set-parameters",
        json!({"max-bandwidth": 64u64 << 30}),
    )
    .await
    .map_err(|e| fail("lift the bandwidth cap", e))?;
    let uri = format!("unix:{}", socket.display());
    qmp.execute_with("migrate", json!({ "uri": uri }))
        .await
        .map_err(|e| fail("migrate", e))?;
    let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .map_err(|_| Error::Timeout("QEMU did not start sending the VM's state".into()))?
        .map_err(|e| fail("accept QEMU", e))?;
    let stream = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|_| s))
        .map_err(|e| fail("take QEMU's stream", e))?;
    let remaining = DEADLINE.saturating_sub(started.elapsed());
    let (bytes, blake3) = tokio::task::spawn_blocking(move || copy_hashed(stream, file, remaining))
        .await
        .map_err(|e| Error::Launch(format!("save the VM: {e}")))?
        .map_err(|e| fail("copy the state", e))?;
    let _ = std::fs::remove_file(&socket);
    wait_completed(&mut qmp, started + DEADLINE).await?;
    Ok(SavedState {
        path: to.to_path_buf(),
        bytes,
        blake3,
    })
}

/// Feeds `state` to a QEMU started with `-incoming unix:` on
/// [`incoming_socket`] and waits until it has loaded it; fails, naming the
/// file, when the bytes are not the ones saved.
pub(super) async fn load(qmp: &Path, dir: &Path, state: &SavedState) -> Result<()> {
    let damaged = |why: String| {
        Error::Launch(format!(
            "the saved VM state {} is damaged: {why}",
            state.path.display()
        ))
    };
    let file = std::fs::File::open(&state.path)
        .map_err(|e| Error::io(format!("open {}", state.path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", state.path.display()), e))?
        .len();
    if len != state.bytes {
        return Err(damaged(format!(
            "{len} bytes where {} were saved",
            state.bytes
        )));
    }
    let started = Instant::now();
    let socket = incoming_socket(dir);
    let stream = loop {
        match StdUnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                return Err(Error::io("connect to QEMU's incoming socket", e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    let remaining = DEADLINE.saturating_sub(started.elapsed());
    let (bytes, blake3) = tokio::task::spawn_blocking(move || copy_hashed(file, stream, remaining))
        .await
        .map_err(|e| Error::Launch(format!("load the VM: {e}")))?
        .map_err(|e| {
            Error::Launch(format!(
                "QEMU refused the saved VM state {} (damaged, or saved by another QEMU): {e}",
                state.path.display()
            ))
        })?;
    if bytes != state.bytes || blake3 != state.blake3 {
        return Err(damaged("its hash is not the one saved".into()));
    }
    let mut qmp = Qmp::connect(qmp)
        .await
        .map_err(|e| Error::io("QMP of the restored VM", e))?;
    wait_completed(&mut qmp, started + DEADLINE).await
}

/// Where a VM launched to load a saved state listens for it.
pub(super) fn incoming_socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Copies `from` into `to` until the end, hashing what passes, within
/// `limit`.
fn copy_hashed(
    mut from: impl Read,
    mut to: impl Write,
    limit: Duration,
) -> std::io::Result<(u64, String)> {
    let until = Instant::now() + limit;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if Instant::now() > until {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not done in {limit:?}"),
            ));
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    to.flush()?;
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// Waits until QEMU reports the migration completed, or why it failed.
async fn wait_completed(qmp: &mut Qmp, until: Instant) -> Result<()> {
    loop {
        let info = qmp
            .execute("query-migrate")
            .await
            .map_err(|e| Error::io("query the migration", e))?;
        match info.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                let why = info
                    .get("error-desc")
                    .and_then(|e| e.as_str())
                    .unwrap_or("no reason given");
                return Err(Error::Launch(format!("QEMU's migration failed: {why}")));
            }
            _ => {}
        }
        if Instant::now() > until {
            return Err(Error::Timeout(format!(
                "QEMU's migration did not complete in {DEADLINE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_hashed_as_it_passes() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let (n, hash) = copy_hashed(&data[..], &mut out, Duration::from_secs(5)).unwrap();
        assert_eq!(n as usize, data.len());
        assert_eq!(out, data);
        assert_eq!(hash, blake3::hash(&data).to_hex().to_string());
    }
}
