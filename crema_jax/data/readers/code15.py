"""CODE-15% and SaMi-Trop, read from the folders as published on Zenodo.

  exams.csv             one row per exam. CODE-15%: exam_id, age, is_male,
                        nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF, patient_id,
                        death, timey, normal_ecg, trace_file. SaMi-Trop: exam_id, age,
                        is_male, normal_ecg, death, timey (no patient_id: each exam is
                        its own patient).
  exams_part*.hdf5      CODE-15% (18 files), each holding `tracings` [N, 4096, 12] and
                        `exam_id` [N] (a row with exam_id 0 is an unused, all-zero
                        slot); tracings are matched to exams.csv by exam_id.
  exams.hdf5            SaMi-Trop: `tracings` [N, 4096, 12] only, no exam_id: tracing i
                        is the exam of exams.csv's row i (in file order), so the two
                        must have as many rows.

Tracings are float32 at 400 Hz, leads DI, DII, DIII, aVR, aVL, aVF, V1..V6 (the
standard order), zero-padded on both sides of a 7 s or 10 s signal to 4096 samples; a
tracing of another length is refused. The HDF5 files are opened lazily, once per
process, and read one tracing at a time. The padding is stripped and the signal
resampled to the target rate. The CSV's boolean labels are kept as source labels in
`scp_codes` ({"RBBB": 1.0, ...}, only the true ones); the superclass labels take what
maps without doubt: 1dAVb, RBBB, LBBB -> CD and normal_ecg -> NORM (SB, ST and AF are
rhythms with no PTB-XL superclass).
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
# What h5py raises on a damaged file (bad signature, B-tree, heap or chunk).
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


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
  (unused slots) are not keys. A file with an `exam_id` dataset is matched to
  exams.csv by exam_id; one without (SaMi-Trop) by row, and must then be the only file.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "code15", hdf5_glob: str | None = None,
               scale_to_mv: float = 1.0, min_seconds: float = 5.0):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, native_rate=RATE)
    self.scale_to_mv = scale_to_mv
    # In CSV order (row i is SaMi-Trop's tracing i); exam_id and patient_id are Int64.
    self.exams = self._read_exams(self.root / EXAMS_CSV)
    exam_ids = self.exams["exam_id"].dropna()
    self._csv_row = dict(zip(exam_ids.tolist(), exam_ids.index.tolist()))
    self._files = self._find_files(hdf5_glob)
    self._by_row: set[str] = set()  # Files matched to the CSV by row, not exam_id.
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
    if table.empty:
      raise records.SourceError(f"{path} has no rows")
    for column in ("exam_id", "patient_id"):
      if column in table.columns:
        table[column] = base.integer_ids(table, column, path)
    exam_ids = table["exam_id"].dropna()
    duplicated = exam_ids[exam_ids.duplicated()]
    if len(duplicated):
      raise records.SourceError(f"{path}: exam_id {duplicated.iloc[0]} appears more "
                                "than once")
    return table

  def _find_files(self, hdf5_glob: str | None) -> list[pathlib.Path]:
    patterns = [hdf5_glob] if hdf5_glob else ["exams_part*.hdf5", "exams.hdf5"]
    for pattern in patterns:
      files = sorted(self.root.glob(pattern), key=_natural_key)
      if files:
        return files
    raise records.SourceError(f"{self.root}: no HDF5 files matching "
                              f"{' or '.join(patterns)}")

  def _file_keys(self, file: pathlib.Path) -> list[str]:
    """The keys of one HDF5 file, reading only its exam_id dataset (if any)."""
    try:
      with h5py.File(file, "r") as f:
        if "tracings" not in f:
          raise records.SourceError(f"{file}: dataset 'tracings' missing")
        shape = f["tracings"].shape
        exam_ids = f["exam_id"][()] if "exam_id" in f else None
    except HDF5_ERRORS as e:
      raise records.SourceError(f"{file} does not open as HDF5: {e}") from e
    if len(shape) != 3 or shape[2] != len(records.LEADS):
      raise records.SourceError(f"{file}: tracings {shape} do not match "
                                f"[N, time, {len(records.LEADS)}]")
    if exam_ids is None:
      return self._row_keys(file, shape[0])
    if exam_ids.ndim != 1 or not np.issubdtype(exam_ids.dtype, np.integer):
      raise records.SourceError(f"{file}: exam_id {exam_ids.shape} {exam_ids.dtype} is "
                                "not a [N] array of integer ids")
    if shape[0] != len(exam_ids):
      raise records.SourceError(f"{file}: tracings {shape} and exam_id "
                                f"({len(exam_ids)},) do not match [N, ...] and [N]")
    return [f"{file.name}/{row}" for row in np.flatnonzero(exam_ids != 0)]

  def _row_keys(self, file: pathlib.Path, num_tracings: int) -> list[str]:
    """The keys of a file without exam_id (SaMi-Trop): its tracing i is CSV row i."""
    csv = self.root / EXAMS_CSV
    if len(self._files) > 1:
      raise records.SourceError(
          f"{file}: dataset 'exam_id' missing; only a single HDF5 file (SaMi-Trop's "
          f"exams.hdf5) can be matched to {csv} by row")
    if num_tracings != len(self.exams):
      raise records.SourceError(
          f"{file} holds {num_tracings} tracings but {csv} has {len(self.exams)} rows: "
          "without an exam_id dataset, tracing i is the exam of CSV row i, so the "
          "counts must match")
    self._by_row.add(file.name)
    return [f"{file.name}/{row}" for row in range(num_tracings)]

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
    try:
      f = self._file(file_name)
      exam_id, csv_row = self._exam(f, file_name, row, path)
      tracings = f["tracings"]
      if tracings.shape[1] != NUM_SAMPLES:
        raise records.RecordError(
            path, f"tracings {tracings.shape} hold {tracings.shape[1]} samples each; "
            f"the published tracings are {NUM_SAMPLES} (zero-padded, {RATE} Hz)")
      tracing = np.asarray(tracings[row], np.float32)  # One [4096, 12] slice only.
    except HDF5_ERRORS as e:
      raise records.RecordError(path, f"does not read as HDF5: {type(e).__name__}: "
                                f"{e}") from e
    ecg = strip_padding(tracing)
    if not len(ecg):
      raise records.RecordError(path, f"exam_id {exam_id}: the tracing is all zeros "
                                "(padding only)")
    ecg = signal.resample(ecg * np.float32(self.scale_to_mv), RATE, self.sampling_rate)
    ecg = records.check_signal(ecg, path, self.sampling_rate, self.min_seconds)
    row_data = self.exams.iloc[csv_row]
    codes = {c: 1.0 for c in LABEL_COLUMNS if _truth(row_data.get(c))}
    classes = {SUPERCLASS_OF_LABEL[c] for c in codes if c in SUPERCLASS_OF_LABEL}
    patient_id = row_data.get("patient_id", pd.NA)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=exam_id,
        # Without a patient_id (SaMi-Trop), each exam is its own patient.
        patient_id=exam_id if pd.isna(patient_id) else int(patient_id),
        source=self.name, record_name=f"{file_name}/{exam_id}",
        age=_age(row_data.get("age")), sex=_sex(row_data.get("is_male")),
        labels=records.labels_from_classes(classes),
        scp_codes=records.scp_codes_json(codes))

  def _exam(self, f: h5py.File, file_name: str, row: int, path: str) -> tuple[int, int]:
    """(exam_id, exams.csv row) of tracing `row` of the open file `f`."""
    if file_name in self._by_row:
      exam_id = self.exams.at[row, "exam_id"]
      if pd.isna(exam_id):
        raise records.RecordError(path, f"{EXAMS_CSV} row {row} has no exam_id")
      return int(exam_id), row
    exam_id = int(f["exam_id"][row])
    if exam_id not in self._csv_row:
      raise records.RecordError(path, f"exam_id {exam_id} is not in {EXAMS_CSV}")
    return exam_id, self._csv_row[exam_id]


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
