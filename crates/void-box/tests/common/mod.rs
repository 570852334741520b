//! Helpers shared by the integration tests.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

pub mod mock_llm;
pub mod net;
pub mod raw;
pub mod registry;

use std::path::PathBuf;

/// Name of the static MCP server fixture (`crates/mcp-fixture`).
pub const MCP_FIXTURE: &str = "voidbox-mcp-fixture";

/// Where the MCP fixture is: `VOIDBOX_MCP_FIXTURE`, else where
/// `scripts/build-guest.sh` puts it. Panics with the fix when missing.
pub fn mcp_fixture_path() -> PathBuf {
    let path = std::env::var_os("VOIDBOX_MCP_FIXTURE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release")
                .join(MCP_FIXTURE)
        });
    assert!(
        path.is_file(),
        "the MCP fixture {} is missing: build it with scripts/build-guest.sh, \
         or set VOIDBOX_MCP_FIXTURE to a static build of it",
        path.display()
    );
    path
}
