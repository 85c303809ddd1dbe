"""What a checkpoint computes on someone's ECGs, as pure functions of its parameters,
and what it expects of a signal (`Preprocessing`).

The embed and predict jobs run exactly these functions, and `export` serialises
exactly these: what a user runs from an export is what the tests ran.
  encode:   x [b, seq_len, leads] mV, valid [b] -> features [b, emb]
  classify: x, valid -> (features [b, emb], probabilities [b, classes])
Per-lead standardisation (when the checkpoint was trained with it) is inside them, so
their input is the signal in millivolts at the checkpoint's rate and lead order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from crema_jax.data import records
from crema_jax.evaluation import features as features_lib
from crema_jax.input import device
from crema_jax import models
from crema_jax import sharding


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What a checkpoint expects of a signal (from its pretraining config).

  Attributes:
    sampling_rate: Hz; readers resample to it.
    leads: the lead order of the input's last axis.
    seq_len: samples per view; a longer ECG gives its centred `seq_len` samples, a
      shorter one is zero-padded at the end (`valid` says how much is signal).
    normalize: "per_lead" (each lead to zero mean, unit std over its valid samples,
      inside `encode`) or "none".
    max_amplitude_mv: a lead beyond this is refused as a gain or unit error (0: off).
    min_seconds: shorter records are refused.
  """
  sampling_rate: int
  leads: tuple[str, ...]
  seq_len: int
  normalize: str
  max_amplitude_mv: float
  min_seconds: float

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "Preprocessing":
    data = config.data
    return cls(int(data.sampling_rate), tuple(data.get("leads") or records.LEADS),
               int(data.seq_len), str(data.normalize),
               float(data.get("max_amplitude_mv", records.MAX_AMPLITUDE_MV)),
               float(data.get("min_seconds", 0.0)))

  @property
  def seconds(self) -> float:
    return self.seq_len / self.sampling_rate

  def describe(self) -> dict:
    """The model card's preprocessing entry."""
    return {
        "sampling_rate_hz": self.sampling_rate, "leads": list(self.leads),
        "units": "mV", "seq_len": self.seq_len, "seconds": self.seconds,
        "crop": (f"the centred {self.seq_len} samples of a longer ECG; a shorter one "
                 "zero-padded at the end and its padding left out of the pooling"),
        "normalisation": ("per lead: zero mean and unit std over the signal's samples "
                          "(a flat lead becomes zeros)" if self.normalize == "per_lead"
                          else "none"),
        "refused": (f"a lead beyond {self.max_amplitude_mv:g} mV, non-finite values, "
                    f"records shorter than {self.min_seconds:g} s, missing leads"),
    }


def encode_fn(model: models.CREMA, normalize: str) -> Callable:
  """fn(params, x [b, seq_len, leads] float32 mV, valid [b] int32) -> [b, emb]: the
  pooled features, as the checkpoint pools (`model.pool`)."""
  def encode(params: Any, x: jax.Array, valid: jax.Array) -> jax.Array:
    if normalize == "per_lead":
      x = jax.vmap(device.standardize)(x, valid)
    return model.apply({"params": params}, x, valid=valid, method=model.embed)
  return encode


def classify_fn(model: models.CREMA, normalize: str) -> Callable:
  """fn({"crema", "head": {"w", "b"}}, x, valid) -> (features [b, emb], probabilities
  [b, classes]): the encoder and a linear head on its raw features, sigmoid outputs
  (the tasks are multi-label)."""
  encode = encode_fn(model, normalize)

  def classify(params: Any, x: jax.Array, valid: jax.Array):
    features = encode(params["crema"], x, valid)
    logits = features @ params["head"]["w"] + params["head"]["b"]
    return features, jax.nn.sigmoid(logits)
  return classify


def apply_sharded(fn: Callable, params: Any, batch: dict, mesh, batch_size: int):
  """fn(params, view, valid) on a host batch (padded to `batch_size`, a multiple of
  the mesh size, and sharded over it); numpy outputs cut back to the batch."""
  n = len(batch["view"])
  data = sharding.global_batch(mesh, {
      "view": features_lib.pad_to(batch["view"], batch_size),
      "valid": features_lib.pad_to(batch["valid"], batch_size)})
  out = fn(params, data["view"], data["valid"])
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a))[:n], out)


def global_batch_size(batch_size: int, mesh) -> int:
  """`batch_size` rounded up to whole batches per device."""
  return -(-batch_size // mesh.size) * mesh.size
