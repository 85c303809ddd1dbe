"""A hospital's own labels: a CSV table naming ECG files and their labels, and the tasks
declared over it.

The table (UTF-8 CSV with a header row):

  file,patient,split,low_ef,potassium,rhythm
  muse/0001.xml,P17,train,1,5.1,AFIB
  muse/0002.xml,P17,train,0,,SR
  aecg/0003.xml,P18,test,0,4.2,SR

- `file` (required): the ECG file's path relative to the prepared folder's raw_dir,
  '/'-separated; a WFDB record may be named by its .hea or .dat file or without an
  extension. A long recording cut into windows gives every window the row's labels.
- `patient` (optional): the patient; splits and label fractions never separate one
  patient's ECGs. Without it, the patient each file states (or the file itself).
- `split` (optional): train / val / test. Without it, a seeded, patient-disjoint,
  stratified split is drawn and written to the evaluation's workdir.
- every other column: labels. An empty cell means "not labelled for that column".

A task is declared as `KIND:COLUMN[,COLUMN...]`, optionally named `NAME=KIND:...`:
  binary:low_ef                  one 0/1 column (also true/false, yes/no)
  multilabel:MI,STTC,CD          several 0/1 columns, an ECG may have several
  multiclass:rhythm              one column of class names, exactly one per ECG
  regression:potassium           one numeric column
Table faults (a missing column, empty or duplicate files, paths outside the folder,
unknown split values, a patient in two splits, values a task cannot read) raise
`TableError` naming the table, the rows and the values, before anything is computed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import posixpath
from typing import Sequence

import numpy as np
import pandas as pd

from crema_jax.data.readers.windows import WINDOW_MARK

KINDS = ("binary", "multilabel", "multiclass", "regression")
SPLITS = ("train", "val", "test")
PREPARED_NAME = "labels.csv"  # The table's copy in a prepared folder (prepare).
FILE_COLUMN, PATIENT_COLUMN, SPLIT_COLUMN = "file", "patient", "split"
TRUE_VALUES, FALSE_VALUES = frozenset({"1", "true", "yes"}), frozenset({"0", "false", "no"})
WFDB_EXTENSIONS = (".hea", ".dat", ".mat")
_SHOWN = 8  # Rows named per problem; the count says how many more.


class TableError(ValueError):
  """A labels table that cannot be used as it is; the message names every fault."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task over table columns: `name` (the outputs' name), `kind` in KINDS, `columns`."""
  name: str
  kind: str
  columns: tuple[str, ...]

  @classmethod
  def parse(cls, text: str) -> "TaskSpec":
    """"[NAME=]KIND:COLUMN[,COLUMN...]" -> TaskSpec; ValueError saying the form."""
    name, _, spec = text.rpartition("=") if "=" in text else ("", "", text)
    kind, _, columns = spec.partition(":")
    columns = tuple(c.strip() for c in columns.split(",") if c.strip())
    kind = kind.strip()
    if kind not in KINDS or not columns:
      raise ValueError(f"task {text!r} is not [NAME=]KIND:COLUMN[,COLUMN...] with KIND "
                       f"one of {KINDS}")
    if kind != "multilabel" and len(columns) != 1:
      raise ValueError(f"task {text!r}: a {kind} task reads one column, not {columns}")
    name = name.strip() or "+".join(columns)
    if not all(c.isalnum() or c in "_-.+" for c in name):
      raise ValueError(f"task {text!r}: its name {name!r} must be letters, digits and "
                       "_ - . + (it names output folders); give one as NAME=...")
    return cls(name, kind, columns)


def is_spec(text: str) -> bool:
  """Whether a `tasks` entry declares a table task (has a KIND:)."""
  return ":" in text


def normalise(path: str) -> str:
  """A table's or a reader's relative file path, compared '/'-separated, without './'."""
  return posixpath.normpath(path.replace("\\", "/").strip())


