"""Host side of the views: batches of prepared records -> the raw crops the step reads.

The pipelines batch record *indices* and each transform below turns one batch of them
into arrays with one batched read (`PreparedSource.read_signals`: one ArrayRecord
`__getitems__` per source, only the `ecg` feature decoded); labels, folds and patients
come from the prepared index, so no per-record TFDS decoding or Python dict is built.
- `PretrainCrops`: crops of each ECG for its two views, plus one of another ECG of the
  same patient (`PatientIndex`) when the patient loss uses it;
- `EvalView`: the centred crop with its labels (probing);
- `LabelledCrop`: one crop with its labels (fine-tuning).
The host only slices the stored float16 records (a crop, a time shift) and lays them
out as the device wants them, `[leads, time]`; standardisation, the other
augmentations and the MAE masks run in the jitted step (`crema_jax.input.device`). Crop positions and
pair partners come from the per-batch Generator Grain hands to a `RandomMap`, so a run
is reproducible and its iterator state resumes it exactly.
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np

from crema_jax.data import storage


def max_shift_samples(augment: ml_collections.ConfigDict, sampling_rate: float) -> int:
  """The largest time shift of an augmented view, in samples (0: none)."""
  return max(int(round(augment.max_shift_seconds * sampling_rate)), 0)


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
    self.keys = keys

  def others(self, i: int) -> np.ndarray:
    k = self.keys[i]
    group = self._order[self._starts[k]:self._starts[k + 1]]
    return group[group != i]


class Subset:
  """The records of a prepared source (or corpus) at `positions`, addressed 0..n-1.

  A pipeline batches subset indices; `read(indices)` returns their stored signals.
  Patients are keyed over the whole subset (a corpus's patient ids are already
  namespaced by source, so keys never collide across sources).
  """

  def __init__(self, prepared: storage.PreparedSource, positions: np.ndarray):
    self.prepared = prepared
    self.positions = np.asarray(positions, np.int64)
    self.patients = PatientIndex(prepared.index["patient_id"][self.positions])

  def __len__(self) -> int:
    return len(self.positions)

  def index(self, field: str, indices: np.ndarray) -> np.ndarray:
    """`prepared.index[field]` of subset `indices`."""
    return self.prepared.index[field][self.positions[indices]]

  def read(self, indices: np.ndarray) -> list[np.ndarray]:
    """The stored [time, leads] float16 mV signals of subset `indices`, batched."""
    return self.prepared.read_signals(self.positions[np.asarray(indices, np.int64)])

  def __repr__(self) -> str:
    return f"Subset({len(self)} records of {self.prepared.path})"


def crop_start(length: int, window: int, rng: np.random.Generator | None) -> int:
  """Where a `window`-sample crop of a `length`-sample record starts: uniform (rng)
  or centred (None); 0 when the record is shorter (it is zero-padded at the end)."""
  if length <= window:
    return 0
  return (length - window) // 2 if rng is None else int(rng.integers(0, length - window + 1))


def crop(ecg: np.ndarray, window: int, rng: np.random.Generator | None,
         max_shift: int = 0) -> tuple[np.ndarray, int]:
  """A window of a stored record, as stored (float16 mV) and transposed to the
  device's layout: [time, leads] -> ([leads, window], valid samples); random (rng) or
  centred (rng=None), time-shifted by U{-max_shift..max_shift} samples with rng (see
  `_crop_into`)."""
  out = np.empty((1, ecg.shape[1], window), ecg.dtype)
  return out[0], int(_crop_into(out, [ecg], rng, max_shift, rng)[0])


def centred_crops(signals: list[np.ndarray], window: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """[n] records [time, leads] -> ([n, leads, window] centred crops, zero-padded;
  valid [n] int32): the evaluation view of records read from files."""
  return _crops(signals, window, None)


def _crops(signals: list[np.ndarray], window: int, rng: np.random.Generator | None,
           max_shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """[n] records -> ([n, leads, window] crops as stored (float16), valid [n] int32)."""
  out = np.empty((len(signals), signals[0].shape[1], window), signals[0].dtype)
  return out, _crop_into(out, signals, rng, max_shift, rng)


def _crop_into(out: np.ndarray, signals: list[np.ndarray],
               rng: np.random.Generator | None, max_shift: int = 0,
               shift_rng: np.random.Generator | None = None) -> np.ndarray:
  """Writes crops of `signals` ([n] records, [time, leads]) into out [n, leads,
  window] (time last: the device's layout). Returns valid [n] int32, the samples of
  each crop that are signal (the rest, zeros, pads a record shorter than the window).

  With `shift_rng` and `max_shift` > 0 each crop is also shifted in time by
  U{-max_shift..max_shift} samples, the view augmentation: later by s > 0 (its first
  s samples repeat the crop's first value), earlier by s < 0 (the crop's last value
  repeats at the end of a full window; a short record keeps its zero padding, valid
  shrinks). A shift is a choice of slice, so it costs the host a fill and the device
  nothing."""
  window = out.shape[2]
  valid = np.empty(len(signals), np.int32)
  shifts = (shift_rng.integers(-max_shift, max_shift + 1, size=len(signals))
            if shift_rng is not None and max_shift > 0 else np.zeros(len(signals), int))
  for k, ecg in enumerate(signals):
    start = crop_start(ecg.shape[0], window, rng)
    piece = ecg[start:start + window]
    n, s = len(piece), int(shifts[k])
    if s >= 0:  # out[:, t] = piece[t - s]: the first s samples repeat piece[0].
      m = min(n, window - s)
      out[k, :, :s] = piece[0][:, None]
      out[k, :, s:s + m] = piece[:m].T
      filled = s + m
    else:  # out[:, t] = piece[t - s]: the crop starts -s samples later.
      m = n + s
      out[k, :, :m] = piece[-s:].T
      filled = m
    if n == window and filled < window:  # A full window: its last value repeats.
      out[k, :, filled:] = piece[-1][:, None]
      filled = window
    out[k, :, filled:] = 0
    valid[k] = filled
  return valid


class PretrainCrops(grain.transforms.RandomMap):
  """A batch of subset indices [b] -> the raw crops of their views (`num_views`: two
  crops of each ECG, plus one of another ECG of the same patient when the patient loss
  uses it).

  Output (numpy): signals [b, views, leads, seq_len] float16 mV, each crop shifted in
  time by up to `max_shift` samples (`_crop_into`); valid [b, views] int32, the
  samples of each crop that are signal (a shorter record is zero-padded at the end);
  patient [b] int32
  (equal for ECGs of one patient); has_pair [b] bool (False: no other ECG of this
  patient, and view 2 is a third crop of the same ECG); position, pair_position [b]
  int64 (indices in the prepared source; pair_position is position without a pair
  view). Standardisation, augmentation and masks are the step's
  (`crema_jax.input.device`).
  """

  def __init__(self, subset: Subset, seq_len: int, views: int, random_crop: bool,
               max_shift: int = 0):
    if views not in (2, 3):
      raise ValueError(f"views={views}: expected 2 or 3")
    self._subset = subset
    self._seq_len = seq_len
    self._views = views
    self._random_crop = random_crop
    self._max_shift = max_shift

  def _partners(self, indices: np.ndarray, rng: np.random.Generator):
    partners, has_pair = indices.copy(), np.zeros(len(indices), bool)
    for k, i in enumerate(indices):
      others = self._subset.patients.others(int(i))
      if len(others):
        partners[k], has_pair[k] = rng.choice(others), True
    return partners, has_pair

  def random_map(self, indices: np.ndarray, rng: np.random.Generator) -> dict:
    indices = np.asarray(indices, np.int64)
    crop_rng = rng if self._random_crop else None
    partners, has_pair = indices, np.zeros(len(indices), bool)
    if self._views == 3:
      partners, has_pair = self._partners(indices, rng)
    with_pair = np.concatenate([indices, partners[has_pair]])
    signals = self._subset.read(with_pair)
    ecgs, pairs = signals[:len(indices)], iter(signals[len(indices):])
    out = np.empty((len(indices), self._views, ecgs[0].shape[1], self._seq_len),
                   ecgs[0].dtype)
    valid = np.empty((len(indices), self._views), np.int32)
    crop_into = lambda view, records: _crop_into(out[:, view], records, crop_rng,
                                                 self._max_shift, rng)
    valid[:, 0] = crop_into(0, ecgs)
    valid[:, 1] = crop_into(1, ecgs)
    if self._views == 3:
      valid[:, 2] = crop_into(2, [next(pairs) if p else e
                                  for e, p in zip(ecgs, has_pair)])
    return {"signals": out, "valid": valid,
            "has_pair": has_pair,
            "patient": self._subset.patients.keys[indices],
            "position": self._subset.positions[indices],
            "pair_position": self._subset.positions[partners]}


class EvalView(grain.transforms.Map):
  """A batch of subset indices -> their centred crops [b, leads, seq_len] (float32 mV,
  unaugmented) and valid samples [b] with labels [b, 5] float32, ecg_id, patient, fold and position.

  lead_mask: optional [leads] 1/0 multiplying the view (see `pipeline.eval_lead_mask`).
  Standardisation happens on the device (`device.standardize`), after any robustness
  shift of the raw signal.
  """

  def __init__(self, seq_len: int, subset: Subset, lead_mask: np.ndarray | None = None):
    self._seq_len = seq_len
    self._subset = subset
    self._lead_mask = lead_mask

  def map(self, indices: np.ndarray) -> dict:
    indices = np.asarray(indices, np.int64)
    view, valid = _crops(self._subset.read(indices), self._seq_len, None)
    view = view.astype(np.float32)
    if self._lead_mask is not None:
      view = view * self._lead_mask[:, None]
    return {
        "view": view,
        "valid": valid,
        "labels": self._subset.index("labels", indices).astype(np.float32),
        "ecg_id": self._subset.index("ecg_id", indices),
        "patient": self._subset.patients.keys[indices],
        "fold": self._subset.index("fold", indices).astype(np.int32),
        "position": self._subset.positions[indices],
    }


class LabelledCrop(grain.transforms.RandomMap):
  """A batch of subset indices -> one raw crop each with its labels (supervised
  fine-tuning; the step standardises and augments them).

  Output: view [b, leads, seq_len] float16 mV, shifted in time by up to `max_shift`
  samples; valid [b] int32 (samples of signal), labels [b, 5] float32, position [b].
  lead_mask: as EvalView's.
  """

  def __init__(self, subset: Subset, seq_len: int, random_crop: bool,
               lead_mask: np.ndarray | None = None, max_shift: int = 0):
    self._subset = subset
    self._seq_len = seq_len
    self._random_crop = random_crop
    self._lead_mask = lead_mask
    self._max_shift = max_shift

  def random_map(self, indices: np.ndarray, rng: np.random.Generator) -> dict:
    indices = np.asarray(indices, np.int64)
    signals = self._subset.read(indices)
    view = np.empty((len(indices), signals[0].shape[1], self._seq_len),
                    signals[0].dtype)
    valid = _crop_into(view, signals, rng if self._random_crop else None,
                       self._max_shift, rng)
    if self._lead_mask is not None:
      view = view * self._lead_mask.astype(view.dtype)[:, None]
    return {"view": view, "valid": valid,
            "labels": self._subset.index("labels", indices).astype(np.float32),
            "position": self._subset.positions[indices]}
