#!/usr/bin/env bash
# The accelerator check: the paper pretraining step (time, MFU, memory), its feed from
# prepared shards and the encoder's embedding throughput, measured on this host's
# GPU(s) or TPU chip(s) in under 8 minutes; prints one JSON object.
#
#   bash benchmarks/accelerator_check.sh [OUT.json] [--smoke] [accelerator_check.py flags]
#
# OUT.json (any argument ending in .json) also receives the JSON; every other argument
# goes to benchmarks/accelerator_check.py (see its docstring). --smoke shrinks it all
# to check the script on a CPU. A run cut off by the timeout still prints what its
# finished sections measured ("complete": false, "running": the section cut off).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

OUT=""
ARGS=()
for arg in "$@"; do
  if [[ -z "$OUT" && "$arg" == *.json && "$arg" != -* ]]; then
    OUT="$arg"
  else
    ARGS+=("$arg")
  fi
done

PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY="python"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# The step compiles in two sections: the second, and any rerun on this host, loads it.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/crema_jax_compile_cache}"

RESULT="$(mktemp "${TMPDIR:-/tmp}/accelerator_check.XXXXXX.json")"
trap 'rm -f "$RESULT" "$RESULT.tmp"' EXIT

timeout --kill-after=15 480 "$PY" benchmarks/accelerator_check.py --out "$RESULT" \
  "${ARGS[@]+"${ARGS[@]}"}"
rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "accelerator_check: stopped after 480 s; the JSON holds the finished sections" >&2
fi

if [[ -s "$RESULT" ]]; then
  cat "$RESULT"
  if [[ -n "$OUT" ]]; then
    cp "$RESULT" "$OUT" && echo "accelerator_check: wrote $OUT" >&2
  fi
else
  echo "accelerator_check: no JSON was written (exit status $rc)" >&2
fi
exit $rc
