"""The splits of a labels table's tasks (a hospital's own labels), and the check that
every task can be trained, validated and tested on them.

The table's `split` column when it has one; otherwise a seeded, patient-disjoint split
of every ECG the table labels, stratified on all its label columns (numbers by
quartile: `labels_table.strata`), so that every task declared over the table, probe or
LP-FT, is scored on the same split; drawn by the same machinery as the other-hospital
evaluation (`domains.domain_split`) and written to the workdir's `split.json`, where
every later run (and every encoder) reads it back.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from crema_jax.data import labels_table
from crema_jax.data import storage
from crema_jax.evaluation import domains
from crema_jax.evaluation import tasks as tasks_lib

SPLIT_FILE = "split.json"


def positions(labels: tasks_lib.TableLabels, prepared: storage.PreparedSource,
              config: ml_collections.ConfigDict, workdir: pathlib.Path
              ) -> dict[str, np.ndarray]:
  """{"train", "val", "test": prepared positions} of the records the table labels
  (a task keeps those of them it has a value for: `Task.keep`)."""
  inside = labels.matched.row >= 0
  if labels.table.split is not None:
    split_of = np.full(len(inside), "", object)
    split_of[inside] = labels.table.split[labels.matched.row[inside]]
    return {s: np.flatnonzero(split_of == s) for s in domains.SPLITS}
  by_row = labels_table.strata(labels.table)
  targets = np.zeros((len(inside), by_row.shape[1]), np.uint8)
  targets[inside] = by_row[labels.matched.row[inside]]
  return domains.domain_split(
      prepared, targets, config.labels.split_seed, workdir / SPLIT_FILE,
      tuple(config.labels.split_fractions), among=inside, patients=labels.patients,
      stratified_on=f"every label column of {labels.table.path.name} (numbers by "
                    "quartile)")


def check(tasks: dict[str, tasks_lib.Task], splits: dict[str, np.ndarray],
          patients: np.ndarray) -> None:
  """ValueError naming every (task, class, split) that cannot be trained, validated or
  tested: a class (or a binary task's negatives) absent from a split; a regression
  task with fewer than 2 values in a split or constant training values."""
  problems = []
  for name, task in tasks.items():
    kept = {s: p[task.keep[p]] for s, p in splits.items()}
    empty = [s for s, p in kept.items() if len(p) < (2 if task.kind == "regression" else 1)]
    if empty:
      problems.append(f"task {name}: {', '.join(empty)} split(s) hold "
                      f"{[len(kept[s]) for s in empty]} labelled ECGs")
      continue
    if task.kind == "regression":
      train = task.labels[kept["train"], 0]
      if np.ptp(train) == 0:
        problems.append(f"task {name}: every training value is {train[0]:g}")
      continue
    columns = [(c, task.labels[:, k] == 1) for k, c in enumerate(task.classes)]
    if task.kind == "binary":
      columns.append((f"not {task.classes[0]}", task.labels[:, 0] == 0))
    for label, has in columns:
      counts = {s: int(has[p].sum()) for s, p in kept.items()}
      if min(counts.values()) == 0:
        everywhere = np.concatenate(list(kept.values()))
        ecgs = everywhere[has[everywhere]]
        problems.append(
            f"task {name}, class {label}: {len(ecgs)} ECGs of "
            f"{len(np.unique(patients[ecgs]))} patients, too rare to split "
            f"(train {counts['train']}, val {counts['val']}, test {counts['test']})")
  if problems:
    raise ValueError("These tasks cannot be evaluated on this split (nothing was "
                     "computed):\n  " + "\n  ".join(problems) + "\nLeave out the "
                     "class (another column set), merge rare classes in the table, or "
                     "give a split column that holds each class in every split.")
