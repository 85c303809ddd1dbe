"""The host-side views CREMA-JAX used before augmentation and masking moved into the
step: crop, per-lead standardisation, augmentation and MAE masks in numpy, per record,
in the Grain pipeline. Kept only so that `input_pipeline.py` can time it next to the
pipeline that feeds the step now; nothing in crema_jax uses it."""

import grain
import numpy as np

from crema_jax import masking
from crema_jax.input import views


class DecodedRecords:
  """The per-record read of before: a Grain source yielding each record's full TFDS
  example (every feature decoded) plus its subset index."""

  def __init__(self, prepared, positions):
    self._data_source = prepared.data_source
    self.positions = np.asarray(positions, np.int64)
    self.patients = views.PatientIndex(prepared.index["patient_id"][self.positions])

  def __len__(self):
    return len(self.positions)

  def __getitem__(self, i):
    example = self._data_source[int(self.positions[i])]
    example["subset_index"] = i
    return example


def _standardize(x):
  mean, std = x.mean(axis=0, keepdims=True), x.std(axis=0, keepdims=True)
  return np.where(std > 1e-6, (x - mean) / np.maximum(std, 1e-6), np.float32(0))


def _augment(x, rng, c, rate):
  shift_max = int(round(c.max_shift_seconds * rate))
  if shift_max > 0:
    shift = int(rng.integers(-shift_max, shift_max + 1))
    if shift > 0:
      x = np.concatenate([np.repeat(x[:1], shift, axis=0), x[:-shift]])
    elif shift < 0:
      x = np.concatenate([x[-shift:], np.repeat(x[-1:], -shift, axis=0)])
  if c.scale > 0:
    x = x * np.float32(rng.uniform(1.0 - c.scale, 1.0 + c.scale))
  if c.wander_amplitude > 0:
    t = np.arange(x.shape[0], dtype=np.float32)[:, None] / np.float32(rate)
    freq = rng.uniform(0.05, max(c.wander_max_hz, 0.05))
    amp = rng.uniform(0.0, c.wander_amplitude, size=(1, x.shape[1])).astype(np.float32)
    phase = rng.uniform(0.0, 2 * np.pi, size=(1, x.shape[1])).astype(np.float32)
    x = x + amp * np.sin(np.float32(2 * np.pi * freq) * t + phase)
  if c.noise_std > 0:
    std = rng.uniform(0.0, c.noise_std)
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)
  if c.lead_dropout > 0:
    drop = rng.random(x.shape[1]) < c.lead_dropout
    if drop.all():
      drop[rng.integers(x.shape[1])] = False
    x = np.where(drop[None, :], np.float32(0), x)
  return x


class HostPretrainViews(grain.transforms.RandomMap):
  """One record -> two augmented masked views plus a same-patient view, float32, with
  their masks: what the host computed per record before."""

  def __init__(self, subset, config):
    self._subset, self._patients = subset, subset.patients
    self._config = config
    self._tokens = masking.num_tokens(config.data.seq_len, config.model.patch_size,
                                      config.model.num_leads, config.model.token_layout)

  def _view(self, ecg, rng):
    c, t = self._config, self._config.data.seq_len
    x = np.asarray(ecg, np.float32)
    start = int(rng.integers(0, max(x.shape[0] - t, 0) + 1))
    x = _standardize(x[start:start + t])
    x = _augment(x, rng, c.data.augment, c.data.sampling_rate)
    order = rng.permutation(self._tokens).astype(np.int32)
    m = masking.num_masked(self._tokens, c.mask_ratio)
    return x, np.sort(order[m:]), np.sort(order[:m])

  def random_map(self, element, rng):
    i = element["subset_index"]
    others = self._patients.others(i)
    partner = self._subset[int(rng.choice(others))] if len(others) else element
    out = {"has_pair": np.bool_(len(others) > 0),
           "patient": np.int32(self._patients.keys[i])}
    for name, ecg in (("1", element["ecg"]), ("2", element["ecg"]),
                      ("_pair", partner["ecg"])):
      x, out[f"keep{name}"], out[f"masked{name}"] = self._view(ecg, rng)
      out["pair" if name == "_pair" else f"view{name}"] = x
    return out
