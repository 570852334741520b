//! The image cache: converted images by manifest digest, the references
//! that name them, and the locks that make concurrent pulls of one image
//! share one download.
//!
//! ```text
//! <cache>/images/
//!   erofs/<algo>-<hex>.v1.erofs   the converted image (read-only disk)
//!   records/<algo>-<hex>.json     what it was made from, its config, its user
//!   refs/<sha256 of the reference> the reference and the digest it names
//!   locks/<sha256 of the reference>.lock
//!   tmp/<pid>-<n>.erofs           pulls in progress; a dead pid's are swept
//! ```
//!
//! A pull writes into `tmp/` and renames into place only once every blob
//! has matched its digest and the image is complete, so an interrupted or
//! refused pull leaves no entry behind.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::ImageConfig;
use super::ImageError;

/// The converter's on-disk format version: part of each image's file name,
/// so that a change of format converts again instead of reusing old files.
pub const FORMAT: &str = "v1";

/// What the cache knows of one converted image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Manifest digest (`sha256:…`).
    pub digest: String,
    /// The reference it was first pulled as.
    pub reference: String,
    /// Its configuration.
    pub config: ImageConfig,
    /// Its `/etc/passwd`, to resolve users at boot (empty when missing).
    pub passwd: String,
    /// Its `/etc/group`.
    pub group: String,
    /// Layers, as `(digest, compressed bytes)`.
    pub layers: Vec<(String, u64)>,
    /// Size of the erofs image in bytes.
    pub size_bytes: u64,
    /// When it was converted (seconds since the epoch).
    pub pulled_at: u64,
}

/// A reference and the digest it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    /// The reference, normalised (`docker.io/library/python:3.12`).
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
}

/// The cache under one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A cached image, ready to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedImage {
    /// The erofs file.
    pub path: PathBuf,
    /// Its record.
    pub record: ImageRecord,
}

fn digest_file_name(digest: &str) -> String {
    digest.replace(':', "-")
}

fn key(reference: &str) -> String {
    hex::encode(Sha256::digest(reference.as_bytes()))
}

impl Store {
    /// The cache in `root` (created as needed).
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The default cache, `<cache_dir>/images`.
    pub fn default_location() -> Store {
        Store::at(crate::dirs::cache_dir().join("images"))
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn io(&self, what: &str, e: io::Error) -> ImageError {
        ImageError::Cache {
            path: self.root.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// The erofs file of a digest.
    pub fn image_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("erofs")
            .join(format!("{}.{FORMAT}.erofs", digest_file_name(digest)))
    }

    fn record_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("records")
            .join(format!("{}.json", digest_file_name(digest)))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.root.join("refs").join(key(reference))
    }

    /// The image a digest names, when it is cached whole.
    pub fn by_digest(&self, digest: &str) -> Option<CachedImage> {
        let path = self.image_path(digest);
        let record: ImageRecord =
            serde_json::from_slice(&fs::read(self.record_path(digest)).ok()?).ok()?;
        let size = fs::metadata(&path).ok()?.len();
        (size == record.size_bytes && record.digest == digest)
            .then_some(CachedImage { path, record })
    }

    /// The image a (normalised) reference names, when it is cached.
    pub fn by_reference(&self, reference: &str) -> Option<CachedImage> {
        let r: RefRecord =
            serde_json::from_slice(&fs::read(self.ref_path(reference)).ok()?).ok()?;
        (r.reference == reference)
            .then(|| self.by_digest(&r.digest))
            .flatten()
    }

    /// Takes the lock of a reference, waiting for another pull of it (in
    /// this process or another) to finish. Released when dropped.
    pub async fn lock(&self, reference: &str, deadline: Duration) -> Result<PullLock, ImageError> {
        let dir = self.dir("locks").map_err(|e| self.io("create locks/", e))?;
        let path = dir.join(format!("{}.lock", key(reference)));
        let file = File::create(&path).map_err(|e| self.io("open a lock", e))?;
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            match rustix::fs::flock(
                file.as_fd(),
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            ) {
                Ok(()) => return Ok(PullLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(ImageError::Cache {
                        path,
                        message: format!(
                            "another pull of {reference} did not finish within {deadline:?}"
                        ),
                    })
                }
                Err(e) => return Err(self.io("lock", e.into())),
            }
        }
    }

