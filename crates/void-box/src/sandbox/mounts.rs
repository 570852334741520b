//! What a sandbox mounts besides its root: host directories, named
//! volumes and read-only images, as plain data with their checks.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether the guest may write to a host directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Read-only (the default): QEMU refuses every write, guest root's too.
    #[default]
    Ro,
    /// Read-write: host changes show in the guest and guest changes on the host.
    Rw,
}

/// A host directory shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// The host directory (absolute; specs and the CLI resolve relative ones).
    pub host: PathBuf,
    /// Where it appears in the guest (absolute).
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: MountMode,
}

impl Mount {
    /// Parses the CLI's `HOST:GUEST[:ro|rw]`; a relative `HOST` is taken
    /// from the current directory.
    pub fn parse(spec: &str) -> Result<Mount, String> {
        let (rest, mode) = match spec.rsplit_once(':') {
            Some((rest, "ro")) => (rest, MountMode::Ro),
            Some((rest, "rw")) => (rest, MountMode::Rw),
            _ => (spec, MountMode::Ro),
        };
        let (host, guest) = rest
            .rsplit_once(':')
            .filter(|(h, g)| !h.is_empty() && !g.is_empty())
            .ok_or_else(|| format!("expected HOST:GUEST[:ro|rw], got `{spec}`"))?;
        let host = Path::new(host);
        let host = if host.is_absolute() {
            host.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve `{}`: {e}", host.display()))?
                .join(host)
        };
        Ok(Mount {
            host,
            guest: guest.to_string(),
            mode,
        })
    }
}

/// A named volume: storage that outlives sandboxes, mounted read-write
/// unless `readonly`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name (created on first use).
    pub name: String,
    /// Where it appears in the guest.
    pub guest: String,
    /// Mount it read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// An OCI image mounted read-only at a path (the seeds' `{image, mount}`
/// skill form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMount {
    /// The image reference.
    pub image: String,
    /// Where its root appears in the guest.
    pub guest: String,
}

/// Guest paths no mount may cover: the agent's own and the kernel's.
const RESERVED: [&str; 4] = ["/proc", "/sys", "/dev", "/run/voidbox"];

/// Checks a guest mount point: absolute, normal (no `.`, `..` or empty
/// components), not the root and not under a reserved path.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("guest path `{path}` is not absolute"));
    }
    let normal = path
        .split('/')
        .skip(1)
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !normal || path.contains('\0') {
        return Err(format!(
            "guest path `{path}` must be normal (no empty, `.` or `..` components)"
        ));
    }
    if let Some(reserved) = RESERVED
        .iter()
        .find(|r| path == **r || path.starts_with(&format!("{r}/")))
    {
        return Err(format!(
            "guest path `{path}` is under {reserved}, which the sandbox owns"
        ));
    }
    Ok(())
}

/// Checks a host path: absolute and without `..`.
pub fn check_host_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "host path `{}` must be absolute, without `..`",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_mounts_parse_with_modes() {
        let m = Mount::parse("/data:/mnt/data:rw").unwrap();
        assert_eq!(
            (m.host.as_path(), m.guest.as_str(), m.mode),
            (Path::new("/data"), "/mnt/data", MountMode::Rw)
        );
        let m = Mount::parse("/data:/mnt").unwrap();
        assert_eq!(m.mode, MountMode::Ro);
        let m = Mount::parse("rel:/mnt:ro").unwrap();
        assert!(m.host.is_absolute() && m.host.ends_with("rel"));
        assert!(Mount::parse("/only").is_err());
        assert!(Mount::parse(":/mnt").is_err());
    }

    #[test]
    fn guest_paths_and_names_are_checked() {
        assert!(check_guest_path("/workspace/data").is_ok());
        for bad in [
            "relative",
            "/",
            "/a/../b",
            "/a//b",
            "/proc/x",
            "/dev",
            "/run/voidbox/root",
        ] {
            assert!(check_guest_path(bad).is_err(), "{bad}");
        }
        assert!(check_host_path(Path::new("/a/../b")).is_err());
        assert!(check_host_path(Path::new("a")).is_err());
    }
}
