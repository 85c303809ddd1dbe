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
import functools
import math
import pathlib

import numpy as np
import pandas as pd

from crema_jax.data.readers import base
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
REQUIRED_COLUMNS = ("patient_id", "age", "sex", "scp_codes", "strat_fold",
                    "filename_lr", "filename_hr")
AGE_CODED_OVER_89 = 300  # PTB-XL writes 300 for every age above 89.
# Every PTB-XL record is 10 s, at 100 Hz in records100/ and 500 Hz in records500/.
PUBLISHED = {100: base.PublishedFormat(100, 1000, "PTB-XL records100/"),
             500: base.PublishedFormat(500, 5000, "PTB-XL records500/")}


def parse_scp_codes(text: str) -> dict[str, float]:
  """`"{'NORM': 100.0, 'SR': 0.0}"` -> {'NORM': 100.0, 'SR': 0.0}; ValueError otherwise."""
  return dict(_parse_scp_codes(text))


@functools.lru_cache(maxsize=4096)
def _parse_scp_codes(text: str) -> tuple[tuple[str, float], ...]:
  # Cached: a few code lists (e.g. NORM with SR) make up much of PTB-XL.
  try:
    codes = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
    raise ValueError(f"malformed scp_codes {text!r}") from e
  if not isinstance(codes, dict) or not all(
      isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
      for k, v in codes.items()):
    raise ValueError(f"malformed scp_codes {text!r}: expected {{code: likelihood}}")
  return tuple((k, float(v)) for k, v in codes.items())


def read_statements(path: str | pathlib.Path) -> pd.DataFrame:
  """The diagnostic statements of scp_statements.csv, indexed by code, with
  `diagnostic_class` and `diagnostic_subclass`."""
  table = base.read_table(path, ("diagnostic", "diagnostic_class",
                                 "diagnostic_subclass"), index_col=0)
  return table[table["diagnostic"] == 1][["diagnostic_class", "diagnostic_subclass"]]


def statement_classes(statements: pd.DataFrame) -> dict[str, tuple[str, str]]:
  """{code: (diagnostic_class, diagnostic_subclass)} of read_statements()'s table."""
  return dict(zip(statements.index, zip(statements["diagnostic_class"],
                                        statements["diagnostic_subclass"])))


def diagnostic_classes(codes: dict[str, float],
                       statements: pd.DataFrame | dict[str, tuple[str, str]],
                       min_likelihood: float = 0.0) -> tuple[list[str], list[str]]:
  """(sorted superclasses, sorted subclasses) of the diagnostic codes in `codes`;
  `statements` is read_statements()'s table or its statement_classes()."""
  if isinstance(statements, pd.DataFrame):
    statements = statement_classes(statements)
  classes, subclasses = set(), set()
  for code, likelihood in codes.items():
    if code in statements and likelihood >= min_likelihood:
      classes.add(statements[code][0])
      subclasses.add(statements[code][1])
  return sorted(classes), sorted(subclasses)


def _read_database(path: pathlib.Path) -> pd.DataFrame:
  """ptbxl_database.csv indexed by ecg_id, checked for columns, rows and unique ids."""
  table = base.read_table(path, ("ecg_id",) + REQUIRED_COLUMNS,
                          missing_hint=f"is {path.parent} a PTB-XL folder?")
  if table.empty:
    raise records.SourceError(f"{path} has no rows")
  base.integer_ids(table, "patient_id", path)  # A blank one skips only its record.
  ids = base.integer_ids(table, "ecg_id", path)
  if ids.isna().any():
    raise records.SourceError(f"{path}: column 'ecg_id' has blank cell(s) (line "
                              f"{int(ids.isna().to_numpy().argmax()) + 2})")
  table["ecg_id"] = ids.astype(np.int64)
  duplicated = table["ecg_id"][table["ecg_id"].duplicated()]
  if len(duplicated):
    raise records.SourceError(f"{path}: ecg_id {duplicated.iloc[0]} appears more than "
                              "once")
  return table.set_index("ecg_id")


class PTBXL(base.FolderReader):
  """A PTB-XL folder as a `records.Source`.

  Args:
    root: the folder holding ptbxl_database.csv.
    sampling_rate: 100 reads records100/, 500 reads records500/; any other rate is
      resampled from the 500 Hz records. A record whose header gives another rate or
      length than PTB-XL publishes (`PUBLISHED`) is refused.
    min_seconds: shorter records are refused.
    min_likelihood: codes below this likelihood do not contribute labels.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               min_seconds: float = 5.0, min_likelihood: float = 0.0):
    # records100/ holds 100 Hz, records500/ 500 Hz: any other rate resamples 500 Hz.
    super().__init__(root, name="ptbxl", sampling_rate=sampling_rate,
                     min_seconds=min_seconds, kind="PTB-XL folder",
                     published=PUBLISHED[100 if sampling_rate == 100 else 500])
    self.min_likelihood = min_likelihood
    self.table = _read_database(self.root / DATABASE_CSV)
    self.statements = read_statements(self.root / STATEMENTS_CSV)
    # Plain dicts: a pandas row lookup costs more than reading the record's signal.
    self._rows = self.table[list(REQUIRED_COLUMNS)].to_dict("index")
    self._classes = statement_classes(self.statements)

  def keys(self) -> list[str]:
    return [str(i) for i in self.table.index]

  def _labels(self, ecg_id: int, row: dict):
    try:
      codes = parse_scp_codes(row["scp_codes"])
    except ValueError as e:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                str(e)) from e
    classes, subclasses = diagnostic_classes(codes, self._classes, self.min_likelihood)
    return codes, classes, subclasses

  def _row_int(self, ecg_id: int, row: dict, column: str) -> int:
    try:
      return _int(row[column])
    except ValueError as e:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                f"{column}: {e}") from e

  def metadata(self, key: str) -> dict:
    """One ECG's CSV fields, parsed, without reading its waveform: ecg_id,
    patient_id, fold, scp codes {code: likelihood}, superclasses and subclasses
    (RecordError naming the CSV row when one does not parse)."""
    ecg_id = int(key)
    row = self._rows[ecg_id]
    codes, classes, subclasses = self._labels(ecg_id, row)
    return {"ecg_id": ecg_id, "patient_id": self._row_int(ecg_id, row, "patient_id"),
            "fold": self._row_int(ecg_id, row, "strat_fold"), "codes": codes,
            "classes": classes, "subclasses": subclasses}

  def read(self, key: str) -> records.Record:
    meta = self.metadata(key)
    ecg_id, codes, classes = meta["ecg_id"], meta["codes"], meta["classes"]
    row = self._rows[ecg_id]
    filename = row["filename_lr"] if self.sampling_rate == 100 else row["filename_hr"]
    if not isinstance(filename, str) or not filename:
      raise records.RecordError(f"{self.root / DATABASE_CSV} (ecg_id {ecg_id})",
                                "no record filename")
    path = self.root / filename
    header = wfdb_io.read_header(path)
    self.check_published(str(header.file), header.fs, header.sig_len)
    wave = wfdb_io.read_record(path, self.sampling_rate, header=header)
    ecg = records.check_signal(wave.ecg, str(path), self.sampling_rate,
                               self.min_seconds)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=ecg_id,
        patient_id=meta["patient_id"], source=self.name,
        record_name=filename, age=_age(row["age"]), sex=_sex(row["sex"]),
        labels=records.labels_from_classes(classes), fold=meta["fold"],
        scp_codes=records.scp_codes_json(codes), subclasses=",".join(meta["subclasses"]))


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

