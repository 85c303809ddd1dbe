#!/usr/bin/env bash
# Installs the pinned stack into ./.venv (first time only) and runs the test suite on 2
# pytest-xdist workers (tests/conftest.py keeps the tests that share a module fixture on
# one worker and sends the slowest first). Arguments go to pytest after these: `-n 0`
# runs it in one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/setup_env.sh
# libtpu for the ahead-of-time TPU test (tests/integration/test_tpu_aot.py), outside
# the runtime environment: with it importable, jax would look for a TPU.
if [ ! -d .libtpu/libtpu ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --target .libtpu \
      -r benchmarks/requirements-tpu.txt
fi
set +e
.venv/bin/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder "$@" tests
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$rc"
