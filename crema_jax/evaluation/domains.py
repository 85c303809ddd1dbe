"""Other hospitals' labelled ECGs ("across clinical domains"): the split each is probed
on, and how a PTB-XL head's classes meet another source's.

A second source (CPSC 2018 or Chapman-Shaoxing through the CinC reader, CODE-15%, ...) is
evaluated two ways on its own test split: (a) within-source probes trained on its
training split at several label fractions (MERL's protocol), (b) the PTB-XL probe
applied unchanged, its classes matched by name (the readers map SNOMED-CT Dx codes and
CODE-15%'s labels to the superclasses: `data/resources/cinc_dx_codes.csv`,
`readers/code15.py`). The split is patient-disjoint, stratified on the superclasses and
seeded; it is written to disk the first time and read back after, so every encoder and
every later run is scored on the same ECGs.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from crema_jax.data import storage
from crema_jax.evaluation import splits

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def domain_split(prepared: storage.PreparedSource, labels: np.ndarray, seed: int,
                 path: pathlib.Path,
                 fractions: Sequence[float] = SPLIT_FRACTIONS, *,
                 among: np.ndarray | None = None, patients: np.ndarray | None = None,
                 stratified_on: str = "superclasses") -> dict[str, np.ndarray]:
  """{"train", "val", "test": prepared positions}: read from `path` when it exists (and
  still matches the source's records), else drawn and written there.

  labels: [records, classes] the stratification targets (the superclasses).
  among: [records] bool, the records to split (None: all; a labels table: those it
    labels); patients: [records] the patient keys (None: the prepared patient ids).
  """
  ecg_ids = prepared.index["ecg_id"]
  among = np.ones(len(ecg_ids), bool) if among is None else np.asarray(among, bool)
  if path.is_file():
    saved = json.loads(path.read_text())
    where = {int(e): i for i, e in enumerate(ecg_ids)}
    missing = [e for s in SPLITS for e in saved["ecg_id"][s] if e not in where]
    split_now = {int(e) for e in ecg_ids[among]}
    if (missing or saved["num_records"] != len(ecg_ids)
        or {e for s in SPLITS for e in saved["ecg_id"][s]} != split_now):
      raise ValueError(
          f"{path}: the split was drawn for {saved['num_records']} records of "
          f"{saved['source']} ({sum(len(v) for v in saved['ecg_id'].values())} split), "
          f"{len(missing)} of them are not in {prepared.path} now ({len(ecg_ids)} "
          f"records, {len(split_now)} to split); delete it to draw a new split")
    return {s: np.array([where[e] for e in saved["ecg_id"][s]], np.int64)
            for s in SPLITS}
  chosen = np.flatnonzero(among)
  patients = prepared.index["patient_id"] if patients is None else patients
  parts = splits.stratified_patient_split(np.asarray(patients)[chosen],
                                          np.asarray(labels)[chosen], tuple(fractions),
                                          seed)
  positions = dict(zip(SPLITS, (np.sort(chosen[np.asarray(p, np.int64)])
                                for p in parts)))
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({
      "source": str(prepared.path), "num_records": int(len(ecg_ids)), "seed": seed,
      "fractions": list(fractions), "unit": "patient", "stratified_on": stratified_on,
      "ecg_id": {s: [int(e) for e in ecg_ids[p]] for s, p in positions.items()}}))
  return positions


def matching_columns(head_classes: Sequence[str], classes: Sequence[str]
                     ) -> tuple[list[int], list[int]]:
  """(head columns, task columns) of the classes both name, in `classes` order."""
  shared = [c for c in classes if c in head_classes]
  return ([list(head_classes).index(c) for c in shared],
          [list(classes).index(c) for c in shared])
