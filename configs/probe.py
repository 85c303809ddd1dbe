"""Linear probing of a pretrained CREMA checkpoint on PTB-XL (folds 1-8 / 9 / 10).

  python -m crema_jax.main --config configs/probe.py --workdir /ckpt/crema/probe \
      --config.checkpoint=/ckpt/crema

The model and data fields come from the checkpoint; `data.data_dir` / `data.name`
point the probe at another prepared PTB-XL. `configs/probe.py:quick` is a fast variant
(one seed, fewer shifts, fewer bootstrap resamples).
"""

import ml_collections

from crema_jax.evaluation import shifts


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "probe"
  config.checkpoint = ""                 # The pretraining workdir (or its checkpoints/).
  config.checkpoint_step = 0             # 0: the latest.
  config.seed = 0
  config.data = ml_collections.ConfigDict({"data_dir": "", "name": ""})  # "": as trained.
  config.pool = "checkpoint"             # "mean", "cls", or "checkpoint" (as trained).
  config.tasks = ("MI", "STTC", "CD", "HYP", "superdiagnostic")
  config.label_fractions = (1.0, 0.1, 0.01)  # Of the training ECGs, sampled by patient.
  config.seeds = (0, 1, 2)
  config.bootstrap = 1000                # Resamples for the test-fold 95% intervals.
  config.robustness = tuple(shifts.SHIFTS)
  config.random_init_baseline = True
  config.allow_test_overlap = False      # Probe even if pretraining saw test-fold ECGs.
  config.feature_batch_size = 64
  config.probe = ml_collections.ConfigDict(
      {"steps": 500, "lr": 1e-2, "weight_decay": 1e-4, "eval_every": 25})
  config.finetune = ml_collections.ConfigDict(
      {"steps": 2000, "batch_size": 64, "lr": 1e-4, "warmup_steps": 100,
       "weight_decay": 0.05, "layer_decay": 0.75, "eval_every": 100, "patience": 5})
  config.mesh = ml_collections.ConfigDict({"fsdp": 1})
  config.plots = True
  config.num_reconstructions = 3
  config.progress_bar = True

  if arg == "quick":
    config.seeds = (0,)
    config.bootstrap = 200
    config.robustness = ("noise_snr10", "baseline_wander_0.5mv", "powerline_50hz_0.2mv",
                         "limb_leads_only", "lead_I_only", "amplitude_x2", "rate_100hz")
  return config
