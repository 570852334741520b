//! The filesystem commands see. Without an image it is the initramfs
//! itself. With one, the image's erofs disk is mounted read-only under a
//! writable overlay (a tmpfs) at [`IMAGE_ROOT`], with `/proc`, `/sys`,
//! `/dev`, `/tmp` and `/workspace` inside it, and every command is
//! `chroot`ed there; the agent itself stays in the initramfs, out of the
//! image's way, so any image works, with or without a shell or a libc.
//! Host shares (virtio-9p) and image mounts (more erofs disks) go on top.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{mount, mount_bind_recursive, MountFlags};
use void_box_protocol::{
    GuestConfig, GuestMount, MountSource, RootFs, CA_BUNDLE_PATH, EDGE_CA_PATH, WORKSPACE_DIR,
};

use crate::init::{SANDBOX_GID, SANDBOX_UID};

/// Where the image's root is assembled.
pub const IMAGE_ROOT: &str = "/run/voidbox/root";
const LOWER: &str = "/run/voidbox/lower";
const LAYER: &str = "/run/voidbox/rw";
/// How long a disk may take to appear after boot.
const DISK_DEADLINE: Duration = Duration::from_secs(5);
/// 9p message size: large reads and writes in few round trips (QEMU 7.2's
/// virtio-9p caps it at 512000).
const NINEP_MSIZE: u32 = 512_000;

/// The root commands run in and who owns the workspace.
#[derive(Debug, Clone)]
pub struct CommandRoot {
    /// `/` or [`IMAGE_ROOT`].
    pub path: PathBuf,
    /// The root for `chroot`, when it is not `/`.
    pub chroot: Option<CString>,
}

impl CommandRoot {
    /// A guest path as the agent sees it (under the command root).
    pub fn host_view(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    /// Makes `path` a real directory under the root and returns it as the
    /// agent sees it. The agent is not chrooted, so an image's symlink on
    /// the way (`/workspace -> /`, `/dev -> /run`) would otherwise send a
    /// mount or the file API into the agent's own files: a symlink or a
    /// file in the way is replaced by a directory (in the image's overlay),
    /// a missing component created.
    pub fn real_dir(&self, path: &str) -> io::Result<PathBuf> {
        let mut at = self.path.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{path}: not a normal path"),
                ));
            }
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => fs::remove_file(&at)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            fs::create_dir(&at)?;
        }
        Ok(at)
    }
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Builds the command root and mounts everything the configuration asks
/// for. Runs once at boot, before requests are served.
pub fn prepare(config: &GuestConfig) -> io::Result<CommandRoot> {
    let root = match &config.rootfs {
        None => CommandRoot {
            path: PathBuf::from("/"),
            chroot: None,
        },
        Some(rootfs) => {
            mount_image_root(rootfs)?;
            CommandRoot {
                path: PathBuf::from(IMAGE_ROOT),
                chroot: Some(CString::new(IMAGE_ROOT).expect("no NUL")),
            }
        }
    };
    let (uid, gid) = config
        .user
        .as_ref()
        .map_or((SANDBOX_UID, SANDBOX_GID), |u| (u.uid, u.gid));
    // An image's WorkingDir that the image lacks is made, as Docker does.
    if let Some(dir) = config
        .workdir
        .as_deref()
        .filter(|_| config.rootfs.is_some())
    {
        fs::create_dir_all(root.host_view(dir)).map_err(context(format!("create {dir}")))?;
    }
    let workspace = root.host_view(WORKSPACE_DIR);
    fs::create_dir_all(&workspace).map_err(context(format!("create {WORKSPACE_DIR}")))?;
    // Best effort: an agent started by hand (not PID 1) may not own it.
    let _ = chown(&workspace, Some(uid), Some(gid));
    if let Some(server) = &config.nameserver {
        write_resolver_files(&root, server).map_err(context("write /etc/resolv.conf".into()))?;
    }
    if let Some(pem) = &config.edge_ca {
        install_edge_ca(&root, pem).map_err(context("install the edge CA".into()))?;
    }
    for m in &config.mounts {
        mount_one(&root, m, uid, gid)?;
    }
    Ok(root)
}

