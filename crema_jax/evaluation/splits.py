"""Label-fraction training sets sampled by patient, so no patient is split between the
ECGs a probe sees and those it does not."""

from __future__ import annotations

import numpy as np


def fraction_by_patient(patient_ids: np.ndarray, fraction: float,
                        seed: int) -> np.ndarray:
  """Sorted positions of whole patients covering `fraction` of the ECGs.

  Patients are taken in a seeded random order until their ECGs reach
  `round(fraction * n)` (at least one patient); every ECG of a chosen patient is in, and
  no ECG of another patient.

  Args:
    patient_ids: [n] the patient of each training ECG.
    fraction: in (0, 1]; 1 returns every position.
    seed: the sampling seed (a different seed, a different set of patients).
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction {fraction} is not in (0, 1]")
  n = len(patient_ids)
  if fraction == 1:
    return np.arange(n)
  patients, inverse, counts = np.unique(patient_ids, return_inverse=True,
                                        return_counts=True)
  order = np.random.default_rng(seed).permutation(len(patients))
  covered = np.cumsum(counts[order])
  take = int(np.searchsorted(covered, max(1, round(fraction * n)))) + 1
  chosen = np.zeros(len(patients), bool)
  chosen[order[:take]] = True
  return np.flatnonzero(chosen[inverse])
