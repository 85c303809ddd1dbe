"""The prepared-data format: TFDS ArrayRecord shards plus an index and a manifest.

A prepared source lives in `{data_dir}/{name}/{VERSION}/`, a TFDS dataset directory:
- `{name}-full.array_record-0000i-of-0000n`: the examples of `Record.to_example()`,
  serialised with the TFDS `features(num_leads)` spec (the signal as raw float16
  bytes), in the source's key order.
- `dataset_info.json`, `features.json`: TFDS metadata, so `tfds.data_source(name,
  data_dir=data_dir, split="full")` and `tfds.builder_from_directory` read it (no
  TensorFlow needed).
- `index.npz`: per-example metadata aligned with the data source order (ecg_id,
  patient_id, fold, labels, age, sex, num_samples), so folds, patients and labels can be
  selected without decoding a single waveform.
- `manifest.json`: counts, label counts, leads, the records skipped and why, the
  records excluded by the leakage guard.
A prepared corpus is a folder holding only a `manifest.json` of `"kind": "corpus"`
that names its member sources (prepared beside it) and their mixing weights;
`PreparedSource` opens it as the members one after another.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from crema_jax.data import records

VERSION = "1.0.0"
FORMAT = 2  # 2: `ecg` stored as raw float16 bytes (1: a TFDS float_list).
SPLIT = "full"  # TFDS reserves "all" for the union of splits.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INDEX_FIELDS = ("ecg_id", "patient_id", "fold", "labels", "age", "sex", "num_samples")



def features(num_leads: int = len(records.LEADS)) -> tfds.features.FeaturesDict:
  """The TFDS spec of one stored example; `ecg` is [time, num_leads] float16."""
  return tfds.features.FeaturesDict({
      # Raw float16 bytes: 2 bytes a sample, and ~30x faster to write than TFDS's
      # default float_list (one Python float per sample).
      "ecg": tfds.features.Tensor(shape=(None, num_leads), dtype=np.float16,
                                  encoding=tfds.features.Encoding.BYTES),
      "sampling_rate": tfds.features.Scalar(dtype=np.int32),
      "ecg_id": tfds.features.Scalar(dtype=np.int64),
      "patient_id": tfds.features.Scalar(dtype=np.int64),
      "source": tfds.features.Text(),
      "record_name": tfds.features.Text(),
      "age": tfds.features.Scalar(dtype=np.float32),
      "sex": tfds.features.Scalar(dtype=np.int32),
      "labels": tfds.features.Tensor(shape=(len(records.SUPERCLASSES),), dtype=np.uint8),
      "fold": tfds.features.Scalar(dtype=np.int32),
      "scp_codes": tfds.features.Text(),
      "subclasses": tfds.features.Text(),
  })


FEATURES = features()


def dataset_dir(data_dir: str | pathlib.Path, name: str) -> pathlib.Path:
  return pathlib.Path(data_dir) / name / VERSION


def shard_filename(name: str, shard: int, num_shards: int) -> str:
  return f"{name}-{SPLIT}.array_record-{shard:05d}-of-{num_shards:05d}"


def index_row(record: records.Record) -> dict:
  """The `index.npz` fields of one record."""
  return {
      "ecg_id": int(record.ecg_id),
      "patient_id": int(record.patient_id),
      "fold": int(record.fold),
      "labels": [int(v) for v in record.labels],
      "age": float(record.age),
      "sex": int(record.sex),
      "num_samples": int(record.ecg.shape[0]),
  }


def index_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
  dtypes = {"ecg_id": np.int64, "patient_id": np.int64, "fold": np.int32,
            "labels": np.uint8, "age": np.float32, "sex": np.int32,
            "num_samples": np.int32}
  out = {}
  for field, dtype in dtypes.items():
    values = [row[field] for row in rows]
    shape = (0, len(records.SUPERCLASSES)) if field == "labels" and not values else None
    out[field] = np.asarray(values, dtype).reshape(shape) if shape else np.asarray(
        values, dtype)
  return out


def namespaced_patients(patient_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Per-source patient ids -> int64 keys that are equal exactly where both the source
  and the id are equal: each source's ids are ranked and offset past the previous
  sources' ranks, so two sources' patient 17 never collide."""
  out, offset = [], 0
  for ids in patient_ids:
    unique, inverse = np.unique(np.asarray(ids, np.int64), return_inverse=True)
    out.append(inverse.astype(np.int64) + offset)
    offset += len(unique)
  return out