def file_keys(path: str) -> tuple[str, ...]:
  """The names under which a file or a prepared record matches: itself, and for WFDB
  files the record name without its extension."""
  path = normalise(path)
  stem, ext = posixpath.splitext(path)
  return (path, stem) if ext.lower() in WFDB_EXTENSIONS else (path,)


def _rows(frame: pd.DataFrame, mask: np.ndarray, column: str | None = None) -> str:
  """'rows 2 (a.xml), 5 (b.xml) and 3 more', numbered as in a spreadsheet (header = 1)."""
  where = np.flatnonzero(mask)
  shown = [f"{i + 2} ({frame[FILE_COLUMN].iat[i]!r}"
           + (f": {frame[column].iat[i]!r}" if column not in (None, FILE_COLUMN)
              else "") + ")"
           for i in where[:_SHOWN]]
  more = f" and {len(where) - _SHOWN} more" if len(where) > _SHOWN else ""
  return f"row{'s' if len(where) > 1 else ''} " + ", ".join(shown) + more


@dataclasses.dataclass
class Table:
  """A read labels table.

  Attributes:
    path: the CSV file.
    frame: its cells as stripped strings, one row per file.
    files: [rows] the normalised `file` column.
    patients: [rows] the patient column, or None.
    split: [rows] the split column (train/val/test), or None.
  """
  path: pathlib.Path
  frame: pd.DataFrame
  files: np.ndarray
  patients: np.ndarray | None
  split: np.ndarray | None

  @property
  def label_columns(self) -> tuple[str, ...]:
    return tuple(c for c in self.frame.columns
                 if c not in (FILE_COLUMN, PATIENT_COLUMN, SPLIT_COLUMN))

  def check_columns(self, specs: Sequence[TaskSpec]) -> None:
    missing = sorted({c for s in specs for c in s.columns} - set(self.label_columns))
    if missing:
      raise TableError(f"{self.path}: no column(s) {missing} for the tasks; its label "
                       f"columns are {list(self.label_columns)}")

  def values(self, spec: TaskSpec) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(classes, values, labelled) of one task over the table's rows:
    classification: values [rows, classes] uint8 multi-hot (one-hot for multiclass);
    regression: values [rows, 1] float32 (NaN where unlabelled); labelled: [rows] bool.
    TableError naming the rows whose cells the task cannot read."""
    self.check_columns([spec])
    cells = self.frame[list(spec.columns)]
    empty = (cells == "").to_numpy()
    problems = []
    if spec.kind == "multilabel":
      partial = empty.any(axis=1) & ~empty.all(axis=1)
      if partial.any():
        problems.append(f"{_rows(self.frame, partial)}: some of {list(spec.columns)} "
                        "empty and others not (an ECG is labelled for all or none)")
    labelled = ~empty.any(axis=1)
    if spec.kind in ("binary", "multilabel"):
      lower = cells.apply(lambda col: col.str.lower()).to_numpy()
      truth, false = np.isin(lower, list(TRUE_VALUES)), np.isin(lower, list(FALSE_VALUES))
      for k, column in enumerate(spec.columns):
        bad = ~empty[:, k] & ~truth[:, k] & ~false[:, k]
        if bad.any():
          problems.append(f"column {column!r}, {_rows(self.frame, bad, column)}: not "
                          "0/1 (or true/false, yes/no)")
      classes, values = spec.columns, truth.astype(np.uint8)
    elif spec.kind == "multiclass":
      names = cells[spec.columns[0]].to_numpy()
      classes = tuple(sorted(set(names[labelled])))
      column = {c: k for k, c in enumerate(classes)}
      values = np.zeros((len(names), len(classes)), np.uint8)
      for i in np.flatnonzero(labelled):
        values[i, column[names[i]]] = 1
    else:
      column = spec.columns[0]
      numbers = pd.to_numeric(cells[column], errors="coerce").to_numpy(np.float64)
      bad = labelled & ~np.isfinite(numbers)
      if bad.any():
        problems.append(f"column {column!r}, {_rows(self.frame, bad, column)}: not a "
                        "finite number")
      classes, values = (column,), np.where(labelled, numbers, np.nan)[:, None].astype(
          np.float32)
    if problems:
      raise TableError(f"{self.path}: task {spec.name} ({spec.kind}) cannot read:\n  "
                       + "\n  ".join(problems))
    return tuple(classes), values, labelled


def read(path: str | pathlib.Path) -> Table:
  """Reads and checks a labels table; TableError naming each fault."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise TableError(f"labels table {path} not found")
  try:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                        encoding="utf-8")
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise TableError(f"labels table {path} is not a readable UTF-8 CSV: {e}") from e
  frame.columns = [str(c).strip() for c in frame.columns]
  frame = frame.apply(lambda col: col.str.strip())
  problems = []
  duplicated_columns = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
  if duplicated_columns:
    problems.append(f"columns {duplicated_columns} appear more than once")
  if FILE_COLUMN not in frame.columns:
    raise TableError(f"{path}: no {FILE_COLUMN!r} column (the ECG file, relative to the "
                     f"folder); its columns are {list(frame.columns)}")
  if not len(frame):
    raise TableError(f"{path}: the table has no rows")
  files = np.array([normalise(f) if f else "" for f in frame[FILE_COLUMN]], object)
  empty = files == ""
  if empty.any():
    problems.append(f"{_rows(frame, empty)}: empty {FILE_COLUMN!r}")
  outside = np.array([f.startswith(("/", "../")) or f == ".." or ":" in f[:3]
                      for f in files])
  if outside.any():
    problems.append(f"{_rows(frame, outside, FILE_COLUMN)}: not a path inside the "
                    "folder (give it relative to the folder)")
  # The same file twice, also as a WFDB record under two of its names.
  first_row: dict[str, int] = {}
  duplicate = np.zeros(len(files), bool)
  for i, f in enumerate(files):
    if f:
      keys = file_keys(f)
      if any(k in first_row for k in keys):
        duplicate[i] = True
      first_row.update({k: i for k in keys if k not in first_row})
  if duplicate.any():
    problems.append(f"{_rows(frame, duplicate, FILE_COLUMN)}: the file is named by an "
                    "earlier row already (one row per file)")
  patients = split = None
  if PATIENT_COLUMN in frame.columns:
    patients = frame[PATIENT_COLUMN].to_numpy(object)
    if (patients == "").any():
      problems.append(f"{_rows(frame, patients == '')}: empty {PATIENT_COLUMN!r}")
  if SPLIT_COLUMN in frame.columns:
    split = np.array([s.lower() for s in frame[SPLIT_COLUMN]], object)
    bad = ~np.isin(split, SPLITS)
    if bad.any():
      problems.append(f"{_rows(frame, bad, SPLIT_COLUMN)}: split is not one of {SPLITS}")
    elif patients is not None:
      both = pd.DataFrame({"p": patients, "s": split}).groupby("p")["s"].nunique()
      crossing = np.isin(patients, both.index[both > 1])
      if crossing.any():
        problems.append(f"{_rows(frame, crossing)}: a patient in more than one split "
                        f"(patients {sorted(both.index[both > 1])[:_SHOWN]})")
  if problems:
    raise TableError(f"labels table {path}:\n  " + "\n  ".join(problems))
  return Table(path, frame, files, patients, split)


