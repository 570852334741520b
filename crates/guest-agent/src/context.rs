//! State shared by every connection: the guest configuration, the reaper
//! and the writable roots.

use std::io;

use void_box_protocol::GuestConfig;

use crate::files::Roots;
use crate::reaper::Reaper;

/// State shared by every connection.
pub struct AgentContext {
    pub config: GuestConfig,
    pub reaper: Reaper,
    pub roots: Roots,
}

impl AgentContext {
    pub fn new(config: GuestConfig, reaper: Reaper) -> io::Result<Self> {
        Ok(Self {
            config,
            reaper,
            roots: Roots::open()?,
        })
    }
}
