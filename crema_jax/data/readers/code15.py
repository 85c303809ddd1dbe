"""CODE-15% and SaMi-Trop, read from the folders as published on Zenodo.

  exams.csv             one row per exam. CODE-15%: exam_id, age, is_male,
                        nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF, patient_id,
                        death, timey, normal_ecg, trace_file. SaMi-Trop: exam_id, age,
                        is_male, normal_ecg, death, timey (no patient_id: each exam is
                        its own patient).
  exams_part*.hdf5      CODE-15% (18 files); SaMi-Trop has one `exams.hdf5`. Each holds
                        `tracings` [N, 4096, 12] float32 at 400 Hz, leads DI, DII, DIII,
                        aVR, aVL, aVF, V1..V6 (the standard order), zero-padded on both
                        sides of a 7 s or 10 s signal, and `exam_id` [N] (a row with
                        exam_id 0 is an unused, all-zero slot).

The HDF5 files are opened lazily, once per process, and read one tracing at a time.
The padding is stripped and the signal resampled to the target rate. The CSV's boolean
labels are kept as source labels in `scp_codes` ({"RBBB": 1.0, ...}, only the true
ones); the superclass labels take what maps without doubt: 1dAVb, RBBB, LBBB -> CD and
normal_ecg -> NORM (SB, ST and AF are rhythms with no PTB-XL superclass).
"""

from __future__ import annotations

import math
import pathlib

import h5py
import numpy as np
import pandas as pd

from crema_jax.data.readers import base
from crema_jax.data import records
from crema_jax.data import signal

EXAMS_CSV = "exams.csv"
RATE = 400
NUM_SAMPLES = 4096
LABEL_COLUMNS = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF", "normal_ecg")
SUPERCLASS_OF_LABEL = {"1dAVb": "CD", "RBBB": "CD", "LBBB": "CD", "normal_ecg": "NORM"}


