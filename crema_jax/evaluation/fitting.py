"""The encoders under evaluation and the fits made on them: a linear probe on frozen
features, or LP-FT fine-tuning (the probe starts the head, then end to end), and the
scoring of a fit's test logits on the ECGs its task keeps.

`frozen` below is {"train", "val", "test": features_lib.extract_features output}:
"features" [n, emb], "position" [n] (prepared positions), "patient" [n].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import ml_collections
import numpy as np

from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune as finetune_lib
from crema_jax.evaluation import objectives
from crema_jax.evaluation import probe
from crema_jax.evaluation import scores
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax import models


@dataclasses.dataclass
class Encoder:
  """One encoder under evaluation: the data config it reads views with (the
  checkpoint's, with the evaluation's data fields), its model and parameters."""
  name: str
  config: ml_collections.ConfigDict
  model: models.CREMA
  params: Any

  def extract(self, prepared: storage.PreparedSource, positions: np.ndarray, mesh,
              batch_size: int, *, params: Any = None, shift: str | None = None,
              embed_fn: Callable | None = None,
              config: ml_collections.ConfigDict | None = None) -> dict:
    """`features.extract_features` of this encoder (or `params`) at `positions`."""
    return features_lib.extract_features(
        self.model, self.params if params is None else params, config or self.config,
        prepared, (), mesh, batch_size=batch_size, shift=shift, embed_fn=embed_fn,
        positions=positions)


@dataclasses.dataclass
class Fit:
  """One task fitted on one label fraction and seed.

  Attributes:
    test_scores: [test ECGs, classes] logits of every test-fold ECG (the task's kept
      rows are chosen when scoring).
    thresholds: [classes] F1 thresholds chosen on the validation fold.
    info: what was chosen on validation (val_auroc, l2 or best_step, ...).
    shifted: shift name -> its test_scores (filled for the primary fit only).
    head: the linear probe (probing only).
    test_features: the fine-tuned encoder's test features (fine-tuning only).
    apply: (prepared, positions, shift) -> [n, classes] logits of the fine-tuned
      model on other data (fine-tuning only).
    params: {"crema", "head"} the fine-tuned parameters (fine-tuning only).
  """
  test_scores: np.ndarray
  thresholds: np.ndarray
  info: dict
  shifted: dict = dataclasses.field(default_factory=dict)
  head: probe.LinearProbe | None = None
  test_features: np.ndarray | None = None
  apply: Callable | None = None
  params: Any = None


def fit_probe(task: tasks_lib.Task, frozen: dict, train_rows: np.ndarray,
              config: ml_collections.ConfigDict, seed: int) -> probe.LinearProbe:
  """A linear probe of `task` on frozen features: train rows `train_rows` (of
  frozen["train"]) the task keeps, validated on the fold-9 ECGs it keeps.
  Classification: a sigmoid (softmax: multiclass) head; regression: ridge."""
  train, val = frozen["train"], frozen["val"]
  rows = train_rows[task.keep[train["position"][train_rows]]]
  val_rows = task.rows(val["position"])
  return probe.train_linear_probe(
      train["features"][rows], task.labels[train["position"][rows]],
      val["features"][val_rows], task.labels[val["position"][val_rows]],
      steps=config.probe.steps, lr=config.probe.lr,
      l2_grid=tuple(config.probe.l2_grid), eval_every=config.probe.eval_every,
      seed=seed, kind=task.kind)


def probe_fit(task: tasks_lib.Task, frozen: dict, train_rows: np.ndarray,
              config: ml_collections.ConfigDict, seed: int) -> Fit:
  """`fit_probe`, its logits of every frozen["test"] ECG and what it chose."""
  fitted = fit_probe(task, frozen, train_rows, config, seed)
  if task.kind == "regression":
    info = {"val_r2": fitted.val_r2, "l2": fitted.l2, "l2_grid_val_r2": fitted.grid}
  else:
    info = {"val_auroc": fitted.val_auroc, "l2": fitted.l2, "l2_grid_val_auroc":
            fitted.grid, "best_step": fitted.best_step}
  return Fit(fitted.logits(frozen["test"]["features"]), fitted.thresholds, info,
             head=fitted)


def finetune_fit(encoder: Encoder, task: tasks_lib.Task, frozen: dict,
                 train_rows: np.ndarray, config: ml_collections.ConfigDict, seed: int,
                 prepared: storage.PreparedSource, test_positions: np.ndarray,
                 mesh) -> Fit:
  """LP-FT: the probe fitted on frozen features starts the head; then end to end."""
  lp = fit_probe(task, frozen, train_rows, config, seed)
  train, val = frozen["train"], frozen["val"]
  train_positions = train["position"][train_rows]
  train_positions = train_positions[task.keep[train_positions]]
  val_positions = val["position"][task.rows(val["position"])]
  result = finetune_lib.finetune(
      encoder.model, encoder.params, encoder.config, config.finetune, prepared,
      train_positions, val_positions, task.labels, mesh, head=lp.raw_head(), seed=seed,
      kind=task.kind)
  emb = encoder.model.emb_dim
  both = functools.partial(finetune_lib.features_and_logits, encoder.model)
  extract = functools.partial(encoder.extract, params=result.params,
                              batch_size=config.feature_batch_size)
  val_scores = objectives.scores_of(task.kind, extract(
      prepared, val_positions, mesh, embed_fn=both)["features"][:, emb:])
  test = extract(prepared, test_positions, mesh, embed_fn=both)["features"]
  thresholds = (lp.thresholds if task.kind == "regression" else
                scores.best_f1_thresholds(task.labels[val_positions], val_scores))
  metric = objectives.validation_metric(task.kind)
  info = {f"val_{metric}": result.val_score, "best_step": result.best_step,
          f"probe_val_{metric}": lp.val_r2 if metric == "r2" else lp.val_auroc,
          "l2": lp.l2, "history": result.history}
  fit = Fit(objectives.scores_of(task.kind, test[:, emb:]), thresholds, info,
            test_features=test[:, :emb], params=result.params)
  logits_fn = functools.partial(finetune_lib.logits, encoder.model)
  fit.apply = lambda data, positions, shift=None: objectives.scores_of(
      task.kind, extract(data, positions, mesh, embed_fn=logits_fn,
                         shift=shift)["features"])
  return fit


def score(task: tasks_lib.Task, split: dict, logits: np.ndarray,
          thresholds: np.ndarray, config: ml_collections.ConfigDict, bootstrap: int,
          seed: int) -> dict:
  """`scores.score_task` on the ECGs of `split` the task keeps (`logits`: [len(split),
  classes])."""
  rows = task.rows(split["position"])
  groups = split["patient"][rows] if config.bootstrap_unit == "patient" else None
  return scores.score_task(task.labels[split["position"][rows]], logits[rows],
                           thresholds, task.classes, bootstrap=bootstrap, seed=seed,
                           groups=groups, kind=task.kind)
