"""Your own labels: prepare a hospital's labelled folder, then probe (or fine-tune) a
CREMA checkpoint on its labels. One config for both commands:

  # 1. The folder's ECG files (any format ecg_files reads) and its labels table.
  python -m crema_jax.data.prepare --config configs/labels.py \
      --config.data.raw_dir=/data/hospital --config.data.labels_table=/data/labels.csv \
      --config.data.data_dir=/data/prepared
  # 2. Linear probes (configs/labels.py:finetune: LP-FT) of the tasks it declares.
  python -m crema_jax.main --config configs/labels.py --workdir /runs/hospital \
      --config.checkpoint=/ckpt/crema --config.data.data_dir=/data/prepared \
      --config.tasks='("binary:low_ef","regression:potassium")'

The table (`crema_jax/data/labels_table.py`): a CSV with a `file` column (relative to
raw_dir), optional `patient` and `split` (train/val/test) columns, and label columns; a
task is `[NAME=]KIND:COLUMN[,COLUMN...]` with KIND binary, multilabel, multiclass or
regression. Without a split column the evaluation draws a seeded, patient-disjoint split
stratified on the tasks' labels (`labels.split_fractions`, `labels.split_seed`) and
writes it to the workdir (`split.json`), where later runs read it back. Each task gets
a classifier folder (`classifiers/NAME`) that `configs/predict.py` uses.

`configs/labels.py:finetune`: LP-FT. `configs/labels.py:quick`: one seed, fewer
bootstrap resamples (the README's run on the demo's folder).
"""

import ml_collections

from configs import common
from configs import probe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = probe.get_config()
  # The folder as prepare reads it; the evaluation takes data_dir, name and eval_leads.
  config.data = common.data_config()
  config.data.source = "ecg_files"
  config.data.name = "own_labels"
  config.data.pretrain_folds = ()
  config.data.train_folds = config.data.val_folds = config.data.test_folds = ()
  config.data.leakage.ptbxl_dir = ""
  config.tasks = ()                      # Required: "[NAME=]KIND:COLUMN[,COLUMN...]".
  config.labels = ml_collections.ConfigDict({
      "table": "",                       # "": the table prepare kept with the data.
      "split_fractions": (0.7, 0.1, 0.2),  # train, val, test (no split column).
      "split_seed": 0,
  })
  config.label_fractions = (1.0, 0.1)
  # PTB-XL analyses that need its statements or folds stay off; the others hold.
  config.reduced_leads = ()
  config.robustness = ("noise_snr10", "baseline_wander_0.5mv", "lead_I_only")
  config.num_reconstructions = 0

  if arg in ("quick", "finetune_quick"):
    config.seeds = (0,)
    config.label_fractions = (1.0, 0.25)  # The demo folder's rarest rhythm at 10%: refused.
    config.bootstrap = 200
  if arg.startswith("finetune"):
    config.mode = "finetune"
    config.robustness = ()
  return config
