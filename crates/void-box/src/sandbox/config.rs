//! The sandbox's configuration: one plain-data value that the Rust
//! builder, boxes, pipelines, workflow steps and specs all hold and pass
//! down. It is checked in one place, [`SandboxConfig::validate`], before
//! anything boots.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use void_box_protocol::ResourceLimits;

use super::deadlines::RequestDeadlines;
use super::defaults::{DEFAULT_ALLOWED_COMMANDS, DEFAULT_LIMITS};
use super::mounts::{check_guest_path, check_host_path, ImageMount, Mount, MountMode, VolumeMount};
use crate::error::ConfigError;
use crate::net::{NetworkLimits, NetworkPolicy, PortMap, Rule, Rules, SecretConfig};
use crate::vm::image::GuestImage;
use crate::vm::Accel;
use crate::volume::check_volume_name;

/// Smallest guest RAM that boots the kernel and the agent with room for work.
pub const MIN_MEMORY_MB: u32 = 64;
/// Largest guest RAM a sandbox may ask for.
pub const MAX_MEMORY_MB: u32 = 64 * 1024;
/// Most guest CPUs a sandbox may ask for.
pub const MAX_VCPUS: u32 = 64;

/// Everything that shapes one sandbox. `Default` is the documented
/// default sandbox (512 MiB, 1 vCPU, the default allowlist and limits,
/// 30 s boot and liveness deadlines, no network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Guest RAM in MiB.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub vcpus: u32,
    /// Environment of every command, in order (later entries win).
    pub env: Vec<(String, String)>,
    /// Programs commands may run (basenames; `*` allows all).
    pub allowed_commands: Vec<String>,
    /// Default resource limits of every command.
    pub limits: ResourceLimits,
    /// How long booting may take.
    #[serde(rename = "boot_timeout_ms", with = "crate::millis")]
    pub boot_timeout: Duration,
    /// How long the guest agent may go without answering a heartbeat
    /// before every call fails.
    #[serde(rename = "liveness_timeout_ms", with = "crate::millis")]
    pub liveness_timeout: Duration,
    /// How long the guest may take to answer each kind of request.
    pub deadlines: RequestDeadlines,
    /// The accelerator; `None`: `VOIDBOX_ACCEL`, else auto-detect.
    pub accel: Option<Accel>,
    /// Kernel and initramfs to boot instead of the cached guest image.
    pub boot: Option<GuestImage>,
    /// The guest's hostname.
    pub hostname: String,
    /// Guest networking: [`NetworkPolicy::Off`] (no network device at
    /// all), or a device whose egress the policy filters.
    pub network: NetworkPolicy,
    /// An OCI image as the root filesystem of every command
    /// (`python:3.12-slim`, `localhost:5000/x:y`); `None`: the guest's own
    /// busybox userland.
    pub image: Option<String>,
    /// Size limit of the writable layer over the image, in MiB; `None`:
    /// half the guest's RAM (a tmpfs only uses what is written).
    pub overlay_mb: Option<u32>,
    /// Who commands run as: `root`, `UID[:GID]`, or a name from the
    /// image's `/etc/passwd` (`app`, `app:staff`). `None`: the image's
    /// `User`, else the unprivileged sandbox user (uid 1000).
    pub user: Option<String>,
    /// Directories the file API reaches beside `/workspace` and `/tmp`
    /// (absolute, normal; made for the command user when missing), such
    /// as a home directory.
    pub file_roots: Vec<String>,
    /// Host directories shared into the guest.
    pub mounts: Vec<Mount>,
    /// Named volumes, created on first use, kept across sandboxes.
    pub volumes: Vec<VolumeMount>,
    /// Images mounted read-only at a path.
    pub image_mounts: Vec<ImageMount>,
    /// Guest TCP ports published on the host's 127.0.0.1. A sandbox with
    /// ports and no network gets a device that reaches nothing.
    pub ports: Vec<PortMap>,
    /// Secrets swapped at the network edge: the guest sees placeholders.
    pub secrets: Vec<SecretConfig>,
    /// Root certificates (PEM) trusted for the edge's own TLS connections
    /// to secrets' hosts, beside the webpki roots: a corporate proxy's CA,
    /// or a test server's.
    pub upstream_roots: Vec<String>,
    /// Start from this snapshot (`voidbox snapshot create`) instead of
    /// booting: its memory, CPUs, image and user are the snapshot's, the
    /// rest of this configuration applies.
    pub snapshot: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: 512,
            vcpus: 1,
            env: Vec::new(),
            allowed_commands: DEFAULT_ALLOWED_COMMANDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            limits: DEFAULT_LIMITS,
            boot_timeout: Duration::from_secs(30),
            liveness_timeout: Duration::from_secs(30),
            deadlines: RequestDeadlines::default(),
            accel: None,
            boot: None,
            hostname: "voidbox".into(),
            network: NetworkPolicy::Off,
            image: None,
            overlay_mb: None,
            user: None,
            file_roots: Vec::new(),
            mounts: Vec::new(),
            volumes: Vec::new(),
            image_mounts: Vec::new(),
            ports: Vec::new(),
            secrets: Vec::new(),
            upstream_roots: Vec::new(),
            snapshot: None,
        }
    }
}

