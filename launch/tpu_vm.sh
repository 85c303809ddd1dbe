#!/usr/bin/env bash
# CREMA pretraining on a Cloud TPU VM or pod slice: create it, copy the code, install,
# and run crema_jax.main on every worker (--worker=all), data and workdir in a gs://
# bucket.
#
#   export PROJECT=my-project ZONE=us-central2-b TPU_NAME=crema ACCELERATOR=v4-32 \
#          BUCKET=gs://my-bucket RUN=crema_hl_paper
#   launch/tpu_vm.sh create     # the TPU VM / pod slice (SPOT=1 for a spot slice)
#   launch/tpu_vm.sh setup      # copy this checkout to every worker, install, mount
#   launch/tpu_vm.sh run [--config.total_steps=...]   # start (or resume) the run
# CONFIG defaults to the TPU recipe for ACCELERATOR (configs/pretrain.py:hl,tpu=GEN,
# chips=N: the batch per chip benchmarks/tpu_aot.py recommends, bfloat16, AdamW's
# moments split over the chips); `setup` installs jax[tpu]==JAX_VERSION (its libtpu).
#   launch/tpu_vm.sh logs | status | stop | delete
#
# Layout in the bucket (prepare it first, e.g. on one machine:
#   python -m crema_jax.data.prepare --config configs/pretrain.py:hl \
#       --config.data.raw_dir=... --config.data.data_dir=prepared  and then
#   gcloud storage rsync -r prepared "$BUCKET/prepared"):
#   $BUCKET/prepared/<name>/...   ArrayRecord shards + manifest (DATA_NAME, default ptbxl)
#   $BUCKET/$RUN/                 the workdir: checkpoints/, metrics.jsonl, tensorboard/
# Every worker mounts the bucket with gcsfuse at /mnt/gcs (the workdir is a path there;
# Orbax writes each worker's iterator state, process 0 the logs) and copies the
# prepared shards to its local disk, which reads faster than the mount.
# Watch: tensorboard --logdir "$BUCKET/$RUN/tensorboard" (from any machine).
# Preemption: each worker gets SIGTERM; the workers save one checkpoint at the same
# step (jax preemption sync point) and exit 0. `launch/tpu_vm.sh run` again (after
# `create` for a deleted spot slice) resumes from it, on the same slice shape.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}  # v5e: v2-alpha-tpuv5-lite
# The TPU recipe of configs/pretrain.py for the accelerator type: generation and chips
# (v4-N and v5p-N count TensorCores, two per chip; v5litepod-N and v6e-N count chips).
tpu_recipe() {
  local kind=${ACCELERATOR%-*} count=${ACCELERATOR##*-}
  case "$kind" in
    v4) echo "tpu=v4,chips=$((count / 2))" ;;
    v5p) echo "tpu=v5p,chips=$((count / 2))" ;;
    v5litepod|v5e) echo "tpu=v5e,chips=$count" ;;
    v6e) echo "tpu=v6e,chips=$count" ;;
    *) echo "launch/tpu_vm.sh: no TPU recipe for ACCELERATOR=$ACCELERATOR; set CONFIG" >&2
       exit 2 ;;
  esac
}
CONFIG=${CONFIG:-configs/pretrain.py:hl,$(tpu_recipe)}
DATA_NAME=${DATA_NAME:-ptbxl}
RUN=${RUN:-crema_pretrain}
JAX_VERSION=${JAX_VERSION:-0.10.2}
REMOTE_DIR=${REMOTE_DIR:-crema}   # Under the worker's home directory.

gcloud_tpu() {
  gcloud compute tpus tpu-vm "$@" --project "$PROJECT" --zone "$ZONE"
}

on_all_workers() {  # Runs a bash command on every worker of the slice.
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$1"
}

bucket_name() {
  : "${BUCKET:?set BUCKET (gs://name)}"
  echo "${BUCKET#gs://}"
}

create() {
  local spot=()
  if [ "${SPOT:-0}" = 1 ]; then spot=(--spot); fi
  gcloud_tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR" \
      --version "$RUNTIME_VERSION" "${spot[@]}"
}

setup() {
  local archive bucket
  bucket=$(bucket_name)
  archive=$(mktemp "${TMPDIR:-/tmp}/crema.XXXXXX.tar.gz")
  git archive --format=tar.gz -o "$archive" HEAD  # The committed code, no local data.
  gcloud_tpu scp "$archive" "$TPU_NAME:crema.tar.gz" --worker=all
  rm -f "$archive"
  on_all_workers "set -e
    mkdir -p ~/$REMOTE_DIR && tar xzf ~/crema.tar.gz -C ~/$REMOTE_DIR
    cd ~/$REMOTE_DIR
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt
    .venv/bin/pip install --quiet --no-deps -e .
    .venv/bin/pip install --quiet 'jax[tpu]==$JAX_VERSION'
    if ! command -v gcsfuse >/dev/null; then
      export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
    fi
    sudo mkdir -p /mnt/gcs && sudo chown \$USER /mnt/gcs
    mountpoint -q /mnt/gcs || gcsfuse --implicit-dirs $bucket /mnt/gcs
    mkdir -p /tmp/crema_data
    gcloud storage rsync -r gs://$bucket/prepared /tmp/crema_data"
}

run() {
  local overrides="" arg
  for arg in "$@"; do overrides+=" $(printf '%q' "$arg")"; done
  bucket_name >/dev/null
  # nohup: the run outlives the ssh session; every worker runs the same command.
  on_all_workers "cd ~/$REMOTE_DIR && mkdir -p /mnt/gcs/$RUN && nohup .venv/bin/python \
    -m crema_jax.main --distributed=on --config $CONFIG --workdir /mnt/gcs/$RUN \
    --config.data.data_dir=/tmp/crema_data --config.data.name=$DATA_NAME \
    --config.compute_dtype=bfloat16 $overrides > ~/crema_run.log 2>&1 &
    echo \$! > ~/crema_run.pid"
  echo "started; follow with: $0 logs   (TensorBoard: $BUCKET/$RUN/tensorboard)"
}

case "${1:-}" in
  create) create ;;
  setup) setup ;;
  run) shift; run "$@" ;;
  logs) gcloud_tpu ssh "$TPU_NAME" --worker=0 --command "tail -n 50 -f ~/crema_run.log" ;;
  status) on_all_workers "if kill -0 \$(cat ~/crema_run.pid) 2>/dev/null; then echo running; \
      else echo not running; fi; tail -n 2 ~/crema_run.log" ;;
  stop) on_all_workers "kill -TERM \$(cat ~/crema_run.pid) || true" ;;  # Saves, then exits.
  delete) gcloud_tpu delete "$TPU_NAME" --quiet ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
