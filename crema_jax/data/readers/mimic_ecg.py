"""MIMIC-IV-ECG (Diagnostic Electrocardiogram Matched Subset), as published on PhysioNet.

  record_list.csv   one row per ECG: subject_id, study_id, file_name, ecg_time, path
                    (e.g. files/p1000/p10000032/s40689238/40689238, no extension)
  files/            the WFDB records (.hea + .dat, 500 Hz, 10 s, 12 leads)

The record list drives the reader: keys are its `path`s (no folder walk over 800,000
files), `ecg_id` is the study_id and `patient_id` the subject_id. Waveforms are read by
the shared WFDB code (lead-name mapping, units, resampling).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from crema_jax.data.readers import base
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records

RECORD_LIST = "record_list.csv"
REQUIRED_COLUMNS = ("subject_id", "study_id", "path")


class MimicIVECG(base.FolderReader):
  """A MIMIC-IV-ECG folder as a `records.Source`.

  Args:
    root: the folder holding record_list.csv and files/.
    sampling_rate: the target rate.
    name: the dataset name written into records.
    min_seconds: shorter records are refused.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "mimic_iv_ecg", min_seconds: float = 5.0):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, kind="MIMIC-IV-ECG folder")
    self.table = self._read_record_list(self.root / RECORD_LIST)

  @staticmethod
  def _read_record_list(path: pathlib.Path) -> pd.DataFrame:
    """record_list.csv indexed by its record path (POSIX, no extension), with int64
    subject_id and study_id."""
    table = base.read_table(path, REQUIRED_COLUMNS, dtype={"path": str},
                            missing_hint=f"is {path.parent} a MIMIC-IV-ECG folder?")
    table = table.dropna(subset=list(REQUIRED_COLUMNS))
    if table.empty:
      raise records.SourceError(f"{path} has no rows")
    for column in ("subject_id", "study_id"):
      table[column] = base.integer_ids(table, column, path).astype(np.int64)
    table["path"] = [p.strip().replace("\\", "/").removesuffix(".hea")
                     for p in table["path"]]
    duplicated = table["path"][table["path"].duplicated()]
    if len(duplicated):
      raise records.SourceError(f"{path}: path {duplicated.iloc[0]} appears more than "
                                "once")
    return table.set_index("path").sort_index()

  def keys(self) -> list[str]:
    return list(self.table.index)

  def read(self, key: str) -> records.Record:
    row = self.table.loc[key]
    path = self.root / key
    wave = wfdb_io.read_record(path, self.sampling_rate)
    ecg = records.check_signal(wave.ecg, str(path), self.sampling_rate,
                               self.min_seconds)
    return records.Record(
        ecg=ecg.astype(np.float32), sampling_rate=self.sampling_rate,
        ecg_id=int(row["study_id"]), patient_id=int(row["subject_id"]),
        source=self.name, record_name=key)
