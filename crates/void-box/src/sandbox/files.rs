//! The sandbox's file API: files and directories under the guest's
//! writable roots (`/workspace`, `/tmp`), each call under its deadline
//! ([`RequestDeadlines`](super::RequestDeadlines)) and each answer under a
//! size cap, so that neither a slow nor a hostile guest can hold the host.

use void_box_protocol::flow::RecvWindow;
use void_box_protocol::{DirEntry, FileStat, GuestMsg, HostMsg, MAX_LIST_PAGE};

use super::{unexpected, Sandbox};
use crate::error::{Error, Result};

/// The largest file [`Sandbox::read_file`] reads.
pub const DEFAULT_MAX_READ: u64 = 256 << 20;
/// Most entries [`Sandbox::list`] collects from one directory.
pub const DEFAULT_MAX_LIST: usize = 100_000;

/// One page of a directory listing ([`Sandbox::list_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Entries in name order.
    pub entries: Vec<DirEntry>,
    /// Whether more follow; ask again with the last entry's name.
    pub more: bool,
}

impl Sandbox {
    /// Writes a file (parents created) under `/workspace` or `/tmp`. The
    /// guest writes a fresh file and renames it over `path` when all of it
    /// is in, so a failed write leaves the old file as it was.
    pub async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        self.write_file_mode(path, data, 0o644).await
    }

    /// Like [`write_file`](Self::write_file) with permission bits.
    pub async fn write_file_mode(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut stream = self.client.open(HostMsg::WriteFile {
            path: path.to_string(),
            mode,
        })?;
        let idle = self.deadlines.transfer_idle;
        let what = format!("the write of {path}");
        let sender = stream.sender();
        let upload = async {
            sender
                .send_data_within(data, HostMsg::FileChunk, Some((idle, &what)))
                .await?;
            sender.send(HostMsg::FileEnd)
        };
        // The guest may refuse (bad path) before the upload ends: watch
        // both. Credit goes straight to the upload, which has its own
        // deadline per chunk; once all is sent, the answer has `idle`.
        let answer = tokio::select! {
            result = upload => {
                result?;
                stream.recv_within(idle, &what).await?
            }
            msg = stream.recv() => msg?,
        };
        match answer {
            GuestMsg::Written { bytes } if bytes == data.len() as u64 => Ok(()),
            GuestMsg::Written { bytes } => Err(Error::Disconnected(format!(
                "guest wrote {bytes} of {} bytes to {path}",
                data.len()
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a whole file from under `/workspace` or `/tmp`, of at most
    /// [`DEFAULT_MAX_READ`] bytes (see [`read_file_limited`](Self::read_file_limited)).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.read_file_limited(path, DEFAULT_MAX_READ).await
    }

    /// Reads a whole file of at most `max` bytes: a larger one (by its size
    /// before the read, or by what arrives) is an [`Error::TooLarge`] and
    /// is not held, so a guest cannot make the host keep more than `max`.
    pub async fn read_file_limited(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let too_large = |size: u64| Error::TooLarge {
            what: format!("guest file {path}"),
            size,
            max,
        };
        let size = self.stat(path).await?.size;
        if size > max {
            return Err(too_large(size));
        }
        let mut stream = self.client.open(HostMsg::ReadFile {
            path: path.to_string(),
        })?;
        let what = format!("the read of {path}");
        let mut window = RecvWindow::new();
        let mut data = Vec::new();
        loop {
            match stream
                .recv_within(self.deadlines.transfer_idle, &what)
                .await?
            {
                GuestMsg::FileChunk(chunk) => {
                    window.on_data(chunk.len())?;
                    if data.len() as u64 + chunk.len() as u64 > max {
                        // It grew while being read; dropping the stream
                        // stops taking more.
                        return Err(too_large(data.len() as u64 + chunk.len() as u64));
                    }
                    data.extend_from_slice(&chunk);
                    if let Some(grant) = window.on_consumed(chunk.len()) {
                        stream.send(HostMsg::Credit(grant))?;
                    }
                }
                GuestMsg::FileEnd { size } if size == data.len() as u64 => return Ok(data),
                GuestMsg::FileEnd { size } => {
                    return Err(Error::Disconnected(format!(
                        "guest announced {size} bytes of {path} but sent {}",
                        data.len()
                    )))
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Metadata of a path.
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        let what = format!("stat {path}");
        match self
            .query(HostMsg::Stat { path: path.into() }, &what)
            .await?
        {
            GuestMsg::Stat(st) => Ok(st),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a directory and its parents.
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        let what = format!("mkdir {path}");
        match self
            .query(HostMsg::Mkdir { path: path.into() }, &what)
            .await?
        {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a file, a symlink (not its target) or a directory with
    /// everything in it, below a writable root.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let what = format!("remove {path}");
        match self
            .query(HostMsg::Remove { path: path.into() }, &what)
            .await?
        {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Moves `from` to `to` (replacing a file there); both below writable
    /// roots on one file system, `to`'s directory existing.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let what = format!("rename {from}");
        let msg = HostMsg::Rename {
            from: from.into(),
            to: to.into(),
        };
        match self.query(msg, &what).await? {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Lists a directory, in name order, of at most [`DEFAULT_MAX_LIST`]
    /// entries (see [`list_limited`](Self::list_limited)).
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.list_limited(path, DEFAULT_MAX_LIST).await
    }

    /// Lists a directory of at most `max` entries, page by page; a larger
    /// one is an [`Error::TooLarge`].
    pub async fn list_limited(&self, path: &str, max: usize) -> Result<Vec<DirEntry>> {
        let mut entries: Vec<DirEntry> = Vec::new();
        loop {
            let after = entries.last().map(|e| e.name.clone());
            let page = self
                .list_page(path, after.as_deref(), MAX_LIST_PAGE)
                .await?;
            if entries.len() + page.entries.len() > max {
                return Err(Error::TooLarge {
                    what: format!("the listing of {path}"),
                    size: (entries.len() + page.entries.len()) as u64,
                    max: max as u64,
                });
            }
            // A guest that does not move forward would loop forever.
            if page.more && page.entries.is_empty() {
                return Err(Error::Disconnected(format!(
                    "the guest listed an empty page of {path} with more to follow"
                )));
            }
            entries.extend(page.entries);
            if !page.more {
                return Ok(entries);
            }
        }
    }

    /// One page of a directory: up to `limit` entries (at most
    /// [`MAX_LIST_PAGE`]) whose names sort after `after`.
    pub async fn list_page(&self, path: &str, after: Option<&str>, limit: u32) -> Result<ListPage> {
        let request = HostMsg::List {
            path: path.into(),
            after: after.map(str::to_string),
            limit,
        };
        match self.query(request, &format!("list {path}")).await? {
            GuestMsg::Listing { entries, more } => {
                // Ordered, after the cursor, within the limit: anything else
                // would make paging skip or repeat.
                let limit = void_box_protocol::list_page_len(limit);
                let ordered = entries.windows(2).all(|w| w[0].name < w[1].name);
                let after_cursor = match (after, entries.first()) {
                    (Some(after), Some(first)) => first.name.as_str() > after,
                    _ => true,
                };
                if entries.len() > limit || !ordered || !after_cursor {
                    return Err(Error::Disconnected(format!(
                        "the guest sent a malformed page of {path}"
                    )));
                }
                Ok(ListPage { entries, more })
            }
            other => Err(unexpected(other)),
        }
    }

    /// A one-answer request under the query deadline.
    pub(super) async fn query(&self, msg: HostMsg, what: &str) -> Result<GuestMsg> {
        let mut stream = self.client.open(msg)?;
        stream.recv_within(self.deadlines.query, what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::FakeProvider;
    use crate::sandbox::{SandboxConfig, SandboxProvider};

    #[tokio::test]
    async fn a_large_directory_arrives_in_pages_and_is_capped() {
        let provider = FakeProvider::default();
        let sb = provider.boot(&SandboxConfig::default()).await.unwrap();
        let guest = provider.guests()[0].clone();
        for i in 0..2500 {
            guest.put_file(&format!("/workspace/many/f{i:05}"), "");
        }
        let names: Vec<String> = sb
            .list("/workspace/many")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let expected: Vec<String> = (0..2500).map(|i| format!("f{i:05}")).collect();
        assert_eq!(names, expected);

        let page = sb
            .list_page("/workspace/many", Some("f00099"), 10)
            .await
            .unwrap();
        assert_eq!(page.entries[0].name, "f00100");
        assert_eq!(page.entries.len(), 10);
        assert!(page.more);

        let err = sb.list_limited("/workspace/many", 2000).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { max: 2000, .. }), "{err}");
        sb.shutdown().await.unwrap();
    }
}