@dataclasses.dataclass(frozen=True)
class Matched:
  """A table joined to a prepared folder's records.

  Attributes:
    row: [records] the table row of each prepared record, -1 for none.
    rows_without_record: table rows (0-based) whose file is not among the records.
    records_without_row: record names that no row names.
  """
  row: np.ndarray
  rows_without_record: np.ndarray
  records_without_row: tuple[str, ...]


def match(table: Table, record_names: Sequence[str]) -> Matched:
  """Joins prepared records (their `record_name`: the reader's key, a window's with its
  window mark) to table rows by file."""
  by_key = {k: i for i, f in enumerate(table.files) for k in file_keys(f)}
  row = np.full(len(record_names), -1, np.int64)
  for j, name in enumerate(record_names):
    base = str(name).rsplit(WINDOW_MARK, 1)[0] if WINDOW_MARK in str(name) else str(name)
    for key in file_keys(base):
      if key in by_key:
        row[j] = by_key[key]
        break
  found = np.zeros(len(table.files), bool)
  found[row[row >= 0]] = True
  return Matched(row, np.flatnonzero(~found),
                 tuple(str(n) for n, r in zip(record_names, row) if r < 0))


def describe_unmatched(table: Table, matched: Matched, skipped: Sequence[dict]) -> list[str]:
  """Lines naming each table row without a prepared record (with prepare's reason when
  prepare skipped its file) and each prepared record without a row."""
  reasons = {}
  for item in skipped:
    for key in file_keys(str(item.get("key", ""))):
      reasons[key] = item.get("reason", "")
  lines = []
  for i in matched.rows_without_record:
    f = table.files[i]
    why = next((reasons[k] for k in file_keys(f) if k in reasons), None)
    lines.append(f"row {i + 2} ({f!r}): "
                 + (f"its file was skipped at prepare: {why}" if why is not None else
                    "no such file among the prepared records"))
  lines += [f"{name!r}: prepared, but no row of the table names it"
            for name in matched.records_without_row]
  return lines