def _truth(value) -> bool | None:
  """CSV booleans (`True`, `False`, 1, 0, "true") -> bool; None for blanks."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  text = str(value).strip().lower()
  if text in ("true", "1", "1.0", "t", "yes"):
    return True
  if text in ("false", "0", "0.0", "f", "no"):
    return False
  return None


def strip_padding(tracing: np.ndarray) -> np.ndarray:
  """[4096, 12] with zero rows around the signal -> [time, 12], the rows from the first
  to the last one with any non-zero lead. Returns a [0, 12] array for a padding-only
  tracing."""
  nonzero = np.flatnonzero(np.any(tracing != 0, axis=1))
  if not len(nonzero):
    return tracing[:0]
  return tracing[nonzero[0]:nonzero[-1] + 1]


class HDF5Exams(base.FolderReader):
  """CODE-15% or SaMi-Trop (`exams.csv` + HDF5 tracings) as a `records.Source`.

  Args:
    root: the folder holding exams.csv and the HDF5 file(s).
    sampling_rate: the target rate (tracings are 400 Hz and resampled).
    name: the dataset name written into records ("code15" or "samitrop").
    hdf5_glob: which HDF5 files to read (default: exams_part*.hdf5, else exams.hdf5).
    scale_to_mv: factor from the stored values to millivolts (the published tracings
      are in mV-sized units: 1.0).
    min_seconds: shorter signals (after stripping the padding) are refused.

  Keys are `"{hdf5 file}/{row}"`, sorted by file then row; rows whose exam_id is 0
  (unused slots) are not keys.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "code15", hdf5_glob: str | None = None,
               scale_to_mv: float = 1.0, min_seconds: float = 5.0):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, native_rate=RATE)
    self.scale_to_mv = scale_to_mv
    self.exams = self._read_exams(self.root / EXAMS_CSV)
    self._files = self._find_files(hdf5_glob)
    self._keys = [key for file in self._files for key in self._file_keys(file)]
    if not self._keys:
      raise records.SourceError(f"{self.root}: no tracings with a non-zero exam_id in "
                                f"{', '.join(f.name for f in self._files)}")
    self._handles: dict[str, h5py.File] = {}

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_handles"] = {}  # Open HDF5 files do not pickle; each process opens its own.
    return state

  @staticmethod
  def _read_exams(path: pathlib.Path) -> pd.DataFrame:
    table = base.read_table(
        path, ("exam_id",),
        missing_hint=f"is {path.parent} a CODE-15% or SaMi-Trop folder?")
    table = table.dropna(subset=["exam_id"])
    table["exam_id"] = table["exam_id"].astype(np.int64)
    duplicated = table["exam_id"][table["exam_id"].duplicated()]
    if len(duplicated):
      raise records.SourceError(f"{path}: exam_id {duplicated.iloc[0]} appears more "
                                "than once")
    return table.set_index("exam_id")

  def _find_files(self, hdf5_glob: str | None) -> list[pathlib.Path]:
    patterns = [hdf5_glob] if hdf5_glob else ["exams_part*.hdf5", "exams.hdf5"]
    for pattern in patterns:
      files = sorted(self.root.glob(pattern), key=_natural_key)
      if files:
        return files
    raise records.SourceError(f"{self.root}: no HDF5 files matching "
                              f"{' or '.join(patterns)}")

  def _file_keys(self, file: pathlib.Path) -> list[str]:
    """The keys of one HDF5 file, reading only its exam_id dataset."""
    try:
      with h5py.File(file, "r") as f:
        for dataset in ("tracings", "exam_id"):
          if dataset not in f:
            raise records.SourceError(f"{file}: dataset {dataset!r} missing")
        shape, exam_ids = f["tracings"].shape, f["exam_id"][()]
    except OSError as e:
      raise records.SourceError(f"{file} does not open as HDF5: {e}") from e
    if len(shape) != 3 or shape[2] != len(records.LEADS) or shape[0] != len(exam_ids):
      raise records.SourceError(
          f"{file}: tracings {shape} and exam_id ({len(exam_ids)},) do not match "
          f"[N, time, {len(records.LEADS)}] and [N]")
    return [f"{file.name}/{row}" for row in np.flatnonzero(exam_ids != 0)]

  def keys(self) -> list[str]:
    return list(self._keys)

  def _file(self, name: str) -> h5py.File:
    if name not in self._handles:
      self._handles[name] = h5py.File(self.root / name, "r")
    return self._handles[name]

  def read(self, key: str) -> records.Record:
    file_name, row = key.rsplit("/", 1)
    row = int(row)
    path = f"{self.root / file_name} (row {row})"
    f = self._file(file_name)
    exam_id = int(f["exam_id"][row])
    if exam_id not in self.exams.index:
      raise records.RecordError(path, f"exam_id {exam_id} is not in {EXAMS_CSV}")
    tracing = np.asarray(f["tracings"][row], np.float32)  # One [4096, 12] slice only.
    ecg = strip_padding(tracing)
    if not len(ecg):
      raise records.RecordError(path, f"exam_id {exam_id}: the tracing is all zeros "
                                "(padding only)")
    ecg = signal.resample(ecg * np.float32(self.scale_to_mv), RATE, self.sampling_rate)
    ecg = records.check_signal(ecg, path, self.sampling_rate, self.min_seconds)
    row_data = self.exams.loc[exam_id]
    codes = {c: 1.0 for c in LABEL_COLUMNS if _truth(row_data.get(c))}
    classes = {SUPERCLASS_OF_LABEL[c] for c in codes if c in SUPERCLASS_OF_LABEL}
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=exam_id,
        patient_id=self._patient_id(exam_id, row_data, path), source=self.name,
        record_name=f"{file_name}/{exam_id}", age=_age(row_data.get("age")),
        sex=_sex(row_data.get("is_male")), labels=records.labels_from_classes(classes),
        scp_codes=records.scp_codes_json(codes))

  def _patient_id(self, exam_id: int, row: pd.Series, path: str) -> int:
    """The CSV's patient_id; the exam's own id where the table has none (SaMi-Trop)."""
    value = row.get("patient_id")
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return exam_id
    try:
      number = float(value)
    except (TypeError, ValueError):
      number = math.nan
    if not number.is_integer() or number < 0:
      raise records.RecordError(path, f"patient_id {value!r} is not an integer")
    return int(number)


def _natural_key(path: pathlib.Path):
  """exams_part2 before exams_part10."""
  digits = "".join(c for c in path.stem if c.isdigit())
  return (int(digits) if digits else -1, path.name)


def _age(value) -> float:
  try:
    age = float(value)
  except (TypeError, ValueError):
    return math.nan
  return age if 0 <= age < 150 else math.nan


def _sex(value) -> int:
  truth = _truth(value)
  if truth is None:
    return records.SEX_UNKNOWN
  return records.SEX_MALE if truth else records.SEX_FEMALE
