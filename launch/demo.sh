#!/usr/bin/env bash
# The whole story on the embedded demo data, from a fresh clone:
# write a synthetic PTB-XL folder, prepare it, pretrain CREMA, probe it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/setup_env.sh
exec .venv/bin/python -m crema_jax.main --config configs/demo.py --workdir demo_output/run "$@"
