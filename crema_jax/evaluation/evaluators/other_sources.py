"""Other sources ("across clinical domains"): each of `config.domains`, another
hospital's prepared, labelled source, probed on its own test split two ways: probes
trained within it at `config.domain_label_fractions`, and the primary PTB-XL probe
transferred by class name. The split and class matching are `evaluation/domains.py`'s.
"""

from __future__ import annotations

import dataclasses
import pathlib

import ml_collections
import numpy as np

from crema_jax.data import storage
from crema_jax.evaluation import context
from crema_jax.evaluation import domains as domains_lib
from crema_jax.evaluation import fitting
from crema_jax.evaluation import restore
from crema_jax.evaluation import splits
from crema_jax.evaluation import tasks as tasks_lib


@dataclasses.dataclass
class Domain:
  """Another hospital's prepared, labelled source and the split it is probed on."""
  name: str
  prepared: storage.PreparedSource
  tasks: dict[str, tasks_lib.Task]
  positions: dict[str, np.ndarray]  # {"train", "val", "test": prepared positions}
  split_file: pathlib.Path


def load(config: ml_collections.ConfigDict, pretrain: ml_collections.ConfigDict,
         trained: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[Domain]:
  """Each of `config.domains` opened, checked against the checkpoint and split, before
  any encoder runs: a source at another rate, too short or too small for a train, val
  and test split is refused here. Only the super-diagnostic and binary tasks apply
  outside PTB-XL (other sources have no SCP statements)."""
  out = []
  for domain in config.domains:
    data_dir, name = domain.split(":")
    prepared = storage.PreparedSource(data_dir, name)
    restore.check_compatible(pretrain, trained, prepared, np.arange(len(prepared)))
    names = [t for t in config.tasks if t in tasks_lib.SUPERCLASS_TASKS or
             tasks_lib.is_ptbxl(prepared)]
    tasks = tasks_lib.build(names, prepared)
    strata = tasks_lib.build(["superdiagnostic"], prepared)["superdiagnostic"].labels
    split_file = workdir / "domain_splits" / f"{name}.json"
    positions = domains_lib.domain_split(prepared, strata, config.domain_split_seed,
                                         split_file)
    empty = [s for s, p in positions.items() if not len(p)]
    if empty:
      patients = len(np.unique(prepared.index["patient_id"]))
      raise ValueError(
          f"domains entry {domain!r}: {len(prepared)} ECGs of {patients} patients "
          f"leave the {'/'.join(empty)} split empty (split "
          f"{domains_lib.SPLIT_FRACTIONS} by patient): too small to probe; drop it "
          f"from domains (and delete {split_file})")
    out.append(Domain(name, prepared, tasks, positions, split_file))
  return out


def run(ctx: context.Context) -> dict:
  """{encoder name: {source: {"path", "split_file", "ecgs", "tasks": {task: {"within":
  {fraction: scores}, "transferred": scores, "classes_matched"}}}}} on each source's
  test split ("transferred" only where the primary probe shares classes with the
  source's task). {} without `ctx.domains`."""
  if not ctx.domains:
    return {}
  return ctx.per_encoder(lambda encoder, result: _encoder_scores(ctx, encoder, result))


def _encoder_scores(ctx: context.Context, encoder: fitting.Encoder,
                    result: dict) -> dict:
  """{source: {"path", "split_file", "ecgs", "tasks"}} of one encoder."""
  config = ctx.config
  out = {}
  first = config.seeds[0]
  for domain in ctx.domains:
    positions = domain.positions
    frozen = {s: encoder.extract(domain.prepared, positions[s], ctx.mesh,
                                 config.feature_batch_size)
              for s in domains_lib.SPLITS}
    entry = {"path": str(domain.prepared.path), "split_file": str(domain.split_file),
             "ecgs": {s: int(len(p)) for s, p in positions.items()}, "tasks": {}}
    for task_name, task in domain.tasks.items():
      within = {}
      for fraction in config.domain_label_fractions:
        rows = splits.fraction_by_patient(frozen["train"]["patient"], fraction, first)
        fit = fitting.probe_fit(task, frozen, rows, config, first)
        within[f"{fraction:g}"] = fitting.score(task, frozen["test"], fit.test_scores,
                                                fit.thresholds, config,
                                                config.bootstrap, first)
      entry["tasks"][task_name] = {"within": within}
      if task_name not in result["primary"]:
        continue
      head = result["primary"][task_name].head
      head_cols, cols = domains_lib.matching_columns(result["classes"][task_name],
                                                     task.classes)
      if not cols:
        continue
      # Records keep their place when every class matched (a binary task keeps its
      # negatives); else those with one of the matched labels.
      keep = task.keep if len(cols) == len(task.classes) else (
          task.keep & task.labels[:, cols].any(axis=1))
      sub = dataclasses.replace(task, classes=tuple(task.classes[c] for c in cols),
                                labels=task.labels[:, cols], keep=keep)
      logits = head.logits(frozen["test"]["features"])[:, head_cols]
      entry["tasks"][task_name]["transferred"] = fitting.score(
          sub, frozen["test"], logits, head.thresholds[head_cols], config,
          config.bootstrap, first)
      entry["tasks"][task_name]["classes_matched"] = list(sub.classes)
    out[domain.name] = entry
  return out
