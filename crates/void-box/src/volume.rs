//! Named volumes: host directories under the data directory that outlive
//! sandboxes, so that a second sandbox sees what the first wrote. They are
//! shared into guests like mounts, with the guest's ownership and modes
//! kept in `user.virtfs.*` xattrs (the files are void-box's own, so the
//! guest's user owns them whatever the host user is).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Checks a volume name: 1-64 of `[A-Za-z0-9_.-]`, starting alphanumeric.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "volume name `{name}` must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit"
        ))
    }
}

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name is not a volume name.
    #[error("{0}")]
    Name(String),
    /// No volume has this name.
    #[error("no volume named `{0}`")]
    Missing(String),
    /// The directory failed.
    #[error("volume `{name}` ({}): {source}", path.display())]
    Io {
        /// The volume.
        name: String,
        /// Its directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// One volume, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// Bytes its files take.
    pub size_bytes: u64,
}

/// The volumes under one directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    /// Volumes in `root`.
    pub fn at(root: impl Into<PathBuf>) -> Volumes {
        Volumes { root: root.into() }
    }

    /// The default place, `<data_dir>/volumes`.
    pub fn default_location() -> Volumes {
        Volumes::at(crate::dirs::data_dir().join("volumes"))
    }

    /// A volume's directory (it may not exist).
    pub fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        check_volume_name(name).map_err(VolumeError::Name)?;
        Ok(self.root.join(name))
    }

    fn io(name: &str, path: &Path, source: io::Error) -> VolumeError {
        VolumeError::Io {
            name: name.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Creates a volume; true if it was new.
    pub fn create(&self, name: &str) -> Result<bool, VolumeError> {
        let path = self.path(name)?;
        fs::create_dir_all(&self.root).map_err(|e| Self::io(name, &self.root, e))?;
        match fs::create_dir(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
            Err(e) => Err(Self::io(name, &path, e)),
        }
    }

    /// The directory of a volume, created if it is new.
    pub fn ensure(&self, name: &str) -> Result<PathBuf, VolumeError> {
        self.create(name)?;
        self.path(name)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("*", &self.root, e)),
        };
        let mut volumes: Vec<VolumeInfo> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                check_volume_name(&name).ok()?;
                Some(VolumeInfo {
                    size_bytes: disk_usage(&e.path()),
                    path: e.path(),
                    name,
                })
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Deletes a volume and everything in it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        let path = self.path(name)?;
        if !path.is_dir() {
            return Err(VolumeError::Missing(name.into()));
        }
        fs::remove_dir_all(&path).map_err(|e| Self::io(name, &path, e))
    }
}

/// Bytes under `dir`, not following symlinks.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::at(dir.path());
        assert!(volumes.create("data").unwrap());
        assert!(!volumes.create("data").unwrap());
        fs::write(volumes.path("data").unwrap().join("f"), b"12345").unwrap();
        let listed = volumes.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].size_bytes), ("data", 5));
        assert!(matches!(volumes.create("../x"), Err(VolumeError::Name(_))));
        assert!(check_volume_name("cache-1.0").is_ok());
        for bad in ["", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(check_volume_name(bad).is_err(), "{bad}");
        }
        volumes.remove("data").unwrap();
        assert!(matches!(
            volumes.remove("data"),
            Err(VolumeError::Missing(_))
        ));
    }
}
