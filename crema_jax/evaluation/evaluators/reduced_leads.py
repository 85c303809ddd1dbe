"""Reduced leads, ST-MEM's protocol: for each of `config.reduced_leads`, probes of
`config.reduced_lead_tasks` retrained on the features of ECGs with only those leads
(the others zeroed), next to the 12-lead primary probe applied to those ECGs."""

from __future__ import annotations

import ml_collections

from crema_jax.evaluation import context
from crema_jax.evaluation import fitting
from crema_jax.evaluation import splits


def lead_list(leads: str) -> tuple[str, ...]:
  """"I,II" -> ("I", "II")."""
  return tuple(lead.strip() for lead in leads.split(",") if lead.strip())


def with_leads(config: ml_collections.ConfigDict,
               leads: tuple[str, ...]) -> ml_collections.ConfigDict:
  """`config` reading views with only `leads` (the others zeroed)."""
  config = config.copy_and_resolve_references()
  config.data.eval_leads = tuple(leads)
  return config


def run(ctx: context.Context) -> dict:
  """{encoder name: {lead set: {task: {"leads", "retrained", "zeroed"}}}}: "retrained"
  the test scores (with intervals) of a probe trained on the lead set at the full label
  fraction and first seed, "zeroed" those of the 12-lead primary probe at test time
  (no intervals). {} when `config.reduced_leads` is empty."""
  config = ctx.config
  if not config.reduced_leads:
    return {}
  return ctx.per_encoder(lambda encoder, result: _encoder_scores(ctx, encoder, result))


def _encoder_scores(ctx: context.Context, encoder: fitting.Encoder,
                    result: dict) -> dict:
  """{lead set: {task: {"leads", "retrained", "zeroed"}}} of one encoder."""
  config = ctx.config
  out = {}
  full, first = max(config.label_fractions), config.seeds[0]
  for lead_set in config.reduced_leads:
    leads = lead_list(lead_set)
    view_config = with_leads(encoder.config, leads)
    frozen = {s: encoder.extract(ctx.prepared, ctx.positions[s], ctx.mesh,
                                 config.feature_batch_size, config=view_config)
              for s in ("train", "val", "test")}
    out[lead_set] = {}
    for name in config.reduced_lead_tasks:
      task = ctx.tasks[name]
      rows = splits.fraction_by_patient(frozen["train"]["patient"], full, first)
      fit = fitting.probe_fit(task, frozen, rows, config, first)
      retrained = fitting.score(task, frozen["test"], fit.test_scores, fit.thresholds,
                                config, config.bootstrap, first)
      twelve = result["primary"][name].head
      zeroed = fitting.score(task, frozen["test"],
                             twelve.logits(frozen["test"]["features"]),
                             twelve.thresholds, config, 0, first)
      out[lead_set][name] = {"leads": list(leads), "retrained": retrained,
                             "zeroed": zeroed}
  return out
