"""A classifier's predictions for every ECG in a folder of files.

  python -m crema_jax.main --config configs/predict.py --workdir OUT \
      --config.checkpoint=EVAL_WORKDIR/classifiers/superdiagnostic --config.input=FOLDER

Writes OUT/predictions.csv, one row per ECG (a window of a long recording is an ECG
of its own, `key#wI`): key, file, then by the task's kind (`header`)
- binary / multi-label: `p_LABEL` (the sigmoid probability of each label, in the
  classifier's order) and `LABEL` (1 when p_LABEL reaches the label's threshold, chosen
  on the validation split);
- multi-class: `p_CLASS` (softmax probabilities) and `predicted_class`;
- regression: `predicted_NAME`, the value in the labels table's units;
OUT/skipped.json; OUT/predict.json; and a copy of the classifier's MODEL_CARD.md.
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


def header(classes, kind: str) -> list[str]:
  """predictions.csv's columns: key, file, then by the task's kind the predicted value
  (regression); the class probabilities and the predicted class (multi-class); each
  label's probability and its 0/1 decision at the classifier's threshold."""
  if kind == "regression":
    return ["key", "file", f"predicted_{classes[0]}"]
  probabilities = [f"p_{c}" for c in classes]
  return ["key", "file", *probabilities,
          *(["predicted_class"] if kind == "multiclass" else classes)]


def rows(batch: dict, classes, thresholds: np.ndarray, kind: str = "multilabel"
         ) -> list[list]:
  """One CSV row per ECG of a batch whose "out" is (features, outputs), `header`'s."""
  out = batch["out"][1]
  ids = zip(batch["key"], batch["source_file"])
  if kind == "regression":
    return [[key, file, f"{value[0]:.6g}"] for (key, file), value in zip(ids, out)]
  if kind == "multiclass":
    decisions = [[classes[k]] for k in np.argmax(out, axis=1)]
  else:
    decisions = (out >= thresholds[None, :]).astype(int)
  return [[key, file, *(f"{p:.6f}" for p in prob), *dec]
          for (key, file), prob, dec in zip(ids, out, decisions)]


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
  classify = jax.jit(model_lib.classify_fn(found.model, pre.normalize, found.kind))
  start = time.perf_counter()
  skipped, table = [], []
  with tqdm.tqdm(total=len(keys), unit="file", desc="predict",
                 disable=not config.progress_bar) as bar:
    for batch in embed.stream_outputs(classify, found.params, config, pre, mesh,
                                      source, keys, skipped, bar):
      # Before a row is kept: `nan >= threshold` would be a silent negative.
      outputs.check_finite("outputs", batch["out"][1], origin)
      table += rows(batch, found.classes, found.thresholds, found.kind)
  seconds = time.perf_counter() - start
  if not table:
    raise embed.no_ecg_error(config.input, skipped)
  summary = {"run": run_id, "input": str(config.input), "classifier": origin,
             "task": found.spec["task"], "kind": found.kind,
             "classes": list(found.classes),
             "thresholds": found.spec["thresholds"], "ecgs": len(table),
             "keys": len(keys), "skipped": len(skipped), "seconds": round(seconds, 3),
             "settings": embed.settings(config, pre), "preprocessing": pre.describe()}
  files = atomic.Outputs(workdir)
  atomic.write_csv(files.path("predictions.csv"), header(found.classes, found.kind),
                   table)
  atomic.write_json(files.path("skipped.json"), skipped)
  # The package's own card (a regular file: packages hold no links).
  atomic.write_bytes(files.path("MODEL_CARD.md"),
                     (found.path / "MODEL_CARD.md").read_bytes())
  files.commit("predict.json", summary)
  print(f"predicted {len(table)} ECGs ({len(skipped)} skipped: see "
        f"{workdir / 'skipped.json'}) -> {workdir / 'predictions.csv'}")
  return summary
