"""CREMA pretraining with the paper's best model (emb 1024, depth 2, patch 125).

  python -m crema_jax.main --config configs/pretrain.py:hl --workdir gs://BUCKET/crema \
      --config.data.data_dir=gs://BUCKET/prepared --config.data.name=ptbxl

The argument picks the objective: `gl` (masked reconstruction only), `cl` (sample- and
patient-level contrastive only) or `hl` (hybrid, the paper's best). `hl,runlocal` is a
small variant for a laptop.
"""

import ml_collections

from configs import common


def get_config(arg: str = "hl") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  preset = next((p for p in parts if p in ("gl", "cl", "hl")), "hl")
  config = common.base_config("paper", preset)
  config.batch_size = 256
  config.optimizer.lr = 1.5e-4 * config.batch_size / 256
  config.total_steps = 100_000
  if "runlocal" in parts:
    config.model = common.model_config("tiny")
    config.batch_size = 16
    config.total_steps = 20
    config.log_every = 5
    config.checkpoint_every = 10
  return config
