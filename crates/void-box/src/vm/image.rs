//! The guest image: a slim kernel and an initramfs, built from Debian
//! packages and cached by a hash of their inputs.
//!
//! - Kernel: `linux-source-6.12` (`/usr/src/linux-source-6.12.tar.xz`),
//!   `make tinyconfig` plus the fragment in `images/kernel/voidbox.config`,
//!   built into an uncompressed `vmlinux` that QEMU boots through PVH.
//! - Initramfs: the guest agent as `/init`, a static busybox with its
//!   applets, the sandbox user, and the writable roots. The default busybox
//!   is Debian's `busybox-static`; `scripts/setup.sh` passes a musl build of
//!   the same source and configuration (`scripts/build-busybox.sh`), whose
//!   start-up costs far less under emulation.
//!
//! Layout of the cache (`VOIDBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/voidbox`,
//! else `~/.cache/voidbox`):
//! `kernel/<hash>/vmlinux`, `initramfs/<hash>/initramfs.cpio`, and
//! `current.json` naming the pair `Sandbox` uses by default.
//! `VOIDBOX_KERNEL` and `VOIDBOX_INITRAMFS` override either file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::initramfs::CpioWriter;
use crate::dirs::cache_dir;
use crate::error::{Error, Result};

/// The kernel configuration fragment merged over `tinyconfig`.
pub const KERNEL_CONFIG_FRAGMENT: &str = include_str!("../../../../images/kernel/voidbox.config");
/// Bump when the image layout or build steps change, to invalidate caches.
const BUILDER_VERSION: &str = "voidbox-image-1";
/// Where Debian's `linux-source-6.12` puts its tarball.
pub const DEFAULT_KERNEL_SOURCE: &str = "/usr/src/linux-source-6.12.tar.xz";
/// Where Debian's `busybox-static` installs busybox (the default; see the
/// module documentation for the musl build `scripts/setup.sh` uses).
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// A kernel and initramfs pair to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestImage {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Base initramfs.
    pub initramfs: PathBuf,
}

/// What `current.json` records about the default image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The files.
    #[serde(flatten)]
    pub image: GuestImage,
    /// Input hash of the kernel.
    pub kernel_hash: String,
    /// Input hash of the initramfs.
    pub initramfs_hash: String,
}

impl GuestImage {
    /// The image to boot: `VOIDBOX_KERNEL` / `VOIDBOX_INITRAMFS` where set,
    /// the cache's current image for the rest.
    pub fn resolve() -> Result<GuestImage> {
        let env = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let (kernel, initramfs) = (env("VOIDBOX_KERNEL"), env("VOIDBOX_INITRAMFS"));
        let image = match (kernel, initramfs) {
            (Some(kernel), Some(initramfs)) => GuestImage { kernel, initramfs },
            (kernel, initramfs) => {
                let current = current_record(&cache_dir())?.image;
                GuestImage {
                    kernel: kernel.unwrap_or(current.kernel),
                    initramfs: initramfs.unwrap_or(current.initramfs),
                }
            }
        };
        for path in [&image.kernel, &image.initramfs] {
            if !path.is_file() {
                return Err(Error::Image(format!(
                    "{} does not exist; run `voidbox image build`",
                    path.display()
                )));
            }
        }
        Ok(image)
    }
}

