"""A linear head on frozen, cached encoder features, its L2 penalty chosen on the
validation split. Classification tasks (`train_linear_probe`, below); regression tasks
(`train_linear_regressor`): ridge regression solved exactly for every grid value, the
one with the best validation R^2 kept.

Features are standardised with the training split's statistics; the head (one sigmoid
per class of the task) is trained full-batch with Adam on

  mean binary cross-entropy + l2 / 2 * ||W||^2 / classes

(each class's weights paying l2 / 2 * ||w_c||^2 against its own mean BCE), for every
value of the grid at once: one jitted computation whose grid values share nothing but
the data. Every `eval_every` steps each grid value's validation macro AUROC is taken;
each keeps its best step, and the grid value with the best of those wins (ties: the
stronger penalty). A fixed small weight decay, as many probes use, barely regularises
1024 features of a few hundred ECGs (1% of the labels); the grid lets the validation
fold decide.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crema_jax.evaluation import objectives
from crema_jax.evaluation import scores

DEFAULT_L2_GRID = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclasses.dataclass
class LinearProbe:
  """logits = ((features - mean) / std) @ w + b.

  Attributes:
    w: [emb, classes]; b: [classes]; mean, std: [emb] training-feature statistics.
    val_auroc: the validation macro AUROC of the chosen grid value at its best step.
    thresholds: [classes] F1 thresholds chosen on the validation split.
    l2: the chosen penalty; grid: {str(l2): best validation macro AUROC};
    best_step: the chosen value's best step.
    kind: the task's kind (`objectives.KINDS`): multiclass heads give
      log-probabilities, regression heads the value (in the target's units).
    val_r2: regression's validation R^2 (NaN for classification).
  """
  w: np.ndarray
  b: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  val_auroc: float
  thresholds: np.ndarray
  l2: float = 0.0
  grid: dict = dataclasses.field(default_factory=dict)
  best_step: int = 0
  kind: str = "multilabel"
  val_r2: float = float("nan")

  def logits(self, features: np.ndarray) -> np.ndarray:
    """features: [n, emb] -> [n, classes] (`objectives.scores_of`)."""
    return objectives.scores_of(self.kind,
                                ((features - self.mean) / self.std) @ self.w + self.b)

  def raw_head(self) -> tuple[np.ndarray, np.ndarray]:
    """(w [emb, classes], b [classes]) acting on unstandardised features:
    features @ w + b == logits(features) (fine-tuning starts its head here)."""
    w = self.w / self.std[:, None]
    return w, self.b - (self.mean / self.std) @ self.w


def _loss(params: dict, x: jax.Array, y: jax.Array, l2: jax.Array, kind: str
          ) -> jax.Array:
  """Summed over the grid: params w [grid, emb, classes], b [grid, classes]."""
  logits = jnp.einsum("nd,gdk->gnk", x, params["w"]) + params["b"][:, None, :]
  penalty = 0.5 * l2 * jnp.sum(params["w"] ** 2, axis=(1, 2)) / y.shape[1]
  return jnp.sum(objectives.loss(kind, logits, y[None]) + penalty)


@functools.partial(jax.jit, static_argnames=("steps", "lr", "kind"))
def _train_steps(params: dict, opt_state, x: jax.Array, y: jax.Array, l2: jax.Array,
                 *, steps: int, lr: float, kind: str):
  """`steps` full-batch Adam steps of every grid value (one compile per data shape)."""
  optimizer = optax.adam(lr)

  def step(carry, _):
    p, s = carry
    updates, s = optimizer.update(jax.grad(_loss)(p, x, y, l2, kind), s, p)
    return (optax.apply_updates(p, updates), s), None

  return jax.lax.scan(step, (params, opt_state), None, length=steps)[0]


def train_linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                       val_features: np.ndarray, val_labels: np.ndarray, *,
                       steps: int = 500, lr: float = 1e-2,
                       l2_grid: tuple[float, ...] = DEFAULT_L2_GRID,
                       eval_every: int = 25, seed: int = 0,
                       kind: str = "multilabel") -> LinearProbe:
  """Trains the head on [n, emb] features and [n, classes] 0/1 labels (one-hot for
  multiclass: a softmax head), choosing the L2 penalty from `l2_grid` and the step on
  the validation split."""
  if kind == "regression":
    return train_linear_regressor(train_features, train_labels, val_features,
                                  val_labels, l2_grid=l2_grid)
  mean = train_features.mean(0)
  std = train_features.std(0) + 1e-6
  x_train = jnp.asarray((train_features - mean) / std, jnp.float32)
  y_train = jnp.asarray(train_labels, jnp.float32)
  x_val = jnp.asarray((val_features - mean) / std, jnp.float32)
  dim, classes = x_train.shape[1], y_train.shape[1]
  grid = jnp.asarray(l2_grid, jnp.float32)
  w0 = jax.random.normal(jax.random.key(seed), (dim, classes)) * 0.01
  params = {"w": jnp.broadcast_to(w0, (len(l2_grid), dim, classes)),
            "b": jnp.zeros((len(l2_grid), classes))}
  opt_state = optax.adam(lr).init(params)
  best_auroc = np.full(len(l2_grid), -np.inf)
  best_step = np.zeros(len(l2_grid), np.int64)
  best = {k: np.array(v) for k, v in jax.device_get(params).items()}
  for i in range(max(1, steps // eval_every)):
    params, opt_state = _train_steps(params, opt_state, x_train, y_train, grid,
                                     steps=eval_every, lr=lr, kind=kind)
    p = jax.device_get(params)
    val_logits = objectives.scores_of(kind, np.asarray(
        jnp.einsum("nd,gdk->gnk", x_val, params["w"]) + params["b"][:, None, :]))
    for g in range(len(l2_grid)):
      auroc = scores.macro(scores.auroc_per_class(val_labels, val_logits[g]))
      if auroc > best_auroc[g] or not np.isfinite(best_auroc[g]):
        best_auroc[g], best_step[g] = auroc, (i + 1) * eval_every
        best["w"][g], best["b"][g] = p["w"][g], p["b"][g]
  finite = np.where(np.isfinite(best_auroc), best_auroc, -np.inf)
  # The best value; among equals the last, i.e. the strongest penalty of a rising grid.
  chosen = int(np.flatnonzero(finite == finite.max())[-1])
  w, b = np.asarray(best["w"][chosen]), np.asarray(best["b"][chosen])
  thresholds = scores.best_f1_thresholds(
      val_labels, objectives.scores_of(kind, np.asarray(x_val) @ w + b))
  return LinearProbe(w, b, mean, std, float(best_auroc[chosen]), thresholds,
                     l2=float(l2_grid[chosen]),
                     grid={f"{v:g}": float(a) for v, a in zip(l2_grid, best_auroc)},
                     best_step=int(best_step[chosen]), kind=kind)


def train_linear_regressor(train_features: np.ndarray, train_values: np.ndarray,
                           val_features: np.ndarray, val_values: np.ndarray, *,
                           l2_grid: tuple[float, ...] = DEFAULT_L2_GRID) -> LinearProbe:
  """Ridge regression of [n, 1] values on standardised [n, emb] features:

    min_w  mean((x w + b - y)^2 / var(y)) / 2 + l2 / 2 * ||w||^2

  (the same penalty scale as the classification probe's), solved exactly for every
  grid value through one eigendecomposition of the features' covariance (l2 = 0: the
  minimum-norm least-squares solution). The value with the best validation R^2 is
  kept (ties: the stronger penalty). Predictions are in the values' units."""
  mean, std = train_features.mean(0), train_features.std(0) + 1e-6
  x = (np.asarray(train_features, np.float64) - mean) / std
  y = np.asarray(train_values, np.float64).reshape(-1)
  y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
  target = (y - y_mean) / y_std
  eigenvalues, vectors = np.linalg.eigh(x.T @ x / len(x))
  projected = vectors.T @ (x.T @ target / len(x))
  x_val = (np.asarray(val_features, np.float64) - mean) / std
  y_val = np.asarray(val_values, np.float64).reshape(-1)
  tolerance = eigenvalues.max(initial=0.0) * 1e-10
  solutions, grid = [], {}
  for l2 in l2_grid:
    shrink = np.where(eigenvalues + l2 > tolerance, 1 / (eigenvalues + l2), 0.0)
    w = vectors @ (shrink * projected)
    solutions.append(w)
    grid[f"{l2:g}"] = scores.r2(y_val, (x_val @ w) * y_std + y_mean)
  values = np.array([v if np.isfinite(v) else -np.inf for v in grid.values()])
  chosen = int(np.flatnonzero(values == values.max())[-1])
  w = (solutions[chosen] * y_std)[:, None]
  return LinearProbe(w.astype(np.float32), np.array([y_mean], np.float32), mean, std,
                     float("nan"), np.array([np.nan]), l2=float(l2_grid[chosen]),
                     grid=grid, kind="regression", val_r2=float(values[chosen]))
