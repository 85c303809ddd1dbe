"""What a checkpoint computes on someone's ECGs, as pure functions of its parameters,
and how a host batch runs on the mesh (`apply_sharded`); what they expect of a signal is
`package.preprocessing.Preprocessing`.

The embed and predict jobs run exactly these functions, and `export` serialises
exactly these: what a user runs from an export is what the tests ran.
  encode:   x [b, leads, seq_len] mV, valid [b] -> features [b, emb]
  classify: x, valid -> (features [b, emb], probabilities [b, classes])
Per-lead standardisation (when the checkpoint was trained with it) is inside them, so
their input is the signal in millivolts at the checkpoint's rate and lead order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from crema_jax.input import device
from crema_jax import models
from crema_jax.package import classifier as classifier_lib
from crema_jax import sharding


def encode_fn(model: models.CREMA, normalize: str) -> Callable:
  """fn(params, x [b, leads, seq_len] float32 mV, valid [b] int32) -> [b, emb]: the
  pooled features, as the checkpoint pools (`model.pool`)."""
  def encode(params: Any, x: jax.Array, valid: jax.Array) -> jax.Array:
    if normalize == "per_lead":
      x = jax.vmap(device.standardize)(x, valid)
    return model.apply({"params": params}, x, valid=valid, method=model.embed)
  return encode


def classify_fn(model: models.CREMA, normalize: str, kind: str = "multilabel"
                ) -> Callable:
  """fn({"crema", "head": {"w", "b"}}, x, valid) -> (features [b, emb], outputs
  [b, classes]): the encoder and a linear head on its raw features, activated as the
  task's kind defines (`classifier.activate`: probabilities, or a regression's value)."""
  encode = encode_fn(model, normalize)

  def classify(params: Any, x: jax.Array, valid: jax.Array):
    features = encode(params["crema"], x, valid)
    logits = features @ params["head"]["w"] + params["head"]["b"]
    return features, classifier_lib.activate(kind, logits)
  return classify


def apply_sharded(fn: Callable, params: Any, batch: dict, mesh, batch_size: int):
  """fn(params, view, valid) on a host batch (padded to `batch_size`, a multiple of
  the mesh size, and sharded over it); numpy outputs cut back to the batch."""
  n = len(batch["view"])
  data = sharding.global_batch(mesh, {
      "view": sharding.pad_to(batch["view"], batch_size),
      "valid": sharding.pad_to(batch["valid"], batch_size)})
  out = fn(params, data["view"], data["valid"])
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a))[:n], out)


def global_batch_size(batch_size: int, mesh) -> int:
  """`batch_size` rounded up to whole batches per device."""
  return -(-batch_size // mesh.size) * mesh.size