/// Reads `current.json` from a cache.
pub fn current_record(cache: &Path) -> Result<ImageRecord> {
    let path = cache.join("current.json");
    let text = fs::read_to_string(&path).map_err(|e| {
        Error::Image(format!(
            "no guest image in {} ({e}); run `voidbox image build`",
            cache.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Image(format!("{}: {e}", path.display())))
}

/// Inputs of an image build.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// The cache to build into.
    pub cache: PathBuf,
    /// Kernel source tarball.
    pub kernel_source: PathBuf,
    /// A ready kernel to use instead of building one.
    pub prebuilt_kernel: Option<PathBuf>,
    /// Guest agent binary (static).
    pub agent: PathBuf,
    /// Static busybox.
    pub busybox: PathBuf,
    /// Parallel kernel build jobs.
    pub jobs: usize,
}

impl ImageBuilder {
    /// Defaults: the cache dir, Debian's paths, `guest-agent` found via
    /// `VOIDBOX_GUEST_AGENT` or where `scripts/setup.sh` builds it beside
    /// the running executable, and the musl busybox the set-up builds when
    /// it is there (Debian's `busybox-static` otherwise).
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            cache: cache_dir(),
            kernel_source: PathBuf::from(DEFAULT_KERNEL_SOURCE),
            prebuilt_kernel: None,
            agent: default_agent_path(),
            busybox: default_busybox_path(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }

    /// Builds what is missing and makes the result the current image.
    /// `progress` receives one line per step.
    pub fn build(&self, progress: &mut dyn FnMut(&str)) -> Result<ImageRecord> {
        let (kernel, kernel_hash) = match &self.prebuilt_kernel {
            Some(path) => {
                // Copied into the cache so the image stays valid if the
                // original moves, and `image info` lists it.
                let hash = hash_file(path)?;
                let dest = self.slot("kernel", &hash).join("vmlinux");
                if !dest.is_file() {
                    let data = read(path, "kernel")?;
                    write_atomic(&dest, &data)?;
                }
                progress(&format!(
                    "kernel {} taken from {}",
                    short(&hash),
                    path.display()
                ));
                (dest, hash)
            }
            None => self.build_kernel(progress)?,
        };
        let (initramfs, initramfs_hash) = self.build_initramfs(progress)?;
        let record = ImageRecord {
            image: GuestImage { kernel, initramfs },
            kernel_hash,
            initramfs_hash,
        };
        let json = serde_json::to_string_pretty(&record).expect("record serializes");
        write_atomic(&self.cache.join("current.json"), json.as_bytes())?;
        Ok(record)
    }

    fn build_kernel(&self, progress: &mut dyn FnMut(&str)) -> Result<(PathBuf, String)> {
        let mut hasher = Sha256::new();
        hasher.update(BUILDER_VERSION);
        hasher.update(KERNEL_CONFIG_FRAGMENT);
        hash_into(&mut hasher, &self.kernel_source)?;
        let hash = hex::encode(hasher.finalize());
        let out_dir = self.slot("kernel", &hash);
        let vmlinux = out_dir.join("vmlinux");
        if vmlinux.is_file() {
            progress(&format!("kernel {} is cached", short(&hash)));
            return Ok((vmlinux, hash));
        }
        let work = self
            .cache
            .join("build")
            .join(format!("kernel-{}", short(&hash)));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)
            .map_err(|e| Error::io(format!("create {}", work.display()), e))?;
        progress(&format!("unpacking {}", self.kernel_source.display()));
        run(Command::new("tar")
            .arg("-xf")
            .arg(&self.kernel_source)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(&work))?;
        let fragment = work.join("voidbox.config");
        fs::write(&fragment, KERNEL_CONFIG_FRAGMENT)
            .map_err(|e| Error::io("write config fragment", e))?;
        progress("configuring: tinyconfig + images/kernel/voidbox.config");
        run(Command::new("make").arg("-C").arg(&work).arg("tinyconfig"))?;
        run(Command::new("scripts/kconfig/merge_config.sh")
            .current_dir(&work)
            .args(["-m", ".config", "voidbox.config"]))?;
        run(Command::new("make")
            .arg("-C")
            .arg(&work)
            .arg("olddefconfig"))?;
        let config =
            fs::read_to_string(work.join(".config")).map_err(|e| Error::io("read .config", e))?;
        let missing = missing_options(KERNEL_CONFIG_FRAGMENT, &config);
        if !missing.is_empty() {
            return Err(Error::Image(format!(
                "kernel config lost options after olddefconfig (a dependency is missing): {}",
                missing.join(", ")
            )));
        }
        progress(&format!(
            "building vmlinux with {} jobs (several minutes)",
            self.jobs
        ));
        run(Command::new("make")
            .arg("-C")
            .arg(&work)
            .arg(format!("-j{}", self.jobs))
            .arg("vmlinux"))?;
        fs::create_dir_all(&out_dir).map_err(|e| Error::io("create kernel cache dir", e))?;
        fs::copy(work.join(".config"), out_dir.join("config"))
            .map_err(|e| Error::io("copy .config", e))?;
        let tmp = out_dir.join("vmlinux.tmp");
        fs::copy(work.join("vmlinux"), &tmp).map_err(|e| Error::io("copy vmlinux", e))?;
        fs::rename(&tmp, &vmlinux).map_err(|e| Error::io("install vmlinux", e))?;
        let _ = fs::remove_dir_all(&work);
        progress(&format!("kernel {} built", short(&hash)));
        Ok((vmlinux, hash))
    }

    fn build_initramfs(&self, progress: &mut dyn FnMut(&str)) -> Result<(PathBuf, String)> {
        let agent = read(
            &self.agent,
            "guest agent (build it with scripts/build-guest.sh or set --agent)",
        )?;
        let busybox = read(&self.busybox, "busybox (apt-get install busybox-static)")?;
        let mut hasher = Sha256::new();
        hasher.update(BUILDER_VERSION);
        hasher.update(Sha256::digest(&agent));
        hasher.update(Sha256::digest(&busybox));
        let hash = hex::encode(hasher.finalize());
        let out_dir = self.slot("initramfs", &hash);
        let path = out_dir.join("initramfs.cpio");
        if path.is_file() {
            progress(&format!("initramfs {} is cached", short(&hash)));
            return Ok((path, hash));
        }
        let applets = busybox_applets(&self.busybox)?;
        let archive = base_initramfs(&agent, &busybox, &applets)
            .map_err(|e| Error::io("write initramfs", e))?;
        fs::create_dir_all(&out_dir).map_err(|e| Error::io("create initramfs cache dir", e))?;
        write_atomic(&path, &archive)?;
        progress(&format!(
            "initramfs {} built ({} applets, {} KiB)",
            short(&hash),
            applets.len(),
            archive.len() / 1024
        ));
        Ok((path, hash))
    }
}

impl ImageBuilder {
    /// The cache directory of one build output: `<cache>/<kind>/<short hash>`.
    fn slot(&self, kind: &str, hash: &str) -> PathBuf {
        self.cache.join(kind).join(short(hash))
    }
}

/// The hash prefix that names cache entries.
fn short(hash: &str) -> &str {
    &hash[..16]
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The first existing of `candidates`, relative to the running
/// executable's directory (`target/release` in a checkout).
fn beside_exe(candidates: &[&str]) -> Option<PathBuf> {
    let dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file())
}

fn default_agent_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VOIDBOX_GUEST_AGENT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // In a checkout, the static build scripts/build-guest.sh makes
    // (`target/x86_64-unknown-linux-gnu/release`, beside `target/release` or
    // `target/debug`, where a `guest-agent` is a host build that cannot run
    // as the guest's init); in an install, the one next to voidbox.
    beside_exe(&[
        "../x86_64-unknown-linux-gnu/release/guest-agent",
        "guest-agent",
    ])
    .unwrap_or_else(|| PathBuf::from("guest-agent"))
}

