"""The evaluation tasks: the PTB-XL benchmark's six label sets and the paper's four
binary tasks, as label matrices over a prepared source's records.

The label sets follow the PTB-XL benchmark (Strodthoff et al. 2021,
helme/ecg_ptbxl_benchmarking, `compute_label_aggregations` / `select_data`): every key of
a record's `scp_codes` counts, whatever its likelihood, and
  all              every statement of scp_statements.csv (71),
  diagnostic       the statements with diagnostic == 1 (44),
  subdiagnostic    their diagnostic_subclass (23),
  superdiagnostic  their diagnostic_class (5: NORM, MI, STTC, CD, HYP),
  form             the statements with form == 1 (19),
  rhythm           the statements with rhythm == 1 (12);
a task's classes are those of its set that occur in the prepared data (the benchmark's
MultiLabelBinarizer), and a task keeps only the records with at least one of its labels,
in training, validation and test folds alike. The paper's binary tasks (MI, STTC, CD,
HYP) are each one superclass against the rest, on the superdiagnostic task's records.

Sources other than PTB-XL (CinC 2020-21, CODE-15%) have no SCP statements: their readers
map their own labels to the five superclasses (`records.Record.labels`), so they offer
the superdiagnostic and binary tasks only.

A labels table (a hospital's own labels, `crema_jax.data.labels_table`) offers any
task declared over its columns, `[NAME=]KIND:COLUMN[,COLUMN...]` (`from_table`):
binary, multilabel, multiclass or regression, on the records it labels.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from crema_jax.data import labels_table
from crema_jax.data import records
from crema_jax.data import storage

STATEMENTS = pathlib.Path(__file__).parents[1] / "data" / "resources" / "scp_statements.csv"
LABEL_SETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
BINARY_TASKS = ("MI", "STTC", "CD", "HYP")
TASKS = LABEL_SETS + BINARY_TASKS
# Tasks every labelled source has (its reader maps its labels to the superclasses).
SUPERCLASS_TASKS = ("superdiagnostic",) + BINARY_TASKS


@dataclasses.dataclass(frozen=True)
class Task:
  """One task's labels over every record of a prepared source.

  Attributes:
    name: a name in TASKS, or a labels-table task's name.
    classes: the label names, the columns of `labels` (regression: the value's name).
    labels: [records, classes] uint8 multi-hot (one-hot for multiclass; regression:
      [records, 1] float32 values, NaN where unlabelled).
    keep: [records] bool, the records the task evaluates (at least one label).
    definition: what the task is, in words (written into results.json).
    kind: binary, multilabel, multiclass or regression (`objectives.KINDS`).
  """
  name: str
  classes: tuple[str, ...]
  labels: np.ndarray
  keep: np.ndarray
  definition: str
  kind: str = "multilabel"

  def rows(self, positions: np.ndarray) -> np.ndarray:
    """The entries of `positions` (prepared positions) the task keeps."""
    return np.flatnonzero(self.keep[positions])


@functools.cache
def statements() -> pd.DataFrame:
  """PTB-XL 1.0.3's scp_statements.csv, indexed by statement code."""
  return pd.read_csv(STATEMENTS, index_col=0)


def statement_sets() -> dict[str, dict[str, str]]:
  """{label set: {statement code: the label it gives}} for the six label sets."""
  table = statements()
  diagnostic = table[table["diagnostic"] == 1]
  return {
      "all": {code: code for code in table.index},
      "diagnostic": {code: code for code in diagnostic.index},
      "subdiagnostic": dict(zip(diagnostic.index, diagnostic["diagnostic_subclass"])),
      "superdiagnostic": dict(zip(diagnostic.index, diagnostic["diagnostic_class"])),
      "form": {code: code for code in table.index[table["form"] == 1]},
      "rhythm": {code: code for code in table.index[table["rhythm"] == 1]},
  }


def label_set_matrix(scp_codes: Sequence[str], label_set: str
                     ) -> tuple[tuple[str, ...], np.ndarray]:
  """(classes, [records, classes] uint8) of one label set from each record's scp_codes
  JSON object; the classes are the set's labels that occur, sorted."""
  mapping = statement_sets()[label_set]
  per_record = [{mapping[c] for c in json.loads(codes) if c in mapping}
                for codes in scp_codes]
  classes = tuple(sorted(set().union(*per_record)))
  column = {c: k for k, c in enumerate(classes)}
  labels = np.zeros((len(per_record), len(classes)), np.uint8)
  for i, labels_of_record in enumerate(per_record):
    labels[i, [column[c] for c in labels_of_record]] = 1
  return classes, labels


def is_ptbxl(prepared: storage.PreparedSource) -> bool:
  """Whether every record's scp_codes are PTB-XL SCP statements."""
  manifests = [m.manifest for m in prepared.members] or [prepared.manifest]
  return all(m.get("source_reader", m["source"]) == "ptbxl" for m in manifests)


def build(names: Sequence[str], prepared: storage.PreparedSource) -> dict[str, Task]:
  """The tasks `names` over `prepared`'s records; ValueError for a task the source
  cannot provide (a statement label set of a source without SCP statements)."""
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    raise ValueError(f"unknown task(s) {unknown}; known: {TASKS}")
  ptbxl = is_ptbxl(prepared)
  if not ptbxl and set(names) - set(SUPERCLASS_TASKS):
    raise ValueError(
        f"{prepared.path}: tasks {sorted(set(names) - set(SUPERCLASS_TASKS))} need "
        f"PTB-XL's SCP statements; this source ({prepared.manifest['source']}) has the "
        f"superclass tasks {SUPERCLASS_TASKS} only")
  if ptbxl:
    superclasses, labels = label_set_matrix(prepared.index["scp_codes"],
                                            "superdiagnostic")
    # The same rule as the PTB-XL reader's labels (min_likelihood 0), in our column order.
    order = [superclasses.index(c) for c in records.SUPERCLASSES if c in superclasses]
    superclasses, labels = tuple(superclasses[k] for k in order), labels[:, order]
  else:
    superclasses, labels = records.SUPERCLASSES, prepared.index["labels"]
  has_superclass = labels.any(axis=1)
  tasks = {}
  for name in names:
    if name in BINARY_TASKS:
      column = labels[:, [superclasses.index(name)]] if name in superclasses else (
          np.zeros((len(labels), 1), np.uint8))
      tasks[name] = Task(name, (name,), column, has_superclass.copy(),
                         f"{name} vs. the rest: positive when {name} is among the "
                         "record's diagnostic superclasses, on the records with at "
                         "least one superclass", kind="binary")
    elif name == "superdiagnostic" and not ptbxl:
      tasks[name] = Task(name, superclasses, labels, has_superclass.copy(),
                         "the 5 diagnostic superclasses, multi-label, as the source's "
                         "reader maps its labels to them (crema_jax.data.readers)")
    else:
      classes, matrix = label_set_matrix(prepared.index["scp_codes"], name)
      if name == "superdiagnostic":
        classes, matrix = superclasses, labels
      total = len(set(statement_sets()[name].values()))
      tasks[name] = Task(name, classes, matrix, matrix.any(axis=1),
                         f"PTB-XL benchmark label set '{name}' ({len(classes)} of its "
                         f"{total} labels occur here), multi-label, on the records with "
                         "at least one of them")
  return tasks


@dataclasses.dataclass(frozen=True)
class TableLabels:
  """A labels table joined to the prepared records it labels.

  Attributes:
    table: the read table; matched: its join to the prepared records.
    patients: [records] int64 patient keys (the table's patient column where given).
    unmatched: lines naming each row without a prepared record and each record
      without a row (`labels_table.describe_unmatched`).
  """
  table: labels_table.Table
  matched: labels_table.Matched
  patients: np.ndarray
  unmatched: list[str]

  def describe(self) -> dict:
    """results.json's record of the table."""
    return {"path": str(self.table.path), "rows": int(len(self.table.files)),
            "records_labelled": int((self.matched.row >= 0).sum()),
            "split": "the table's split column" if self.table.split is not None else
                     "drawn (split.json)",
            "patients": "the table's patient column" if self.table.patients is not None
                        else "as the files state them",
            "unmatched": self.unmatched}


def table_path(prepared: storage.PreparedSource, path: str) -> pathlib.Path:
  """The labels table to use: `path`, else the one prepare kept with the data."""
  if path:
    return pathlib.Path(path)
  kept = prepared.path / labels_table.PREPARED_NAME
  if not kept.is_file():
    raise ValueError(f"tasks over a labels table: {prepared.path} was prepared without "
                     "one; set --config.labels.table=LABELS.csv (or prepare with "
                     "--config.data.labels_table)")
  return kept


def from_table(names: Sequence[str], prepared: storage.PreparedSource,
               path: str = "") -> tuple[dict[str, Task], TableLabels]:
  """The table tasks `names` ("[NAME=]KIND:COLUMNS", `labels_table.TaskSpec`) over
  `prepared`'s records, and the join; TableError / ValueError naming every fault
  before anything is computed."""
  specs = [labels_table.TaskSpec.parse(n) for n in names]
  duplicated = sorted({s.name for s in specs if [t.name for t in specs].count(s.name) > 1})
  if duplicated:
    raise ValueError(f"tasks: the name(s) {duplicated} are given twice; name them "
                     "apart with NAME=KIND:COLUMNS")
  if "record_name" not in prepared.index:
    raise ValueError(f"{prepared.path} was prepared before records kept their file "
                     "names: prepare it again to use a labels table")
  table = labels_table.read(table_path(prepared, path))
  table.check_columns(specs)
  matched = labels_table.match(table, prepared.index["record_name"])
  inside = matched.row >= 0
  if not inside.any():
    raise labels_table.TableError(
        f"{table.path}: no row names a prepared record of {prepared.path} (rows like "
        f"{table.files[0]!r}, records like {prepared.index['record_name'][:2].tolist()})")
  tasks = {}
  for spec in specs:
    classes, values, labelled = table.values(spec)
    labels = np.zeros((len(inside), values.shape[1]), values.dtype)
    if spec.kind == "regression":
      labels[:] = np.nan
    labels[inside] = values[matched.row[inside]]
    keep = np.zeros(len(inside), bool)
    keep[inside] = labelled[matched.row[inside]]
    what = {"binary": f"{spec.columns[0]} (0/1)",
            "multilabel": f"the labels {list(spec.columns)}, several per ECG",
            "multiclass": f"{spec.columns[0]}, one of {len(classes)} classes",
            "regression": f"the value of {spec.columns[0]}"}[spec.kind]
    tasks[spec.name] = Task(spec.name, classes, labels, keep,
                            f"{spec.kind}: {what}, from the labels table {table.path}, "
                            "on the ECGs it labels", kind=spec.kind)
  patients = labels_table.patient_keys(table, matched, prepared.index["patient_id"])
  skipped = [s for m in ([prepared] + list(prepared.members))
             for s in m.manifest.get("skipped", [])]
  return tasks, TableLabels(table, matched, patients,
                            labels_table.describe_unmatched(table, matched, skipped))


def describe(task: Task, splits: dict[str, np.ndarray]) -> dict:
  """The task's results.json entry: definition, kind, classes, ECGs per split (of
  `splits`: {split name: prepared positions}) and positives per class per split
  (regression: the values' mean and std)."""
  out = {"definition": task.definition, "kind": task.kind, "classes": list(task.classes),
         "ecgs": {}, "positives" if task.kind != "regression" else "values": {}}
  for split, positions in splits.items():
    kept = positions[task.keep[positions]]
    out["ecgs"][split] = int(len(kept))
    if task.kind == "regression":
      values = task.labels[kept, 0].astype(np.float64)
      out["values"][split] = {"mean": float(values.mean()) if len(kept) else None,
                              "std": float(values.std()) if len(kept) else None}
    else:
      out["positives"][split] = {c: int(n) for c, n in
                                 zip(task.classes, task.labels[kept].sum(axis=0))}
  return out
