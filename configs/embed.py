"""Features of every ECG in a folder of files (any reader; default `ecg_files`).

  python -m crema_jax.main --config configs/embed.py --workdir /tmp/embed \
      --config.checkpoint=/ckpt/crema --config.input=/data/hospital_ecgs

`checkpoint`: a pretraining workdir or an evaluation's classifiers/TASK folder (its
fine-tuned encoder). The preprocessing (rate, leads, length, normalisation) is the
checkpoint's; `input_source` names the reader (crema_jax/data/readers/registry.py).
`configs/predict.py` and `configs/export.py` start from this config.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "embed"
  config.checkpoint = ""             # Pretraining workdir or classifiers/TASK folder.
  config.checkpoint_step = 0         # 0: the latest (pretraining checkpoints).
  config.input = ""                  # The folder of ECG files.
  config.input_source = "ecg_files"  # Any reader of the registry (dicom, wfdb, ...).
  config.input_leads = ()            # Leads the files hold, if fewer than the
                                     # checkpoint's: the others are zeroed.
  config.lead_aliases = ""           # File lead names to rename, e.g. "MLII=II".
  # GE MUSE stores 8 leads (I, II, V1-V6): III, aVR, aVL, aVF are computed from I
  # and II (Einthoven, Goldberger), as MUSE itself displays them.
  config.derive_limb_leads = True
  config.long_seconds = 60.0         # Longer recordings: windows of the view length
  config.window_stride_seconds = 0.0  # every stride (0: the view length); 0: off.
  config.batch_size = 64
  config.read_workers = 2            # Processes reading files while the model runs.
  # Address space (MB) a reading worker may take beyond its libraries: a file whose
  # reading needs more is skipped, saying so (0: no cap).
  config.read_memory_mb = 4096
  config.progress_bar = True
  config.mesh = ml_collections.ConfigDict({"fsdp": 1})
  config.platforms = ("cpu", "cuda")  # export: platforms to lower for.
  # A workdir holding another run's outputs is refused unless this is True.
  config.overwrite = False
  config.part_files = 1024           # embed: files per resumable part.
  return config
