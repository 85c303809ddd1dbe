"""Every fit an evaluation will make, its training set built and checked before any
encoder runs: a run that cannot finish is refused in seconds, not after minutes of
feature extraction.

A fit is (task, label fraction, seed): the training ECGs of the patients
`splits.fraction_by_patient` draws, of those the task keeps (at least one label). It
cannot be made when that set is empty, when a class of a one-class task (MI, STTC,
...) has only positives or only negatives, when a multi-class task lacks a class, or
when a regression task's values are all equal. A multi-label set may lack some classes
at a small fraction (PTB-XL's rare statements at 1%): the fit is made, those classes are
predicted from no positives, and the results name them (`missing_classes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from crema_jax.evaluation import splits


@dataclasses.dataclass(frozen=True)
class Planned:
  """One fit's training rows (into the train split's positions) and what it lacks."""
  task: str
  fraction: float
  seed: int
  rows: np.ndarray
  ecgs: int
  missing_classes: tuple[str, ...]


def smallest_fraction(task, positions: np.ndarray, patients: np.ndarray,
                      seed: int) -> float | None:
  """The smallest label fraction (1% steps) whose draw for `seed` can be fitted
  (`_problem`); None when even all labels cannot."""
  for fraction in np.arange(1, 101) / 100:
    rows = splits.fraction_by_patient(patients, float(fraction), seed)
    if not _problem(task, positions[rows])[0]:
      return float(fraction)
  return None


def _problem(task, positions: np.ndarray) -> tuple[str | None, tuple[str, ...]]:
  """(why no fit can be made on these training positions or None, classes without a
  positive)."""
  kept = positions[task.keep[positions]]
  if not len(kept):
    return "no training ECG has a label of the task", ()
  if task.kind == "regression":
    values = task.labels[kept, 0]
    return (f"the training values are all {values[0]:g}" if np.ptp(values) == 0
            else None), ()
  labels = task.labels[kept]
  positives = labels.sum(axis=0)
  missing = tuple(c for c, n in zip(task.classes, positives) if n == 0)
  if task.kind == "multiclass" and missing:
    return f"no training ECG of class(es) {', '.join(missing)}", missing
  if len(task.classes) == 1 and (missing or positives[0] == len(kept)):
    return (f"the training ECGs are all {'negative' if missing else 'positive'} for "
            f"{task.classes[0]}"), missing
  return None, missing


def plan(tasks: dict, fractions, seeds, positions: np.ndarray,
         patients: np.ndarray) -> list[Planned]:
  """Every (fraction, seed, task) fit's training set, in the order they run;
  ValueError naming each fit that cannot be made, with the smallest fraction that
  would hold every class, before anything is computed."""
  planned, problems = [], []
  for fraction in fractions:
    for seed in seeds:
      rows = splits.fraction_by_patient(patients, fraction, seed)
      for name, task in tasks.items():
        why, missing = _problem(task, positions[rows])
        if why:
          enough = smallest_fraction(task, positions, patients, seed)
          problems.append(
              f"task {name}, label fraction {fraction:g}, seed {seed}: {why} "
              f"({len(rows)} training ECGs drawn); "
              + (f"the smallest fraction that can be fitted with this seed is "
                 f"{enough:g}" if enough else "not even all training labels can"))
          continue
        kept = int(task.keep[positions[rows]].sum())
        planned.append(Planned(name, fraction, seed, rows, kept, missing))
  if problems:
    raise ValueError("These fits cannot be made (nothing was computed):\n  "
                     + "\n  ".join(problems)
                     + "\nRaise --config.label_fractions, or leave out those tasks or "
                     "seeds.")
  return planned
