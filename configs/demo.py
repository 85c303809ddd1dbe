"""The embedded demo: synthetic PTB-XL -> prepare -> pretrain (HL) -> probe, on 2 CPU cores.

  python -m crema_jax.main --config configs/demo.py --workdir demo_output/run

`configs/demo.py:test` is the still smaller variant the tests use.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = common.data_config()
  config.data.raw_dir = common.DEMO_RAW_DIR
  config.data.data_dir = common.DEMO_DATA_DIR
  config.data.records_per_shard = 100
  config.demo_patients = 300     # Writes the synthetic PTB-XL folder when raw_dir is absent.

  config.model = ml_collections.ConfigDict(dict(
      patch_size=50, num_leads=12, token_layout="joint"))
  config.mask_ratio = 0.75
  config.batch_size = 32

  if arg == "test":
    config.demo_patients = 40
    config.data.records_per_shard = 20
    config.batch_size = 8
  return config
