"""Scores of a probe: for classification AUROC, AUPRC, F1 at a validation-chosen
threshold (multi-class: of the arg-max class, and accuracy); for regression MAE, R^2
and Pearson r; bootstrap confidence intervals of each. Inputs are numpy arrays `labels
[n, classes]` (0/1; regression: [n, 1] values) and `scores [n, classes]` (logits or
probabilities: only their order matters; regression: the predicted values).

A class whose labels are all one value has no AUROC; it scores NaN, never an error, so
that a small split (1% of the training ECGs, the demo's test fold) still reports the
rest.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats
from sklearn import metrics as skmetrics


def _has_both(labels: np.ndarray) -> bool:
  return 0 < labels.sum() < len(labels)


def auroc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] area under the ROC curve (NaN where a class has one label value).

  The Mann-Whitney statistic from the scores' ranks (ties averaged), every class at once:
  equal to sklearn's roc_auc_score, ~100x faster on many classes, which is what makes
  1000 bootstrap resamples of the 71-statement task affordable.
  """
  labels = np.asarray(labels, bool)
  ranks = stats.rankdata(np.asarray(scores, np.float64), axis=0)
  positives = labels.sum(axis=0)
  negatives = len(labels) - positives
  rank_sum = np.where(labels, ranks, 0.0).sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    auroc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
  return np.where((positives > 0) & (negatives > 0), auroc, np.nan)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
  """sklearn's average_precision_score of one class (labels [n] 0/1 with a positive):
  sum over score thresholds of (recall step) x precision, tied scores one threshold."""
  order = np.argsort(-scores, kind="stable")
  y, s = labels[order].astype(np.float64), scores[order]
  last_of_tie = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
  tp = np.cumsum(y)[last_of_tie]
  precision = tp / (last_of_tie + 1)
  recall_step = np.diff(np.r_[0.0, tp]) / tp[-1]
  return float((recall_step * precision).sum())


