"""What every evaluator (`evaluation/evaluators/`) is given: the evaluation's config,
data and tasks, and each encoder's fits, once every encoder has been probed or
fine-tuned."""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import numpy as np

from crema_jax.data import storage
from crema_jax.evaluation import fitting
from crema_jax.evaluation import tasks as tasks_lib


@dataclasses.dataclass(frozen=True)
class Context:
  """The inputs of the analyses that follow the fits.

  Attributes:
    config: the evaluation config (`configs/probe.py`).
    prepared: the evaluation's prepared source.
    positions: {"train", "val", "test": [n] prepared positions} of its split.
    tasks: {task name: Task}, in config order.
    mesh: the device mesh features are extracted on.
    encoders: the encoders evaluated, the checkpoint's first (the primary encoder);
      the random-initialised baseline after it when configured.
    evaluated: {encoder name: `run.evaluate_encoder` result}: "runs", "summary",
      "primary" ({task: fitting.Fit} at the full label fraction and first seed),
      "frozen" ({split: features}; fine-tuning: the test split's "position" and
      "patient" only) and "classes" ({task: class names}).
    domains: other sources (`evaluators.other_sources.Domain`), opened and split
      before any encoder ran.
  """
  config: ml_collections.ConfigDict
  prepared: storage.PreparedSource
  positions: dict[str, np.ndarray]
  tasks: dict[str, tasks_lib.Task]
  mesh: object
  encoders: tuple[fitting.Encoder, ...]
  evaluated: dict[str, dict]
  domains: tuple = ()

  def per_encoder(self, scores: Callable[[fitting.Encoder, dict], dict]) -> dict:
    """{encoder name: scores(encoder, its `evaluated` entry)}, every encoder in order:
    what a per-encoder evaluator returns."""
    return {e.name: scores(e, self.evaluated[e.name]) for e in self.encoders}
