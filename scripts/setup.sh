#!/usr/bin/env bash
# Sets up a Debian 12 machine for void-box: system packages, the voidbox CLI,
# the static guest binaries, and the guest image (kernel + initramfs, cached
# by input hash, so a second run only rebuilds what changed).
set -euo pipefail
cd "$(dirname "$0")/.."

# --with-test-tools adds what only the tests need (a headless browser for
# the HTML report test).
with_test_tools=false
[ "${1:-}" = "--with-test-tools" ] && with_test_tools=true

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  qemu-system-x86       # the VMM (microvm machine, vhost-user-vsock)
  bubblewrap            # the namespaces QEMU runs in (vm/confine.rs)
  busybox-static        # a stock guest userland (`voidbox image build`'s default)
  linux-source-6.12     # the guest kernel's source
  build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils  # kernel build
  musl-tools curl bzip2 # the guest's musl busybox (scripts/build-busybox.sh)
)
if $with_test_tools; then
  packages+=(
    chromium             # renders `voidbox report` pages in the report test
    erofs-utils          # fsck.erofs checks the images void-box writes
    mmdebstrap gpg zstd  # the test images (scripts/build-test-images.sh)
    docker-registry skopeo apache2-utils openssl  # a real registry on loopback (scripts/test-registry.sh)
    python3-venv         # the E2B Python SDK's venv (scripts/install-e2b-sdks.sh)
  )
  # npm installs claude-code into its test image; the machine's own npm,
  # else Debian's.
  command -v npm >/dev/null || packages+=(npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's docker-registry package starts a system registry on :5000; the
# tests start their own on other ports, and nothing else should listen.
if $with_test_tools; then
  if command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
    $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
  $SUDO pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' || true
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust stable (https://rustup.rs) and run again" >&2
  exit 1
fi

cargo build --release --locked -p voidbox-cli
scripts/build-guest.sh >/dev/null
scripts/build-busybox.sh >/dev/null
target/release/voidbox image build --agent target/x86_64-unknown-linux-gnu/release/guest-agent \
  --busybox target/guest/busybox
# The OCI test images (a Debian rootfs with python3 and nodejs, and a small
# multi-layer image), cached under target/test-images by their inputs.
if $with_test_tools; then
  scripts/build-test-images.sh >/dev/null
  # The official E2B SDKs, pinned, for the E2B-compatibility tests.
  scripts/install-e2b-sdks.sh
fi
