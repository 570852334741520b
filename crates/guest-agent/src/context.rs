//! State shared by every connection: the guest configuration, the reaper,
//! the command root, the command user, the writable roots, and the control
//! groups commands run in.

use std::io;

use void_box_protocol::{GuestConfig, GuestUser};

use crate::cgroup::Cgroups;
use crate::files::Roots;
use crate::init::{SANDBOX_GID, SANDBOX_UID};
use crate::reaper::Reaper;
use crate::rootfs::CommandRoot;

/// State shared by every connection.
pub struct AgentContext {
    pub config: GuestConfig,
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
            roots: Roots::open(&root, (user.uid, user.gid))?,
            cgroups,
            config,
            reaper,
            root,
            user,
        })
    }
}
