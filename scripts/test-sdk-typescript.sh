#!/usr/bin/env bash
# Builds the TypeScript SDK (sdk/typescript) and runs its tests against a
# real `voidbox serve` booting real VMs (target/release/voidbox, built by
# scripts/setup.sh). Needs Node.js 20.10 or newer and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-sdk-typescript: node and npm are needed (Node.js 20 or newer)" >&2
  exit 1
fi
# node --test's --test-concurrency came with 20.10.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)'; then
  echo "test-sdk-typescript: Node.js $(node -v) is too old: the SDK needs 20, its tests 20.10 or newer" >&2
  echo "  (Debian 12's nodejs is 18; install Node.js 20 from NodeSource or nvm)" >&2
  exit 1
fi
if [ ! -x target/release/voidbox ] && [ -z "${VOIDBOX_BIN:-}" ]; then
  echo "test-sdk-typescript: target/release/voidbox is missing: run scripts/setup.sh first" >&2
  exit 1
fi

(
  cd sdk/typescript
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
  npm run build
)
# One test file at a time: each starts its own daemon, and VMs run one at
# a time.
node --test --test-concurrency=1 sdk/typescript/test/