fn default_busybox_path() -> PathBuf {
    beside_exe(&["../guest/busybox"]).unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX))
}

/// Options of the fragment that the final `.config` does not have.
fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|l| !config.lines().any(|c| c.trim() == *l))
        .map(str::to_string)
        .collect()
}

/// `(path, target)` of every busybox applet, e.g. `("usr/bin/awk", ...)`.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::io(format!("run {} --list-full", busybox.display()), e))?;
    if !out.status.success() {
        return Err(Error::Image(format!(
            "{} --list-full failed",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| {
            !l.is_empty()
                && l != "bin/busybox"
                && l != "init"
                && l != "sbin/init"
                && !l.contains("..")
        })
        .collect())
}

/// The base initramfs archive.
pub fn base_initramfs(
    agent: &[u8],
    busybox: &[u8],
    applets: &[String],
) -> std::io::Result<Vec<u8>> {
    const SANDBOX: u32 = 1000;
    let mut w = CpioWriter::new(Vec::with_capacity(agent.len() + busybox.len() + 64 * 1024));
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var",
        "home",
    ] {
        w.dir(dir, 0o755, 0, 0)?;
    }
    w.dir("tmp", 0o1777, 0, 0)?;
    w.dir("root", 0o700, 0, 0)?;
    w.dir("home/sandbox", 0o755, SANDBOX, SANDBOX)?;
    w.dir("workspace", 0o755, SANDBOX, SANDBOX)?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.char_device("dev/null", 0o666, 1, 3)?;
    w.file(
        "etc/passwd",
        0o644,
        0,
        0,
        b"root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n",
    )?;
    w.file("etc/group", 0o644, 0, 0, b"root:x:0:\nsandbox:x:1000:\n")?;
    w.file("etc/hosts", 0o644, 0, 0, b"127.0.0.1 localhost\n")?;
    w.file("init", 0o700, 0, 0, agent)?;
    w.file("bin/busybox", 0o755, 0, 0, busybox)?;
    for applet in applets {
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        w.symlink(applet, &target)?;
    }
    w.finish()
}

/// The per-sandbox archive appended to the base initramfs: the guest
/// configuration, readable by root only.
pub fn config_initramfs(config: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut w = CpioWriter::new(Vec::new());
    w.dir(".voidbox", 0o700, 0, 0)?;
    w.file(".voidbox/config", 0o400, 0, 0, config)?;
    w.finish()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path)
        .map_err(|e| Error::Image(format!("cannot read {what} at {}: {e}", path.display())))
}

fn hash_into(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let mut file =
        fs::File::open(path).map_err(|e| Error::Image(format!("{}: {e}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Hex SHA-256 of a file.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, path)?;
    Ok(hex::encode(hasher.finalize()))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("install {}", path.display()), e))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::Image(format!("cannot run {shown}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
    Err(Error::Image(format!(
        "{shown} failed ({}):\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// One cached file, for `voidbox image info`.
#[derive(Debug, Clone, Serialize)]
pub struct CachedFile {
    /// `kernel` or `initramfs`.
    pub kind: &'static str,
    /// Short input hash (the directory name).
    pub hash: String,
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// True when `current.json` points at it.
    pub current: bool,
}

/// Everything in the cache.
pub fn cached_files(cache: &Path) -> Vec<CachedFile> {
    let current = current_record(cache).ok();
    let mut files = Vec::new();
    for (kind, file) in [("kernel", "vmlinux"), ("initramfs", "initramfs.cpio")] {
        let Ok(entries) = fs::read_dir(cache.join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path().join(file);
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let is_current = current
                .as_ref()
                .is_some_and(|r| r.image.kernel == path || r.image.initramfs == path);
            files.push(CachedFile {
                kind,
                hash: entry.file_name().to_string_lossy().into_owned(),
                path,
                size: meta.len(),
                current: is_current,
            });
        }
    }
    files.sort_by(|a, b| (a.kind, &a.hash).cmp(&(b.kind, &b.hash)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_options_are_reported() {
        let fragment = "# c\nCONFIG_A=y\nCONFIG_B=y\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\n";
        assert_eq!(missing_options(fragment, config), vec!["CONFIG_B=y"]);
    }
}
