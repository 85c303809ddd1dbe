"""Pure numpy/scipy signal functions: lead names, resampling, filtering, normalisation.

The array functions take and return `x: [time, leads]` and have no side effects.
"""

from __future__ import annotations

import fractions
import math
import numbers
from typing import Sequence

import numpy as np

from crema_jax.data import records

MAX_RESAMPLE_FACTOR = 1000  # Largest up/down factor of resample_poly we accept.
RATE_TOLERANCE = 1e-6  # Relative rate error accepted when rounding the ratio.

# Spellings of the standard leads found in WFDB headers, keyed by a lower-case form.
_LEAD_ALIASES = {
    **{lead.lower(): lead for lead in records.LEADS},
    "di": "I", "dii": "II", "diii": "III", "lead i": "I", "lead ii": "II",
    "lead iii": "III", "avr": "aVR", "avl": "aVL", "avf": "aVF",
}


def canonical_lead_name(name: str) -> str | None:
  """The standard name of a lead (`AVR` -> `aVR`, `v1` -> `V1`), None if unknown."""
  return _LEAD_ALIASES.get(str(name).strip().lower())


def standard_lead_order(sig_names: Sequence[str],
                        leads: Sequence[str] = records.LEADS) -> np.ndarray:
  """[len(leads)] int indices into `sig_names` giving `leads` (default: the standard 12
  in `records.LEADS` order); other leads of the record are left out.

  Raises:
    ValueError: naming the wanted leads that are missing (or given twice).
  """
  positions: dict[str, int] = {}
  for i, name in enumerate(sig_names):
    lead = canonical_lead_name(name)
    if lead is not None:
      if lead in positions:
        raise ValueError(f"lead {lead} appears twice in {list(sig_names)}")
      positions[lead] = i
  missing = [lead for lead in leads if lead not in positions]
  if missing:
    raise ValueError(f"missing lead(s) {', '.join(missing)} (record has "
                     f"{', '.join(sig_names) or 'no leads'})")
  return np.array([positions[lead] for lead in leads])


def _check_rate(name: str, rate) -> float:
  if (isinstance(rate, bool) or not isinstance(rate, numbers.Real)
      or not math.isfinite(rate) or rate <= 0):
    raise ValueError(f"cannot resample: {name} rate {rate!r} Hz is not a positive "
                     "finite number")
  return float(rate)


def resample_factors(from_rate: float, to_rate: float) -> tuple[int, int]:
  """(up, down), both at most MAX_RESAMPLE_FACTOR, with up / down == to_rate / from_rate.

  The ratio may differ from the exact one by RATE_TOLERANCE (relative), so that header
  rates written with rounding (e.g. 499.99999) still resample.

  Raises:
    ValueError: for a rate that is not positive and finite, or a ratio that needs
      larger factors (e.g. 499.9 Hz -> 500 Hz is 5000 / 4999).
  """
  exact = (fractions.Fraction(_check_rate("target", to_rate)) /
           fractions.Fraction(_check_rate("source", from_rate)))
  ratio = exact.limit_denominator(MAX_RESAMPLE_FACTOR)
  if (ratio.numerator == 0 or ratio.numerator > MAX_RESAMPLE_FACTOR
      or abs(ratio - exact) > RATE_TOLERANCE * exact):
    raise ValueError(f"cannot resample {from_rate:g} Hz to {to_rate:g} Hz: the ratio "
                     f"{float(exact):.8g} is not up/down with both factors at most "
                     f"{MAX_RESAMPLE_FACTOR}")
  return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
  """x: [time, leads] at from_rate -> [ceil(time * up / down), leads] float32 at to_rate.

  Polyphase filtering (scipy.signal.resample_poly), which anti-aliases when decimating.
  The edges are padded along a fitted line rather than with zeros, so a DC offset does
  not turn into an edge transient (and a flat lead stays flat).
  """
  up, down = resample_factors(from_rate, to_rate)
  if up == down:
    return np.asarray(x, np.float32)
  # Imported here: ~1.8 s in every prepare worker, and records at the target rate
  # never need it.
  from scipy import signal as scipy_signal  # pylint: disable=g-import-not-at-top
  return scipy_signal.resample_poly(x, up, down, axis=0,
                                    padtype="line").astype(np.float32)
