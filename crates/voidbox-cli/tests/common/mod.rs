//! Helpers shared by the CLI's tests of real VMs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The VM runtime directories under `tmp` (the `TMPDIR` a `voidbox` ran with).
pub fn runtime_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("voidbox-")
        })
        .collect()
}

/// Host processes whose command line names `dir` (QEMU and its wrapper).
pub fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}
