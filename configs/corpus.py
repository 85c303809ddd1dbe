"""Pretraining on a mixed corpus of the public ECG sets, without PTB-XL leakage.

  python -m crema_jax.data.prepare --config configs/corpus.py \
      --config.data.data_dir=/data/prepared \
      --config.data.corpus.mimic_iv_ecg.raw_dir=/data/mimic-iv-ecg-1.0 \
      --config.data.corpus.code15.raw_dir=/data/code15 \
      --config.data.corpus.samitrop.raw_dir=/data/samitrop \
      --config.data.corpus.cinc2021.raw_dir=/data/challenge-2021/training \
      --config.data.leakage.ptbxl_dir=/data/ptb-xl-1.0.3
  python -m crema_jax.main --config configs/corpus.py --workdir /runs/corpus \
      --config.data.data_dir=/data/prepared --config.data.corpus.code15.raw_dir=...

Prepare first: pretraining refuses a data_dir without the corpus manifest, with the
prepare command to run. Sources left without
a raw_dir are not part of the corpus. Each source is prepared once into
`{data_dir}/{name}/`; the corpus manifest `{data_dir}/corpus/1.0.0/manifest.json`
lists them with their weights, and the Grain pipeline mixes them by weight
(`MapDataset.mix`). Patient ids are namespaced per source. The weights below follow
the sources' sizes (MIMIC-IV-ECG ~800k ECGs, CODE-15% ~345k, CinC 2021 ~88k without
its PTB-XL copy, SaMi-Trop ~1.6k); raise a small source's weight to see it more often.

The PTB-XL folder under `data.leakage.ptbxl_dir` is only a reference: its ECGs (all
ten folds by default, `exclude_folds`) and renamed copies of them (the CinC 2021
`HR*` records, found by id and by signal fingerprint) are left out of the corpus and
counted in the manifest; `crema_jax.data.leakage.check_checkpoint` lets a probe refuse
a checkpoint whose corpus overlaps its test folds.

`corpus.py:runlocal` is the small model and batch for a laptop.
"""

import ml_collections

from configs import common


def source(reader: str, weight: float, **fields) -> ml_collections.ConfigDict:
  """One corpus entry: a reader in crema_jax.data.readers.registry.READERS, its folder (set on
  the command line), its mixing weight, and any data field to override for it."""
  return ml_collections.ConfigDict({"reader": reader, "raw_dir": "", "weight": weight,
                                    **fields})


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  config = common.base_config("paper", "hl")
  data = config.data
  data.source = "corpus"
  data.name = "corpus"
  data.pretrain_folds = ()       # Every record of every source (none has folds).
  data.corpus = ml_collections.ConfigDict({
      "mimic_iv_ecg": source("mimic_iv_ecg", 0.6),
      "code15": source("code15", 0.3),
      "samitrop": source("samitrop", 0.02),
      # CPSC, CPSC-Extra, INCART (30 min: cut into 10 s windows), PTB, Georgia,
      # Chapman-Shaoxing, Ningbo; its PTB-XL copy is removed by the leakage guard.
      "cinc2021": source("cinc", 0.08, window_seconds=10.0),
      "hospital_dicom": source("dicom", 0.05),
  })
  data.leakage.exclude_folds = ()  # All ten PTB-XL folds.
  config.batch_size = 256
  config.optimizer.lr = 1.5e-4 * config.batch_size / 256
  config.total_steps = 200_000
  if "runlocal" in parts:
    common.runlocal(config)
  return config