def auprc_per_class(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """[classes] average precision (NaN where a class has no positive)."""
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  return np.array([average_precision(labels[:, k], scores[:, k])
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


def mae(values: np.ndarray, predicted: np.ndarray) -> float:
  return float(np.mean(np.abs(predicted - values))) if len(values) else float("nan")


def r2(values: np.ndarray, predicted: np.ndarray) -> float:
  """Coefficient of determination, 1 - SSE / SST (NaN when the values are constant)."""
  total = np.sum((values - np.mean(values)) ** 2) if len(values) else 0.0
  return float(1 - np.sum((predicted - values) ** 2) / total) if total > 0 else float("nan")


def pearson_r(values: np.ndarray, predicted: np.ndarray) -> float:
  if len(values) < 2 or np.ptp(values) == 0 or np.ptp(predicted) == 0:
    return float("nan")
  return float(np.corrcoef(values, predicted)[0, 1])


REGRESSION_METRICS = {"mae": mae, "r2": r2, "pearson_r": pearson_r}


def regression_scores(values: np.ndarray, predicted: np.ndarray, *, bootstrap: int = 0,
                      seed: int = 0, groups: np.ndarray | None = None) -> dict:
  """{"n", "mae", "r2", "pearson_r", "mean", "std" (of the values), and with
  bootstrap "mae_ci", "r2_ci", "pearson_r_ci" and "bootstrap"} of [n] values and
  their [n] predictions."""
  values = np.asarray(values, np.float64).ravel()
  predicted = np.asarray(predicted, np.float64).ravel()
  result = {"n": int(len(values)),
            **{name: fn(values, predicted) for name, fn in REGRESSION_METRICS.items()},
            "mean": float(np.mean(values)) if len(values) else float("nan"),
            "std": float(np.std(values)) if len(values) else float("nan")}
  if bootstrap and len(values):
    samples, _ = bootstrap_samples(np.zeros((len(values), 0)), bootstrap, seed, groups)
    for name, fn in REGRESSION_METRICS.items():
      low, high = _percentiles(np.array([[fn(values[i], predicted[i])]
                                         for i in samples]), 0.95)
      result[f"{name}_ci"] = [float(low[0]), float(high[0])]
    result["bootstrap"] = {"resamples": int(bootstrap), "redrawn": 0,
                           "unit": "ecg" if groups is None else "patient"}
  return result


def bootstrap_samples(labels: np.ndarray, num_samples: int, seed: int = 0,
                      groups: np.ndarray | None = None) -> tuple[list[np.ndarray], int]:
  """The PTB-XL benchmark's resamples: (index arrays, how many draws were rejected).

  A resample draws the n ECGs with replacement, or with `groups` ([n] e.g. patient ids)
  as many groups as there are, each bringing all its ECGs (a cluster bootstrap: ECGs of
  one patient are not independent). A draw in which a class that has positives and
  negatives in the full set lacks either is drawn again, so every resample scores every
  class (the benchmark redraws those without a positive). ValueError, naming the
  class, when valid resamples are too rare to find within 100 x num_samples draws.
  """
  labels = np.asarray(labels, bool).reshape(len(labels), -1)
  n = len(labels)
  rng = np.random.default_rng(seed)
  positives = labels.sum(axis=0)
  scored = (positives > 0) & (positives < n)
  if groups is not None:
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"),
                       np.cumsum(np.bincount(inverse))[:-1])
  samples, rejected, lacking = [], 0, np.zeros(labels.shape[1], np.int64)
  while len(samples) < num_samples:
    if rejected > 100 * max(num_samples, 1):
      worst = int(np.argmax(lacking))
      raise ValueError(
          f"bootstrap: class {worst} ({int(positives[worst])} positives of {n}) is "
          f"missing from {rejected} of {rejected + len(samples)} resamples; too few "
          "test ECGs of it for an interval (drop the class, or bootstrap=0)")
    if groups is None:
      idx = rng.integers(0, n, n)
    else:
      idx = np.concatenate([members[g] for g in rng.integers(0, len(members),
                                                             len(members))])
    drawn = labels[idx].sum(axis=0)
    missing = scored & ((drawn == 0) | (drawn == len(idx)))
    if missing.any():
      rejected += 1
      lacking += missing
      continue
    samples.append(idx)
  return samples, rejected


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray,
                 statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 num_samples: int = 1000, seed: int = 0, level: float = 0.95,
                 groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Percentile bootstrap interval of `statistic(labels, scores) -> [k]` over
  `bootstrap_samples`. Returns (low, high), each [k] (NaN where fewer than 10 resamples
  gave a value)."""
  samples, _ = bootstrap_samples(labels, num_samples, seed, groups)
  return _percentiles(np.stack([statistic(labels[i], scores[i]) for i in samples]),
                      level)


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
  tail = 100 * (1 - level) / 2
  low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
  for k in range(values.shape[1]):
    finite = values[np.isfinite(values[:, k]), k]
    if len(finite) >= 10:
      low[k], high[k] = np.percentile(finite, [tail, 100 - tail])
  return low, high


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
  return macro(auroc_per_class(labels, scores))


def paired_macro_auroc(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                       num_samples: int = 1000, seed: int = 0,
                       groups: np.ndarray | None = None, level: float = 0.95,
                       statistic: Callable[[np.ndarray, np.ndarray], float] = macro_auroc
                       ) -> dict:
  """Macro AUROC (or `statistic`, e.g. a regression's `mae` of [n] values) of two
  scorers of the same ECGs, and their difference with a paired bootstrap interval: both
  are scored on the same resamples, so what they share (hard and easy ECGs) cancels out
  of the difference.

  Returns {"a", "b", "difference" (a - b on the full data), "ci": [low, high],
  "p_value" (two-sided: twice the smaller share of resamples on either side of 0,
  at most 1), "resamples"}; JSON-ready floats.
  """
  a, b = statistic(labels, scores_a), statistic(labels, scores_b)
  out = {"a": a, "b": b, "difference": a - b, "ci": [float("nan")] * 2,
         "p_value": float("nan"), "resamples": int(num_samples)}
  if not num_samples or not len(labels):
    return out
  try:
    classes = labels if statistic is macro_auroc else np.zeros((len(labels), 0))
    samples, _ = bootstrap_samples(classes, num_samples, seed, groups)
  except ValueError as e:  # Too few test ECGs of a class: no interval, said why.
    return {**out, "resamples": 0, "error": str(e)}
  diffs = np.array([statistic(labels[i], scores_a[i]) - statistic(labels[i], scores_b[i])
                    for i in samples])
  low, high = _percentiles(diffs[:, None], level)
  out["ci"] = [float(low[0]), float(high[0])]
  out["p_value"] = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))
  return out


def _with_macro(per_class: Callable[[np.ndarray, np.ndarray], np.ndarray]
                ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """A statistic [classes] -> [classes + 1] whose last entry is the macro mean."""
  def statistic(labels, scores):
    values = per_class(labels, scores)
    return np.append(values, macro(values))
  return statistic


def score_task(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
               class_names: tuple[str, ...], *, bootstrap: int = 0,
               seed: int = 0, groups: np.ndarray | None = None,
               kind: str = "multilabel") -> dict:
  """Every metric of one task on one split (`kind`: regression -> `regression_scores`;
  multiclass: F1 and accuracy of the arg-max class, not of thresholds).

  Args:
    labels, scores: [n, classes] for the task's classes (one column for a binary task).
    thresholds: [classes] F1 thresholds chosen on the validation split.
    class_names: a name for each column.
    bootstrap: resamples for the 95% intervals of AUROC and AUPRC (0: none).
    groups: [n] cluster ids (patients) for a cluster bootstrap; None: per ECG.

  Returns:
    {"n", "auroc", "auprc", "f1" (macro over classes), "per_class": {name: {...}},
     and with bootstrap "auroc_ci", "auprc_ci": [low, high] of the macro value and
     "bootstrap": {"resamples", "unit", "redrawn"}}.
  """
  if kind == "regression":
    return regression_scores(labels, scores, bootstrap=bootstrap, seed=seed,
                             groups=groups)
  labels = np.asarray(labels).reshape(len(labels), len(class_names))
  scores = np.asarray(scores, np.float64).reshape(len(labels), len(class_names))
  auroc = auroc_per_class(labels, scores)
  auprc = auprc_per_class(labels, scores)
  if kind == "multiclass":
    chosen = np.eye(len(class_names), dtype=np.uint8)[np.argmax(scores, axis=1)]
    f1 = np.array([skmetrics.f1_score(labels[:, k], chosen[:, k], zero_division=0.0)
                   if labels[:, k].any() else np.nan for k in range(len(class_names))])
  else:
    f1 = f1_per_class(labels, scores, thresholds)
  result = {"n": int(len(labels)), "auroc": macro(auroc), "auprc": macro(auprc),
            "f1": macro(f1), "per_class": {
                name: {"auroc": float(auroc[k]), "auprc": float(auprc[k]),
                       "f1": float(f1[k]), "threshold": float(thresholds[k]),
                       "positives": int(labels[:, k].sum())}
                for k, name in enumerate(class_names)}}
  if kind == "multiclass":
    result["accuracy"] = float(np.mean(np.argmax(scores, 1) == np.argmax(labels, 1))
                               ) if len(labels) else float("nan")
  if bootstrap and len(labels):
    try:
      samples, redrawn = bootstrap_samples(labels, bootstrap, seed, groups)
    except ValueError as e:  # Too few test ECGs of a class: no interval, said why.
      result.update(auroc_ci=[float("nan")] * 2, auprc_ci=[float("nan")] * 2,
                    bootstrap={"resamples": 0, "error": str(e)})
      return result
    for name, per_class in (("auroc", auroc_per_class), ("auprc", auprc_per_class)):
      statistic = _with_macro(per_class)
      low, high = _percentiles(np.stack([statistic(labels[i], scores[i])
                                         for i in samples]), 0.95)
      result[f"{name}_ci"] = [float(low[-1]), float(high[-1])]
    result["bootstrap"] = {"resamples": int(bootstrap), "redrawn": int(redrawn),
                           "unit": "ecg" if groups is None else "patient"}
  return result
