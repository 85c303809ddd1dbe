"""View augmentations: pure numpy functions of `x: [time, leads]` and a Generator.

Applied after per-lead standardisation, so amplitudes are in standardised units. Each
returns a new array; an amount of 0 switches that augmentation off.
"""

from __future__ import annotations

import ml_collections
import numpy as np


def crop(x: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
  """[time, leads] -> [length, leads]: a random (rng) or centred (rng=None) window;
  a shorter signal is zero-padded at the end."""
  t = x.shape[0]
  if t < length:
    return np.pad(x, ((0, length - t), (0, 0)))
  start = (t - length) // 2 if rng is None else int(rng.integers(0, t - length + 1))
  return x[start:start + length]


def amplitude_scale(x: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
  """Multiplies the whole ECG by one factor from U(1 - scale, 1 + scale)."""
  if scale <= 0:
    return x
  return x * np.float32(rng.uniform(1.0 - scale, 1.0 + scale))


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, max_std: float) -> np.ndarray:
  """Adds white noise whose std is drawn from U(0, max_std)."""
  if max_std <= 0:
    return x
  std = rng.uniform(0.0, max_std)
  return x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)


def baseline_wander(x: np.ndarray, rng: np.random.Generator, amplitude: float,
                    max_hz: float, sampling_rate: float) -> np.ndarray:
  """Adds a slow sinusoid (one frequency, per-lead amplitude and phase), as breathing
  and electrode drift do."""
  if amplitude <= 0:
    return x
  t = np.arange(x.shape[0], dtype=np.float32)[:, None] / np.float32(sampling_rate)
  freq = rng.uniform(0.05, max(max_hz, 0.05))
  amp = rng.uniform(0.0, amplitude, size=(1, x.shape[1])).astype(np.float32)
  phase = rng.uniform(0.0, 2 * np.pi, size=(1, x.shape[1])).astype(np.float32)
  return x + amp * np.sin(np.float32(2 * np.pi * freq) * t + phase)


def lead_dropout(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
  """Zeroes each lead with probability p, always keeping at least one lead."""
  if p <= 0:
    return x
  drop = rng.random(x.shape[1]) < p
  if drop.all():
    drop[rng.integers(x.shape[1])] = False
  return np.where(drop[None, :], np.float32(0), x)


def time_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """Shifts the signal by U{-max_shift..max_shift} samples, padding with edge values."""
  if max_shift <= 0:
    return x
  shift = int(rng.integers(-max_shift, max_shift + 1))
  if shift == 0:
    return x
  if shift > 0:
    return np.concatenate([np.repeat(x[:1], shift, axis=0), x[:-shift]])
  return np.concatenate([x[-shift:], np.repeat(x[-1:], -shift, axis=0)])


def augment(x: np.ndarray, rng: np.random.Generator, config: ml_collections.ConfigDict,
            sampling_rate: float) -> np.ndarray:
  """All configured augmentations of a standardised `x: [time, leads]`, in a fixed order."""
  x = time_shift(x, rng, int(round(config.max_shift_seconds * sampling_rate)))
  x = amplitude_scale(x, rng, config.scale)
  x = baseline_wander(x, rng, config.wander_amplitude, config.wander_max_hz,
                      sampling_rate)
  x = gaussian_noise(x, rng, config.noise_std)
  return lead_dropout(x, rng, config.lead_dropout)
