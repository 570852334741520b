//! Snapshots: sandboxes saved ready to serve, by name.
//!
//! `<data_dir>/snapshots/NAME/` holds `snapshot.json` and the saved VM
//! (`devices`, `memory`). A snapshot records what it was made from: the
//! guest image's kernel and initramfs, the OCI image's digest, the machine
//! (memory, CPUs, network device, accelerator, QEMU) and its files'
//! lengths and hashes. A restore refuses one that no longer matches,
//! naming what changed; a damaged file is caught by its hash before the VM
//! runs.
//!
//! Making one writes into a hidden directory stamped with its maker's pid
//! and renames it into place at the end, so a snapshot is whole or absent;
//! directories of makers that died are swept when the store is next used.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::error::SnapshotError;
use crate::vm::{SavedState, DEVICES, MEMORY};

/// Version of `snapshot.json`'s layout.
const FORMAT: u32 = 1;
const META: &str = "snapshot.json";
/// Prefix of directories being made.
const MAKING: &str = ".making-";

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a snapshot name: 1-64 of `[A-Za-z0-9_.-]`, starting with a letter
/// or digit.
pub fn check_snapshot_name(name: &str) -> Result<(), SnapshotError> {
    crate::volume::check_volume_name(name)
        .map_err(|_| {
            SnapshotError::Name(format!(
                "snapshot name `{name}` must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit"
            ))
        })
}

/// A file a snapshot was made from, as it was: its content hash, and what
/// tells cheaply whether it may have changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// The file.
    pub path: PathBuf,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
    /// Length, modification time (ns) and inode when it was hashed.
    pub len: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub inode: u64,
}

impl FileStamp {
    /// Stamps `path`. A file stamped before in this process, unchanged by
    /// length, time and inode, is not read again (a fork stamps the same
    /// kernel each time).
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        static HASHES: std::sync::Mutex<Vec<FileStamp>> = std::sync::Mutex::new(Vec::new());
        let meta = fs::metadata(path)?;
        let mut stamp = FileStamp {
            path: path.to_path_buf(),
            blake3: String::new(),
            len: meta.len(),
            mtime_ns: mtime_ns(&meta),
            inode: meta.ino(),
        };
        let same = |known: &&FileStamp| {
            known.path == stamp.path
                && known.len == stamp.len
                && known.mtime_ns == stamp.mtime_ns
                && known.inode == stamp.inode
        };
        let mut hashes = HASHES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = hashes.iter().find(same) {
            return Ok(known.clone());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(fs::File::open(path)?)?;
        stamp.blake3 = hasher.finalize().to_hex().to_string();
        hashes.retain(|k| k.path != stamp.path);
        hashes.push(stamp.clone());
        Ok(stamp)
    }

    /// Whether `path` holds what was stamped: at once when its length,
    /// time and inode are unchanged, else by its hash.
    pub fn matches(&self, path: &Path) -> bool {
        let Ok(meta) = fs::metadata(path) else {
            return false;
        };
        if path == self.path
            && meta.len() == self.len
            && mtime_ns(&meta) == self.mtime_ns
            && meta.ino() == self.inode
        {
            return true;
        }
        FileStamp::of(path).is_ok_and(|now| now.blake3 == self.blake3)
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// The OCI image a snapshot's root is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// The reference it was named by.
    pub reference: String,
    /// The manifest digest it resolved to.
    pub digest: String,
}

/// The machine and root of a saved VM, which a VM loading its state has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The OCI image at the root, if any.
    pub image: Option<SnapshotImage>,
    /// Who commands ran as (the configuration's `user`).
    pub user: Option<String>,
    /// The overlay's size limit.
    pub overlay_mb: Option<u32>,
    /// Guest RAM.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Whether the VM has a network device.
    pub network_device: bool,
}