impl SandboxConfig {
    /// Checks everything that can be checked without booting. Every boot
    /// calls it; builders of boxes and specs call it early so that a bad
    /// value fails before any VM starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(ConfigError::new(
                "memory_mb",
                format!(
                    "{} MiB is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB}",
                    self.memory_mb
                ),
            ));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::new(
                "vcpus",
                format!("{} is outside 1..={MAX_VCPUS}", self.vcpus),
            ));
        }
        if let Some(name) = &self.snapshot {
            super::snapshot::check_snapshot_name(name)
                .map_err(|e| ConfigError::new("snapshot", e.to_string()))?;
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(ConfigError::new(
                    "env",
                    format!("`{key}` is not a valid variable (a name without `=` or NUL, a value without NUL)"),
                ));
            }
        }
        if let Some(bad) = self
            .allowed_commands
            .iter()
            .find(|c| c.is_empty() || c.contains(['/', '\0']))
        {
            return Err(ConfigError::new(
                "allowed_commands",
                format!("`{bad}` is not a program basename"),
            ));
        }
        if self.boot_timeout.is_zero() {
            return Err(ConfigError::new("boot_timeout_ms", "must be more than 0"));
        }
        if self.liveness_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "liveness_timeout_ms",
                "must be at least 100 ms",
            ));
        }
        if self.deadlines.shortest() < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "deadlines",
                "every request deadline must be at least 10 ms",
            ));
        }
        let valid_host = |h: &str| {
            (1..=63).contains(&h.len())
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !h.starts_with('-')
        };
        if !valid_host(&self.hostname) {
            return Err(ConfigError::new(
                "hostname",
                format!(
                    "`{}` is not a hostname (1-63 of [A-Za-z0-9-])",
                    self.hostname
                ),
            ));
        }
        self.network
            .validate()
            .map_err(|e| ConfigError::new("network", e))?;
        let images = self
            .image
            .iter()
            .map(|i| ("image", i))
            .chain(self.image_mounts.iter().map(|m| ("image_mounts", &m.image)));
        for (field, reference) in images {
            crate::oci::parse_reference(reference)
                .map_err(|e| ConfigError::new(field, e.to_string()))?;
        }
        if self.overlay_mb.is_some_and(|mb| mb < 16) {
            return Err(ConfigError::new("overlay_mb", "must be at least 16 MiB"));
        }
        if let Some(user) = &self.user {
            if user.is_empty()
                || user.contains(char::is_whitespace)
                || user.matches(':').count() > 1
            {
                return Err(ConfigError::new(
                    "user",
                    format!("`{user}` is not `root`, `UID[:GID]` or `NAME[:GROUP]`"),
                ));
            }
        }
        let mut targets: Vec<&str> = Vec::new();
        if self.file_roots.len() > 16 {
            return Err(ConfigError::new("file_roots", "at most 16"));
        }
        for root in &self.file_roots {
            check_guest_path(root).map_err(|e| ConfigError::new("file_roots", e))?;
        }
        for m in &self.mounts {
            check_host_path(&m.host).map_err(|e| ConfigError::new("mounts", e))?;
            check_guest_path(&m.guest).map_err(|e| ConfigError::new("mounts", e))?;
            targets.push(&m.guest);
        }
        for v in &self.volumes {
            check_volume_name(&v.name).map_err(|e| ConfigError::new("volumes", e))?;
            check_guest_path(&v.guest).map_err(|e| ConfigError::new("volumes", e))?;
            targets.push(&v.guest);
        }
        for m in &self.image_mounts {
            check_guest_path(&m.guest).map_err(|e| ConfigError::new("image_mounts", e))?;
            targets.push(&m.guest);
        }
        targets.sort_unstable();
        if let Some(twice) = targets.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "mounts",
                format!("two mounts at `{}`", twice[0]),
            ));
        }
        crate::net::check_ports(&self.ports).map_err(|e| ConfigError::new("ports", e))?;
        for (i, secret) in self.secrets.iter().enumerate() {
            secret.check().map_err(|e| ConfigError::new("secrets", e))?;
            if self.secrets[..i].iter().any(|s| s.name == secret.name) {
                let why = format!("secret `{}` is declared twice", secret.name);
                return Err(ConfigError::new("secrets", why));
            }
        }
        Ok(())
    }

    /// The secrets' hosts, as allow rules (checked by `validate`).
    fn secret_hosts(&self) -> Vec<Rule> {
        self.secrets
            .iter()
            .flat_map(|s| s.check().unwrap_or_default())
            .collect()
    }

    /// The network device this configuration needs, with its rules and
    /// limits: the policy's, or (ports alone) one that reaches nothing.
    pub(crate) fn network_device(&self) -> Option<(Rules, NetworkLimits)> {
        // A secret's hosts are reachable: that is what it is for.
        let policy = self.network.clone().with_allowed(self.secret_hosts());
        match policy {
            NetworkPolicy::On { rules, limits } => Some((rules, limits)),
            NetworkPolicy::Off if !self.ports.is_empty() => {
                Some((Rules::default(), NetworkLimits::default()))
            }
            NetworkPolicy::Off => None,
        }
    }

    /// Guest RAM in MiB (default 512).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Guest CPUs (default 1).
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// Adds an environment variable for every command. Never put secrets
    /// here: the guest sees them.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Replaces the command allowlist (basenames; `*` allows all).
    pub fn allowed_commands<I, S>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_commands = commands.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one command to the allowlist (a path is reduced to its
    /// basename, which is what the guest matches).
    pub fn allow_command(mut self, command: impl Into<String>) -> Self {
        let command = command.into();
        let name = void_box_protocol::policy::program_basename(&command).to_string();
        if !self.allowed_commands.contains(&name) {
            self.allowed_commands.push(name);
        }
        self
    }

    /// Default resource limits of every command.
    pub fn limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long booting may take (default 30 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// How long the guest agent may go without answering a heartbeat before
    /// every call fails (default 30 s).
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout;
        self
    }

    /// How long the guest may take to answer each kind of request
    /// (default [`RequestDeadlines::default`]).
    pub fn deadlines(mut self, deadlines: RequestDeadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Forces an accelerator (default: `VOIDBOX_ACCEL`, else auto-detect).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }

    /// Boots this kernel and initramfs instead of the cached guest image.
    pub fn guest_image(mut self, image: GuestImage) -> Self {
        self.boot = Some(image);
        self
    }

    /// Guest networking: `true` is the public internet only, `false` no
    /// network device; a [`NetworkPolicy`] says exactly what is reachable.
    pub fn network(mut self, policy: impl Into<NetworkPolicy>) -> Self {
        self.network = policy.into();
        self
    }

    /// Runs every command in this OCI image (`python:3.12-slim`).
    pub fn image(mut self, reference: impl Into<String>) -> Self {
        self.image = Some(reference.into());
        self
    }

    /// Limits the writable layer over the image to `mb` MiB.
    pub fn overlay_mb(mut self, mb: u32) -> Self {
        self.overlay_mb = Some(mb);
        self
    }

    /// Runs commands as this user (`root`, `UID[:GID]`, `NAME[:GROUP]`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Lets the file API reach `dir` (beside `/workspace` and `/tmp`).
    pub fn file_root(mut self, dir: impl Into<String>) -> Self {
        self.file_roots.push(dir.into());
        self
    }

    /// Shares a host directory at `guest`.
    pub fn mount(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        mode: MountMode,
    ) -> Self {
        self.mounts.push(Mount {
            host: host.into(),
            guest: guest.into(),
            mode,
        });
        self
    }

    /// Mounts the named volume at `guest`, read-write.
    pub fn volume(mut self, name: impl Into<String>, guest: impl Into<String>) -> Self {
        self.volumes.push(VolumeMount {
            name: name.into(),
            guest: guest.into(),
            readonly: false,
        });
        self
    }

    /// Mounts an image's root read-only at `guest`.
    pub fn image_mount(mut self, image: impl Into<String>, guest: impl Into<String>) -> Self {
        self.image_mounts.push(ImageMount {
            image: image.into(),
            guest: guest.into(),
        });
        self
    }

    /// Publishes guest TCP port `guest` on the host's 127.0.0.1 at `host`
    /// (0: a free port; [`Sandbox::published_ports`](crate::Sandbox::published_ports)
    /// says which).
    pub fn publish(mut self, guest: u16, host: u16) -> Self {
        self.ports.push(PortMap { guest, host });
        self
    }

    /// A secret swapped at the network edge: the guest's `name` holds a
    /// placeholder, and HTTP requests to `hosts` (host-name rules, which
    /// become allowed) carry `value` in its place in their headers. HTTPS
    /// to them is ended at the edge with a certificate from the sandbox's
    /// own CA (which the guest trusts) and re-made to the real host, whose
    /// certificate is verified against the webpki roots.
    pub fn secret(mut self, name: &str, value: &str, hosts: &[&str]) -> Self {
        self.secrets.push(SecretConfig {
            name: name.into(),
            value: value.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        });
        self
    }

    /// Trusts `pem` (one or more certificates) for the edge's connections
    /// to secrets' hosts, beside the webpki roots.
    pub fn trust_upstream_root(mut self, pem: &str) -> Self {
        self.upstream_roots.push(pem.into());
        self
    }

    /// Starts from the snapshot `name` instead of booting (see
    /// [`snapshot`](Self::snapshot) the field).
    pub fn snapshot(mut self, name: &str) -> Self {
        self.snapshot = Some(name.into());
        self
    }

    /// Boots a sandbox with this configuration as a real micro-VM.
    pub async fn build(&self) -> crate::error::Result<super::Sandbox> {
        super::SandboxProvider::boot(&super::VmProvider, self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let config = SandboxConfig::default().env("A", "1").memory_mb(256);
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"boot_timeout_ms\":30000"), "{json}");
        let back: SandboxConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        // Every field has a default, so a partial value is a whole config.
        let partial: SandboxConfig = serde_json::from_str(r#"{"vcpus": 2}"#).unwrap();
        assert_eq!(partial, SandboxConfig::default().vcpus(2));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<SandboxConfig>(r#"{"memroy_mb": 1}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `memroy_mb`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |c: SandboxConfig| c.validate().unwrap_err().field;
        assert_eq!(field(SandboxConfig::default().memory_mb(8)), "memory_mb");
        assert_eq!(
            field(SandboxConfig::default().memory_mb(1 << 20)),
            "memory_mb"
        );
        assert_eq!(field(SandboxConfig::default().vcpus(0)), "vcpus");
        assert_eq!(field(SandboxConfig::default().env("A=B", "x")), "env");
        assert_eq!(field(SandboxConfig::default().env("A", "x\0")), "env");
        assert_eq!(
            field(SandboxConfig::default().allowed_commands(["bin/sh"])),
            "allowed_commands"
        );
        let flood = crate::net::NetworkLimits {
            max_connections: 0,
            ..Default::default()
        };
        let network = crate::net::NetworkPolicy::public().with_limits(flood);
        assert_eq!(field(SandboxConfig::default().network(network)), "network");
        assert_eq!(field(SandboxConfig::default().image("Bad Ref")), "image");
        assert_eq!(field(SandboxConfig::default().user("a b")), "user");
        assert_eq!(
            field(SandboxConfig::default().mount("/h", "/proc/x", MountMode::Ro)),
            "mounts"
        );
        assert_eq!(
            field(
                SandboxConfig::default()
                    .mount("/h", "/data", MountMode::Ro)
                    .volume("v", "/data")
            ),
            "mounts"
        );
        assert_eq!(
            field(SandboxConfig::default().volume("../x", "/v")),
            "volumes"
        );
        let bad_host = SandboxConfig {
            hostname: "a b".into(),
            ..Default::default()
        };
        assert_eq!(field(bad_host), "hostname");
    }

    #[test]
    fn allow_command_keeps_basenames_once() {
        let c = SandboxConfig::default()
            .allowed_commands(["sh"])
            .allow_command("/usr/bin/jq")
            .allow_command("jq");
        assert_eq!(c.allowed_commands, ["sh", "jq"]);
    }
}
