"""Robustness: the primary fits (full label fraction, first seed) scored on the test
signals under each of `config.robustness`'s shifts (`evaluation/shifts.py`), without
retraining: a probe's head on the shifted signals' features, a fine-tuned model on the
shifted signals."""

from __future__ import annotations

from crema_jax.evaluation import context
from crema_jax.evaluation import fitting


def run(ctx: context.Context) -> dict:
  """{encoder name: {shift: {task: scores}}} (no intervals; {} without shifts). Fills
  each primary fit's `shifted` ({shift: [test ECGs, classes] logits})."""
  config, test = ctx.config, ctx.positions["test"]
  out = {}
  for encoder in ctx.encoders:
    result = ctx.evaluated[encoder.name]
    robustness = {}
    for shift in config.robustness:
      robustness[shift] = {}
      if config.mode == "probe":
        # One feature extraction per shift, shared by every task's head.
        features = encoder.extract(ctx.prepared, test, ctx.mesh,
                                   config.feature_batch_size, shift=shift)["features"]
      for name, fit in result["primary"].items():
        if config.mode == "probe":
          fit.shifted[shift] = fit.head.logits(features)
        else:
          fit.shifted[shift] = fit.apply(ctx.prepared, test, shift)
        robustness[shift][name] = fitting.score(
            ctx.tasks[name], result["frozen"]["test"], fit.shifted[shift],
            fit.thresholds, config, 0, 0)
    out[encoder.name] = robustness
  return out
