#!/usr/bin/env bash
# N JAX processes on 127.0.0.1 sharing this machine's CPU: multi-host code without a
# cluster. Each process gets D virtual CPU devices and joins one jax.distributed job.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] \
#       [-l LOG_DIR] -- --config configs/demo.py:test --workdir /tmp/crema_mh
#
# Everything after `--` goes to `python -m crema_jax.main` on every process.
# The environment contract (the same as tests/test_multihost.py and what
# crema_jax/distributed.py reads):
#   JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=i
#   JAX_PLATFORMS=cpu  XLA_FLAGS=--xla_force_host_platform_device_count=D
# Process 0 writes to this terminal, process i > 0 to LOG_DIR/process_i.log; the pid of
# process i is in LOG_DIR/process_i.pid. If one process fails the others get SIGTERM,
# then SIGKILL after STOP_GRACE seconds (default 10). Ctrl-C or SIGTERM is passed on to
# every process (SIGTERM is a preemption notice: they save a checkpoint at the same step
# and exit 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

processes=2
devices=4
port=""
log_dir=""
while getopts "n:d:p:l:h" opt; do
  case "$opt" in
    n) processes=$OPTARG ;;
    d) devices=$OPTARG ;;
    p) port=$OPTARG ;;
    l) log_dir=$OPTARG ;;
    h) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "usage: $0 [-n N] [-d D] [-p PORT] [-l LOG_DIR] -- MAIN_ARGS..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ "${1:-}" = "--" ]; then shift; fi

if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
elif [ -x .venv/bin/python ]; then
  python=.venv/bin/python
else
  python=python3
fi
if [ -z "$port" ]; then  # A port free now (the coordinator binds it a moment later).
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
log_dir=${log_dir:-$(mktemp -d "${TMPDIR:-/tmp}/crema_multiprocess.XXXXXX")}
mkdir -p "$log_dir"
echo "$processes processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs of processes 1.. in $log_dir" >&2

pids=()
stop_all() {  # Sends signal $1 to every process still running.
  for pid in "${pids[@]}"; do
    kill -s "$1" "$pid" 2>/dev/null || true
  done
}
trap 'stop_all TERM' TERM
trap 'stop_all INT' INT

stop_stragglers() {  # TERM, then KILL whatever is still running after STOP_GRACE s.
  stop_all TERM
  for _ in $(seq $((${STOP_GRACE:-10} * 10))); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    if [ "$alive" -eq 0 ]; then return; fi
    sleep 0.1
  done
  stop_all KILL
}

for ((i = 0; i < processes; i++)); do
  cmd=(env JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$processes"
       JAX_PROCESS_ID="$i" JAX_PLATFORMS=cpu
       XLA_FLAGS="--xla_force_host_platform_device_count=$devices"
       "$python" -m crema_jax.main "$@")
  if [ "$i" -eq 0 ]; then
    "${cmd[@]}" &
  else
    "${cmd[@]}" > "$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=($!)
  echo "$!" > "$log_dir/process_$i.pid"
done

status=0
live=("${pids[@]}")
while [ "${#live[@]}" -gt 0 ]; do
  finished=""
  if wait -n -p finished "${live[@]}"; then rc=0; else rc=$?; fi
  if [ -z "${finished:-}" ]; then
    if [ "$rc" -eq 127 ]; then break; fi  # None of them is running any more.
    continue  # A trapped signal interrupted `wait`: it was passed on; keep waiting.
  fi
  still=()
  for pid in "${live[@]}"; do
    if [ "$pid" != "$finished" ]; then still+=("$pid"); fi
  done
  live=("${still[@]}")
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    echo "process with pid $finished exited with status $rc: stopping the others" >&2
    status=$rc
    stop_stragglers
  fi
done
exit "$status"
