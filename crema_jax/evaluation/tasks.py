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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

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
    name: a name in TASKS.
    classes: the label names, the columns of `labels`.
    labels: [records, classes] uint8 multi-hot.
    keep: [records] bool, the records the task evaluates (at least one label).
    definition: what the task is, in words (written into results.json).
  """
  name: str
  classes: tuple[str, ...]
  labels: np.ndarray
  keep: np.ndarray
  definition: str

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
                         "least one superclass")
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


def describe(task: Task, splits: dict[str, np.ndarray]) -> dict:
  """The task's results.json entry: definition, classes, ECGs per split (of `splits`:
  {split name: prepared positions}) and positives per class per split."""
  out = {"definition": task.definition, "classes": list(task.classes), "ecgs": {},
         "positives": {}}
  for split, positions in splits.items():
    kept = positions[task.keep[positions]]
    out["ecgs"][split] = int(len(kept))
    out["positives"][split] = {c: int(n) for c, n in
                               zip(task.classes, task.labels[kept].sum(axis=0))}
  return out
