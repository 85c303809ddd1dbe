"""A linear head on frozen, cached encoder features, trained with Optax.

Features are standardised with the training split's statistics; the head is trained
full-batch with AdamW on the binary cross-entropy of each of its outputs (one sigmoid
per class of the task) and kept at the evaluation step with the best validation macro
AUROC.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crema_jax.evaluation import scores


@dataclasses.dataclass
class LinearProbe:
  """logits = ((features - mean) / std) @ w + b.

  Attributes:
    w: [emb, classes]; b: [classes]; mean, std: [emb] training-feature statistics.
    val_auroc: the validation macro AUROC at the kept step.
    thresholds: [classes] F1 thresholds chosen on the validation split.
  """
  w: np.ndarray
  b: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  val_auroc: float
  thresholds: np.ndarray

  def logits(self, features: np.ndarray) -> np.ndarray:
    """features: [n, emb] -> [n, classes]."""
    return ((features - self.mean) / self.std) @ self.w + self.b


def _bce(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  return optax.sigmoid_binary_cross_entropy(x @ params["w"] + params["b"], y).mean()


@functools.partial(jax.jit, static_argnames=("steps", "lr", "weight_decay"))
def _train_steps(params: dict, opt_state, x: jax.Array, y: jax.Array, *, steps: int,
                 lr: float, weight_decay: float):
  """`steps` full-batch AdamW steps (one compile per data shape and setting)."""
  optimizer = optax.adamw(lr, weight_decay=weight_decay)

  def step(carry, _):
    p, s = carry
    grads = jax.grad(_bce)(p, x, y)
    updates, s = optimizer.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), None

  return jax.lax.scan(step, (params, opt_state), None, length=steps)[0]


def train_linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                       val_features: np.ndarray, val_labels: np.ndarray, *,
                       steps: int = 500, lr: float = 1e-2, weight_decay: float = 1e-4,
                       eval_every: int = 25, seed: int = 0) -> LinearProbe:
  """Trains the head on [n, emb] features and [n, classes] 0/1 labels."""
  mean = train_features.mean(0)
  std = train_features.std(0) + 1e-6
  x_train = jnp.asarray((train_features - mean) / std, jnp.float32)
  y_train = jnp.asarray(train_labels, jnp.float32)
  x_val = (val_features - mean) / std
  dim, classes = x_train.shape[1], y_train.shape[1]
  params = {"w": jax.random.normal(jax.random.key(seed), (dim, classes)) * 0.01,
            "b": jnp.zeros((classes,))}
  opt_state = optax.adamw(lr, weight_decay=weight_decay).init(params)
  best, best_auroc = jax.device_get(params), -np.inf
  for _ in range(max(1, steps // eval_every)):
    params, opt_state = _train_steps(params, opt_state, x_train, y_train,
                                     steps=eval_every, lr=lr, weight_decay=weight_decay)
    p = jax.device_get(params)
    auroc = scores.macro(scores.auroc_per_class(val_labels, x_val @ p["w"] + p["b"]))
    if not np.isfinite(best_auroc) or auroc > best_auroc:
      best, best_auroc = p, auroc
  w, b = np.asarray(best["w"]), np.asarray(best["b"])
  thresholds = scores.best_f1_thresholds(val_labels, x_val @ w + b)
  return LinearProbe(w, b, mean, std, float(best_auroc), thresholds)
