"""A checkpoint (or classifier folder) as portable StableHLO, loadable with only jax.

  python -m crema_jax.main --config configs/export.py --workdir /tmp/export \
      --config.checkpoint=/ckpt/crema/probe/classifiers/superdiagnostic

Writes encoder.jax (and classifier.jax for a classifier folder), export.json and the
model card; `--config.platforms='("cpu",)'` lowers for fewer platforms.
"""

import ml_collections

from configs import embed


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = embed.get_config(arg)
  config.mode = "export"
  del config["input"]
  return config
