"""Classification scores of a probe: AUROC, AUPRC, F1 at a validation-chosen threshold,
and bootstrap confidence intervals. Inputs are numpy arrays `labels [n, classes]` (0/1)
and `scores [n, classes]` (logits or probabilities: only their order matters).

A class whose labels are all one value has no AUROC; it scores NaN, never an error, so
that a small split (1% of the training ECGs, the demo's test fold) still reports the
rest.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn import metrics as skmetrics


def _has_both(labels: np.ndarray) -> bool:
  return 0 < labels.sum() < len(labels)


def auroc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] area under the ROC curve (NaN where a class has one label value)."""
  return np.array([skmetrics.roc_auc_score(labels[:, k], scores[:, k])
                   if _has_both(labels[:, k]) else np.nan
                   for k in range(labels.shape[1])])


def auprc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] average precision (NaN where a class has no positive)."""
  return np.array([skmetrics.average_precision_score(labels[:, k], scores[:, k])
                   if labels[:, k].sum() > 0 else np.nan
                   for k in range(labels.shape[1])])


def best_f1_thresholds(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] the score threshold that maximises F1 (predict positive at score >=
  threshold), chosen on a validation split; +inf where a class has no positive."""
  thresholds = np.full(labels.shape[1], np.inf)
  for k in range(labels.shape[1]):
    if labels[:, k].sum() == 0:
      continue
    precision, recall, cut = skmetrics.precision_recall_curve(labels[:, k], scores[:, k])
    # precision/recall have one more entry than cut (the recall-0 end point).
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1],
                                                        1e-12)
    thresholds[k] = cut[int(np.argmax(f1))]
  return thresholds


def f1_per_class(labels: np.ndarray, scores: np.ndarray,
                 thresholds: np.ndarray) -> np.ndarray:
  """[classes] F1 of the predictions `scores >= thresholds` (NaN: no positive)."""
  predicted = scores >= thresholds[None, :]
  return np.array([skmetrics.f1_score(labels[:, k], predicted[:, k], zero_division=0.0)
                   if labels[:, k].sum() > 0 else np.nan
                   for k in range(labels.shape[1])])


def macro(values: np.ndarray) -> float:
  """The mean over classes that have a value (NaN when none has)."""
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray,
                 statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 num_samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """Percentile bootstrap interval of `statistic(labels, scores) -> [k]` over ECGs.

  Resamples the n ECGs with replacement `num_samples` times; resamples on which a
  class's statistic is undefined (NaN) are left out for that class. Returns (low, high),
  each [k] (NaN where fewer than 10 resamples gave a value).
  """
  rng = np.random.default_rng(seed)
  n = len(labels)
  values = np.stack([statistic(labels[idx], scores[idx])
                     for idx in rng.integers(0, n, size=(num_samples, n))])
  tail = 100 * (1 - level) / 2
  low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
  for k in range(values.shape[1]):
    finite = values[np.isfinite(values[:, k]), k]
    if len(finite) >= 10:
      low[k], high[k] = np.percentile(finite, [tail, 100 - tail])
  return low, high


def _with_macro(per_class: Callable[[np.ndarray, np.ndarray], np.ndarray]
                ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """A statistic [classes] -> [classes + 1] whose last entry is the macro mean."""
  def statistic(labels, scores):
    values = per_class(labels, scores)
    return np.append(values, macro(values))
  return statistic


def score_task(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
               class_names: tuple[str, ...], *, bootstrap: int = 0,
               seed: int = 0) -> dict:
  """Every metric of one task on one split.

  Args:
    labels, scores: [n, classes] for the task's classes (one column for a binary task).
    thresholds: [classes] F1 thresholds chosen on the validation split.
    class_names: a name for each column.
    bootstrap: resamples for the 95% intervals of AUROC and AUPRC (0: none).

  Returns:
    {"n", "auroc", "auprc", "f1" (macro over classes), "per_class": {name: {...}},
     and with bootstrap "auroc_ci", "auprc_ci": [low, high] of the macro value}.
  """
  auroc = auroc_per_class(labels, scores)
  auprc = auprc_per_class(labels, scores)
  f1 = f1_per_class(labels, scores, thresholds)
  result = {"n": int(len(labels)), "auroc": macro(auroc), "auprc": macro(auprc),
            "f1": macro(f1), "per_class": {
                name: {"auroc": float(auroc[k]), "auprc": float(auprc[k]),
                       "f1": float(f1[k]), "threshold": float(thresholds[k]),
                       "positives": int(labels[:, k].sum())}
                for k, name in enumerate(class_names)}}
  if bootstrap:
    for name, per_class in (("auroc", auroc_per_class), ("auprc", auprc_per_class)):
      low, high = bootstrap_ci(labels, scores, _with_macro(per_class), bootstrap, seed)
      result[f"{name}_ci"] = [float(low[-1]), float(high[-1])]
  return result
