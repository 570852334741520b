#!/usr/bin/env bash
# Builds the guest-side binaries as static executables (they run as /init in
# the VM, where there is no libc to link against): the guest agent, and the
# benchmark's floor init.
set -euo pipefail
cd "$(dirname "$0")/.."
# An explicit --target keeps crt-static away from build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p guest-agent -p floor-init --target x86_64-unknown-linux-gnu
echo "target/x86_64-unknown-linux-gnu/release/guest-agent"