/// Makes the command root trust the sandbox's edge CA: its own file (for
/// Node's `NODE_EXTRA_CA_CERTS`) and the end of the system bundle (for
/// OpenSSL and everything that reads it), which is made if the image has
/// none. A bundle that is a symlink (into `/etc/ssl/certs`, say) is
/// replaced by a copy in the overlay, not written through.
fn install_edge_ca(root: &CommandRoot, pem: &str) -> io::Result<()> {
    let pem = format!("{}\n", pem.trim_end());
    for path in [EDGE_CA_PATH, CA_BUNDLE_PATH] {
        let (dir, name) = path.rsplit_once('/').expect("an absolute path");
        let dir = root.real_dir(dir)?;
        let file = dir.join(name);
        let mut contents = if path == CA_BUNDLE_PATH {
            // A symlink's target is read inside the command root (one
            // level), never from the agent's own tree.
            let source = match fs::read_link(&file) {
                Ok(target) if target.is_absolute() => root.host_view(&target.to_string_lossy()),
                Ok(target) => dir.join(target),
                Err(_) => file.clone(),
            };
            fs::read(&source).unwrap_or_default()
        } else {
            Vec::new()
        };
        if !contents.is_empty() && !contents.ends_with(b"\n") {
            contents.push(b'\n');
        }
        contents.extend_from_slice(pem.as_bytes());
        if fs::symlink_metadata(&file).is_ok_and(|m| !m.is_file()) {
            fs::remove_file(&file)?;
        }
        fs::write(&file, contents)?;
    }
    Ok(())
}

/// A restored VM's edge CA in place of the saved one's: the old CA's
/// certificate leaves the system bundle, the new one's joins it, and the
/// CA's own file holds the new one (or goes, without one).
pub fn replace_edge_ca(root: &CommandRoot, old: Option<&str>, new: Option<&str>) -> io::Result<()> {
    let file = |path: &str| -> io::Result<PathBuf> {
        let (dir, name) = path.rsplit_once('/').expect("an absolute path");
        Ok(root.real_dir(dir)?.join(name))
    };
    if let Some(old) = old {
        let bundle = file(CA_BUNDLE_PATH)?;
        let old = format!("{}\n", old.trim_end());
        let contents = fs::read_to_string(&bundle).unwrap_or_default();
        fs::write(&bundle, contents.replacen(&old, "", 1))?;
        let _ = fs::remove_file(file(EDGE_CA_PATH)?);
    }
    match new {
        Some(pem) => install_edge_ca(root, pem),
        None => Ok(()),
    }
}

/// Points the command root's resolver at the host's DNS server. Whatever
/// the image had there (often a symlink into `/run`) is replaced in its
/// overlay; `/etc/hosts` gets the loopback names if the image has none.
fn write_resolver_files(root: &CommandRoot, server: &str) -> io::Result<()> {
    let etc = root.real_dir("/etc")?;
    let resolv = etc.join("resolv.conf");
    match fs::symlink_metadata(&resolv) {
        Ok(meta) if !meta.is_file() => fs::remove_file(&resolv)?,
        _ => {}
    }
    // A symlink is replaced, not followed: remove_file above, and a plain
    // file is rewritten.
    fs::write(
        &resolv,
        format!("nameserver {server}\noptions timeout:2 attempts:2\n"),
    )?;
    let hosts = etc.join("hosts");
    if fs::symlink_metadata(&hosts).is_err() {
        fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n")?;
    }
    Ok(())
}