/// What a snapshot is, as `snapshot.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Layout version.
    pub format: u32,
    /// Its name.
    pub name: String,
    /// When it was made (seconds since the epoch).
    pub created_unix: u64,
    /// The void-box that made it.
    pub voidbox_version: String,
    /// The guest kernel.
    pub kernel: FileStamp,
    /// The guest initramfs (the agent is in it).
    pub initramfs: FileStamp,
    /// The machine and root it had.
    #[serde(flatten)]
    pub machine: Machine,
    /// The accelerator it ran on (`tcg`, `kvm`).
    pub accel: String,
    /// QEMU's version, as it said.
    pub qemu: String,
    /// QEMU's binary.
    pub qemu_binary: FileStamp,
    /// The set-up commands run before it was saved.
    pub setup: Vec<String>,
    /// Length of the devices' state.
    pub devices_bytes: u64,
    /// Its BLAKE3 hash, hex.
    pub devices_blake3: String,
    /// BLAKE3 hash, hex, of the guest RAM's pages that hold data.
    pub memory_blake3: String,
}

impl Snapshot {
    /// The saved VM, in the snapshot's directory `dir`.
    pub fn state(&self, dir: &Path) -> SavedState {
        SavedState {
            dir: dir.to_path_buf(),
            devices_bytes: self.devices_bytes,
            devices_blake3: self.devices_blake3.clone(),
            memory_bytes: u64::from(self.machine.memory_mb) << 20,
            memory_blake3: self.memory_blake3.clone(),
        }
    }

    fn stale(&self, why: String) -> SnapshotError {
        SnapshotError::Stale {
            name: self.name.clone(),
            why,
        }
    }

    /// Refuses the snapshot when the guest image a restore would boot is
    /// not the one it was made with.
    pub fn check_guest_image(&self, kernel: &Path, initramfs: &Path) -> Result<(), SnapshotError> {
        if !self.kernel.matches(kernel) {
            return Err(self.stale(format!(
                "it was made with another kernel ({} then, {} now)",
                self.kernel.path.display(),
                kernel.display()
            )));
        }
        if !self.initramfs.matches(initramfs) {
            return Err(self.stale(format!(
                "it was made with another guest initramfs (the guest agent changed: {} then, {} now)",
                self.initramfs.path.display(),
                initramfs.display()
            )));
        }
        Ok(())
    }

    /// Refuses the snapshot when it was made on another accelerator or by
    /// another QEMU binary than `qemu` (their saved states need not load
    /// into each other).
    pub fn check_machine(&self, accel: &str, qemu: &Path) -> Result<(), SnapshotError> {
        if self.accel != accel {
            return Err(self.stale(format!(
                "it was made under {}, and this machine runs {accel}",
                self.accel
            )));
        }
        if !self.qemu_binary.matches(qemu) {
            return Err(self.stale(format!(
                "it was made by QEMU {} ({}), and {} is another",
                self.qemu,
                self.qemu_binary.path.display(),
                qemu.display()
            )));
        }
        Ok(())
    }
}

/// A snapshot and where it lies.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// What it is.
    pub snapshot: Snapshot,
    /// Its directory.
    pub dir: PathBuf,
    /// Bytes its files take on disk.
    pub disk_bytes: u64,
}

/// A snapshot as listed: its name, and it or why it cannot be read.
pub type Listed = (String, Result<StoredSnapshot, SnapshotError>);

