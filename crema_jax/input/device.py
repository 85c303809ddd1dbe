"""What the step does to a host batch before the model sees it, on the device.

The host sends raw crops (`signals [batch, views, leads, time]`, float16 millivolts:
cheap slicing of the stored record, already shifted in time: `views.PretrainCrops`)
and how many of their samples are signal (`valid [batch, views]`: a record shorter
than the crop is zero-padded at the end). Inside the jitted step, each view is
standardised per lead over its valid samples, augmented (amplitude scale, baseline
wander, Gaussian noise, lead dropout; `config.data.augment`, an amount of 0 switches
one off) and given an MAE mask, all drawn with `jax.random` from (seed, step,
example), so a run is reproducible and resumes exactly on any number of devices.
Every function here is per example and vmapped over the batch: nothing crosses
devices.

Signals keep time as their last axis (`[leads, time]`), the axis a TPU lays on its 128
lanes: with the 12 leads last, every signal-sized buffer would take 10.7x its size
in HBM. Per-lead and per-sample factors (lead dropout, padding) multiply the signal
as `[leads, 1]` and `[1, time]` factors, never as masks of the signal's size, and
nothing here gathers along time.

The step's batch schema (`pretrain_views`):
  signals     [batch, views, leads, time] standardised and augmented, in the model's
              compute dtype (bfloat16 halves every signal-sized buffer)
  ids_keep    [batch, views, K] int32, sorted visible tokens of each view
  ids_masked  [batch, views, M] int32, sorted masked tokens
  keep_valid, masked_valid  [batch, views, K | M] bool, whether those tokens hold
              signal only (padding is masked first, never a reconstruction target,
              never pooled into the contrastive embedding)
  patient     [batch] int32, equal for ECGs of one patient
  has_pair    [batch] bool, whether view 2 (when present) is another ECG of the patient
Views 0 and 1 are two views of one ECG; view 2, with the patient loss on and
`data.patient_pairs`, is a view of another ECG of the same patient
(`views.num_views`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from crema_jax import masking

EPS = 1e-6


# ------------------------------------------------------------- one view [leads, time]
def inside(x: jax.Array, valid: jax.Array) -> jax.Array:
  """[1, time] float: 1 for the first `valid` samples of x [leads, time], else 0."""
  return (jnp.arange(x.shape[-1]) < valid).astype(x.dtype)[None, :]


def standardize(x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Per-lead zero mean and unit std of x: [leads, time] float32, over its first
  `valid` samples (int scalar; None: all), the rest (zero padding of a short record)
  left at zero; a flat lead (std below EPS: a dropped or absent lead) becomes zeros."""
  if valid is None:
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return jnp.where(std > EPS, (x - mean) / jnp.maximum(std, EPS), 0.0)
  weight = inside(x, valid)
  count = jnp.maximum(jnp.minimum(valid, x.shape[-1]), 1).astype(x.dtype)
  mean = (x * weight).sum(axis=-1, keepdims=True) / count
  var = (jnp.square(x - mean) * weight).sum(axis=-1, keepdims=True) / count
  std = jnp.sqrt(var)
  scale = jnp.where(std > EPS, 1.0 / jnp.maximum(std, EPS), 0.0)  # [leads, 1]
  return (x - mean) * scale * weight


def amplitude_scale(key: jax.Array, x: jax.Array, scale: float) -> jax.Array:
  """Multiplies the whole view by one factor from U(1 - scale, 1 + scale)."""
  if scale <= 0:
    return x
  return x * jax.random.uniform(key, (), minval=1.0 - scale, maxval=1.0 + scale)


def baseline_wander(key: jax.Array, x: jax.Array, amplitude: float, max_hz: float,
                    sampling_rate: float) -> jax.Array:
  """Adds a slow sinusoid (one frequency from U(0.05, max_hz), per-lead amplitude from
  U(0, amplitude) and phase), as breathing and electrode drift do."""
  if amplitude <= 0:
    return x
  k_freq, k_amp, k_phase = jax.random.split(key, 3)
  leads = x.shape[0]
  freq = jax.random.uniform(k_freq, (), minval=0.05, maxval=max(max_hz, 0.05))
  amp = jax.random.uniform(k_amp, (leads, 1), maxval=amplitude)
  phase = jax.random.uniform(k_phase, (leads, 1), maxval=2 * math.pi)
  angle = 2 * math.pi * freq * jnp.arange(x.shape[-1], dtype=jnp.float32) / sampling_rate
  # sin(angle + phase) = sin(angle) cos(phase) + cos(angle) sin(phase): two sinusoids
  # over time per view instead of one per lead and sample.
  return (x + (amp * jnp.cos(phase)) * jnp.sin(angle)[None, :]
          + (amp * jnp.sin(phase)) * jnp.cos(angle)[None, :])


def gaussian_noise(key: jax.Array, x: jax.Array, max_std: float) -> jax.Array:
  """Adds white noise whose std is drawn from U(0, max_std)."""
  if max_std <= 0:
    return x
  k_std, k_noise = jax.random.split(key)
  std = jax.random.uniform(k_std, (), maxval=max_std)
  return x + std * jax.random.normal(k_noise, x.shape, x.dtype)


