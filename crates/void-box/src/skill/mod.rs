//! Skills: declared capabilities provisioned into a box's guest.

pub mod mcp;
mod stdio;

pub use mcp::{McpCallResult, McpSession};
