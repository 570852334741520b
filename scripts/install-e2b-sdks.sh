#!/usr/bin/env bash
# Installs the official E2B SDKs that the E2B-compatibility tests drive
# against `voidbox serve` (crates/voidbox-server/tests/e2b_sdk.rs), pinned
# to the versions docs/e2b.md names as tested:
#   target/e2b-sdk/venv   a Python venv with PyPI's `e2b`
#   target/e2b-sdk/node   node_modules with npm's `e2b`
# A second run with the same versions does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

py_version=2.63.0
js_version=2.51.0
out=target/e2b-sdk
mkdir -p "$out"

# The system python: a PATH python (pyenv, another venv) may be anything.
if [ ! -x "$out/venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$out/venv"
fi
if [ "$("$out/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("e2b"))' 2>/dev/null)" != "$py_version" ]; then
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "e2b==$py_version"
fi

if [ "$(node -p "require('./$out/node/node_modules/e2b/package.json').version" 2>/dev/null)" != "$js_version" ]; then
  mkdir -p "$out/node"
  [ -f "$out/node/package.json" ] || echo '{"private": true}' > "$out/node/package.json"
  (cd "$out/node" && npm install --silent --no-audit --no-fund "e2b@$js_version")
fi
