"""What "the decoder learned" means: simple predictors of the masked patches, scored on
the same views, masks and targets as the decoder.

A reconstruction loss alone says little: on standardised signals, predicting 0 for
every masked sample already costs about 1. The predictors here use only what the
encoder sees (the visible samples of the view) and nothing learned:

  zero             0 everywhere (the standardised mean),
  visible_mean     each lead's mean over its visible samples,
  nearest_visible  the nearest visible patch of the same lead, copied,
  one_rr           the samples one RR interval earlier (else later) where those are
                   visible, else the lead's visible mean; the RR interval is the
                   first autocorrelation peak (0.3-2 s) of the visible samples, summed
                   over leads, within 10% of the largest (`rr_samples`).

`reconstruction_references` scores them and the model on one batch of views;
`reconstruction_ratio` (the model's loss over the best predictor's) is what the
training log and plot report: below 1, the decoder knows more than a copy rule.
The functions are traced per view ([leads, time]) and vmapped over the batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from crema_jax import losses
from crema_jax import masking
from crema_jax.input import device
from crema_jax.models import crema as crema_lib

PREDICTORS = ("zero", "visible_mean", "nearest_visible", "one_rr")
MIN_RR_SECONDS, MAX_RR_SECONDS = 0.3, 2.0  # 200 to 30 beats per minute.


def visible_samples(ids_keep: jax.Array, num_leads: int, seq_len: int, patch_size: int,
                    token_layout: str) -> jax.Array:
  """ids_keep [K] -> [leads, time] bool: the samples the encoder sees."""
  n = masking.num_tokens(seq_len, patch_size, num_leads, token_layout)
  seen = jnp.zeros((n,), bool).at[ids_keep].set(True)
  patches = seq_len // patch_size
  per_patch = (seen.reshape(num_leads, patches) if token_layout == "per_lead"
               else jnp.broadcast_to(seen, (num_leads, patches)))
  return jnp.repeat(per_patch, patch_size, axis=1)


def _visible_mean(x: jax.Array, seen: jax.Array) -> jax.Array:
  """[leads, 1]: each lead's mean over its visible samples (0 with none)."""
  w = seen.astype(x.dtype)
  return (x * w).sum(-1, keepdims=True) / jnp.maximum(w.sum(-1, keepdims=True), 1.0)


def _nearest_visible(x: jax.Array, seen: jax.Array, patch_size: int) -> jax.Array:
  """Every patch of each lead replaced by the nearest (earlier on a tie) patch of the
  same lead that is visible; a lead with none gives 0."""
  leads, t = x.shape
  n = t // patch_size
  patches = x.reshape(leads, n, patch_size)
  seen_patch = seen.reshape(leads, n, patch_size)[..., 0]  # [leads, n]
  i = jnp.arange(n)
  # [leads, target, source] distance; invisible sources and later ties lose.
  distance = jnp.abs(i[:, None] - i[None, :]) + 0.5 * (i[None, :] > i[:, None])
  distance = jnp.where(seen_patch[:, None, :], distance, jnp.inf)
  source = jnp.argmin(distance, axis=-1)  # [leads, n]
  copied = jnp.take_along_axis(patches, source[..., None], axis=1)
  return jnp.where(seen_patch.any(-1)[:, None, None], copied, 0.0).reshape(leads, t)


def rr_samples(x: jax.Array, seen: jax.Array, sampling_rate: float) -> jax.Array:
  """The RR interval in samples: the first peak in [0.3, 2] s of the autocorrelation of
  the visible samples (normalised by how many visible pairs each lag has, summed over
  leads) within 10% of the largest."""
  t = x.shape[-1]
  length = 2 * t  # Zero-padded: a linear, not circular, correlation.
  w = seen.astype(jnp.float32)
  spectrum = jnp.fft.rfft(x * w, length)
  weights = jnp.fft.rfft(w, length)
  corr = jnp.fft.irfft((spectrum * spectrum.conj()).sum(0), length)[:t]
  pairs = jnp.fft.irfft((weights * weights.conj()).sum(0), length)[:t]
  lags = jnp.arange(t)
  lo, hi = int(MIN_RR_SECONDS * sampling_rate), int(MAX_RR_SECONDS * sampling_rate)
  enough = pairs > 0.05 * pairs[0]  # Lags that a few visible pairs alone decide lose.
  score = jnp.where((lags >= lo) & (lags <= min(hi, t - 1)) & enough,
                    corr / jnp.maximum(pairs, 1.0), -jnp.inf)
  # Multiples of the RR interval score as high: the first peak within 10% of the best.
  best = jnp.max(score)
  peak = (score >= jnp.roll(score, 1)) & (score >= jnp.roll(score, -1))
  return jnp.argmax(peak & (score >= best - 0.1 * jnp.abs(best)))


