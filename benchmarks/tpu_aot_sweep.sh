#!/usr/bin/env bash
# The README's TPU table: benchmarks/tpu_aot.py on every generation, then the table.
#   bash benchmarks/tpu_aot_sweep.sh [OUT_DIR]      (default benchmarks/results/tpu_aot)
# About 50 minutes on a 2-core machine (each compile of the paper step: 1-4 minutes).
# v5e:2x2 gets the batch sweep, the compiled largest batch, embed and fine-tuning;
# v5e:2x4 and the 4-host v5e:4x4 the recommended batch (same chip: they check the
# step on 8 and 16 chips); v4, v5p and v6e two batches (recommendation and memory
# fit), embed and fine-tuning. Every figure is the compiler's estimate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-benchmarks/results/tpu_aot}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
if [ ! -d .libtpu/libtpu ]; then
  "$PY" -m pip install --quiet --target .libtpu -r benchmarks/requirements-tpu.txt
fi
aot() { local name=$1; shift; "$PY" benchmarks/tpu_aot.py --shard_optimizer "$@" \
    --out "$OUT/$name.json" > /dev/null; }
aot v5e_2x2 --topologies v5e:2x2 --batch_per_chip 32,64,128 --max_batch
aot v5e_2x4 --topologies v5e:2x4 --programs train --batch_per_chip 64
aot v5e_4x4 --topologies v5e:4x4 --programs train --batch_per_chip 64
for t in v5p:2x2x1 v4:2x2x1 v6e:2x2; do
  aot "${t//:/_}" --topologies "$t" --batch_per_chip 64,128
done
"$PY" benchmarks/tpu_aot.py --table "$OUT"/*.json | tee "$OUT/table.md"
