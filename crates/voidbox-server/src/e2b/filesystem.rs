//! envd's `filesystem.Filesystem` service over our file API: `Stat`,
//! `ListDir` (to a depth), `MakeDir`, `Move`, `Remove`, and watching
//! (`WatchDir`, or polled with `CreateWatcher`; see `watch`). Paths are
//! the guest's writable roots (`/home/user`, `/workspace`, `/tmp`);
//! relative ones are the user's home.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use void_box::{ErrorKind, Sandbox};
use void_box_protocol::{FileKind, FileStat};

use std::sync::Arc;
use std::time::Duration;

use super::connect::{
    stream_error, stream_request, stream_response, unary_request, unary_response, Code,
    ConnectError,
};
use super::watch::{Watch, POLL};
use super::{absolute, envd_user, keepalive_interval, EnvdSandbox};
use crate::registry::Live;

/// Most entries one `ListDir` answers (over every level).
const MAX_ENTRIES: usize = 10_000;
/// Deepest `ListDir` (and a recursive watch) walks.
pub(crate) const MAX_DEPTH: u32 = 16;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct PathRequest {
    path: String,
    depth: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct WatchRequest {
    path: String,
    recursive: bool,
    #[serde(rename = "watcherId")]
    watcher_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

/// Every `filesystem.Filesystem` method.
pub(crate) async fn call(
    EnvdSandbox(live): EnvdSandbox,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = envd_user(&headers);
    let path_of = |p: &str| absolute(p, user.as_deref());
    if method == "WatchDir" {
        return match stream_request::<WatchRequest>(&body) {
            Ok(r) => watch_stream(live, path_of(&r.path), r.recursive, &headers).await,
            Err(e) => stream_error(e),
        };
    }
    let sandbox = &live.sandbox;
    let watchers = &live.e2b.as_ref().expect("an E2B sandbox").watchers;
    let result = async {
        match method.as_str() {
            "Stat" => {
                let r: PathRequest = unary_request(&body)?;
                let path = path_of(&r.path);
                let stat = sandbox.stat(&path).await.map_err(fs_error)?;
                Ok(json!({ "entry": entry(&path, &stat) }))
            }
            "ListDir" => {
                let r: PathRequest = unary_request(&body)?;
                let depth = r.depth.unwrap_or(1).clamp(1, MAX_DEPTH);
                let path = path_of(&r.path);
                let entries = list_dir(sandbox, &path, depth).await?;
                Ok(json!({ "entries": entries }))
            }
            "MakeDir" => {
                let r: PathRequest = unary_request(&body)?;
                let path = path_of(&r.path);
                if sandbox.stat(&path).await.is_ok() {
                    return Err(ConnectError::new(
                        Code::AlreadyExists,
                        format!("{path} already exists"),
                    ));
                }
                sandbox.mkdir(&path).await.map_err(fs_error)?;
                let stat = sandbox.stat(&path).await.map_err(fs_error)?;
                Ok(json!({ "entry": entry(&path, &stat) }))
            }
            "Move" => {
                let r: MoveRequest = unary_request(&body)?;
                let (from, to) = (path_of(&r.source), path_of(&r.destination));
                sandbox.rename(&from, &to).await.map_err(fs_error)?;
                let stat = sandbox.stat(&to).await.map_err(fs_error)?;
                Ok(json!({ "entry": entry(&to, &stat) }))
            }
            "Remove" => {
                let r: PathRequest = unary_request(&body)?;
                sandbox.remove(&path_of(&r.path)).await.map_err(fs_error)?;
                Ok(json!({}))
            }
            "CreateWatcher" => {
                let r: WatchRequest = unary_request(&body)?;
                let id = watchers
                    .create(live.clone(), &path_of(&r.path), r.recursive)
                    .await?;
                Ok(json!({ "watcherId": id }))
            }
            "GetWatcherEvents" => {
                let r: WatchRequest = unary_request(&body)?;
                Ok(json!({ "events": watchers.take(&r.watcher_id)? }))
            }
            "RemoveWatcher" => {
                let r: WatchRequest = unary_request(&body)?;
                watchers.remove(&r.watcher_id)?;
                Ok(json!({}))
            }
            other => Err(ConnectError::new(
                Code::Unimplemented,
                format!("filesystem.Filesystem/{other} does not exist"),
            )),
        }
    }
    .await;
    match result {
        Ok(message) => unary_response(message),
        Err(e) => e.into_response(),
    }
}

/// A file error as envd reports it (a path outside the roots is a
/// permission error).
fn fs_error(e: void_box::Error) -> ConnectError {
    let not_found = e.guest_kind() == Some(ErrorKind::NotFound);
    let mut error = ConnectError::from_sandbox(e);
    if not_found {
        error.code = Code::NotFound;
    }
    error
}

async fn list_dir(sandbox: &Sandbox, root: &str, depth: u32) -> Result<Vec<Value>, ConnectError> {
    let found = walk(sandbox, root, depth).await?;
    Ok(found.iter().map(|(path, stat)| entry(path, stat)).collect())
}

/// Every entry under `root` to `depth` levels (1: its children), by path;
/// at most [`MAX_ENTRIES`].
pub(crate) async fn walk(
    sandbox: &Sandbox,
    root: &str,
    depth: u32,
) -> Result<Vec<(String, FileStat)>, ConnectError> {
    let mut out = Vec::new();
    let mut level = vec![root.trim_end_matches('/').to_string()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in level {
            let entries = sandbox
                .list_limited(if dir.is_empty() { "/" } else { &dir }, MAX_ENTRIES)
                .await
                .map_err(fs_error)?;
            for e in entries {
                if out.len() >= MAX_ENTRIES {
                    return Err(ConnectError::new(
                        Code::ResourceExhausted,
                        format!("more than {MAX_ENTRIES} entries under {root}"),
                    ));
                }
                let path = format!("{dir}/{}", e.name);
                if e.stat.kind == FileKind::Dir {
                    next.push(path.clone());
                }
                out.push((path, e.stat));
            }
        }
        level = next;
    }
    Ok(out)
}

/// `WatchDir`: `start`, then each change as a `filesystem` event (a
/// `keepalive` every `Keepalive-Ping-Interval` seconds), until the client
/// goes or the directory does.
async fn watch_stream(
    live: Arc<Live>,
    dir: String,
    recursive: bool,
    headers: &HeaderMap,
) -> Response {
    let place = match StreamPlace::take(&live) {
        Ok(place) => place,
        Err(e) => return stream_error(e),
    };
    let mut watch = match Watch::start(&live.sandbox, &dir, recursive).await {
        Ok(w) => w,
        Err(e) => return stream_error(e),
    };
    let every = keepalive_interval(headers);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let _place = place;
        if tx.send(Ok(json!({"start": {}}))).await.is_err() {
            return;
        }
        let mut quiet = Duration::ZERO;
        loop {
            // A client that went away frees its place at once.
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            quiet += POLL;
            let events = match watch.changes(&live.sandbox).await {
                Ok(events) => events,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if quiet >= every {
                quiet = Duration::ZERO;
                if tx.send(Ok(json!({"keepalive": {}}))).await.is_err() {
                    return;
                }
            }
            for event in events {
                if tx.send(Ok(json!({ "filesystem": event }))).await.is_err() {
                    return;
                }
            }
        }
    });
    stream_response(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A `WatchDir` stream's place among its sandbox's watchers, given back
/// when the stream ends.
struct StreamPlace(Arc<Live>);

impl StreamPlace {
    fn take(live: &Arc<Live>) -> Result<StreamPlace, ConnectError> {
        live.e2b
            .as_ref()
            .expect("an E2B sandbox")
            .watchers
            .stream_started()?;
        Ok(StreamPlace(live.clone()))
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        if let Some(e2b) = &self.0.e2b {
            e2b.watchers.stream_ended();
        }
    }
}

/// envd's `EntryInfo`.
pub(crate) fn entry(path: &str, stat: &FileStat) -> Value {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let (kind, type_char) = match stat.kind {
        FileKind::Dir => ("FILE_TYPE_DIRECTORY", 'd'),
        FileKind::Symlink => ("FILE_TYPE_SYMLINK", 'L'),
        _ => ("FILE_TYPE_FILE", '-'),
    };
    let seconds = stat.mtime_unix_ns.div_euclid(1_000_000_000);
    let nanos = stat.mtime_unix_ns.rem_euclid(1_000_000_000) as u32;
    let modified = chrono::DateTime::from_timestamp(seconds, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    json!({
        "name": name,
        "type": kind,
        "path": path,
        "size": stat.size.to_string(),
        "mode": stat.mode & 0o7777,
        "permissions": permissions(type_char, stat.mode),
        "owner": account(stat.uid),
        "group": account(stat.gid),
        "modifiedTime": modified,
    })
}

fn account(id: u32) -> String {
    match id {
        0 => "root".into(),
        1000 => "user".into(),
        other => other.to_string(),
    }
}

/// `-rw-r--r--`, as Go's `FileMode.String` writes it.
fn permissions(type_char: char, mode: u32) -> String {
    let mut out = String::from(type_char);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_envds() {
        let stat = FileStat {
            kind: FileKind::File,
            size: 12,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_unix_ns: 1_700_000_000_500_000_000,
        };
        let e = entry("/home/user/a.txt", &stat);
        assert_eq!(e["name"], "a.txt");
        assert_eq!(e["type"], "FILE_TYPE_FILE");
        assert_eq!(e["size"], "12");
        assert_eq!(e["permissions"], "-rw-r--r--");
        assert_eq!(e["owner"], "user");
        assert_eq!(e["modifiedTime"], "2023-11-14T22:13:20.500Z");
    }
}