def _shift(a: jax.Array, lag: jax.Array, fill) -> jax.Array:
  """a [leads, time] -> b with b[:, s] = a[:, s - lag] (`fill` outside)."""
  t = a.shape[-1]
  src = jnp.arange(t) - lag
  inside = (src >= 0) & (src < t)
  return jnp.where(inside, jnp.take(a, jnp.clip(src, 0, t - 1), axis=1), fill)


def _one_rr(x: jax.Array, seen: jax.Array, sampling_rate: float) -> jax.Array:
  rr = rr_samples(x, seen, sampling_rate)
  earlier, later = _shift(x, rr, 0.0), _shift(x, -rr, 0.0)
  seen_earlier, seen_later = _shift(seen, rr, False), _shift(seen, -rr, False)
  return jnp.where(seen_earlier, earlier,
                   jnp.where(seen_later, later, _visible_mean(x, seen)))


def predictions(x: jax.Array, ids_keep: jax.Array, model: crema_lib.CREMA,
                sampling_rate: float) -> dict[str, jax.Array]:
  """One view x [leads, time], its visible tokens ids_keep [K] -> {predictor: [leads,
  time]} for every predictor but zero (only the masked samples are scored)."""
  x = x.astype(jnp.float32)
  seen = visible_samples(ids_keep, model.num_leads, x.shape[-1], model.patch_size,
                         model.token_layout)
  mean = _visible_mean(x, seen)
  return {"visible_mean": jnp.broadcast_to(mean, x.shape),
          "nearest_visible": _nearest_visible(x, seen, model.patch_size),
          "one_rr": _one_rr(x, seen, sampling_rate)}


def reconstruction_references(model: crema_lib.CREMA, params: Any, x: jax.Array,
                              ids_keep: jax.Array, ids_masked: jax.Array,
                              masked_valid: jax.Array, sampling_rate: float
                              ) -> dict[str, jax.Array]:
  """The decoder's masked reconstruction loss (no dropout) and every predictor's, on
  the same views and masks.

  Args:
    x: [n, leads, time] views as the model sees them (standardised, augmented).
    ids_keep, ids_masked: [n, K], [n, M] their masks.
    masked_valid: [n, M] bool, False for a padding patch (no target).
    sampling_rate: of x, for the RR search.

  Returns:
    {"model": loss, "zero": loss, ..., "ratio": model / the best predictor's}, float32
    scalars; targets as the model's (`norm_targets`: each predicted patch is
    standardised on its own too).
  """
  out = model.apply({"params": params}, x, ids_keep, ids_masked)
  target = out["target"]
  scores = {"model": losses.masked_reconstruction_loss(out["pred"], target, masked_valid),
            "zero": losses.masked_reconstruction_loss(jnp.zeros_like(target), target,
                                                      masked_valid)}
  predicted = jax.vmap(lambda v, k: predictions(v, k, model, sampling_rate))(x, ids_keep)
  for name, pred in predicted.items():
    pred = crema_lib.masked_targets(pred, ids_masked, model.patch_size,
                                    model.token_layout, model.norm_targets)
    scores[name] = losses.masked_reconstruction_loss(pred, target, masked_valid)
  scores["ratio"] = scores["model"] / jnp.maximum(
      jnp.min(jnp.stack([scores[name] for name in PREDICTORS])), 1e-12)
  return scores


def first_views(transform: device.ViewTransform, seed: int, step: jax.Array,
                signals: jax.Array, valid: jax.Array):
  """The first view of every ECG exactly as the step at `step` draws it
  (`device.pretrain_views`), without drawing the others: signals [batch, views, leads,
  time], valid [batch, views] -> (x [batch, leads, time], ids_keep, ids_masked,
  masked_valid)."""
  keys = device.example_keys(seed, step, signals.shape[0])
  keys = jax.vmap(lambda k: jax.random.split(k, signals.shape[1])[0])(keys)
  x, keep, masked = jax.vmap(transform.masked_view)(keys, signals[:, 0], valid[:, 0])
  masked_valid = jnp.take_along_axis(transform.token_valid(valid[:, 0]), masked, -1)
  return x, keep, masked, masked_valid


def make_reference_fn(model: crema_lib.CREMA, config: ml_collections.ConfigDict):
  """The training log's check, jitted: (params, step, host batch) -> the scores of
  `reconstruction_references` on the first view of every ECG of the batch the step
  `step` consumed, with that step's views and masks (drawn again from (seed, step,
  example), as the step draws them)."""
  transform = device.ViewTransform.from_config(config)
  rate = float(config.data.sampling_rate)

  def reference_fn(params, step: jax.Array, batch: dict) -> dict[str, jax.Array]:
    x, keep, masked, masked_valid = first_views(transform, config.seed, step,
                                                batch["signals"], batch["valid"])
    return reconstruction_references(model, params, x.astype(jnp.float32), keep, masked,
                                     masked_valid, rate)

  return jax.jit(reference_fn)
