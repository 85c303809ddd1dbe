"""Entry point: `python -m crema_jax.main --config configs/X.py[:arg] --workdir DIR`.

Overrides go after the config: `--config.model.emb_dim=512 --config.batch_size=128`.
`config.mode` picks the job (`JOBS`); each config file sets it:

  job        config file(s)                         what it runs
  pretrain   configs/pretrain.py, configs/corpus.py  crema_jax.train
  demo       configs/demo.py                        synthetic data -> prepare -> pretrain -> probe
  probe      configs/probe.py, configs/labels.py    crema_jax.evaluation.run: a checkpoint on
  finetune   configs/finetune.py,                   PTB-XL, or on your own labels table
             configs/labels.py:finetune             (configs/labels.py)
  embed      configs/embed.py                       crema_jax.inference: a checkpoint or a
  predict    configs/predict.py                     classifier folder on anyone's ECG files
  export     configs/export.py
  study      configs/study.py                       crema_jax.study: a grid of pretraining runs,
                                                    each probed, in one table
  verify     configs/verify.py                      a checkpoint's or classifier's checksums

Preparing data is its own command: `python -m crema_jax.data.prepare --config ...`.
Multi-host (TPU pod, SLURM, `launch/local_multiprocess.sh`): the same command on every
host; `jax.distributed` starts first (see crema_jax/distributed.py and --distributed)."""

import importlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from crema_jax import distributed
from crema_jax import overrides

# mode -> (module, function(config, workdir)). A job's module is imported only when it
# runs: evaluation's plotting and metrics libraries cost seconds of start-up on every
# pretraining process.
JOBS = {
    "pretrain": ("crema_jax.train", "pretrain"),
    "probe": ("crema_jax.evaluation.run", "evaluate"),
    "finetune": ("crema_jax.evaluation.run", "evaluate"),
    "demo": ("crema_jax.demo", "run"),
    "embed": ("crema_jax.inference.embed", "run"),
    "predict": ("crema_jax.inference.predict", "run"),
    "export": ("crema_jax.inference.export", "run"),
    "study": ("crema_jax.study", "run"),
    "verify": ("crema_jax.package.verify", "run"),
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", distributed.MODES,
    "jax.distributed.initialize(): auto = when a multi-process setting is found "
    "(these flags, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, SLURM, "
    "a Cloud TPU VM); on = always; off = never.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_LOCAL_DEVICES = flags.DEFINE_string(
    "local_device_ids", None, "Comma-separated accelerator ids this process uses "
    "(e.g. 0,1,2,3 for one process per GPU node under SLURM); default: JAX's choice.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config.mode not in JOBS:
    raise app.UsageError(f"config.mode={config.mode!r} is not one of {tuple(JOBS)}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file at INFO.
  distributed.initialize(
      _DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
      local_device_ids=distributed.parse_device_ids(_LOCAL_DEVICES.value))
  module, function = JOBS[config.mode]
  getattr(importlib.import_module(module), function)(config, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  unknown = overrides.check(sys.argv[1:])
  if unknown:  # Before absl applies them: it would end in a long traceback.
    sys.exit(f"crema_jax.main: {unknown}")
  app.run(main)
