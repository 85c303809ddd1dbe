"""The embedded demo: synthetic PTB-XL -> prepare -> pretrain (HL) -> probe, on 2 CPU cores.

`crema_jax/demo.py` runs it (`mode="demo"`): the synthetic PTB-XL folder is written to
`data.raw_dir` when absent and prepared into `data.data_dir` when its manifest is
missing; pretraining and the probe then run as they do on downloaded data. The probe
(`config.evaluation`, a `configs/probe.py` config) runs on the checkpoint the
pretraining leaves and writes its results under `{workdir}/probe`.

  python -m crema_jax.main --config configs/demo.py --workdir demo_output/run

`configs/demo.py:test` is the still smaller variant the tests use.
"""

import ml_collections

from configs import common
from configs import probe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = common.base_config("tiny", "hl")
  config.mode = "demo"
  config.data.raw_dir = common.DEMO_RAW_DIR
  config.data.data_dir = common.DEMO_DATA_DIR
  config.data.records_per_shard = 100
  config.demo_patients = 300        # Written to data.raw_dir when that folder is absent.
  config.batch_size = 32
  config.total_steps = 300
  config.optimizer.lr = 1e-3
  config.optimizer.warmup_steps = 30
  config.log_every = 10
  config.checkpoint_every = 100
  # The probe that follows pretraining (`checkpoint` is set to the demo's workdir);
  # `--config.probe_after=False` stops after pretraining.
  config.probe_after = True
  config.evaluation = probe.get_config("quick")
  config.evaluation.data_from_checkpoint = True  # The demo's prepared PTB-XL layout.
  config.evaluation.label_fractions = (1.0, 0.1)
  config.evaluation.seeds = (0, 1)

  if arg == "test":
    config.demo_patients = 40
    config.data.records_per_shard = 20
    config.batch_size = 8
    config.total_steps = 6
    config.log_every = 2
    config.checkpoint_every = 2
    config.progress_bar = False
    config.evaluation.label_fractions = (1.0, 0.5)
    config.evaluation.bootstrap = 20
    config.evaluation.robustness = ("noise_snr10", "lead_I_only")
    config.evaluation.probe.steps = 50
    config.evaluation.num_reconstructions = 2
    config.evaluation.progress_bar = False
  return config
