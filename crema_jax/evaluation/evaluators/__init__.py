"""The analyses run after every encoder has been probed or fine-tuned, one module
each, in the manner of big_vision's evaluators.

Each module has one entry point, `run(ctx: context.Context) -> dict`, called once
with every encoder's fits (`context.Context`). A per-encoder evaluator returns
{encoder name: output}, each written to results.json at ["encoders"][name][key], and
{} where it does not apply (no demographics, no reduced leads, no other sources): then
results.json has no such key. An across-encoder one returns its output, written at
[key]. A new analysis is a module with such a `run` and an entry in `EVALUATORS`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from crema_jax.evaluation import context
from crema_jax.evaluation.evaluators import other_sources
from crema_jax.evaluation.evaluators import paired
from crema_jax.evaluation.evaluators import reduced_leads
from crema_jax.evaluation.evaluators import robustness
from crema_jax.evaluation.evaluators import subgroups


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """An analysis, and where results.json keeps what it returns."""
  key: str
  run: Callable[[context.Context], dict]
  per_encoder: bool


# In the order they run (and their keys appear in results.json).
EVALUATORS = (
    Evaluator("robustness", robustness.run, per_encoder=True),
    Evaluator("subgroups", subgroups.run, per_encoder=True),
    Evaluator("reduced_leads", reduced_leads.run, per_encoder=True),
    Evaluator("domains", other_sources.run, per_encoder=True),
    Evaluator("comparisons", paired.run, per_encoder=False),
)
