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


def stratified_patient_split(patient_ids: np.ndarray, labels: np.ndarray,
                             fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
                             seed: int = 0) -> list[np.ndarray]:
  """Patient-disjoint splits of n ECGs, stratified on their multi-label targets.

  Iterative stratification at the patient level (Sechidis et al. 2011, as PTB-XL drew
  its strat_folds): patients are taken rarest label first (ties in a seeded random
  order); each goes to the split that still lacks the most of that label relative to
  its target share, ties to the split that lacks the most ECGs overall. Patients
  without a label are dealt last, by ECG count.

  Args:
    patient_ids: [n] the patient of each ECG.
    labels: [n, classes] 0/1.
    fractions: the splits' shares of the ECGs (normalised to sum 1).
    seed: a different seed, a different split.

  Returns:
    One sorted position array per fraction; every ECG in exactly one, every patient's
    ECGs together.
  """
  fractions = np.asarray(fractions, np.float64) / np.sum(fractions)
  labels = np.asarray(labels, np.int64).reshape(len(labels), -1)
  patients, inverse = np.unique(patient_ids, return_inverse=True)
  per_patient = np.zeros((len(patients), labels.shape[1]), np.int64)
  np.add.at(per_patient, inverse, labels)
  ecgs = np.bincount(inverse, minlength=len(patients))
  wanted_labels = fractions[:, None] * per_patient.sum(axis=0)[None, :]  # [splits, k]
  wanted_ecgs = fractions * len(labels)
  rng = np.random.default_rng(seed)
  totals = per_patient.sum(axis=0)
  rarest = np.where(per_patient > 0, totals[None, :], np.iinfo(np.int64).max).min(axis=1)
  order = np.lexsort((rng.permutation(len(patients)), rarest))
  split_of = np.empty(len(patients), np.int64)
  for p in order:
    have = per_patient[p] > 0
    if have.any():
      label = np.flatnonzero(have)[np.argmin(totals[have])]
      need = wanted_labels[:, label]
      best = np.flatnonzero(need == need.max())
    else:
      best = np.arange(len(fractions))
    best = best[np.argmax(wanted_ecgs[best])]
    split_of[p] = best
    wanted_labels[best] -= per_patient[p]
    wanted_ecgs[best] -= ecgs[p]
  return [np.flatnonzero(split_of[inverse] == k) for k in range(len(fractions))]
