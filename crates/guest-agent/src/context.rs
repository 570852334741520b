//! State shared by every connection: the guest configuration, the reaper,
//! the command root, the command user and the writable roots.

use std::io;

use void_box_protocol::{GuestConfig, GuestUser};

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
}

impl AgentContext {
    pub fn new(config: GuestConfig, root: CommandRoot, reaper: Reaper) -> io::Result<Self> {
        let user = config.user.clone().unwrap_or(GuestUser {
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            groups: Vec::new(),
        });
        Ok(Self {
            roots: Roots::open(&root, (user.uid, user.gid))?,
            config,
            reaper,
            root,
            user,
        })
    }
}