    /// A fresh file for a pull in progress; files of pulls whose process
    /// is gone are removed first.
    pub fn temp_image(&self) -> Result<(PathBuf, File), ImageError> {
        let dir = self.dir("tmp").map_err(|e| self.io("create tmp/", e))?;
        self.sweep_temp();
        for n in 0..1000u32 {
            let path = dir.join(format!("{}-{n}.erofs", std::process::id()));
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("create a temporary image", e)),
            }
        }
        Err(self.io(
            "create a temporary image",
            io::ErrorKind::AlreadyExists.into(),
        ))
    }

    /// Removes temporary files whose pulling process no longer runs.
    pub fn sweep_temp(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Moves a finished image into place and names it by `reference`.
    pub fn commit(
        &self,
        temp: &Path,
        record: &ImageRecord,
        reference: &str,
    ) -> Result<CachedImage, ImageError> {
        self.dir("erofs").map_err(|e| self.io("create erofs/", e))?;
        self.dir("records")
            .map_err(|e| self.io("create records/", e))?;
        let path = self.image_path(&record.digest);
        fs::rename(temp, &path).map_err(|e| self.io("move the image into place", e))?;
        write_atomic(
            &self.record_path(&record.digest),
            &serde_json::to_vec_pretty(record).expect("records serialise"),
        )
        .map_err(|e| self.io("write the record", e))?;
        self.tag(reference, &record.digest)?;
        Ok(CachedImage {
            path,
            record: record.clone(),
        })
    }

    /// Names `digest` by `reference`.
    pub fn tag(&self, reference: &str, digest: &str) -> Result<(), ImageError> {
        self.dir("refs").map_err(|e| self.io("create refs/", e))?;
        let r = RefRecord {
            reference: reference.to_string(),
            digest: digest.to_string(),
        };
        write_atomic(
            &self.ref_path(reference),
            &serde_json::to_vec(&r).expect("refs serialise"),
        )
        .map_err(|e| self.io("write the reference", e))
    }

    /// Every reference, sorted.
    pub fn references(&self) -> Vec<RefRecord> {
        let mut refs: Vec<RefRecord> = fs::read_dir(self.root.join("refs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        refs.sort_by(|a, b| a.reference.cmp(&b.reference));
        refs
    }

    /// Every cached image.
    pub fn images(&self) -> Vec<CachedImage> {
        let mut images: Vec<CachedImage> = fs::read_dir(self.root.join("records"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let record: ImageRecord = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                self.by_digest(&record.digest)
            })
            .collect();
        images.sort_by(|a, b| a.record.reference.cmp(&b.record.reference));
        images
    }

    /// Removes a reference, and its image when nothing else names it.
    /// Returns whether the reference existed.
    pub fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        let Some(r) = self
            .references()
            .into_iter()
            .find(|r| r.reference == reference)
        else {
            return Ok(false);
        };
        fs::remove_file(self.ref_path(reference))
            .map_err(|e| self.io("remove the reference", e))?;
        if !self.references().iter().any(|o| o.digest == r.digest) {
            self.remove_image(&r.digest)?;
        }
        Ok(true)
    }

    fn remove_image(&self, digest: &str) -> Result<(), ImageError> {
        for path in [self.image_path(digest), self.record_path(digest)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove an image", e)),
            }
        }
        Ok(())
    }

    /// Removes images no reference names (every image with `all`),
    /// unfinished pulls and files of older formats; returns bytes freed.
    pub fn prune(&self, all: bool) -> Result<u64, ImageError> {
        let mut freed = 0;
        if all {
            for r in self.references() {
                let _ = fs::remove_file(self.ref_path(&r.reference));
            }
        }
        let named: Vec<String> = self.references().into_iter().map(|r| r.digest).collect();
        for entry in fs::read_dir(self.root.join("erofs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let current = name.ends_with(&format!(".{FORMAT}.erofs"));
            let digest = name
                .split('.')
                .next()
                .map(|d| d.replacen('-', ":", 1))
                .unwrap_or_default();
            if !current || !named.contains(&digest) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|e| self.io("remove an image", e))?;
                if !named.contains(&digest) {
                    let _ = fs::remove_file(self.record_path(&digest));
                }
            }
        }
        for entry in fs::read_dir(self.root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        self.sweep_temp();
        Ok(freed)
    }
}

/// Held while a reference is being pulled.
#[derive(Debug)]
pub struct PullLock {
    _file: File,
}

/// Writes `data` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&temp, data)?;
    fs::rename(&temp, path)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, size: u64) -> ImageRecord {
        ImageRecord {
            digest: digest.into(),
            reference: "r".into(),
            config: ImageConfig::default(),
            passwd: String::new(),
            group: String::new(),
            layers: Vec::new(),
            size_bytes: size,
            pulled_at: 0,
        }
    }

    #[tokio::test]
    async fn commit_tag_remove_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let (temp, _) = store.temp_image().unwrap();
        fs::write(&temp, b"1234").unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = store.commit(&temp, &record(&digest, 4), "x:1").unwrap();
        assert!(!temp.exists());
        assert_eq!(store.by_reference("x:1").unwrap(), image);
        store.tag("x:2", &digest).unwrap();
        assert!(store.remove("x:1").unwrap());
        assert!(store.by_digest(&digest).is_some(), "x:2 still names it");
        assert!(store.remove("x:2").unwrap());
        assert!(store.by_digest(&digest).is_none());
        assert!(!store.remove("x:2").unwrap());

        // A record whose image is the wrong size is not a cached image.
        let (temp, _) = store.temp_image().unwrap();
        fs::write(&temp, b"12").unwrap();
        store.commit(&temp, &record(&digest, 4), "y:1").unwrap();
        assert!(store.by_reference("y:1").is_none());
        assert!(store.prune(true).unwrap() >= 2);
        assert!(store.references().is_empty());
    }

    #[tokio::test]
    async fn the_lock_serialises_pulls_of_one_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let held = store.lock("x:1", Duration::from_secs(1)).await.unwrap();
        let err = store
            .lock("x:1", Duration::from_millis(120))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        let other = store.lock("y:1", Duration::from_millis(120)).await;
        assert!(other.is_ok(), "other references do not wait");
        drop(held);
        store.lock("x:1", Duration::from_secs(1)).await.unwrap();
    }

    #[test]
    fn dead_pulls_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/999999999-0.erofs"), b"x").unwrap();
        let (mine, _) = store.temp_image().unwrap();
        assert!(mine.exists());
        assert!(!dir.path().join("tmp/999999999-0.erofs").exists());
    }
}
