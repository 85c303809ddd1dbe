"""Prepared-data selections that need no files."""

import numpy as np

from crema_jax.data import storage


def test_patient_fractions_are_nested_whole_patients_of_about_that_share():
  rng = np.random.default_rng(0)
  patients = rng.integers(-2**40, 2**40, 4000)
  ecgs = np.repeat(patients, 3)[rng.permutation(12000)]  # Three ECGs per patient.
  kept = {f: storage.patient_fraction(ecgs, f) for f in (0.1, 0.25, 0.5, 1.0)}
  for small, large in ((0.1, 0.25), (0.25, 0.5), (0.5, 1.0)):
    assert not (kept[small] & ~kept[large]).any()  # Nested.
  for fraction, mask in kept.items():
    chosen = np.unique(ecgs[mask])
    assert abs(len(chosen) / 4000 - fraction) < 0.03
    assert not np.isin(ecgs[~mask], chosen).any()  # A patient's ECGs go together.
  # Sequential ids (PTB-XL's) are spread too, not cut at an id.
  sequential = storage.patient_fraction(np.arange(1000), 0.5)
  assert 0.4 < sequential[:500].mean() < 0.6