/// The snapshots under one directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    /// Snapshots in `root`.
    pub fn at(root: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { root: root.into() }
    }

    /// The default place, `<data_dir>/snapshots`.
    pub fn default_location() -> SnapshotStore {
        SnapshotStore::at(crate::dirs::data_dir().join("snapshots"))
    }

    /// The snapshot `name`, its record checked.
    pub fn get(&self, name: &str) -> Result<StoredSnapshot, SnapshotError> {
        check_snapshot_name(name)?;
        let dir = self.root.join(name);
        let meta = dir.join(META);
        let text = match fs::read(&meta) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::Missing(name.into()))
            }
            Err(e) => return Err(io_error(&meta)(e)),
        };
        let damaged = |why: String| SnapshotError::Damaged {
            name: name.into(),
            why,
        };
        let snapshot: Snapshot = serde_json::from_slice(&text)
            .map_err(|e| damaged(format!("{}: {e}", meta.display())))?;
        if snapshot.format != FORMAT || snapshot.name != name {
            return Err(damaged(format!(
                "{} is not a format-{FORMAT} record of `{name}`",
                meta.display()
            )));
        }
        for (file, saved) in [
            (DEVICES, snapshot.devices_bytes),
            (MEMORY, u64::from(snapshot.machine.memory_mb) << 20),
        ] {
            let path = dir.join(file);
            let len = fs::metadata(&path)
                .map_err(|e| damaged(format!("{}: {e}", path.display())))?
                .len();
            if len != saved {
                return Err(damaged(format!(
                    "its {file} file has {len} bytes where {saved} were saved (cut short?)"
                )));
            }
        }
        Ok(StoredSnapshot {
            disk_bytes: disk_bytes(&dir),
            snapshot,
            dir,
        })
    }

    /// Every snapshot, by name; a damaged one is listed with its error.
    pub fn list(&self) -> Result<Vec<Listed>, SnapshotError> {
        self.sweep();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.root)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| check_snapshot_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| {
                let got = self.get(&n);
                (n, got)
            })
            .collect())
    }

    /// Whether a snapshot (whole or damaged) is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        check_snapshot_name(name).is_ok() && self.root.join(name).exists()
    }

    /// Removes the snapshot `name`.
    pub fn remove(&self, name: &str) -> Result<(), SnapshotError> {
        check_snapshot_name(name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(SnapshotError::Missing(name.into()));
        }
        fs::remove_dir_all(&dir).map_err(io_error(&dir))
    }

    /// A directory to make the snapshot `name` in; [`Making::finish`] puts
    /// it in place. Fails when the name is taken.
    pub fn start(&self, name: &str) -> Result<Making, SnapshotError> {
        check_snapshot_name(name)?;
        self.sweep();
        if self.root.join(name).exists() {
            return Err(SnapshotError::Exists(name.into()));
        }
        fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{MAKING}{}-", std::process::id()))
            .tempdir_in(&self.root)
            .map_err(io_error(&self.root))?;
        Ok(Making {
            dir,
            target: self.root.join(name),
            name: name.into(),
        })
    }

    /// Removes directories of makers that are no longer running.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(MAKING) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A snapshot being made; dropped unfinished, its directory goes.
pub struct Making {
    dir: tempfile::TempDir,
    target: PathBuf,
    name: String,
}

impl Making {
    /// Where the VM is saved.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the record, syncs the files and puts the snapshot in place.
    pub fn finish(self, snapshot: &Snapshot) -> Result<StoredSnapshot, SnapshotError> {
        let meta = self.dir.path().join(META);
        let mut record = snapshot.clone();
        record.format = FORMAT;
        record.name = self.name.clone();
        let text = serde_json::to_vec_pretty(&record).expect("a snapshot record serializes");
        fs::write(&meta, text).map_err(io_error(&meta))?;
        for file in [
            meta.clone(),
            self.dir().join(DEVICES),
            self.dir().join(MEMORY),
        ] {
            fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(io_error(&file))?;
        }
        let dir = self.dir.keep();
        fs::rename(&dir, &self.target).map_err(|e| {
            let _ = fs::remove_dir_all(&dir);
            if self.target.exists() {
                SnapshotError::Exists(self.name.clone())
            } else {
                io_error(&self.target)(e)
            }
        })?;
        Ok(StoredSnapshot {
            disk_bytes: disk_bytes(&self.target),
            snapshot: record,
            dir: self.target,
        })
    }
}

