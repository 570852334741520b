//! Skills: declared capabilities provisioned into a box's guest.

pub mod mcp;

pub use mcp::{McpCallResult, McpSession};
