"""Host side of the views: one prepared record -> the raw crops the step reads.

- `PretrainCrops`: crops of one ECG for its two views, plus one of another ECG of the
  same patient (`PatientIndex`) when the patient loss uses it;
- `EvalView`: the centred crop with its labels (probing);
- `LabelledCrop`: one crop with its labels (fine-tuning).
The host only slices the stored float16 record: standardisation, augmentation and the
MAE masks run in the jitted step (`crema_jax.input.device`). The crop positions come
from the per-example Generator Grain hands to a `RandomMap`, so a run is reproducible
and its iterator state resumes it exactly.
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np

from crema_jax.data import storage


def num_views(config: ml_collections.ConfigDict) -> int:
  """Views per pretraining example: two of each ECG, plus a view of another ECG of the
  same patient when the patient loss is on and `data.patient_pairs`."""
  return 3 if config.data.patient_pairs and config.loss.patient > 0 else 2


def patient_keys(patient_ids: np.ndarray) -> np.ndarray:
  """[n] int32 keys, equal exactly where the int64 patient ids are equal."""
  return np.unique(patient_ids, return_inverse=True)[1].astype(np.int32)


class PatientIndex:
  """For each record of a subset, the other records of the same patient."""

  def __init__(self, patient_ids: np.ndarray):
    keys = patient_keys(patient_ids)
    self._order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys)
    self._starts = np.concatenate([[0], np.cumsum(counts)])
    self._keys = keys
    self.num_patients = len(counts)

  def key(self, i: int) -> int:
    return int(self._keys[i])

  def others(self, i: int) -> np.ndarray:
    k = self._keys[i]
    group = self._order[self._starts[k]:self._starts[k + 1]]
    return group[group != i]


class SubsetSource:
  """A Grain random-access source over `positions` of a prepared source.

  Yields the decoded TFDS example plus `subset_index` (i) and `position` (its index in
  the prepared source).
  """

  def __init__(self, prepared: storage.PreparedSource, positions: np.ndarray):
    self._data_source = prepared.data_source
    self.positions = np.asarray(positions, np.int64)
    self.patients = PatientIndex(prepared.index["patient_id"][self.positions])

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, i: int) -> dict:
    position = int(self.positions[i])
    example = self._data_source[position]
    example["subset_index"] = i
    example["position"] = position
    return example

  def __repr__(self) -> str:
    return f"SubsetSource({len(self)} records)"


def crop(ecg: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
  """A window of a stored record, as stored (float16 mV): [time, leads] ->
  [length, leads], random (rng) or centred (rng=None); a shorter record is zero-padded
  at the end. Slicing only: the transforms that cost run on the device."""
  t = ecg.shape[0]
  if t < length:
    return np.pad(ecg, ((0, length - t), (0, 0)))
  start = (t - length) // 2 if rng is None else int(rng.integers(0, t - length + 1))
  return ecg[start:start + length]


class PretrainCrops(grain.transforms.RandomMap):
  """One record -> the raw crops of its views (`num_views`: two crops of the
  ECG, plus one of another ECG of the same patient when the patient loss uses it).

  Output (numpy): signals [views, seq_len, leads] float16 mV; patient int32 (equal for
  ECGs of one patient); has_pair bool (False: no other ECG of this patient, and view 2
  is a third crop of the same ECG); position, pair_position int64 (indices in the
  prepared source; pair_position is position without a pair view). Standardisation,
  augmentation and masks are the step's (`crema_jax.input.device`).
  """

  def __init__(self, subset: SubsetSource, seq_len: int, views: int, random_crop: bool,
               patient_offset: int = 0, position_offset: int = 0):
    if views not in (2, 3):
      raise ValueError(f"views={views}: expected 2 or 3")
    self._subset = subset
    self._patients = subset.patients
    self._seq_len = seq_len
    self._views = views
    self._random_crop = random_crop
    # In a mixed corpus: keys past the previous sources' patients, and positions in
    # the corpus (the members' sources one after another).
    self._patient_offset = patient_offset
    self._position_offset = position_offset

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    i = element["subset_index"]
    crop_rng = rng if self._random_crop else None
    ecgs = [element["ecg"], element["ecg"]]
    partner, has_pair = element, False
    if self._views == 3:
      others = self._patients.others(i)
      if len(others):
        partner, has_pair = self._subset[int(rng.choice(others))], True
      ecgs.append(partner["ecg"])
    return {"signals": np.stack([crop(e, self._seq_len, crop_rng) for e in ecgs]),
            "has_pair": np.bool_(has_pair),
            "patient": np.int32(self._patients.key(i) + self._patient_offset),
            "position": np.int64(element["position"] + self._position_offset),
            "pair_position": np.int64(partner["position"] + self._position_offset)}


class EvalView(grain.transforms.Map):
  """One record -> its centred crop (float32 mV, unaugmented) with its labels.

  lead_mask: optional [leads] 1/0 multiplying the view (see `pipeline.eval_lead_mask`).
  Standardisation happens on the device (`device.standardize`), after any robustness
  shift of the raw signal.
  """

  def __init__(self, seq_len: int, subset: SubsetSource,
               lead_mask: np.ndarray | None = None):
    self._seq_len = seq_len
    self._patients = subset.patients
    self._lead_mask = lead_mask

  def map(self, element: dict) -> dict:
    view = crop(element["ecg"], self._seq_len, None).astype(np.float32)
    if self._lead_mask is not None:
      view = view * self._lead_mask
    return {
        "view": view,
        "labels": np.asarray(element["labels"], np.float32),
        "ecg_id": np.int64(element["ecg_id"]),
        "patient": np.int32(self._patients.key(element["subset_index"])),
        "fold": np.int32(element["fold"]),
        "position": np.int64(element["position"]),
    }


class LabelledCrop(grain.transforms.RandomMap):
  """One record -> one raw crop with its labels (supervised fine-tuning; the step
  standardises and augments it).

  Output: view [seq_len, leads] float16 mV, labels [5] float32, position int64.
  """

  def __init__(self, seq_len: int, random_crop: bool):
    self._seq_len = seq_len
    self._random_crop = random_crop

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    return {"view": crop(element["ecg"], self._seq_len,
                         rng if self._random_crop else None),
            "labels": np.asarray(element["labels"], np.float32),
            "position": np.int64(element["position"])}
