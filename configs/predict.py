"""A classifier's label probabilities and decisions for every ECG in a folder.

  python -m crema_jax.main --config configs/predict.py --workdir /tmp/predict \
      --config.checkpoint=/ckpt/crema/probe/classifiers/superdiagnostic \
      --config.input=/data/hospital_ecgs

Writes predictions.csv (p_LABEL and LABEL columns, thresholds from the validation
fold), skipped.json and the classifier's MODEL_CARD.md. Fields as configs/embed.py.
"""

import ml_collections

from configs import embed


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = embed.get_config(arg)
  config.mode = "predict"
  return config