def patient_keys(table: Table, matched: Matched, fallback: np.ndarray) -> np.ndarray:
  """[records] int64 patient keys: the table's patient column where it has one (ranked),
  else `fallback` (the prepared patient ids), offset so the two never collide."""
  if table.patients is None:
    return np.asarray(fallback, np.int64)
  names, ranks = np.unique(table.patients, return_inverse=True)
  out = np.asarray(fallback, np.int64).copy()
  offset = int(out.max(initial=0)) + 1
  inside = matched.row >= 0
  out[inside] = ranks[matched.row[inside]] + offset
  return out


def strata(table: Table, max_classes: int = 50) -> np.ndarray:
  """[rows, k] 0/1 stratification targets of every label column, whatever the tasks:
  a 0/1 column as itself, a numeric one by quartile, one of names one-hot (a column of
  more than `max_classes` names, free text, is left out). So a drawn split is the
  table's, the same for every task an evaluation declares over it."""
  columns = []
  for column in table.label_columns:
    cells = table.frame[column].to_numpy(object)
    filled = cells != ""
    lower = np.char.lower(cells.astype(str))
    if np.isin(lower[filled], list(TRUE_VALUES | FALSE_VALUES)).all():
      columns.append(np.isin(lower, list(TRUE_VALUES))[:, None].astype(np.uint8))
      continue
    numbers = pd.to_numeric(pd.Series(cells), errors="coerce").to_numpy(np.float64)
    if np.isfinite(numbers[filled]).all():
      columns.append(regression_strata(np.where(filled, numbers, np.nan)))
    elif len(set(cells[filled])) <= max_classes:
      names = sorted(set(cells[filled]))
      columns.append((cells[:, None] == np.array(names, object)[None, :]).astype(np.uint8))
  return (np.concatenate(columns, axis=1) if columns
          else np.zeros((len(cells), 0), np.uint8))


def regression_strata(values: np.ndarray, bins: int = 4) -> np.ndarray:
  """[n, bins] one-hot quantile bins of [n] values (NaN: none), to stratify a split."""
  finite = np.isfinite(values)
  out = np.zeros((len(values), bins), np.uint8)
  if finite.sum() >= bins:
    edges = np.quantile(values[finite], np.linspace(0, 1, bins + 1)[1:-1])
    out[np.flatnonzero(finite), np.searchsorted(edges, values[finite])] = 1
  return out

