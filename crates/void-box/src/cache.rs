//! Where void-box keeps what it builds and fetches: guest images, pulled
//! skills (and, as they come, container images and volumes).

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
