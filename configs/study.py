"""The paper's experiments as studies: a grid of pretraining cells, each probed.

  python -m crema_jax.main --config configs/study.py:method --workdir /ckpt/study_method \
      --config.pretrain.data.data_dir=/data/prepared --config.pretrain.data.name=ptbxl
  python -m crema_jax.main --config configs/study.py:method,runlocal --workdir /tmp/study

The argument: the study, then options.
- `method`: GL / CL / HL on the paper's architecture (reference HL);
- `patch`: patch 60 / 125 / 250 at emb 1024, depth 2, each view the longest multiple of
  the patch in 10 s (reference 125);
- `size`: emb 256 / 512 / 1024 x depth 1 / 2 / 4 / 8, heads of width 64 (reference
  1024 x 2);
- `data`: 10 / 25 / 50 / 100% of the pretraining patients, nested (reference 100%);
- `runlocal`: every cell a demo-size run on the embedded synthetic PTB-XL (written and
  prepared first when absent), three seeds, in minutes on a laptop;
- `finetune`: also fine-tune every cell (`study.finetune`).
Every cell has the same budget: `pretrain.total_steps` x `pretrain.batch_size`.
`--config.study.cells=0,2` runs only those cells (see launch/study_array.sbatch).
"""

import ml_collections

from configs import common
from configs import demo
from configs import finetune
from configs import pretrain
from configs import probe

STUDIES = ("method", "patch", "size", "data")
# The probe of every cell: the paper's four binary tasks and the super-diagnostic set,
# at all the training labels, with intervals; no robustness or lead analyses.
TASKS = ("superdiagnostic", "MI", "STTC", "CD", "HYP")


def evaluation(get_config) -> ml_collections.ConfigDict:
  config = get_config()
  config.update(tasks=TASKS, label_fractions=(1.0,), seeds=(0,), bootstrap=200,
                robustness=(), reduced_leads=(), domains=(),
                random_init_baseline=False, plots=False, num_reconstructions=0,
                save_classifiers=False,
                data_from_checkpoint=True)  # Each cell on its pretraining data's folds.
  return config


def get_config(arg: str = "method") -> ml_collections.ConfigDict:
  parts = [p for p in arg.replace(":", ",").split(",") if p]
  name = parts[0] if parts else "method"
  unknown = set(parts[1:]) - {"runlocal", "finetune"}
  if name not in STUDIES or unknown:
    raise ValueError(f"configs/study.py:{arg}: the study is one of {STUDIES}, options "
                     f"runlocal, finetune (got {name!r}, {sorted(unknown)})")
  runlocal = "runlocal" in parts
  config = ml_collections.ConfigDict()
  config.mode = "study"
  config.study = ml_collections.ConfigDict({
      "name": name,
      "cells": "",                  # "": every cell; "0,2": those (SLURM array tasks).
      "seeds": (0, 1, 2),
      "finetune": "finetune" in parts,
      "bootstrap": 1000,            # Test resamples of the paired differences.
      "plot_tasks": TASKS,
      "methods": ("gl", "cl", "hl"),
      "patches": (60, 125, 250),
      "emb_dims": (256, 512, 1024),
      "depths": (1, 2, 4, 8),
      "head_dim": 64,
      "fractions": (0.1, 0.25, 0.5, 1.0),
      # A `random_init` row: the reference cell's probes also probe an untrained
      # encoder of its architecture (the floor every pretraining method must clear).
      "random_init": name == "method",
  })
  config.study.reference = {"method": "hl", "patch": "patch125",
                            "size": "emb1024_depth2", "data": "patients1"}[name]
  config.pretrain = pretrain.get_config("hl")
  config.pretrain.total_steps = 20_000
  config.probe = evaluation(probe.get_config)
  config.finetune = evaluation(finetune.get_config)
  config.demo_data = False          # Write and prepare the synthetic PTB-XL first.

  if runlocal:
    base = demo.get_config()
    config.pretrain = common.base_config("tiny", "hl")
    config.pretrain.data = base.data
    config.pretrain.demo_patients = base.demo_patients
    # The demo's budget: reconstruction starts to beat the zero predictor only after
    # ~150 steps (benchmarks/results/reconstruction_demo.json), so GL and HL need 300.
    config.pretrain.update(batch_size=base.batch_size, total_steps=base.total_steps,
                           log_every=25, checkpoint_every=100)
    config.pretrain.optimizer.update(lr=base.optimizer.lr,
                                     warmup_steps=base.optimizer.warmup_steps)
    config.demo_data = True
    config.study.bootstrap = 200
    config.study.update(patches=(50, 125, 250), emb_dims=(64, 128), depths=(1, 2),
                        head_dim=32, fractions=(0.25, 0.5, 1.0))
    config.study.reference = {"method": "hl", "patch": "patch125",
                              "size": "emb128_depth2", "data": "patients1"}[name]
    for evaluation_config in (config.probe, config.finetune):
      evaluation_config.probe.steps = 300
      evaluation_config.progress_bar = False
    config.finetune.finetune.update(steps=60, eval_every=20)
  return config
