"""The prepared-data format: TFDS ArrayRecord shards plus an index and a manifest.

A prepared source lives in `{data_dir}/{name}/{VERSION}/`, a TFDS dataset directory:
- `{name}-full.array_record-0000i-of-0000n`: the examples of `Record.to_example()`,
  serialised with the TFDS `FEATURES` spec, in the source's key order.
- `dataset_info.json`, `features.json`: TFDS metadata, so `tfds.data_source(name,
  data_dir=data_dir, split="full")` and `tfds.builder_from_directory` read it (no
  TensorFlow needed).
- `index.npz`: per-example metadata aligned with the data source order (ecg_id,
  patient_id, fold, labels, age, sex, num_samples), so folds, patients and labels can be
  selected without decoding a single waveform.
- `manifest.json`: counts, label counts, the records skipped and why.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from crema_jax.data import records

VERSION = "1.0.0"
SPLIT = "full"  # TFDS reserves "all" for the union of splits.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INDEX_FIELDS = ("ecg_id", "patient_id", "fold", "labels", "age", "sex", "num_samples")

FEATURES = tfds.features.FeaturesDict({
    "ecg": tfds.features.Tensor(shape=(None, len(records.LEADS)), dtype=np.float16),
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


class PreparedSource:
  """A prepared source: its TFDS data source, index and manifest.

  Attributes:
    data_source: random-access `tfds` ArrayRecord data source (a Grain source).
    index: dict of per-example arrays aligned with `data_source` (see INDEX_FIELDS).
    manifest: the dict written by prepare.
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
    with np.load(self.path / "index.npz") as index:
      self.index = {field: index[field] for field in INDEX_FIELDS}
    self.data_source = tfds.data_source(name, data_dir=str(data_dir), split=SPLIT)
    if len(self.data_source) != len(self.index["ecg_id"]):
      raise ValueError(f"{self.path}: {len(self.data_source)} examples but "
                       f"{len(self.index['ecg_id'])} index rows; prepare again")

  def __len__(self) -> int:
    return len(self.data_source)
