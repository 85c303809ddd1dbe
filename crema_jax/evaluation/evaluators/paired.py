"""Paired differences: each encoder after the first (the random-initialised baseline)
against the first (the checkpoint's), on the primary fits' test scores, with the same
bootstrap resamples for both (a paired interval)."""

from __future__ import annotations

from crema_jax.evaluation import context
from crema_jax.evaluation import objectives
from crema_jax.evaluation import scores


def run(ctx: context.Context) -> dict:
  """{"A - B": {task: {"metric", "difference", "ci", "p_value", "a", "b"}}}; the metric
  is macro AUROC, R^2 for a regression task (both: higher is better). {} with one
  encoder."""
  config, evaluated = ctx.config, ctx.evaluated
  names = [encoder.name for encoder in ctx.encoders]
  out = {}
  for other in names[1:]:
    key = f"{names[0]} - {other}"
    out[key] = {}
    for name, task in ctx.tasks.items():
      test = evaluated[names[0]]["frozen"]["test"]
      rows = task.rows(test["position"])
      groups = test["patient"][rows] if config.bootstrap_unit == "patient" else None
      a = evaluated[names[0]]["primary"][name].test_scores[rows]
      b = evaluated[other]["primary"][name].test_scores[rows]
      statistic = (scores.macro_auroc if task.kind != "regression" else
                   lambda y, p: scores.r2(y.ravel(), p.ravel()))
      result = scores.paired_macro_auroc(task.labels[test["position"][rows]], a, b,
                                         num_samples=config.bootstrap,
                                         seed=config.seed, groups=groups,
                                         statistic=statistic)
      out[key][name] = {"metric": objectives.validation_metric(task.kind), **result}
  return out
