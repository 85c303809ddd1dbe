"""The checks of an evaluation config (`configs/probe.py`), made before anything is
restored: every problem named at once."""

from __future__ import annotations

import jax
import ml_collections

from crema_jax.data import labels_table
from crema_jax.data import records
from crema_jax.evaluation import shifts
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.evaluation.evaluators import reduced_leads
from crema_jax.package import encoder as package

MODES = ("probe", "finetune")
BOOTSTRAP_UNITS = ("ecg", "patient")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses an evaluation config that cannot run, before anything is restored."""
  problems = []
  if config.mode not in MODES:
    problems.append(f"mode={config.mode!r} is not one of {MODES}")
  if not config.checkpoint:
    problems.append("checkpoint is empty: set --config.checkpoint=PRETRAIN_WORKDIR")
  elif not package.is_checkpoint(config.checkpoint):
    problems.append(f"checkpoint={config.checkpoint!r}: no checkpoints/ folder there")
  if not config.data.data_dir and not config.get("data_from_checkpoint"):
    problems.append("no evaluation data: set --config.data.data_dir=PREPARED_DIR "
                    "(and data.name), or --config.data_from_checkpoint=True to evaluate "
                    "on the checkpoint's own pretraining data")
  table_tasks = [t for t in config.tasks if labels_table.is_spec(t)]
  unknown = [t for t in config.tasks if t not in tasks_lib.TASKS and t not in table_tasks]
  if unknown or not config.tasks:
    problems.append(f"tasks={tuple(config.tasks)}: each must be one of "
                    f"{tasks_lib.TASKS}, or a labels-table task "
                    "[NAME=]KIND:COLUMN[,COLUMN...] (KIND one of "
                    f"{labels_table.KINDS})")
  for spec in table_tasks:
    try:
      labels_table.TaskSpec.parse(spec)
    except ValueError as e:
      problems.append(str(e))
  if table_tasks and len(table_tasks) != len(config.tasks):
    problems.append(f"tasks={tuple(config.tasks)}: labels-table tasks and PTB-XL tasks "
                    "are evaluated on different data; run them separately")
  if table_tasks and config.domains:
    problems.append("domains transfer PTB-XL's superclass heads: leave them empty for "
                    "labels-table tasks")
  if table_tasks and "labels" not in config:
    problems.append("labels-table tasks need the labels fields: start from "
                    "configs/labels.py")
  for field in ("label_fractions", "domain_label_fractions"):
    bad = [f for f in config[field] if not 0 < f <= 1]
    if bad or not config[field]:
      problems.append(f"{field}={tuple(config[field])} must be in (0, 1]")
  if not config.seeds:
    problems.append("seeds is empty")
  try:
    shifts.check_names(config.robustness)
  except ValueError as e:
    problems.append(str(e))
  if config.pool not in ("mean", "cls", "checkpoint"):
    problems.append(f"pool={config.pool!r} is not 'mean', 'cls' or 'checkpoint'")
  if config.bootstrap < 0:
    problems.append(f"bootstrap={config.bootstrap} is negative")
  if config.bootstrap_unit not in BOOTSTRAP_UNITS:
    problems.append(f"bootstrap_unit={config.bootstrap_unit!r} is not one of "
                    f"{BOOTSTRAP_UNITS}")
  if not config.probe.l2_grid or any(v < 0 for v in config.probe.l2_grid):
    problems.append(f"probe.l2_grid={tuple(config.probe.l2_grid)}: give one or more "
                    "values >= 0")
  for leads in config.reduced_leads:
    named = reduced_leads.lead_list(leads)
    unknown = [lead for lead in named if lead not in records.LEADS]
    if unknown or not named:
      problems.append(f"reduced_leads entry {leads!r}: leads {unknown or '(none)'} "
                      f"are not among {records.LEADS}")
  bad = [t for t in config.reduced_lead_tasks if t not in config.tasks]
  if bad and config.reduced_leads:
    problems.append(f"reduced_lead_tasks {bad} are not among tasks")
  if config.mode == "finetune" and (config.reduced_leads or config.domains):
    problems.append("reduced_leads and domains are linear-probe analyses: set them "
                    "empty in fine-tune mode (or run configs/probe.py)")
  for domain in config.domains:
    if domain.count(":") != 1 or not all(domain.split(":")):
      problems.append(f"domains entry {domain!r} is not DATA_DIR:NAME (a prepared "
                      "source)")
  if jax.process_count() > 1:
    # Features are small; one host (all its local devices) computes them all.
    problems.append(f"evaluation runs in one process, not {jax.process_count()}: "
                    "start it on one host")
  if problems:
    raise ValueError("Invalid evaluation config:\n  " + "\n  ".join(problems))
