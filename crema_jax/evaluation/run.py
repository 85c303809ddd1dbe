"""PTB-XL evaluation of a pretrained CREMA checkpoint, top-down: config checks,
checkpoint, data, tasks, encoders, probe or fine-tune, analyses, outputs.

  python -m crema_jax.main --config configs/probe.py --workdir DIR \
      --config.checkpoint=PRETRAIN_WORKDIR

The protocol is the PTB-XL benchmark's (Strodthoff et al. 2021; as used by Al-Masud,
Lopez Alcaraz and Strodthoff, ICLR 2026): folds 1-8 train, fold 9 validation (every
choice: probe regularisation, early stopping, F1 thresholds), fold 10 test; the six
label sets (`tasks`) and the paper's four binary tasks; macro AUROC with bootstrap 95%
intervals in which resamples lacking a positive of a class are redrawn.
- linear probing (`mode="probe"`): a linear head on frozen, cached pooled features, its
  L2 penalty chosen on fold 9 from `probe.l2_grid`;
- fine-tuning (`mode="finetune"`): encoder and head end to end, the head started from
  the fitted probe (LP-FT), early-stopped on fold 9;
at each label fraction (sampled by patient) and seed, next to a random-initialised
encoder (`fitting`). Then, at the full label fraction and first seed, the analyses
(`evaluators/`): robustness shifts of the test signals, subgroups by age and sex,
probes retrained on reduced lead sets, other hospitals' data (`domains`) and paired
bootstrap differences between the encoders. Outputs in the workdir: `results.json`
(self-describing), `results.md`, figures, `embeddings.npz`, `test_scores.npz` (the
primary fits' test logits) and `classifiers/TASK` (head, thresholds and model card of
each task, for `predict`).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import atomic
from crema_jax.data import labels_table
from crema_jax.data import storage
from crema_jax.evaluation import classifiers
from crema_jax.evaluation import config_check
from crema_jax.evaluation import context
from crema_jax.evaluation import evaluators
from crema_jax.evaluation import fits as fits_lib
from crema_jax.evaluation import fitting
from crema_jax.evaluation import objectives
from crema_jax.evaluation import own_labels
from crema_jax.evaluation import report
from crema_jax.evaluation import restore
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.evaluation.evaluators import other_sources
from crema_jax import models
from crema_jax import sharding

# What "overall" sums: the paper reports one number over its four tasks (7.0744 for its
# best model) without defining it; its size fits the sum of the four tasks' AUROC and
# AUPRC, which is what we compute. An assumption, said in results.json.
OVERALL = ("sum over the binary tasks MI, STTC, CD, HYP of their mean test AUROC and "
           "AUPRC (our reading of the paper's 'overall', which it does not define)")
# An encoder's entries in results.json: its fits', then the per-encoder analyses'.
ENCODER_KEYS = ("summary", "runs") + tuple(e.key for e in evaluators.EVALUATORS
                                           if e.per_encoder)


# ------------------------------------------------------------------- per encoder
def evaluate_encoder(encoder: fitting.Encoder, config: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, tasks: dict,
                     positions: dict, planned: list[fits_lib.Planned], mesh) -> dict:
  """Every fraction x seed x task of one encoder. Returns {"runs" (scores by
  "fraction_F/seed_S/TASK"), "summary", "primary": {task: Fit} (full label fraction,
  first seed), "frozen" (features by split), "classes": {task: class names}}."""
  extract = functools.partial(encoder.extract, prepared, mesh=mesh,
                              batch_size=config.feature_batch_size)
  splits_used = ("train", "val", "test") if config.mode == "probe" else ("train", "val")
  frozen = {s: extract(positions[s]) for s in splits_used}
  if config.mode == "finetune":  # The test fold's labels and patients, no features.
    frozen["test"] = {"position": positions["test"], "patient": frozen_patients(
        prepared, positions["test"])}
  full, first = max(config.label_fractions), config.seeds[0]
  runs, primary = {}, {}
  bar = tqdm.tqdm(planned, desc=f"{config.mode} {encoder.name}", unit="fit",
                  disable=not config.progress_bar)
  for planned_fit in bar:
    fraction, seed, name = planned_fit.fraction, planned_fit.seed, planned_fit.task
    task = tasks[name]
    train_rows = planned_fit.rows
    if config.mode == "probe":
      fit = fitting.probe_fit(task, frozen, train_rows, config, seed)
    else:
      fit = fitting.finetune_fit(encoder, task, frozen, train_rows, config, seed,
                                 prepared, positions["test"], mesh)
    key = f"fraction_{fraction:g}/seed_{seed}/{name}"
    runs[key] = fitting.score(task, frozen["test"], fit.test_scores, fit.thresholds,
                              config, config.bootstrap if seed == first else 0, seed)
    runs[key].update(fit.info, train_ecgs=planned_fit.ecgs,
                     missing_classes=list(planned_fit.missing_classes))
    if fraction == full and seed == first:
      primary[name] = fit
  return {"runs": runs, "summary": summarize(runs, config, tasks), "primary": primary,
          "frozen": frozen,
          "classes": {name: task.classes for name, task in tasks.items()}}


def frozen_patients(prepared: storage.PreparedSource, positions: np.ndarray
                    ) -> np.ndarray:
  return prepared.index["patient_id"][positions]


def summarize(runs: dict, config: ml_collections.ConfigDict, tasks: dict) -> dict:
  """Per fraction and task: mean and sample std (ddof=1) over seeds of the task's
  metrics (AUROC, AUPRC, F1; regression: MAE, R^2, Pearson r), the first seed's
  intervals, and "overall" (see OVERALL)."""
  summary = {}
  for fraction in config.label_fractions:
    by_task = {}
    for task in tasks:
      seed_runs = [runs[f"fraction_{fraction:g}/seed_{s}/{task}"] for s in config.seeds]
      entry = {}
      for metric in objectives.metrics(tasks[task].kind):
        values = np.array([r[metric] for r in seed_runs], np.float64)
        finite = values[np.isfinite(values)]
        entry[metric] = scores.macro(values)
        entry[f"{metric}_std"] = (float(np.std(finite, ddof=1)) if len(finite) > 1
                                  else float("nan"))
      for ci in ("auroc_ci", "auprc_ci", "mae_ci", "r2_ci", "pearson_r_ci"):
        if ci in seed_runs[0]:
          entry[ci] = seed_runs[0][ci]
      by_task[task] = entry
    binary = [t for t in tasks_lib.BINARY_TASKS
              if t in by_task and not labels_table.is_spec(config.tasks[0])]
    if binary:
      by_task["overall"] = float(sum(by_task[t]["auroc"] + by_task[t]["auprc"]
                                     for t in binary))
    summary[f"{fraction:g}"] = by_task
  return summary


# -------------------------------------------------------------------------- main
def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Probes (or fine-tunes) the checkpoint and a random-initialised encoder; writes the
  outputs to `workdir` and prints the tables. Returns the results dict."""
  config_check.check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh.fsdp)

  # Checkpoint.
  restored = restore.restore_encoder(config, mesh)
  pretrain = restored.config

  # Data: the folds, refused when another rate or length than the checkpoint's.
  prepared = storage.PreparedSource(pretrain.data.data_dir, pretrain.data.name)
  data = pretrain.data
  table = None
  if labels_table.is_spec(config.tasks[0]):
    # A hospital's own labels: the table's tasks and patients, its split or one drawn.
    tasks, table = tasks_lib.from_table(config.tasks, prepared, config.labels.table)
    # Label fractions, splits and patient bootstraps follow the table's patients.
    prepared.index["patient_id"] = table.patients
    positions = own_labels.positions(table, prepared, config, workdir)
    own_labels.check(tasks, positions, table.patients)
    for line in table.unmatched[:10]:
      print(f"labels table: {line}")
    if len(table.unmatched) > 10:
      print(f"labels table: ... and {len(table.unmatched) - 10} more (results.json)")
  else:
    positions = {split: storage.fold_positions(prepared, folds) for split, folds in
                 (("train", data.train_folds), ("val", data.val_folds),
                  ("test", data.test_folds))}
  compatibility = restore.check_compatible(pretrain, restored.trained, prepared,
                                           np.concatenate(list(positions.values())))
  # Which data this evaluation scores, said before the minutes it takes.
  chosen = ("data.data_dir" if config.data.get("data_dir") else
            "the checkpoint's own pretraining data (data_from_checkpoint)")
  print(f"{config.mode}: {restored.path} (step {restored.step}) on {prepared.path} "
        f"[{data.name}]: "
        + ", ".join(f"{len(p)} {split} ECGs" for split, p in positions.items())
        + f"; data from {chosen}")
  shifts.check_names(config.robustness, data.sampling_rate)
  if table is None:
    tasks = tasks_lib.build(config.tasks, prepared)
  # Every fit's training set, checked before any feature is extracted.
  planned = fits_lib.plan(tasks, config.label_fractions, config.seeds,
                          positions["train"],
                          frozen_patients(prepared, positions["train"]))
  domains = other_sources.load(config, pretrain, restored.trained, workdir)

  # Encoders: the pretrained one, and the baseline row.
  encoders = [fitting.Encoder(f"crema_step{restored.step}", pretrain, restored.model,
                              restored.params)]
  if config.random_init_baseline:
    encoders.append(fitting.Encoder(
        "random_init", pretrain, restored.model, jax.device_put(
            models.init_params(restored.model, jax.random.key(config.seed + 1),
                               pretrain.mask_ratio), sharding.replicated(mesh))))

  # Probe or fine-tune each encoder, then the analyses of the primary fits.
  evaluated = {e.name: evaluate_encoder(e, config, prepared, tasks, positions, planned,
                                        mesh) for e in encoders}
  ctx = context.Context(config, prepared, positions, tasks, mesh, tuple(encoders),
                        evaluated, tuple(domains))
  across_encoders = {}
  for evaluator in evaluators.EVALUATORS:
    out = evaluator.run(ctx)
    if evaluator.per_encoder:
      for name, entry in out.items():
        evaluated[name][evaluator.key] = entry
    else:
      across_encoders[evaluator.key] = out

  results = {
      "protocol": report.protocol(config, data, OVERALL, table),
      "config": config.to_dict(),
      "checkpoint": {"path": str(restored.path), "step": restored.step,
                     "training_config": restored.trained.to_dict()},
      "dataset": {"path": str(prepared.path), "name": data.name, "chosen_by": chosen,
                  **compatibility,
                  **({"labels_table": table.describe()} if table else {})},
      "leakage": restored.leakage,
      "tasks": {name: tasks_lib.describe(task, positions) for name, task in
                tasks.items()},
      "encoders": {name: {k: e[k] for k in ENCODER_KEYS if k in e}
                   for name, e in evaluated.items()},
      **across_encoders,
  }

  # Outputs.
  workdir.mkdir(parents=True, exist_ok=True)
  paths = report.write_outputs(results, evaluated, encoders[0], config, prepared, tasks,
                               workdir)
  # The primary fits' test-fold logits (studies pair cells on them): TASK for the
  # checkpoint's encoder, ENCODER/TASK for the others (the random-init baseline).
  paths["test_scores"] = workdir / "test_scores.npz"
  atomic.savez(paths["test_scores"], position=positions["test"],
           **{(task if encoder is encoders[0] else f"{encoder.name}/{task}"):
              fit.test_scores for encoder in encoders
              for task, fit in evaluated[encoder.name]["primary"].items()})
  if config.save_classifiers:
    paths["classifiers"] = classifiers.write(results, evaluated[encoders[0].name],
                                             encoders[0], restored, tasks, config,
                                             workdir)
  report.write_results(results, paths["results"])  # Last: the run is complete.
  print(report.markdown(results, config))
  print("\n".join(f"{k}: {v}" for k, v in paths.items()))
  return results
