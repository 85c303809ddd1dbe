"""Checks a checkpoint's or classifier folder's files against their checksums.

  python -m crema_jax.main --config configs/verify.py --workdir /tmp/verify \
      --config.checkpoint=/ckpt/crema

A pretraining workdir: every checkpoint step (`--config.checkpoint_step=N`: that one);
a classifier folder (`classifiers/TASK`): itself. Writes verify.json; exits non-zero
naming each damaged, missing or added file.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "verify"
  config.checkpoint = ""      # A pretraining workdir or a classifiers/TASK folder.
  config.checkpoint_step = 0  # 0: every step of a pretraining workdir.
  return config
