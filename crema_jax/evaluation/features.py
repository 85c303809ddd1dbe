"""Encoder features of every ECG of some folds, computed once in sharded batches,
optionally under a robustness shift of the raw signal."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from crema_jax.data import storage
from crema_jax.evaluation import shifts
from crema_jax.input import device
from crema_jax.input import pipeline
from crema_jax import models
from crema_jax import sharding


# The step's per-lead standardisation, over a batch of views (one implementation).
standardize_batch = jax.jit(jax.vmap(device.standardize))


def views(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
          folds: Sequence[int], batch_size: int, shift: str | None = None,
          seed: int = 0, positions: np.ndarray | None = None):
  """Yields the eval batches of `folds` or `positions` (every ECG once, in order), with
  `view`
  [b, leads, seq_len] shifted by `shifts.SHIFTS[shift]` and then normalised as the
  model was trained. The shift's randomness is seeded per ECG position."""
  normalize = config.data.normalize == "per_lead"
  for batch in pipeline.eval_dataset(config, prepared, folds, batch_size,
                                     positions=positions):
    x = batch["view"]
    if shift is not None:
      fn = shifts.SHIFTS[shift]
      # Shifts act on the signal as recorded, [time, leads].
      x = np.stack([fn(v.T, config.data.sampling_rate, np.random.default_rng((seed, p))).T
                    for v, p in zip(x, batch["position"])])
    x = np.asarray(standardize_batch(x, batch["valid"])) if normalize else x
    batch["view"] = x.astype(np.float32)
    yield batch


@functools.partial(jax.jit, static_argnums=0)
def embed(model: models.CREMA, params: Any, x: jax.Array, valid: jax.Array) -> jax.Array:
  """Pooled features [b, emb] of whole signals x [b, leads, time] whose first valid
  [b] samples are signal (one compile per model and shape)."""
  return model.apply({"params": params}, x, valid=valid, method=model.embed)


def extract_features(model: models.CREMA, params: Any, config: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, folds: Sequence[int], mesh,
                     *, batch_size: int = 64, shift: str | None = None,
                     embed_fn=None, positions: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
  """Pooled encoder features of every ECG of `folds` (or at `positions`).

  Returns features [n, emb] float32, labels [n, 5], patient [n] (equal within a
  patient), ecg_id [n], position [n] (index in the prepared source), in prepared order.
  `embed_fn(params, x, valid) -> [b, emb]` (jitted) replaces `embed` when given.
  """
  batch_size = -(-batch_size // mesh.size) * mesh.size  # Whole batches per device.
  embed_fn = embed_fn or functools.partial(embed, model)
  out = {"features": [], "labels": [], "patient": [], "ecg_id": [], "position": []}
  for batch in views(config, prepared, folds, batch_size, shift, seed=config.seed,
                     positions=positions):
    n = len(batch["view"])
    data = sharding.global_batch(mesh, {
        "view": sharding.pad_to(batch["view"], batch_size),
        "valid": sharding.pad_to(batch["valid"], batch_size)})
    features = embed_fn(params, data["view"], data["valid"])
    out["features"].append(np.asarray(jax.device_get(features))[:n])
    for key in ("labels", "patient", "ecg_id", "position"):
      out[key].append(batch[key])
  if not out["features"]:
    where = f"folds {tuple(folds)}" if positions is None else "the positions given"
    raise ValueError(f"{prepared.path}: no ECG in {where}")
  return {k: np.concatenate(v) for k, v in out.items()}
