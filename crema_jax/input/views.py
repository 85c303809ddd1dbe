"""Per-example transforms: one prepared record -> the views the step or a probe reads.

- `PretrainViews`: two augmented, masked views of one ECG, plus a view of another ECG
  of the same patient (`PatientIndex`);
- `EvalView`: one centred, unaugmented, normalised view with its labels;
- `LabelledView`: one augmented view with its labels (fine-tuning).
All randomness comes from the per-example Generator Grain hands to a `RandomMap`, so a
run is reproducible and resumes exactly.
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np

from crema_jax.data import signal
from crema_jax.data import storage
from crema_jax.input import augment
from crema_jax import masking


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


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How one view is cut, normalised and masked."""
  seq_len: int
  sampling_rate: int
  normalize: str
  num_tokens: int
  mask_ratio: float

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ViewSpec":
    return cls(
        seq_len=config.data.seq_len, sampling_rate=config.data.sampling_rate,
        normalize=config.data.normalize,
        num_tokens=masking.num_tokens(config.data.seq_len, config.model.patch_size,
                                      config.model.num_leads, config.model.token_layout),
        mask_ratio=config.mask_ratio)

  def signal(self, ecg: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """float16 [time, 12] mV -> float32 [seq_len, 12], cropped and normalised."""
    x = augment.crop(np.asarray(ecg, np.float32), self.seq_len, rng)
    if self.normalize == "per_lead":
      x = signal.standardize_leads(x)
    return x


class PretrainViews(grain.transforms.RandomMap):
  """One record -> two augmented masked views, plus a same-patient partner view.

  Output (numpy): view1, view2, pair [seq_len, leads] float32; keep1, masked1, keep2,
  masked2, keep_pair, masked_pair [K] / [M] int32; has_pair bool (False: no other ECG
  of this patient, and `pair` is a third view of the same ECG); patient int32 (equal for
  ECGs of one patient); position, pair_position int64 (indices in the prepared source).
  """

  def __init__(self, subset: SubsetSource, spec: ViewSpec,
               augment_config: ml_collections.ConfigDict, patient_pairs: bool,
               patient_offset: int = 0, position_offset: int = 0):
    self._subset = subset
    self._patients = subset.patients
    self._spec = spec
    self._augment = augment_config
    self._patient_pairs = patient_pairs
    # In a mixed corpus: keys past the previous sources' patients, and positions in
    # the corpus (the members' sources one after another).
    self._patient_offset = patient_offset
    self._position_offset = position_offset

  def _view(self, ecg: np.ndarray, rng: np.random.Generator):
    """-> (x [seq_len, leads], ids_keep [K], ids_masked [M])."""
    x = self._spec.signal(ecg, rng if self._augment.random_crop else None)
    x = augment.augment(x, rng, self._augment, self._spec.sampling_rate)
    return (x, *masking.random_masking(rng, self._spec.num_tokens, self._spec.mask_ratio))

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    i = element["subset_index"]
    others = self._patients.others(i) if self._patient_pairs else ()
    partner = self._subset[int(rng.choice(others))] if len(others) else element
    out = {"has_pair": np.bool_(len(others) > 0),
           "patient": np.int32(self._patients.key(i) + self._patient_offset),
           "position": np.int64(element["position"] + self._position_offset),
           "pair_position": np.int64(partner["position"] + self._position_offset)}
    for name, ecg in (("1", element["ecg"]), ("2", element["ecg"]),
                      ("_pair", partner["ecg"])):
      x, out[f"keep{name}"], out[f"masked{name}"] = self._view(ecg, rng)
      out["pair" if name == "_pair" else f"view{name}"] = x
    return out


class EvalView(grain.transforms.Map):
  """One record -> a centred, unaugmented, normalised view with its labels.

  lead_mask: optional [leads] 1/0 multiplying the view (see `eval_lead_mask`).
  """

  def __init__(self, spec: ViewSpec, subset: SubsetSource,
               lead_mask: np.ndarray | None = None):
    self._spec = spec
    self._patients = subset.patients
    self._lead_mask = lead_mask

  def map(self, element: dict) -> dict:
    view = self._spec.signal(element["ecg"], None)
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


class LabelledView(grain.transforms.RandomMap):
  """One record -> one augmented view with its labels (supervised fine-tuning).

  Output: view [seq_len, leads] float32, labels [5] float32, position int64.
  """

  def __init__(self, spec: ViewSpec, augment_config: ml_collections.ConfigDict):
    self._spec = spec
    self._augment = augment_config

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    x = self._spec.signal(element["ecg"], rng if self._augment.random_crop else None)
    return {"view": augment.augment(x, rng, self._augment, self._spec.sampling_rate),
            "labels": np.asarray(element["labels"], np.float32),
            "position": np.int64(element["position"])}
