"""Distribution shifts for robustness evaluation: pure numpy functions of a raw ECG.

Each shift maps `x: [time, 12]` millivolts at `sampling_rate` Hz (leads in
`records.LEADS` order) and a Generator to a shifted ECG of the same shape. They act on
the test signal before the model's normalisation, as a change of recording conditions
would. `SHIFTS` names the settings a probe config can ask for; each changes what the
encoder sees after its per-lead standardisation (a gain error would not: x2 on every
lead is undone exactly, so no amplitude-scale shift is offered, nor a 250 Hz
resampling: a 500 Hz ECG holds next to nothing above 125 Hz).

Electrode mistakes follow from the leads' definitions (Einthoven / Goldberger):
  I = LA - RA, II = LL - RA, III = LL - LA,
  aVR = RA - (LA + LL) / 2, aVL = LA - (RA + LL) / 2, aVF = LL - (RA + LA) / 2.
Swapping the LA and RA electrodes gives I' = -I, II' = III, III' = II, aVR' = aVL,
aVL' = aVR, aVF' = aVF (the commonest limb reversal); swapping LA and LL gives I' = II,
II' = I, III' = -III, aVL' = aVF, aVF' = aVL, aVR' = aVR. Precordial misplacement swaps
V1 and V2 (the chest leads have their own electrodes).
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
  """Mains interference: a `hz` sinusoid of `amplitude_mv` (random phase per lead).
  Refused at or above half the sampling rate, where a recording cannot hold it (at
  Nyquist its amplitude would swing with the phase)."""
  _check_below_nyquist(f"powerline {hz:g} Hz", hz, sampling_rate)
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


def _lead(name: str) -> int:
  return records.LEADS.index(name)


def swap_electrodes(x: np.ndarray, sampling_rate: float, rng: np.random.Generator, *,
                    pair: str) -> np.ndarray:
  """The ECG recorded with two electrodes swapped: "la_ra", "la_ll" (limb) or
  "v1_v2" (precordial); see the module docstring for what each does to the leads."""
  del sampling_rate, rng
  out = x.copy()
  I, II, III, aVR, aVL, aVF = (_lead(n) for n in LIMB_LEADS)
  if pair == "la_ra":
    out[:, I] = -x[:, I]
    out[:, [II, III]] = x[:, [III, II]]
    out[:, [aVR, aVL]] = x[:, [aVL, aVR]]
  elif pair == "la_ll":
    out[:, [I, II]] = x[:, [II, I]]
    out[:, III] = -x[:, III]
    out[:, [aVL, aVF]] = x[:, [aVF, aVL]]
  elif pair == "v1_v2":
    out[:, [_lead("V1"), _lead("V2")]] = x[:, [_lead("V2"), _lead("V1")]]
  else:
    raise ValueError(f"unknown electrode pair {pair!r}")
  return out


def sampling_rate_change(x: np.ndarray, sampling_rate: float,
                         rng: np.random.Generator, *, rate: float) -> np.ndarray:
  """The ECG as a `rate` Hz device would have recorded it: resampled to `rate` and back
  (the content above rate / 2 is lost). Refused at or above the recording's rate."""
  del rng
  if rate >= sampling_rate:
    raise ValueError(f"rate shift to {rate:g} Hz does not lower a {sampling_rate:g} Hz "
                     "recording's rate")
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
    "electrodes_la_ra": functools.partial(swap_electrodes, pair="la_ra"),
    "electrodes_la_ll": functools.partial(swap_electrodes, pair="la_ll"),
    "electrodes_v1_v2": functools.partial(swap_electrodes, pair="v1_v2"),
    "rate_100hz": functools.partial(sampling_rate_change, rate=100.0),
}


def _check_below_nyquist(what: str, hz: float, sampling_rate: float) -> None:
  if hz >= sampling_rate / 2:
    raise ValueError(f"{what} is at or above half the {sampling_rate:g} Hz sampling "
                     f"rate ({sampling_rate / 2:g} Hz): a recording at that rate cannot "
                     "hold it")


def check_names(names: Sequence[str], sampling_rate: float | None = None) -> None:
  """Raises a ValueError naming every unknown shift and, given the recordings'
  `sampling_rate`, every shift it cannot take (mains at or above Nyquist, a "rate"
  shift that does not lower the rate)."""
  unknown = [n for n in names if n not in SHIFTS]
  if unknown:
    raise ValueError(f"unknown robustness shift(s) {unknown}; known: {sorted(SHIFTS)}")
  if sampling_rate is None:
    return
  problems = []
  for name in names:
    keywords = getattr(SHIFTS[name], "keywords", {})
    if SHIFTS[name].func is powerline and keywords["hz"] >= sampling_rate / 2:
      problems.append(f"{name}: {keywords['hz']:g} Hz is at or above half the "
                      f"{sampling_rate:g} Hz sampling rate")
    if SHIFTS[name].func is sampling_rate_change and keywords["rate"] >= sampling_rate:
      problems.append(f"{name}: {keywords['rate']:g} Hz does not lower the "
                      f"{sampling_rate:g} Hz sampling rate")
  if problems:
    raise ValueError("robustness shifts the data cannot take: " + "; ".join(problems))
