//! A VM's whole state saved to a directory and loaded back: the guest's
//! RAM (a memfd we hold) copied page by page into a sparse `memory` file,
//! and the devices' state, QEMU's migration stream with its RAM left out
//! (`x-ignore-shared`), through a Unix socket in the VM's runtime
//! directory into `devices`. Both are hashed on the way out and checked on
//! the way in, so a damaged save never runs (ADR 0010).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UnixListener;

use super::confine::Identity;
use super::memory::copy_pages;
use super::qmp::Qmp;
use crate::error::{Error, Result};

/// The migration socket in the runtime directory.
const SOCKET: &str = "migrate.sock";
/// The devices' state in a saved VM's directory.
pub const DEVICES: &str = "devices";
/// The guest's RAM in a saved VM's directory.
pub const MEMORY: &str = "memory";
/// How long a save or a load may take at most (a few GiB of used guest
/// memory take seconds).
const DEADLINE: Duration = Duration::from_secs(120);
/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

/// A saved VM on disk: the files of [`DEVICES`] and [`MEMORY`] in `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The directory.
    pub dir: PathBuf,
    /// Length of the devices' state.
    pub devices_bytes: u64,
    /// Its BLAKE3 hash, hex.
    pub devices_blake3: String,
    /// Length of the guest's RAM (the memory file's logical size).
    pub memory_bytes: u64,
    /// BLAKE3 hash, hex, of its pages that hold data, with their places.
    pub memory_blake3: String,
}

/// Stops the VM behind `qmp` and saves it into the directory `to` (which
/// must not hold a save yet). `memory` is its RAM. The VM stays stopped.
pub(super) async fn save(
    qmp: &Path,
    dir: &Path,
    identity: Option<Identity>,
    memory: &File,
    to: &Path,
) -> Result<SavedState> {
    let fail = |what: &str, e: std::io::Error| Error::io(format!("save the VM: {what}"), e);
    let create = |name: &str| {
        let path = to.join(name);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| fail(&format!("create {}", path.display()), e))
    };
    let devices = create(DEVICES)?;
    let memory_copy = create(MEMORY)?;
    let memory_bytes = memory.metadata().map_err(|e| fail("guest RAM", e))?.len();
    memory_copy
        .set_len(memory_bytes)
        .map_err(|e| fail("size the memory file", e))?;
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
    leave_ram_out(&mut qmp).await?;
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
    let (devices_bytes, devices_blake3) =
        tokio::task::spawn_blocking(move || copy_hashed(stream, devices, remaining))
            .await
            .map_err(|e| Error::Launch(format!("save the VM: {e}")))?
            .map_err(|e| fail("copy the devices' state", e))?;
    let _ = std::fs::remove_file(&socket);
    wait_completed(&mut qmp, started + DEADLINE).await?;
    // The VM is stopped: its RAM holds still while it is copied.
    let ram = memory.try_clone().map_err(|e| fail("guest RAM", e))?;
    let memory_blake3 =
        tokio::task::spawn_blocking(move || copy_pages(&ram, &memory_copy, memory_bytes))
            .await
            .map_err(|e| Error::Launch(format!("save the VM: {e}")))?
            .map_err(|e| fail("copy the guest's RAM", e))?;
    Ok(SavedState {
        dir: to.to_path_buf(),
        devices_bytes,
        devices_blake3,
        memory_bytes,
        memory_blake3,
    })
}

/// Loads `state` into a QEMU started with `-incoming defer` whose RAM is
/// `memory` (as long as the saved one): the RAM first, then the devices'
/// state; fails, naming the directory, when either is not what was saved.
pub(super) async fn load(qmp: &Path, dir: &Path, memory: &File, state: &SavedState) -> Result<()> {
    let damaged = |why: String| {
        Error::Launch(format!(
            "the saved VM in {} is damaged: {why}",
            state.dir.display()
        ))
    };
    let open = |name: &str, expected: u64| {
        let path = state.dir.join(name);
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if len != expected {
            return Err(damaged(format!(
                "{name} has {len} bytes where {expected} were saved"
            )));
        }
        Ok(file)
    };
    let devices = open(DEVICES, state.devices_bytes)?;
    let saved_memory = open(MEMORY, state.memory_bytes)?;
    let started = Instant::now();
    let ram = memory
        .try_clone()
        .map_err(|e| Error::io("the restored VM's RAM", e))?;
    let len = state.memory_bytes;
    let memory_blake3 = tokio::task::spawn_blocking(move || copy_pages(&saved_memory, &ram, len))
        .await
        .map_err(|e| Error::Launch(format!("load the VM: {e}")))?
        .map_err(|e| Error::io("copy the saved RAM", e))?;
    if memory_blake3 != state.memory_blake3 {
        return Err(damaged("its memory's hash is not the one saved".into()));
    }
    let mut qmp = Qmp::connect_within(qmp, Duration::from_secs(10))
        .await
        .map_err(|e| Error::io("QMP of the restored VM", e))?;
    leave_ram_out(&mut qmp).await?;
    let socket = dir.join(SOCKET);
    let uri = format!("unix:{}", socket.display());
    qmp.execute_with("migrate-incoming", json!({ "uri": uri }))
        .await
        .map_err(|e| Error::io("start loading the devices' state", e))?;
    let stream = loop {
        match StdUnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                return Err(Error::io("connect to QEMU's incoming socket", e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    let remaining = DEADLINE.saturating_sub(started.elapsed());
    let (bytes, blake3) =
        tokio::task::spawn_blocking(move || copy_hashed(devices, stream, remaining))
            .await
            .map_err(|e| Error::Launch(format!("load the VM: {e}")))?
            .map_err(|e| {
                Error::Launch(format!(
                    "QEMU refused the saved VM in {} (damaged, or saved by another QEMU): {e}",
                    state.dir.display()
                ))
            })?;
    if bytes != state.devices_bytes || blake3 != state.devices_blake3 {
        return Err(damaged("its devices' hash is not the one saved".into()));
    }
    wait_completed(&mut qmp, started + DEADLINE).await
}

/// Has QEMU's migration leave guest RAM out: it is shared (our memfd),
/// and copied by [`copy_pages`] instead.
async fn leave_ram_out(qmp: &mut Qmp) -> Result<()> {
    qmp.execute_with(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::io("leave guest RAM out of QEMU's migration", e))
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