fn mount_image_root(rootfs: &RootFs) -> io::Result<()> {
    let disk = find_disk(&rootfs.disk)?;
    for dir in [LOWER, LAYER, IMAGE_ROOT] {
        fs::create_dir_all(dir)?;
    }
    mount(&disk, LOWER, "erofs", MountFlags::RDONLY, c"").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mount the image ({}): {e}", disk.display()),
        )
    })?;
    let size = rootfs
        .overlay_mb
        .map_or_else(String::new, |mb| format!(",size={mb}m"));
    let data = CString::new(format!("mode=0755{size}")).expect("no NUL");
    mount(
        "tmpfs",
        LAYER,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("mount the overlay's tmpfs: {e}")))?;
    for dir in ["upper", "work"] {
        fs::create_dir(Path::new(LAYER).join(dir))?;
    }
    let options = CString::new(format!(
        "lowerdir={LOWER},upperdir={LAYER}/upper,workdir={LAYER}/work"
    ))
    .expect("no NUL");
    mount(
        "overlay",
        IMAGE_ROOT,
        "overlay",
        MountFlags::empty(),
        options.as_c_str(),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("mount the overlay: {e}")))?;
    let root = CommandRoot {
        path: PathBuf::from(IMAGE_ROOT),
        chroot: None,
    };
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    for (source, target, fstype, flags, data) in [
        (
            "proc",
            "/proc",
            "proc",
            nosuid_nodev | MountFlags::NOEXEC,
            c"",
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            nosuid_nodev | MountFlags::NOEXEC,
            c"",
        ),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, c"mode=1777"),
    ] {
        let at = root.real_dir(target)?;
        mount(source, &at, fstype, flags, data)
            .map_err(|e| io::Error::new(e.kind(), format!("mount {fstype} on {target}: {e}")))?;
    }
    // The agent's /dev, with its pts and shm, as the image's.
    let dev = root.real_dir("/dev")?;
    mount_bind_recursive("/dev", &dev)
        .map_err(|e| io::Error::new(e.kind(), format!("bind /dev: {e}")))?;
    fs::set_permissions(root.host_view("/tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// The block device whose virtio serial is `serial`.
fn find_disk(serial: &str) -> io::Result<PathBuf> {
    let give_up = Instant::now() + DISK_DEADLINE;
    loop {
        for entry in fs::read_dir("/sys/block")?.flatten() {
            let found =
                fs::read_to_string(entry.path().join("serial")).is_ok_and(|s| s.trim() == serial);
            if found {
                return Ok(Path::new("/dev").join(entry.file_name()));
            }
        }
        if Instant::now() >= give_up {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no disk with serial {serial}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mount_one(root: &CommandRoot, m: &GuestMount, uid: u32, gid: u32) -> io::Result<()> {
    let target = root
        .real_dir(&m.target)
        .map_err(context(format!("create mount point {}", m.target)))?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    if m.readonly {
        flags |= MountFlags::RDONLY;
    }
    match &m.source {
        MountSource::Share { tag } => {
            // cache=mmap: reads go through the page cache with readahead
            // (100 MiB in 0.3-0.5 s under TCG, against 3.5 s with
            // cache=none) while every open still revalidates against the
            // host, so host changes show in the guest.
            let data = CString::new(format!(
                "trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache=mmap"
            ))
            .expect("no NUL");
            mount(tag.as_str(), &target, "9p", flags, data.as_c_str()).map_err(|e| {
                io::Error::new(e.kind(), format!("mount share {tag} on {}: {e}", m.target))
            })?;
            // A volume keeps guest ownership in xattrs on the host: its
            // root goes to the command user.
            if m.own_root {
                chown(&target, Some(uid), Some(gid))
                    .map_err(context(format!("chown volume at {}", m.target)))?;
            }
        }
        MountSource::Disk { serial } => {
            let disk = find_disk(serial)?;
            mount(&disk, &target, "erofs", flags | MountFlags::RDONLY, c"").map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("mount image disk {serial} on {}: {e}", m.target),
                )
            })?;
        }
    }
    Ok(())
}