class ConcatSource:
  """Random access over several data sources one after another (a Grain source)."""

  def __init__(self, sources: Sequence):
    self._sources = list(sources)
    self.starts = np.concatenate([[0], np.cumsum([len(s) for s in self._sources])])

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getitem__(self, i: int):
    member = int(np.searchsorted(self.starts, i, side="right") - 1)
    return self._sources[member][int(i - self.starts[member])]


class PreparedSource:
  """A prepared source, or a prepared corpus of several: its TFDS data source, index
  and manifest.

  Attributes:
    data_source: random-access `tfds` ArrayRecord data source (a Grain source); for a
      corpus, the members' sources one after another.
    index: dict of per-example arrays aligned with `data_source` (see INDEX_FIELDS).
      For a corpus, `patient_id` is namespaced by source (`namespaced_patients`) and
      `source_index` says which member each record comes from.
    manifest: the dict written by prepare.
    members: for a corpus, the members' PreparedSources (else empty).
    weights: for a corpus, the members' mixing weights, summing to 1.
    starts: for a corpus, each member's first position in `data_source`.
  """

  def __init__(self, data_dir: str | pathlib.Path, name: str):
    self.name = name
    self.path = dataset_dir(data_dir, name)
    manifest_path = self.path / "manifest.json"
    if not manifest_path.is_file():
      raise FileNotFoundError(
          f"{manifest_path} not found: prepare the source first "
          f"(python -m crema_jax.data.prepare --config ...)")
    self.manifest = json.loads(manifest_path.read_text())
    self.members, self.weights = [], np.ones(1)
    if self.manifest.get("kind") == "corpus":
      self._open_corpus(data_dir)
      return
    with np.load(self.path / "index.npz") as index:
      self.index = {field: index[field] for field in INDEX_FIELDS}
    self.data_source = tfds.data_source(name, data_dir=str(data_dir), split=SPLIT)
    if len(self.data_source) != len(self.index["ecg_id"]):
      raise ValueError(f"{self.path}: {len(self.data_source)} examples but "
                       f"{len(self.index['ecg_id'])} index rows; prepare again")
    self.starts = np.array([0, len(self.data_source)])

  def _open_corpus(self, data_dir) -> None:
    members = self.manifest["members"]
    self.members = [PreparedSource(data_dir, m["name"]) for m in members]
    weights = np.array([m["weight"] for m in members], np.float64)
    self.weights = weights / weights.sum()
    self.data_source = ConcatSource([m.data_source for m in self.members])
    self.starts = self.data_source.starts
    self.index = {field: np.concatenate([m.index[field] for m in self.members])
                  for field in INDEX_FIELDS}
    self.index["patient_id"] = np.concatenate(namespaced_patients(
        [m.index["patient_id"] for m in self.members]))
    self.index["source_index"] = np.concatenate(
        [np.full(len(m), i, np.int32) for i, m in enumerate(self.members)])

  def __len__(self) -> int:
    return len(self.data_source)


def fold_positions(prepared: PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of the records in `folds` (all records when `folds` is empty)."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  return np.flatnonzero(np.isin(prepared.index["fold"], np.asarray(folds)))


def pretrain_positions(prepared: PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of a corpus member's pretraining records: those in `folds` plus every
  record without a fold (0: sources other than PTB-XL); all when `folds` is empty."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  fold = prepared.index["fold"]
  return np.flatnonzero((fold == 0) | np.isin(fold, np.asarray(folds)))
