//! State shared by every connection: the guest configuration, the reaper,
//! the command root, the command user, the writable roots, and the control
//! groups commands run in.

use std::io;
use std::sync::{Arc, RwLock};

use void_box_protocol::{GuestConfig, GuestUser, ResourceLimits, Secret};

use crate::cgroup::Cgroups;
use crate::files::Roots;
use crate::init::{SANDBOX_GID, SANDBOX_UID};
use crate::reaper::Reaper;
use crate::rootfs::CommandRoot;

/// What a restored VM replaces ([`AgentContext::renew`]): its identity and
/// the settings of the commands it starts from then on.
pub struct Live {
    pub secret: Secret,
    pub env: Vec<(String, String)>,
    pub allowed_commands: Vec<String>,
    pub limits: ResourceLimits,
    pub edge_ca: Option<String>,
}

impl Live {
    fn of(config: &GuestConfig) -> Live {
        Live {
            secret: config.secret,
            env: config.env.clone(),
            allowed_commands: config.allowed_commands.clone(),
            limits: config.limits,
            edge_ca: config.edge_ca.clone(),
        }
    }
}

/// State shared by every connection.
pub struct AgentContext {
    /// The configuration the VM booted with: its root, user, mounts and
    /// working directory hold for its life; the rest is in [`Self::live`].
    pub config: GuestConfig,
    live: RwLock<Arc<Live>>,
    pub reaper: Reaper,
    pub roots: Roots,
    /// Where commands run (`chroot`).
    pub root: CommandRoot,
    /// Who they run as.
    pub user: GuestUser,
    /// The groups they run in; `None` only when the agent is not PID 1
    /// and finds no cgroup hierarchy it may manage.
    pub cgroups: Option<Cgroups>,
}

impl AgentContext {
    /// As PID 1 (`is_init`) the control groups must come up; otherwise
    /// (the agent run by hand) commands run without them.
    pub fn new(
        config: GuestConfig,
        root: CommandRoot,
        reaper: Reaper,
        is_init: bool,
    ) -> io::Result<Self> {
        let user = config.user.clone().unwrap_or(GuestUser {
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            groups: Vec::new(),
        });
        let cgroups = match Cgroups::setup(is_init) {
            Ok(cgroups) => Some(cgroups),
            Err(e) if !is_init => {
                crate::init::log(&format!("commands run without control groups: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            live: RwLock::new(Arc::new(Live::of(&config))),
            roots: Roots::open(&root, (user.uid, user.gid), &config.file_roots)?,
            cgroups,
            config,
            reaper,
            root,
            user,
        })
    }
}

impl AgentContext {
    /// The identity and command settings in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A restored VM's new identity: the secret, hostname, environment,
    /// allowed commands, limits and edge CA of `config`.
    pub fn renew(&self, config: &GuestConfig) -> io::Result<()> {
        let old = self.live();
        if config.edge_ca != old.edge_ca {
            crate::rootfs::replace_edge_ca(
                &self.root,
                old.edge_ca.as_deref(),
                config.edge_ca.as_deref(),
            )?;
        }
        rustix::system::sethostname(config.hostname.as_bytes())?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live::of(config));
        Ok(())
    }
}
