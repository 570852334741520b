#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs every check and test:
# formatting, clippy, every example, unit and property tests, the VM
# tests, which boot real micro-VMs (TCG where there is no hardware
# virtualization), and the Python and TypeScript SDKs' tests against a daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
# Disk is the resource CI runs short of first: say what there is.
df -h . | sed 's/^/test: /'
scripts/setup.sh --with-test-tools
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every example must run.
for example in crates/void-box/examples/*.rs; do
  cargo run --locked -q -p void-box --example "$(basename "$example" .rs)"
done
# VM tests boot one VM per test; two at a time fits two cores.
cargo test --workspace --locked -- --test-threads=2
# Our SDKs against a real daemon (target/release/voidbox) booting real VMs.
scripts/test-sdk-python.sh
scripts/test-sdk-typescript.sh
df -h . | sed 's/^/test: /'
du -sh target | sed 's/^/test: /'
