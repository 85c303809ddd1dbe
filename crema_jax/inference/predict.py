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

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import atomic
from crema_jax.inference import embed
from crema_jax.inference import model as model_lib
from crema_jax.inference import outputs
from crema_jax.package import classifier as classifier_lib
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
  origin = found.encoder.origin()
  run_id = outputs.identity("predict", config, origin)
  outputs.check_workdir(workdir, run_id, config.overwrite)
  pre = found.preprocessing
  source, keys = embed.list_keys(config, pre)
  classify = jax.jit(model_lib.classify_fn(found.model, pre.normalize))
  start = time.perf_counter()
  skipped, table = [], []
  with tqdm.tqdm(total=len(keys), unit="file", desc="predict",
                 disable=not config.progress_bar) as bar:
    for batch in embed.stream_outputs(classify, found.params, config, pre, mesh,
                                      source, keys, skipped, bar):
      # Before a row is kept: `nan >= threshold` would be a silent negative.
      outputs.check_finite("probabilities", batch["out"][1], origin)
      table += rows(batch, found.classes, found.thresholds)
  seconds = time.perf_counter() - start
  if not table:
    raise embed.no_ecg_error(config.input, skipped)
  summary = {"run": run_id, "input": str(config.input), "classifier": origin,
             "task": found.spec["task"], "classes": list(found.classes),
             "thresholds": found.spec["thresholds"], "ecgs": len(table),
             "keys": len(keys), "skipped": len(skipped), "seconds": round(seconds, 3),
             "settings": embed.settings(config, pre), "preprocessing": pre.describe()}
  files = atomic.Outputs(workdir)
  atomic.write_csv(files.path("predictions.csv"),
                   ["key", "file", *(f"p_{c}" for c in found.classes), *found.classes],
                   table)
  atomic.write_json(files.path("skipped.json"), skipped)
  # The package's own card (a regular file: packages hold no links).
  atomic.write_bytes(files.path("MODEL_CARD.md"),
                     (found.path / "MODEL_CARD.md").read_bytes())
  files.commit("predict.json", summary)
  print(f"predicted {len(table)} ECGs ({len(skipped)} skipped: see "
        f"{workdir / 'skipped.json'}) -> {workdir / 'predictions.csv'}")
  return summary
