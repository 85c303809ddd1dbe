"""PTB-XL 1.0.x, read from the folder as published on PhysioNet.

  ptbxl_database.csv    one row per ECG (ecg_id, patient_id, age, sex, scp_codes,
                        strat_fold, filename_lr, filename_hr, ...)
  scp_statements.csv    the SCP-ECG statements; `diagnostic_class` gives the superclass
  records100/, records500/   WFDB records at 100 and 500 Hz

Labels follow PTB-XL's own example code: every code in `scp_codes` (whatever its
likelihood) that is a diagnostic statement contributes its `diagnostic_class`.
"""

from __future__ import annotations

import ast
import math
import pathlib

import pandas as pd

from crema_jax.data import records
from crema_jax.data import signal
from crema_jax.data import wfdb_io

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
REQUIRED_COLUMNS = ("patient_id", "age", "sex", "scp_codes", "strat_fold",
                    "filename_lr", "filename_hr")
AGE_CODED_OVER_89 = 300  # PTB-XL writes 300 for every age above 89.


def parse_scp_codes(text: str) -> dict[str, float]:
  """`"{'NORM': 100.0, 'SR': 0.0}"` -> {'NORM': 100.0, 'SR': 0.0}; ValueError otherwise."""
  try:
    codes = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
    raise ValueError(f"malformed scp_codes {text!r}") from e
  if not isinstance(codes, dict) or not all(
      isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
      for k, v in codes.items()):
    raise ValueError(f"malformed scp_codes {text!r}: expected {{code: likelihood}}")
  return {k: float(v) for k, v in codes.items()}


def _read_csv(path: pathlib.Path, **kwargs) -> pd.DataFrame:
  """pandas.read_csv, with unreadable files raised as SourceError naming `path`."""
  try:
    return pd.read_csv(path, **kwargs)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise records.SourceError(f"{path} does not parse as CSV: {e}") from e


def read_statements(path: str | pathlib.Path) -> pd.DataFrame:
  """The diagnostic statements of scp_statements.csv, indexed by code, with
  `diagnostic_class` and `diagnostic_subclass`."""
  table = _read_csv(pathlib.Path(path), index_col=0)
  for column in ("diagnostic", "diagnostic_class", "diagnostic_subclass"):
    if column not in table.columns:
      raise records.SourceError(f"{path}: column {column!r} is missing")
  return table[table["diagnostic"] == 1][["diagnostic_class", "diagnostic_subclass"]]


def diagnostic_classes(codes: dict[str, float], statements: pd.DataFrame,
                       min_likelihood: float = 0.0) -> tuple[list[str], list[str]]:
  """(sorted superclasses, sorted subclasses) of the diagnostic codes in `codes`."""
  classes, subclasses = set(), set()
  for code, likelihood in codes.items():
    if code in statements.index and likelihood >= min_likelihood:
      classes.add(statements.at[code, "diagnostic_class"])
      subclasses.add(statements.at[code, "diagnostic_subclass"])
  return sorted(classes), sorted(subclasses)


def _read_database(path: pathlib.Path) -> pd.DataFrame:
  """ptbxl_database.csv indexed by ecg_id, checked for columns, rows and unique ids."""
  table = _read_csv(path)
  missing = [c for c in ("ecg_id",) + REQUIRED_COLUMNS if c not in table.columns]
  if missing:
    raise records.SourceError(f"{path}: column(s) {', '.join(map(repr, missing))} "
                              "missing")
  if table.empty:
    raise records.SourceError(f"{path} has no rows")
  duplicated = table["ecg_id"][table["ecg_id"].duplicated()]
  if len(duplicated):
    raise records.SourceError(f"{path}: ecg_id {duplicated.iloc[0]} appears more than "
                              "once")
  return table.set_index("ecg_id")


