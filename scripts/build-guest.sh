#!/usr/bin/env bash
# Builds the guest-side binaries as static executables (the guest has no libc
# to link against): the guest agent and the benchmark's floor init, which run
# as /init, and the MCP server that the MCP VM tests upload into a guest.
set -euo pipefail
cd "$(dirname "$0")/.."
# An explicit --target keeps crt-static away from build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p guest-agent -p floor-init -p mcp-fixture --target x86_64-unknown-linux-gnu
echo "target/x86_64-unknown-linux-gnu/release/guest-agent"
