#!/usr/bin/env bash
# Tests the Python SDK (sdk/python) against a real `voidbox serve` booting
# real VMs: a venv at target/sdk-python-venv with the SDK and pytest, then
# pytest on sdk/python/tests. Needs target/release/voidbox and its guest
# image (scripts/setup.sh --with-test-tools). The SDK is reinstalled only
# when its files changed. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-python-venv
if [ ! -x target/release/voidbox ]; then
  echo "test-sdk-python: target/release/voidbox is missing; run scripts/setup.sh --with-test-tools" >&2
  exit 1
fi
# The system python: a PATH python (pyenv, another venv) may be anything.
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$venv"
fi
stamp="$venv/.voidbox-sdk-stamp"
digest=$(find sdk/python/pyproject.toml sdk/python/README.md sdk/python/src -type f \
  -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "./sdk/python[test]"
  echo "$digest" > "$stamp"
fi
# From sdk/python (src layout): `import voidbox` is the installed SDK.
cd sdk/python
exec "../../$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
