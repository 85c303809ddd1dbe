"""What a task's kind means for its head: the training loss, the score validation
chooses by, and the metrics it is reported with. One place for every kind:

  kind        head output          loss                       validation   reported
  binary      sigmoid per label    binary cross-entropy       macro AUROC  AUROC, AUPRC, F1
  multilabel  sigmoid per label    binary cross-entropy       macro AUROC  AUROC, AUPRC, F1
  multiclass  softmax over classes cross-entropy              macro AUROC  AUROC, AUPRC, F1, accuracy
  regression  the value itself     squared error / var(train) R^2          MAE, R^2, Pearson r

PTB-XL's label sets and binary tasks are multilabel / binary. The outputs' transform
(`package.classifier.activate`) is what `predict` applies to a classifier's head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crema_jax.evaluation import scores

KINDS = ("binary", "multilabel", "multiclass", "regression")
METRICS = {"classification": ("auroc", "auprc", "f1"),
           "regression": ("mae", "r2", "pearson_r")}


def family(kind: str) -> str:
  """"regression" or "classification"."""
  return "regression" if kind == "regression" else "classification"


def metrics(kind: str) -> tuple[str, ...]:
  """The metrics a task of `kind` is reported with (its first: the headline)."""
  return METRICS[family(kind)] + (("accuracy",) if kind == "multiclass" else ())


def validation_metric(kind: str) -> str:
  return "r2" if kind == "regression" else "auroc"


def loss(kind: str, outputs: jax.Array, targets: jax.Array,
         target_scale: jax.Array | float = 1.0) -> jax.Array:
  """Mean loss of head outputs [..., n, classes] against targets [n, classes]
  (0/1, one-hot for multiclass, values for regression), broadcast over leading axes;
  `target_scale`: regression's training-target std, so that its loss is in units of
  the target's variance (1.0: predicting the mean)."""
  if kind == "multiclass":
    return optax.softmax_cross_entropy(outputs, targets).mean(axis=-1)
  if kind == "regression":
    return (((outputs - targets) / target_scale) ** 2).mean(axis=(-2, -1))
  return optax.sigmoid_binary_cross_entropy(outputs, targets).mean(axis=(-2, -1))


def scores_of(kind: str, outputs: np.ndarray) -> np.ndarray:
  """The scores a task is evaluated on from its head's outputs [n, classes]:
  multiclass log-probabilities (a class's raw logit does not rank ECGs for it: the
  others' logits shift its probability), else the outputs themselves."""
  if kind == "multiclass":
    outputs = np.asarray(outputs, np.float64)
    return outputs - np.logaddexp.reduce(outputs, axis=-1, keepdims=True)
  return outputs


def validation_score(kind: str, labels: np.ndarray, outputs: np.ndarray) -> float:
  """Higher is better: macro AUROC (classification) or R^2 (regression)."""
  if kind == "regression":
    return scores.r2(np.asarray(labels).ravel(), np.asarray(outputs).ravel())
  return scores.macro(scores.auroc_per_class(labels, outputs))
