//! Where void-box keeps things: the cache (guest images, container images,
//! pulled skills: all of it can be made again) and the data directory
//! (volumes: what sandboxes wrote and must not lose).

use std::path::{Path, PathBuf};

/// The cache directory: `VOIDBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/voidbox`,
/// else `~/.cache/voidbox`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VOIDBOX_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("voidbox");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/voidbox")
}

/// The data directory: `VOIDBOX_DATA_DIR`, else `$XDG_DATA_HOME/voidbox`,
/// else `~/.local/share/voidbox`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VOIDBOX_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("voidbox");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".local/share/voidbox")
}