def lead_dropout(key: jax.Array, x: jax.Array, p: float) -> jax.Array:
  """Zeroes each lead with probability p, always keeping at least one lead."""
  if p <= 0:
    return x
  k_drop, k_keep = jax.random.split(key)
  leads = x.shape[0]
  drop = jax.random.uniform(k_drop, (leads,)) < p
  spared = jnp.arange(leads) == jax.random.randint(k_keep, (), 0, leads)
  drop = drop & ~(drop.all() & spared)
  return x * (~drop).astype(x.dtype)[:, None]


def augment(key: jax.Array, x: jax.Array, config: ml_collections.ConfigDict,
            sampling_rate: float) -> jax.Array:
  """The device's augmentations of `config` (`data.augment`) of a standardised x:
  [leads, time], in a fixed order (the time shift is the host's: `views.crop`)."""
  keys = jax.random.split(key, 4)
  x = amplitude_scale(keys[0], x, config.scale)
  x = baseline_wander(keys[1], x, config.wander_amplitude, config.wander_max_hz,
                      sampling_rate)
  x = gaussian_noise(keys[2], x, config.noise_std)
  return lead_dropout(keys[3], x, config.lead_dropout)


def random_mask(key: jax.Array, num_tokens: int, mask_ratio: float,
                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One MAE mask (MAE's argsort of uniform noise): (ids_keep [N - M], ids_masked [M])
  int32, each sorted; M = masking.num_masked(N, mask_ratio). With `valid` [N] bool
  (`masking.token_valid`), padding tokens are masked before any signal token, so the
  encoder sees padding only when fewer than N - M tokens hold signal."""
  m = masking.num_masked(num_tokens, mask_ratio)
  noise = jax.random.uniform(key, (num_tokens,))
  if valid is not None:
    noise = jnp.where(valid, noise, noise - 1.0)
  order = jnp.argsort(noise).astype(jnp.int32)
  return jnp.sort(order[m:]), jnp.sort(order[:m])


# ------------------------------------------------------------------- whole batches
@dataclasses.dataclass(frozen=True)
class ViewTransform:
  """The device-side view recipe of a run: normalisation, augmentation, masking."""
  sampling_rate: float
  normalize: bool
  augment: ml_collections.ConfigDict | None  # None: no augmentation.
  mask_ratio: float
  seq_len: int
  patch_size: int
  num_leads: int
  token_layout: str
  dtype: str = "float32"  # Of the views: the model's compute dtype.

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ViewTransform":
    m = config.model
    return cls(sampling_rate=float(config.data.sampling_rate),
               normalize=config.data.normalize == "per_lead",
               augment=config.data.augment, mask_ratio=config.mask_ratio,
               seq_len=config.data.seq_len, patch_size=m.patch_size,
               num_leads=m.num_leads, token_layout=m.token_layout,
               dtype=config.get("compute_dtype", "float32"))

  @property
  def num_tokens(self) -> int:
    return masking.num_tokens(self.seq_len, self.patch_size, self.num_leads,
                              self.token_layout)

  def token_valid(self, valid: jax.Array) -> jax.Array:
    """valid [...] samples of signal -> [..., num_tokens] bool (`masking.token_valid`)."""
    return masking.token_valid(valid, self.seq_len, self.patch_size, self.num_leads,
                               self.token_layout)

  def view(self, key: jax.Array, x: jax.Array, valid: jax.Array) -> jax.Array:
    """A raw crop x: [leads, time] whose first `valid` samples are signal -> the
    standardised, augmented view (computed in float32, returned in `dtype`), zero
    after `valid`."""
    x = x.astype(jnp.float32)
    if self.normalize:
      x = standardize(x, valid)
    if self.augment is not None:
      x = augment(key, x, self.augment, self.sampling_rate)
    return (x * inside(x, valid)).astype(self.dtype)

  def masked_view(self, key: jax.Array, x: jax.Array, valid: jax.Array):
    """-> (view [leads, time], ids_keep [K], ids_masked [M])."""
    k_view, k_mask = jax.random.split(key)
    return (self.view(k_view, x, valid),
            *random_mask(k_mask, self.num_tokens, self.mask_ratio,
                         self.token_valid(valid)))


def example_keys(seed: int, step: jax.Array, batch_size: int) -> jax.Array:
  """[batch] keys of (seed, step, example): example i of the global batch at `step`."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(batch_size))


def pretrain_views(transform: ViewTransform, keys: jax.Array, signals: jax.Array,
                   valid: jax.Array) -> dict[str, jax.Array]:
  """keys [batch], signals [batch, views, leads, time] raw crops whose first valid
  [batch, views] samples are signal -> signals, ids_keep, ids_masked, keep_valid,
  masked_valid of the step's schema (module docstring)."""
  views = signals.shape[1]
  view_keys = jax.vmap(lambda k: jax.random.split(k, views))(keys)  # [batch, views]
  x, keep, masked = jax.vmap(jax.vmap(transform.masked_view))(view_keys, signals, valid)
  tokens = transform.token_valid(valid)  # [batch, views, N]
  return {"signals": x, "ids_keep": keep, "ids_masked": masked,
          "keep_valid": jnp.take_along_axis(tokens, keep, axis=-1),
          "masked_valid": jnp.take_along_axis(tokens, masked, axis=-1)}
