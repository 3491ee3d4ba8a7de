#!/usr/bin/env bash
# Create .venv in the current directory with exactly the locked dependencies, the same way `make setup` does:
# uv comes from PyPI through pip, then installs requirements.lock.
# Usage: environment_setup/install_requirements.sh [path/to/requirements.lock]   (PYTHON=python3.11 by default)
set -euo pipefail

PYTHON="${PYTHON:-python3.11}"
LOCK="${1:-requirements.lock}"

if ! command -v "${PYTHON}" >/dev/null; then
  echo "error: ${PYTHON} not found: install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -f "${LOCK}" ]; then
  echo "error: ${LOCK} not found: run from the repository root or pass the lock file" >&2
  exit 1
fi

test -x .venv/bin/python || "${PYTHON}" -m venv .venv
test -x .venv/bin/uv || .venv/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"
.venv/bin/uv pip sync --python .venv/bin/python "${LOCK}"
