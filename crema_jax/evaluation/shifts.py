"""Distribution shifts for robustness evaluation: pure numpy functions of a raw ECG.

Each shift maps `x: [time, 12]` millivolts at `sampling_rate` Hz (leads in
`records.LEADS` order) and a Generator to a shifted ECG of the same shape. They act on
the test signal before the model's normalisation, as a change of recording conditions
would. `SHIFTS` names the settings a probe config can ask for.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from crema_jax.data import records
from crema_jax.data import signal

Shift = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

LIMB_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF")


def gaussian_noise(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
                   snr_db: float) -> np.ndarray:
  """White noise at `snr_db` decibels below each lead's power (mean removed)."""
  del sampling_rate
  power = np.var(x, axis=0, keepdims=True)
  std = np.sqrt(power / 10.0 ** (snr_db / 10.0))
  return x + rng.standard_normal(x.shape).astype(np.float32) * std.astype(np.float32)


def baseline_wander(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
                    amplitude_mv: float, hz: float = 0.3) -> np.ndarray:
  """A `hz` sinusoid of `amplitude_mv` on every lead (random phase per lead), as
  breathing moves the baseline."""
  t = np.arange(x.shape[0])[:, None] / sampling_rate
  phase = rng.uniform(0, 2 * np.pi, size=(1, x.shape[1]))
  return x + (amplitude_mv * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


def powerline(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
              amplitude_mv: float, hz: float = 50.0) -> np.ndarray:
  """Mains interference: a `hz` sinusoid of `amplitude_mv` (random phase per lead)."""
  t = np.arange(x.shape[0])[:, None] / sampling_rate
  phase = rng.uniform(0, 2 * np.pi, size=(1, x.shape[1]))
  return x + (amplitude_mv * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


def keep_leads(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
               leads: Sequence[str]) -> np.ndarray:
  """Zeroes every lead not in `leads` (a device that records fewer leads)."""
  del sampling_rate, rng
  out = np.zeros_like(x)
  keep = [records.LEADS.index(lead) for lead in leads]
  out[:, keep] = x[:, keep]
  return out


def amplitude_scale(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
                    factor: float) -> np.ndarray:
  """Multiplies every lead by `factor` (a gain calibration error)."""
  del sampling_rate, rng
  return x * np.float32(factor)


def sampling_rate_change(x: np.ndarray, sampling_rate: float,
                         rng: np.random.Generator, *, rate: float) -> np.ndarray:
  """The ECG as a `rate` Hz device would have recorded it: resampled to `rate` and back
  (the content above rate / 2 is lost)."""
  del rng
  low = signal.resample(x, sampling_rate, rate)
  back = signal.resample(low, rate, sampling_rate)
  length = x.shape[0]
  if back.shape[0] < length:
    back = np.pad(back, ((0, length - back.shape[0]), (0, 0)), mode="edge")
  return back[:length].astype(np.float32)


SHIFTS: dict[str, Shift] = {
    "noise_snr20": functools.partial(gaussian_noise, snr_db=20.0),
    "noise_snr10": functools.partial(gaussian_noise, snr_db=10.0),
    "noise_snr0": functools.partial(gaussian_noise, snr_db=0.0),
    "baseline_wander_0.5mv": functools.partial(baseline_wander, amplitude_mv=0.5),
    "powerline_50hz_0.2mv": functools.partial(powerline, amplitude_mv=0.2, hz=50.0),
    "powerline_60hz_0.2mv": functools.partial(powerline, amplitude_mv=0.2, hz=60.0),
    "limb_leads_only": functools.partial(keep_leads, leads=LIMB_LEADS),
    "lead_I_only": functools.partial(keep_leads, leads=("I",)),
    "amplitude_x0.5": functools.partial(amplitude_scale, factor=0.5),
    "amplitude_x2": functools.partial(amplitude_scale, factor=2.0),
    "rate_100hz": functools.partial(sampling_rate_change, rate=100.0),
    "rate_250hz": functools.partial(sampling_rate_change, rate=250.0),
}


def check_names(names: Sequence[str]) -> None:
  """Raises a ValueError naming every unknown shift."""
  unknown = [n for n in names if n not in SHIFTS]
  if unknown:
    raise ValueError(f"unknown robustness shift(s) {unknown}; known: {sorted(SHIFTS)}")