/// Bytes the files of `dir` take on disk (sparse files count what they use).
fn disk_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, devices: &[u8], kernel: &Path) -> Snapshot {
        Snapshot {
            format: FORMAT,
            name: name.into(),
            created_unix: 1,
            voidbox_version: "test".into(),
            kernel: FileStamp::of(kernel).unwrap(),
            initramfs: FileStamp::of(kernel).unwrap(),
            machine: Machine {
                image: None,
                user: None,
                overlay_mb: None,
                memory_mb: 1,
                vcpus: 1,
                network_device: false,
            },
            accel: "tcg".into(),
            qemu: "7.2.0".into(),
            qemu_binary: FileStamp::of(kernel).unwrap(),
            setup: Vec::new(),
            devices_bytes: devices.len() as u64,
            devices_blake3: blake3::hash(devices).to_hex().to_string(),
            memory_blake3: String::new(),
        }
    }

    /// Writes a saved VM of `devices` and 1 MiB of memory into `dir`.
    fn save_files(dir: &Path, devices: &[u8]) {
        fs::write(dir.join(DEVICES), devices).unwrap();
        fs::File::create(dir.join(MEMORY))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
    }

    #[test]
    fn a_snapshot_is_whole_or_absent_and_damage_is_named() {
        let root = tempfile::tempdir().unwrap();
        let store = SnapshotStore::at(root.path());
        let kernel = root.path().join("vmlinux");
        fs::write(&kernel, b"kernel v1").unwrap();
        // Unfinished: nothing to see, nothing left.
        let making = store.start("py").unwrap();
        fs::write(making.dir().join(DEVICES), b"half").unwrap();
        drop(making);
        assert!(matches!(store.get("py"), Err(SnapshotError::Missing(_))));
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            1,
            "only the kernel"
        );

        let making = store.start("py").unwrap();
        save_files(making.dir(), b"the whole state");
        let made = making
            .finish(&record("py", b"the whole state", &kernel))
            .unwrap();
        assert!(made.disk_bytes > 0);
        assert!(matches!(store.start("py"), Err(SnapshotError::Exists(_))));
        let got = store.get("py").unwrap();
        assert_eq!(got.snapshot.devices_bytes, 15);
        assert_eq!(store.list().unwrap().len(), 1);

        // The kernel changes: refused, saying so.
        got.snapshot.check_guest_image(&kernel, &kernel).unwrap();
        fs::write(&kernel, b"kernel v2, rebuilt").unwrap();
        let e = got
            .snapshot
            .check_guest_image(&kernel, &kernel)
            .unwrap_err();
        assert!(e.to_string().contains("another kernel"), "{e}");
        assert!(e.to_string().contains("snapshot create py"), "{e}");

        // Cut short: damaged, before anything reads it.
        let devices = got.dir.join(DEVICES);
        fs::write(&devices, b"the whole").unwrap();
        let e = store.get("py").unwrap_err();
        assert!(matches!(e, SnapshotError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("cut short"), "{e}");
        fs::write(got.dir.join(META), b"{not json").unwrap();
        assert!(matches!(
            store.get("py"),
            Err(SnapshotError::Damaged { .. })
        ));

        store.remove("py").unwrap();
        assert!(matches!(store.get("py"), Err(SnapshotError::Missing(_))));
        assert!(matches!(store.get("../etc"), Err(SnapshotError::Name(_))));
    }

    #[test]
    fn a_dead_makers_directory_is_swept() {
        let root = tempfile::tempdir().unwrap();
        let store = SnapshotStore::at(root.path());
        // No process has pid 0's /proc entry... pick one that cannot run.
        let dead = root.path().join(format!("{MAKING}4294967294-abc"));
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join(DEVICES), b"x").unwrap();
        let mine = store.start("a").unwrap();
        assert!(!dead.exists(), "the dead maker's directory stays");
        assert!(mine.dir().exists());
    }
}
