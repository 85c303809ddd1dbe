"""Subgroups: the primary fits (full label fraction, first seed) scored on the test
fold's age bands and sexes, when the test ECGs' files state either."""

from __future__ import annotations

import numpy as np

from crema_jax.evaluation import context
from crema_jax.evaluation import scores

AGE_BANDS = (("<40", 0, 40), ("40-60", 40, 60), ("60-80", 60, 80), ("80+", 80, np.inf))
SEXES = (("male", 0), ("female", 1))  # PTB-XL's coding.
KEPT = ("n", "auroc", "auroc_ci", "mae", "mae_ci", "r2", "r2_ci")


def run(ctx: context.Context) -> dict:
  """{encoder name: {task: {subgroup: {"n", "auroc", "auroc_ci"}}}} on the test fold
  (regression: "mae", "r2" and their intervals): age bands (PTB-XL writes 300 for ages
  above 89: in 80+) and sex; unknown age or sex in no band. {} when no test ECG states
  an age or a sex."""
  index, test_positions = ctx.prepared.index, ctx.positions["test"]
  if not (np.isfinite(index["age"][test_positions]).any()
          or (index["sex"][test_positions] >= 0).any()):
    return {}
  config = ctx.config
  out = {}
  for encoder, result in ctx.evaluated.items():
    test = result["frozen"]["test"]
    age = index["age"][test["position"]]
    sex = index["sex"][test["position"]]
    groups = {band: (age >= low) & (age < high) for band, low, high in AGE_BANDS}
    groups.update({f"sex={name}": sex == code for name, code in SEXES})
    out[encoder] = {}
    for name, task in ctx.tasks.items():
      fit = result["primary"][name]
      out[encoder][name] = {}
      for group, member in groups.items():
        rows = np.flatnonzero(member & task.keep[test["position"]])
        labels = task.labels[test["position"][rows]]
        entry = scores.score_task(labels, fit.test_scores[rows], fit.thresholds,
                                  task.classes, bootstrap=config.bootstrap,
                                  seed=config.seed, kind=task.kind
                                  ) if len(rows) else {"n": 0}
        out[encoder][name][group] = {k: entry[k] for k in KEPT if k in entry}
  return out
