"""The prepared-data format: TFDS ArrayRecord shards plus an index and a manifest.

A prepared source lives in `{data_dir}/{name}/{VERSION}/`, a TFDS dataset directory:
- `{name}-full.array_record-0000i-of-0000n`: the examples of `Record.to_example()`,
  serialised with the TFDS `features(num_leads)` spec (the signal as raw float16
  bytes), in the source's key order.
- `dataset_info.json`, `features.json`: TFDS metadata, so `tfds.data_source(name,
  data_dir=data_dir, split="full")` and `tfds.builder_from_directory` read it (no
  TensorFlow needed).
- `index.npz`: per-example metadata aligned with the data source order (ecg_id,
  patient_id, fold, labels, age, sex, num_samples, scp_codes), so folds, patients and
  labels (the evaluation's label sets come from scp_codes) can be selected without
  decoding a single waveform.
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

from array_record.python import array_record_data_source
from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from crema_jax.data import records

VERSION = "1.0.0"
# 3: index.npz holds each record's scp_codes; 2: `ecg` stored as raw float16 bytes (1: a
# TFDS float_list).
FORMAT = 3
# One record per chunk (random access), uncompressed: ArrayRecord's default brotli saves
# ~17% of the disk on the demo's float16 signals but reads 2.3x and writes 4x slower
# (benchmarks/input_pipeline.py), and the reader is what must keep up with the devices.
SHARD_OPTIONS = "group_size:1,uncompressed"
PROGRESS_DIR = "_progress"  # prepare's settings and per-shard markers (resume).
SPLIT = "full"  # TFDS reserves "all" for the union of splits.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INDEX_FIELDS = ("ecg_id", "patient_id", "fold", "labels", "age", "sex", "num_samples",
                "scp_codes")
# Written by prepare since labels tables (crema_jax.data.labels_table) join on it; a
# folder prepared before has none, and only a labels table needs it.
OPTIONAL_INDEX_FIELDS = ("record_name",)



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


def decode_ecg(serialized: bytes, num_leads: int) -> np.ndarray:
  """The `ecg` feature of one stored example, [time, num_leads] float16 mV, without
  TFDS's decoding of the other features (the pipelines' hot path); ValueError when
  the bytes are not such a signal."""
  try:
    feature = tf_example_pb2.Example.FromString(serialized).features.feature["ecg"]
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"not a stored example ({type(e).__name__}: {e})") from e
  data = feature.bytes_list.value[0] if feature.bytes_list.value else b""
  if not data or len(data) % (2 * num_leads):
    raise ValueError(f"{len(data)} signal bytes are not [time, {num_leads}] float16")
  return np.frombuffer(data, np.float16).reshape(-1, num_leads)


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
      "scp_codes": record.scp_codes,
      "record_name": record.record_name,
  }


def index_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
  dtypes = {"ecg_id": np.int64, "patient_id": np.int64, "fold": np.int32,
            "labels": np.uint8, "age": np.float32, "sex": np.int32,
            "num_samples": np.int32, "scp_codes": np.str_, "record_name": np.str_}
  out = {}
  for field, dtype in dtypes.items():
    if rows and field not in rows[0]:
      continue  # A shard marker written before the field existed.
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


class CorruptShardError(OSError):
  """A prepared shard that cannot be read back; says which and how to repair it."""

  def __init__(self, shard: pathlib.Path, problem: str):
    super().__init__(f"{shard}: {problem}. `python -m crema_jax.data.prepare --config "
                     "... --verify` finds every damaged shard and marks it for "
                     "rewriting; then run prepare again")
    self.shard, self.problem = shard, problem


def _load_index(path: pathlib.Path) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: prepare the source again")
  with np.load(path) as index:
    missing = [f for f in INDEX_FIELDS if f not in index.files]
    if missing:
      raise ValueError(f"{path}: field(s) {', '.join(missing)} missing (written by an "
                       "older version?); prepare the source again")
    return {field: index[field] for field in INDEX_FIELDS + OPTIONAL_INDEX_FIELDS
            if field in index.files}


def _stored_leads(path: pathlib.Path, manifest: dict) -> int:
  """The lead count of the stored signals: the manifest's leads, which TFDS's
  `features.json` must agree with (else stored bytes would be reshaped wrongly)."""
  leads = len(manifest.get("leads", records.LEADS))
  spec = json.loads((path / "features.json").read_text())
  dims = spec["featuresDict"]["features"]["ecg"]["tensor"]["shape"]["dimensions"]
  if int(dims[-1]) != leads:
    raise ValueError(f"{path / 'features.json'} stores {dims[-1]} leads but "
                     f"{path / 'manifest.json'} lists {leads}; prepare the source again")
  return leads


def _check_shards(paths: Sequence[pathlib.Path], lengths: Sequence[int] | None) -> None:
  """Every shard exists, opens and holds its recorded number of records."""
  for i, path in enumerate(paths):
    if not path.is_file():
      raise CorruptShardError(path, "shard missing")
    try:
      reader = array_record_module.ArrayRecordReader(str(path))
      found = reader.num_records()
      reader.close()
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptShardError(path, f"does not open: {e}") from e
    if lengths is not None and found != lengths[i]:
      raise CorruptShardError(path, f"holds {found} records, the manifest says "
                              f"{lengths[i]}")


def _read_decoded(shards, keys: Sequence[int], num_leads: int,
                  shard_of) -> list[np.ndarray]:
  """One batched read of `keys` from an ArrayRecord source, each decoded
  (`decode_ecg`); a damaged record raises CorruptShardError naming `shard_of(key)`
  (ArrayRecord's own error names a byte, not a file)."""
  try:
    serialized = shards.__getitems__(list(keys))
  except Exception as error:  # pylint: disable=broad-except
    for k in keys:  # Which record.
      try:
        shards[k]
      except Exception as e:  # pylint: disable=broad-except
        raise CorruptShardError(shard_of(k), f"record {k}: {e}") from e
    raise error
  out = []
  for k, data in zip(keys, serialized):
    try:
      out.append(decode_ecg(data, num_leads))
    except ValueError as e:
      raise CorruptShardError(shard_of(k), f"record {k}: {e}") from e
  return out


def verify_shards(data_dir: str | pathlib.Path, name: str,
                  batch: int = 256) -> list[dict]:
  """Opens every shard of a prepared source and reads (and decodes) each of its
  records once; returns [{"shard", "index", "problem"}] for the damaged ones (empty:
  all sound). Works when the source no longer opens as a whole."""
  path = dataset_dir(data_dir, name)
  manifest = json.loads((path / "manifest.json").read_text())
  num_leads = _stored_leads(path, manifest)
  damaged = []
  for i, length in enumerate(manifest["shard_lengths"]):
    shard = path / shard_filename(name, i, manifest["num_shards"])
    try:
      _check_shards([shard], [length])
      source = array_record_data_source.ArrayRecordDataSource([str(shard)])
      for start in range(0, length, batch):
        keys = range(start, min(start + batch, length))
        signals = _read_decoded(source, keys, num_leads, lambda _: shard)
        for k, signal in zip(keys, signals):
          if not np.isfinite(signal).all():
            raise CorruptShardError(shard, f"record {k}: non-finite samples")
    except CorruptShardError as e:
      damaged.append({"shard": str(shard), "index": i, "problem": e.problem})
  return damaged


def prepared_format(path: pathlib.Path, manifest: dict) -> int:
  """The storage FORMAT a source was prepared in (manifests before the field was added
  have it only in prepare's settings; none at all: format 1)."""
  if "format" in manifest:
    return manifest["format"]
  settings = path / PROGRESS_DIR / "settings.json"
  return json.loads(settings.read_text()).get("format", 1) if settings.is_file() else 1


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

  def split(self, positions: np.ndarray):
    """Yields (member, where, member positions): the `positions` of each member."""
    positions = np.asarray(positions, np.int64)
    member = np.searchsorted(self.starts, positions, side="right") - 1
    for m in np.unique(member):
      where = np.flatnonzero(member == m)
      yield int(m), where, positions[where] - self.starts[m]


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
    found = prepared_format(self.path, self.manifest)
    if found != FORMAT:
      raise ValueError(f"{manifest_path}: prepared in format {found}, this version reads "
                       f"format {FORMAT}; prepare the source again")
    self.index = _load_index(self.path / "index.npz")
    self._num_leads = _stored_leads(self.path, self.manifest)
    self.shard_paths = [self.path / shard_filename(name, i, self.manifest["num_shards"])
                        for i in range(self.manifest["num_shards"])]
    _check_shards(self.shard_paths, self.manifest.get("shard_lengths"))
    self.data_source = tfds.data_source(name, data_dir=str(data_dir), split=SPLIT)
    if len(self.data_source) != len(self.index["ecg_id"]):
      raise ValueError(f"{self.path}: {len(self.data_source)} examples but "
                       f"{len(self.index['ecg_id'])} index rows; prepare again")
    self.starts = np.array([0, len(self.data_source)])
    self._shards = array_record_data_source.ArrayRecordDataSource(
        [str(p) for p in self.shard_paths])
    self._shard_starts = np.concatenate([[0], np.cumsum(self.manifest["shard_lengths"])])

  def _open_corpus(self, data_dir) -> None:
    members = self.manifest["members"]
    self.members = [PreparedSource(data_dir, m["name"]) for m in members]
    weights = np.array([m["weight"] for m in members], np.float64)
    self.weights = weights / weights.sum()
    self.data_source = ConcatSource([m.data_source for m in self.members])
    self.starts = self.data_source.starts
    self.index = {field: np.concatenate([m.index[field] for m in self.members])
                  for field in INDEX_FIELDS + OPTIONAL_INDEX_FIELDS
                  if all(field in m.index for m in self.members)}
    self.index["patient_id"] = np.concatenate(namespaced_patients(
        [m.index["patient_id"] for m in self.members]))
    self.index["source_index"] = np.concatenate(
        [np.full(len(m), i, np.int32) for i, m in enumerate(self.members)])

  def __len__(self) -> int:
    return len(self.data_source)

  def read_signals(self, positions: Sequence[int]) -> list[np.ndarray]:
    """The stored signals of `positions`, each [time, leads] float16 mV: one batched
    ArrayRecord read per member source, only the `ecg` feature decoded (the
    `data_source` decodes every feature of one example at a time)."""
    if self.members:
      out = [None] * len(positions)
      for m, where, member_positions in self.data_source.split(positions):
        for k, signal in zip(where, self.members[m].read_signals(member_positions)):
          out[k] = signal
      return out
    return _read_decoded(self._shards, [int(p) for p in positions], self._num_leads,
                         self.shard_of)

  def shard_of(self, position: int) -> pathlib.Path:
    """The shard file holding `position`."""
    return self.shard_paths[int(np.searchsorted(self._shard_starts, position, "right")) - 1]


def fold_positions(prepared: PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of the records in `folds` (all records when `folds` is empty)."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  return np.flatnonzero(np.isin(prepared.index["fold"], np.asarray(folds)))


def patient_fraction(patient_ids: np.ndarray, fraction: float) -> np.ndarray:
  """[n] bool: the ECGs of a `fraction` of the patients, chosen by a fixed hash of the
  patient id, so that a larger fraction holds every patient of a smaller one (nested
  subsets, as a data-scaling study needs) whatever the order or the corpus around it."""
  if fraction >= 1.0:
    return np.ones(len(patient_ids), bool)
  mixed = np.asarray(patient_ids).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
  mixed ^= mixed >> np.uint64(29)
  return (mixed >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 < fraction


def pretrain_positions(prepared: PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of a corpus member's pretraining records: those in `folds` plus every
  record without a fold (0: sources other than PTB-XL); all when `folds` is empty."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  fold = prepared.index["fold"]
  return np.flatnonzero((fold == 0) | np.isin(fold, np.asarray(folds)))
