"""A classifier's predictions for every ECG in a folder of files.

  python -m crema_jax.main --config configs/predict.py --workdir OUT \
      --config.checkpoint=EVAL_WORKDIR/classifiers/superdiagnostic --config.input=FOLDER

Writes OUT/predictions.csv, one row per ECG (a window of a long recording is an ECG
of its own, `key#wI`): key, file, then `p_LABEL` (the sigmoid probability of each
label, in the classifier's order) and `LABEL` (1 when p_LABEL reaches the label's
threshold, chosen on the validation fold); OUT/skipped.json; OUT/predict.json; and a
copy of the classifier's MODEL_CARD.md.
"""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
import time

import jax
import ml_collections
import numpy as np

from crema_jax.inference import classifier as classifier_lib
from crema_jax.inference import embed
from crema_jax.inference import model as model_lib
from crema_jax import sharding


def rows(batch: dict, classes, thresholds: np.ndarray) -> list[list]:
  """One CSV row per ECG of a batch whose "out" is (features, probabilities)."""
  probabilities = batch["out"][1]
  decisions = (probabilities >= thresholds[None, :]).astype(int)
  return [[key, file, *(f"{p:.6f}" for p in prob), *dec]
          for key, file, prob, dec in zip(batch["key"], batch["source_file"], probabilities,
                                          decisions)]


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Predicts every ECG of `config.input`; returns the predict.json summary."""
  embed.check_config(config)
  if not classifier_lib.is_classifier(config.checkpoint):
    raise ValueError(f"checkpoint={config.checkpoint!r} is not a classifier folder "
                     f"(no {classifier_lib.SPEC_FILE}): predict needs a task's "
                     "classifier, e.g. EVAL_WORKDIR/classifiers/superdiagnostic")
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  found = classifier_lib.load(config.checkpoint, mesh)
  pre = found.preprocessing
  classify = jax.jit(model_lib.classify_fn(found.model, pre.normalize))
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  generated, skipped, num_keys = embed.stream_outputs(classify, found.params, config,
                                                      pre, mesh, "predict")
  count = 0
  with open(workdir / "predictions.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["key", "file", *(f"p_{c}" for c in found.classes),
                     *found.classes])
    for batch in generated:
      writer.writerows(rows(batch, found.classes, found.thresholds))
      count += len(batch["key"])
  seconds = time.perf_counter() - start
  (workdir / "skipped.json").write_text(json.dumps(skipped, indent=1))
  shutil.copy(found.path / "MODEL_CARD.md", workdir / "MODEL_CARD.md")
  summary = {"input": str(config.input), "input_source": config.input_source,
             "classifier": str(found.path), "task": found.spec["task"],
             "classes": list(found.classes),
             "thresholds": found.spec["thresholds"], "ecgs": count,
             "keys": num_keys, "skipped": len(skipped), "seconds": round(seconds, 3),
             "preprocessing": pre.describe()}
  (workdir / "predict.json").write_text(json.dumps(summary, indent=1))
  print(f"predicted {count} ECGs ({len(skipped)} skipped: see "
        f"{workdir / 'skipped.json'}) -> {workdir / 'predictions.csv'}")
  return summary
