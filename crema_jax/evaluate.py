"""Linear probing of a CREMA encoder on PTB-XL folds.

Features are the pooled encoder outputs of whole (unmasked) ECGs, computed once per
fold set in sharded batches; a linear head with one sigmoid output per superclass is
trained on folds 1-8 with AdamW, picking the step with the best validation (fold 9)
macro AUROC, and scored on the test fold (10). Column k of that head is the paper's
binary task "class k vs the rest" (MI, STTC, CD, HYP); all five columns together are
the standard superdiagnostic multi-label task.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn import metrics as skmetrics

from crema_jax import models
from crema_jax import sharding
from crema_jax.data import pipeline
from crema_jax.data import records
from crema_jax.data import storage

BINARY_TASKS = ("MI", "STTC", "CD", "HYP")


def extract_features(model: models.CREMA, params: Any, config: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, folds, mesh,
                     batch_size: int = 64) -> dict[str, np.ndarray]:
  """Pooled features of every ECG of `folds`: features [n, emb], labels [n, 5],
  patient [n], ecg_id [n]."""
  devices = mesh.size
  batch_size = -(-batch_size // devices) * devices
  embed = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.embed))
  out = {"features": [], "labels": [], "patient": [], "ecg_id": []}
  for batch in pipeline.eval_dataset(config, prepared, folds, batch_size):
    n = len(batch["view"])
    view = np.pad(batch["view"], ((0, batch_size - n), (0, 0), (0, 0)))
    features = embed(params, sharding.global_batch(mesh, {"view": view})["view"])
    out["features"].append(np.asarray(jax.device_get(features))[:n])
    for key in ("labels", "patient", "ecg_id"):
      out[key].append(batch[key])
  return {k: np.concatenate(v) for k, v in out.items()}


def auroc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] AUROC (NaN where a class has only one label value)."""
  return np.array([skmetrics.roc_auc_score(labels[:, k], scores[:, k])
                   if 0 < labels[:, k].sum() < len(labels) else np.nan
                   for k in range(labels.shape[1])])


def auprc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  return np.array([skmetrics.average_precision_score(labels[:, k], scores[:, k])
                   if labels[:, k].sum() > 0 else np.nan
                   for k in range(labels.shape[1])])


def train_linear_probe(train: dict, val: dict, *, steps: int = 500, lr: float = 1e-2,
                       weight_decay: float = 1e-4, eval_every: int = 25,
                       seed: int = 0) -> dict[str, np.ndarray]:
  """A linear head on standardised features (full-batch AdamW, BCE), kept at the step
  with the best validation macro AUROC. Returns w [emb, 5], b [5], mean, std."""
  mean, std = train["features"].mean(0), train["features"].std(0) + 1e-6
  x_train = jnp.asarray((train["features"] - mean) / std)
  y_train = jnp.asarray(train["labels"])
  x_val = (val["features"] - mean) / std
  dim, classes = x_train.shape[1], y_train.shape[1]
  params = {"w": jax.random.normal(jax.random.key(seed), (dim, classes)) * 0.01,
            "b": jnp.zeros((classes,))}
  optimizer = optax.adamw(lr, weight_decay=weight_decay)
  opt_state = optimizer.init(params)

  def loss_fn(p):
    logits = x_train @ p["w"] + p["b"]
    return optax.sigmoid_binary_cross_entropy(logits, y_train).mean()

  @jax.jit
  def step(p, s):
    grads = jax.grad(loss_fn)(p)
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  best, best_auc = jax.device_get(params), -np.inf
  for i in range(1, steps + 1):
    params, opt_state = step(params, opt_state)
    if i % eval_every == 0 or i == steps:
      p = jax.device_get(params)
      auc = np.nanmean(auroc_per_class(val["labels"], x_val @ p["w"] + p["b"]))
      if auc > best_auc:
        best, best_auc = p, auc
  return {"w": np.asarray(best["w"]), "b": np.asarray(best["b"]), "mean": mean,
          "std": std, "val_macro_auroc": float(best_auc)}


def score(probe: dict, split: dict) -> dict[str, Any]:
  """AUROC/AUPRC per task and macro on one split."""
  logits = (split["features"] - probe["mean"]) / probe["std"] @ probe["w"] + probe["b"]
  auroc = auroc_per_class(split["labels"], logits)
  auprc = auprc_per_class(split["labels"], logits)
  result = {"n": int(len(logits))}
  for k, name in enumerate(records.SUPERCLASSES):
    result[name] = {"auroc": float(auroc[k]), "auprc": float(auprc[k])}
  binary = [records.SUPERCLASSES.index(t) for t in BINARY_TASKS]
  result["superdiagnostic_macro_auroc"] = float(np.nanmean(auroc))
  result["overall"] = float(np.nansum(auroc[binary]) + np.nansum(auprc[binary]))
  return result


def linear_probe(model: models.CREMA, params: Any, config: ml_collections.ConfigDict,
                 prepared: storage.PreparedSource, mesh) -> dict[str, Any]:
  """Features on train/val/test folds, the probe, and its test-fold scores."""
  data = config.data
  splits = {name: extract_features(model, params, config, prepared, folds, mesh)
            for name, folds in (("train", data.train_folds), ("val", data.val_folds),
                                ("test", data.test_folds))}
  probe = train_linear_probe(splits["train"], splits["val"], seed=config.seed)
  return {"val_macro_auroc": probe["val_macro_auroc"],
          "test": score(probe, splits["test"])}


def probe_pretrained_and_random(config: ml_collections.ConfigDict,
                                workdir: str | pathlib.Path) -> dict[str, Any]:
  """Probes the run's latest checkpoint and a random-initialised encoder (the baseline
  row) the same way; prints a table and writes `{workdir}/probe_results.json`."""
  from crema_jax import train  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(config.mesh.fsdp)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  model = train.build_model(config)
  step, params = train.restore_params(config, workdir, mesh)
  random_params = models.init_params(model, jax.random.key(config.seed + 1),
                                     config.mask_ratio)
  results = {f"crema_step{step}": linear_probe(model, params, config, prepared, mesh),
             "random_init": linear_probe(model, random_params, config, prepared, mesh)}
  pathlib.Path(workdir, "probe_results.json").write_text(json.dumps(results, indent=1))
  if jax.process_index() == 0:
    print(results_table(results))
    print(f"probe results: {pathlib.Path(workdir, 'probe_results.json')}")
  return results


def results_table(results: dict[str, Any]) -> str:
  """A markdown table of test-fold AUROC per task, one row per encoder."""
  header = ["encoder", *BINARY_TASKS, "5-class macro", "overall"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, result in results.items():
    test = result["test"]
    cells = [name, *(f"{test[t]['auroc']:.3f}" for t in BINARY_TASKS),
             f"{test['superdiagnostic_macro_auroc']:.3f}", f"{test['overall']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
