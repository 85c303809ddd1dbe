#!/usr/bin/env bash
# Installs the pinned stack into ./.venv (first time only) and runs the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/setup_env.sh
set +e
.venv/bin/python -m pytest -q "$@" tests
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$rc"