class PTBXL:
  """A PTB-XL folder as a `records.Source`.

  Args:
    root: the folder holding ptbxl_database.csv.
    sampling_rate: 100 reads records100/, 500 reads records500/; any other rate is
      resampled from the 500 Hz records.
    min_seconds: shorter records are refused.
    min_likelihood: codes below this likelihood do not contribute labels.
  """

  name = "ptbxl"

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               min_seconds: float = 5.0, min_likelihood: float = 0.0):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise records.SourceError(f"{self.root}: PTB-XL folder not found")
    if sampling_rate != 100:
      signal.resample_factors(500, sampling_rate)  # ValueError for a bad target rate.
    self.sampling_rate = sampling_rate
    self.min_seconds = min_seconds
    self.min_likelihood = min_likelihood
    for filename in (DATABASE_CSV, STATEMENTS_CSV):
      if not (self.root / filename).is_file():
        raise records.SourceError(f"{self.root / filename} not found: is {self.root} "
                                  "a PTB-XL folder?")
    self.table = _read_database(self.root / DATABASE_CSV)
    self.statements = read_statements(self.root / STATEMENTS_CSV)

  def keys(self) -> list[str]:
    return [str(i) for i in self.table.index]

  def _labels(self, ecg_id: int, row: pd.Series):
    try:
      codes = parse_scp_codes(row["scp_codes"])
    except ValueError as e:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                str(e)) from e
    classes, subclasses = diagnostic_classes(codes, self.statements,
                                             self.min_likelihood)
    return codes, classes, subclasses

  def _row_int(self, ecg_id: int, row: pd.Series, column: str) -> int:
    try:
      return _int(row[column])
    except ValueError as e:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                f"{column}: {e}") from e

  def read(self, key: str) -> records.Record:
    ecg_id = int(key)
    row = self.table.loc[ecg_id]
    codes, classes, subclasses = self._labels(ecg_id, row)
    patient_id = self._row_int(ecg_id, row, "patient_id")
    fold = self._row_int(ecg_id, row, "strat_fold")
    filename = row["filename_lr"] if self.sampling_rate == 100 else row["filename_hr"]
    if not isinstance(filename, str) or not filename:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                "no record filename")
    wave = wfdb_io.read_record(self.root / filename, self.sampling_rate)
    ecg = records.check_signal(wave.ecg, str(self.root / filename), self.sampling_rate,
                               self.min_seconds)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=ecg_id,
        patient_id=patient_id, source=self.name,
        record_name=filename, age=_age(row["age"]), sex=_sex(row["sex"]),
        labels=records.labels_from_classes(classes), fold=fold,
        scp_codes=records.scp_codes_json(codes), subclasses=",".join(subclasses))


def _int(value) -> int:
  """`15709.0` or `"15709.0"` -> 15709; ValueError for NaN, blanks and fractions."""
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = math.nan
  if not number.is_integer():
    raise ValueError(f"{value!r} is not an integer")
  return int(number)


def _age(value) -> float:
  try:
    age = float(value)
  except (TypeError, ValueError):
    return math.nan
  return 90.0 if age == AGE_CODED_OVER_89 else age


def _sex(value) -> int:
  try:
    return {0: records.SEX_MALE, 1: records.SEX_FEMALE}.get(int(value), records.SEX_UNKNOWN)
  except (TypeError, ValueError):
    return records.SEX_UNKNOWN


def label_table(root: str | pathlib.Path, min_likelihood: float = 0.0) -> pd.DataFrame:
  """The labels of every row of ptbxl_database.csv, without reading a waveform.

  Returns:
    One row per ECG in CSV order: ecg_id, patient_id, fold, valid, and one 0/1 column
    per superclass (NORM, MI, STTC, CD, HYP). Rows whose scp_codes, patient_id or
    strat_fold do not parse have `valid` False, all-zero labels, patient_id -1 and
    fold 0.
  """
  source = PTBXL(root, min_likelihood=min_likelihood)
  rows = []
  for ecg_id, row in source.table.iterrows():
    # pylint: disable=protected-access
    try:
      _, classes, _ = source._labels(int(ecg_id), row)
      patient_id = source._row_int(int(ecg_id), row, "patient_id")
      fold = source._row_int(int(ecg_id), row, "strat_fold")
      valid = True
    except records.RecordError:
      classes, patient_id, fold, valid = [], -1, 0, False
    labels = records.labels_from_classes(classes)
    rows.append({"ecg_id": int(ecg_id), "patient_id": patient_id, "fold": fold,
                 "valid": valid,
                 **{c: int(v) for c, v in zip(records.SUPERCLASSES, labels)}})
  return pd.DataFrame(rows)
