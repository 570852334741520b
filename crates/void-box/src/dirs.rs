//! Where void-box keeps things: the cache (guest images, container images,
//! pulled skills: all of it can be made again) and the data directory
//! (volumes: what sandboxes wrote and must not lose).

use std::path::{Path, PathBuf};

/// `$ours` when set, else `$xdg/voidbox`, else `~/<fallback>/voidbox`.
fn dir(ours: &str, xdg: &str, fallback: &str) -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
    if let Some(dir) = set(ours) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = set(xdg) {
        return Path::new(&dir).join("voidbox");
    }
    let home = set("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(fallback).join("voidbox")
}

/// The cache directory: `VOIDBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/voidbox`,
/// else `~/.cache/voidbox`.
pub fn cache_dir() -> PathBuf {
    dir("VOIDBOX_CACHE_DIR", "XDG_CACHE_HOME", ".cache")
}

/// The data directory: `VOIDBOX_DATA_DIR`, else `$XDG_DATA_HOME/voidbox`,
/// else `~/.local/share/voidbox`.
pub fn data_dir() -> PathBuf {
    dir("VOIDBOX_DATA_DIR", "XDG_DATA_HOME", ".local/share")
}
