"""A linear head on frozen, cached encoder features, its L2 penalty chosen on the
validation split.

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

  def logits(self, features: np.ndarray) -> np.ndarray:
    """features: [n, emb] -> [n, classes]."""
    return ((features - self.mean) / self.std) @ self.w + self.b

  def raw_head(self) -> tuple[np.ndarray, np.ndarray]:
    """(w [emb, classes], b [classes]) acting on unstandardised features:
    features @ w + b == logits(features) (fine-tuning starts its head here)."""
    w = self.w / self.std[:, None]
    return w, self.b - (self.mean / self.std) @ self.w


def _loss(params: dict, x: jax.Array, y: jax.Array, l2: jax.Array) -> jax.Array:
  """Summed over the grid: params w [grid, emb, classes], b [grid, classes]."""
  logits = jnp.einsum("nd,gdk->gnk", x, params["w"]) + params["b"][:, None, :]
  bce = optax.sigmoid_binary_cross_entropy(logits, y[None]).mean(axis=(1, 2))
  penalty = 0.5 * l2 * jnp.sum(params["w"] ** 2, axis=(1, 2)) / y.shape[1]
  return jnp.sum(bce + penalty)


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def _train_steps(params: dict, opt_state, x: jax.Array, y: jax.Array, l2: jax.Array,
                 *, steps: int, lr: float):
  """`steps` full-batch Adam steps of every grid value (one compile per data shape)."""
  optimizer = optax.adam(lr)

  def step(carry, _):
    p, s = carry
    updates, s = optimizer.update(jax.grad(_loss)(p, x, y, l2), s, p)
    return (optax.apply_updates(p, updates), s), None

  return jax.lax.scan(step, (params, opt_state), None, length=steps)[0]


def train_linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                       val_features: np.ndarray, val_labels: np.ndarray, *,
                       steps: int = 500, lr: float = 1e-2,
                       l2_grid: tuple[float, ...] = DEFAULT_L2_GRID,
                       eval_every: int = 25, seed: int = 0) -> LinearProbe:
  """Trains the head on [n, emb] features and [n, classes] 0/1 labels, choosing the
  L2 penalty from `l2_grid` and the step on the validation split."""
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
                                     steps=eval_every, lr=lr)
    p = jax.device_get(params)
    val_logits = np.asarray(jnp.einsum("nd,gdk->gnk", x_val, params["w"]) +
                            params["b"][:, None, :])
    for g in range(len(l2_grid)):
      auroc = scores.macro(scores.auroc_per_class(val_labels, val_logits[g]))
      if auroc > best_auroc[g] or not np.isfinite(best_auroc[g]):
        best_auroc[g], best_step[g] = auroc, (i + 1) * eval_every
        best["w"][g], best["b"][g] = p["w"][g], p["b"][g]
  finite = np.where(np.isfinite(best_auroc), best_auroc, -np.inf)
  # The best value; among equals the last, i.e. the strongest penalty of a rising grid.
  chosen = int(np.flatnonzero(finite == finite.max())[-1])
  w, b = np.asarray(best["w"][chosen]), np.asarray(best["b"][chosen])
  thresholds = scores.best_f1_thresholds(val_labels, np.asarray(x_val) @ w + b)
  return LinearProbe(w, b, mean, std, float(best_auroc[chosen]), thresholds,
                     l2=float(l2_grid[chosen]),
                     grid={f"{v:g}": float(a) for v, a in zip(l2_grid, best_auroc)},
                     best_step=int(best_step[chosen]))
