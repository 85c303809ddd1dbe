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
encoder. Then, at the full label fraction and first seed: paired bootstrap differences
between the encoders, subgroups by age and sex, robustness shifts of the test signals,
probes retrained on reduced lead sets, and other hospitals' data (`domains`). Outputs in
the workdir: `results.json` (self-describing), `results.md`, figures, `embeddings.npz`,
`test_scores.npz` (the primary fits' test logits) and `classifiers/TASK` (head,
thresholds and model card of each task, for `predict`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import atomic
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import domains as domains_lib
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune as finetune_lib
from crema_jax.evaluation import fits as fits_lib
from crema_jax.evaluation import probe
from crema_jax.evaluation import report
from crema_jax.evaluation import restore
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import splits
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax import models
from crema_jax.package import classifier as classifier_lib
from crema_jax.package import encoder as package
from crema_jax import sharding

MODES = ("probe", "finetune")
BOOTSTRAP_UNITS = ("ecg", "patient")
AGE_BANDS = (("<40", 0, 40), ("40-60", 40, 60), ("60-80", 60, 80), ("80+", 80, np.inf))
SEXES = (("male", 0), ("female", 1))  # PTB-XL's coding.
# What "overall" sums: the paper reports one number over its four tasks (7.0744 for its
# best model) without defining it; its size fits the sum of the four tasks' AUROC and
# AUPRC, which is what we compute. An assumption, said in results.json.
OVERALL = ("sum over the binary tasks MI, STTC, CD, HYP of their mean test AUROC and "
           "AUPRC (our reading of the paper's 'overall', which it does not define)")


# ------------------------------------------------------------------------- config
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
  unknown = [t for t in config.tasks if t not in tasks_lib.TASKS]
  if unknown or not config.tasks:
    problems.append(f"tasks={tuple(config.tasks)}: each must be one of "
                    f"{tasks_lib.TASKS}")
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
    unknown = [lead for lead in lead_list(leads) if lead not in records.LEADS]
    if unknown or not lead_list(leads):
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


# ----------------------------------------------------------------------- encoders
@dataclasses.dataclass
class Encoder:
  """One encoder under evaluation: the data config it reads views with (the
  checkpoint's, with the evaluation's data fields), its model and parameters."""
  name: str
  config: ml_collections.ConfigDict
  model: models.CREMA
  params: Any

  def extract(self, prepared: storage.PreparedSource, positions: np.ndarray, mesh,
              batch_size: int, *, params: Any = None, shift: str | None = None,
              embed_fn: Callable | None = None,
              config: ml_collections.ConfigDict | None = None) -> dict:
    """`features.extract_features` of this encoder (or `params`) at `positions`."""
    return features_lib.extract_features(
        self.model, self.params if params is None else params, config or self.config,
        prepared, (), mesh, batch_size=batch_size, shift=shift, embed_fn=embed_fn,
        positions=positions)


def lead_list(leads: str) -> tuple[str, ...]:
  """"I,II" -> ("I", "II")."""
  return tuple(lead.strip() for lead in leads.split(",") if lead.strip())


def with_leads(config: ml_collections.ConfigDict,
               leads: tuple[str, ...]) -> ml_collections.ConfigDict:
  """`config` reading views with only `leads` (the others zeroed)."""
  config = config.copy_and_resolve_references()
  config.data.eval_leads = tuple(leads)
  return config


# -------------------------------------------------------------------------- fits
@dataclasses.dataclass
class Fit:
  """One task fitted on one label fraction and seed.

  Attributes:
    test_scores: [test ECGs, classes] logits of every test-fold ECG (the task's kept
      rows are chosen when scoring).
    thresholds: [classes] F1 thresholds chosen on the validation fold.
    info: what was chosen on validation (val_auroc, l2 or best_step, ...).
    shifted: shift name -> its test_scores (filled for the primary fit only).
    head: the linear probe (probing only).
    test_features: the fine-tuned encoder's test features (fine-tuning only).
    apply: (prepared, positions, shift) -> [n, classes] logits of the fine-tuned
      model on other data (fine-tuning only).
    params: {"crema", "head"} the fine-tuned parameters (fine-tuning only).
  """
  test_scores: np.ndarray
  thresholds: np.ndarray
  info: dict
  shifted: dict = dataclasses.field(default_factory=dict)
  head: probe.LinearProbe | None = None
  test_features: np.ndarray | None = None
  apply: Callable | None = None
  params: Any = None


def fit_probe(task: tasks_lib.Task, frozen: dict, train_rows: np.ndarray,
              config: ml_collections.ConfigDict, seed: int) -> probe.LinearProbe:
  """A linear probe of `task` on frozen features: train rows `train_rows` (of
  frozen["train"]) the task keeps, validated on the fold-9 ECGs it keeps."""
  train, val = frozen["train"], frozen["val"]
  rows = train_rows[task.keep[train["position"][train_rows]]]
  val_rows = task.rows(val["position"])
  return probe.train_linear_probe(
      train["features"][rows], task.labels[train["position"][rows]],
      val["features"][val_rows], task.labels[val["position"][val_rows]],
      steps=config.probe.steps, lr=config.probe.lr,
      l2_grid=tuple(config.probe.l2_grid), eval_every=config.probe.eval_every,
      seed=seed)


def probe_fit(task: tasks_lib.Task, frozen: dict, train_rows: np.ndarray,
              config: ml_collections.ConfigDict, seed: int) -> Fit:
  fitted = fit_probe(task, frozen, train_rows, config, seed)
  info = {"val_auroc": fitted.val_auroc, "l2": fitted.l2, "l2_grid_val_auroc":
          fitted.grid, "best_step": fitted.best_step}
  return Fit(fitted.logits(frozen["test"]["features"]), fitted.thresholds, info,
             head=fitted)


def finetune_fit(encoder: Encoder, task: tasks_lib.Task, frozen: dict,
                 train_rows: np.ndarray, config: ml_collections.ConfigDict, seed: int,
                 prepared: storage.PreparedSource, test_positions: np.ndarray,
                 mesh) -> Fit:
  """LP-FT: the probe fitted on frozen features starts the head; then end to end."""
  lp = fit_probe(task, frozen, train_rows, config, seed)
  train, val = frozen["train"], frozen["val"]
  train_positions = train["position"][train_rows]
  train_positions = train_positions[task.keep[train_positions]]
  val_positions = val["position"][task.rows(val["position"])]
  result = finetune_lib.finetune(
      encoder.model, encoder.params, encoder.config, config.finetune, prepared,
      train_positions, val_positions, task.labels, mesh, head=lp.raw_head(), seed=seed)
  emb = encoder.model.emb_dim
  both = functools.partial(finetune_lib.features_and_logits, encoder.model)
  extract = functools.partial(encoder.extract, params=result.params,
                              batch_size=config.feature_batch_size)
  val_scores = extract(prepared, val_positions, mesh, embed_fn=both)["features"][:, emb:]
  test = extract(prepared, test_positions, mesh, embed_fn=both)["features"]
  thresholds = scores.best_f1_thresholds(task.labels[val_positions], val_scores)
  info = {"val_auroc": result.val_auroc, "best_step": result.best_step,
          "probe_val_auroc": lp.val_auroc, "l2": lp.l2, "history": result.history}
  fit = Fit(test[:, emb:], thresholds, info, test_features=test[:, :emb],
            params=result.params)
  logits_fn = functools.partial(finetune_lib.logits, encoder.model)
  fit.apply = lambda data, positions, shift=None: extract(
      data, positions, mesh, embed_fn=logits_fn, shift=shift)["features"]
  return fit


def score(task: tasks_lib.Task, split: dict, logits: np.ndarray,
          thresholds: np.ndarray, config: ml_collections.ConfigDict, bootstrap: int,
          seed: int) -> dict:
  """`scores.score_task` on the ECGs of `split` the task keeps."""
  rows = task.rows(split["position"])
  groups = split["patient"][rows] if config.bootstrap_unit == "patient" else None
  return scores.score_task(task.labels[split["position"][rows]], logits[rows],
                           thresholds, task.classes, bootstrap=bootstrap, seed=seed,
                           groups=groups)


# ------------------------------------------------------------------- per encoder
def evaluate_encoder(encoder: Encoder, config: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, tasks: dict,
                     positions: dict, planned: list[fits_lib.Planned], mesh) -> dict:
  """Every fraction x seed x task of one encoder; the robustness shifts of the primary
  fits (full label fraction, first seed). Returns {"runs", "summary", "robustness",
  "primary": {task: Fit}, "frozen" (features by split)}."""
  extract = functools.partial(encoder.extract, prepared, mesh=mesh,
                              batch_size=config.feature_batch_size)
  splits_used = ("train", "val", "test") if config.mode == "probe" else ("train", "val")
  frozen = {s: extract(positions[s]) for s in splits_used}
  if config.mode == "finetune":  # The test fold's labels and patients, no features.
    frozen["test"] = {"position": positions["test"], "patient": frozen_patients(
        prepared, positions["test"])}
  full, first = max(config.label_fractions), config.seeds[0]
  runs, primary, robustness = {}, {}, {s: {} for s in config.robustness}
  shifted_frozen = {}
  bar = tqdm.tqdm(planned, desc=f"{config.mode} {encoder.name}", unit="fit",
                  disable=not config.progress_bar)
  for planned_fit in bar:
    fraction, seed, name = planned_fit.fraction, planned_fit.seed, planned_fit.task
    task = tasks[name]
    train_rows = planned_fit.rows
    if config.mode == "probe":
      fit = probe_fit(task, frozen, train_rows, config, seed)
    else:
      fit = finetune_fit(encoder, task, frozen, train_rows, config, seed, prepared,
                         positions["test"], mesh)
    is_primary = fraction == full and seed == first
    key = f"fraction_{fraction:g}/seed_{seed}/{name}"
    runs[key] = score(task, frozen["test"], fit.test_scores, fit.thresholds, config,
                      config.bootstrap if seed == first else 0, seed)
    runs[key].update(fit.info, train_ecgs=planned_fit.ecgs,
                     missing_classes=list(planned_fit.missing_classes))
    if not is_primary:
      continue
    primary[name] = fit
    for shift in config.robustness:
      if config.mode == "probe":
        if shift not in shifted_frozen:
          shifted_frozen[shift] = extract(positions["test"], shift=shift)["features"]
        fit.shifted[shift] = fit.head.logits(shifted_frozen[shift])
      else:
        fit.shifted[shift] = fit.apply(prepared, positions["test"], shift)
      robustness[shift][name] = score(task, frozen["test"], fit.shifted[shift],
                                      fit.thresholds, config, 0, 0)
  return {"runs": runs, "summary": summarize(runs, config, tasks),
          "robustness": robustness, "primary": primary, "frozen": frozen,
          "classes": {name: task.classes for name, task in tasks.items()}}


def frozen_patients(prepared: storage.PreparedSource, positions: np.ndarray
                    ) -> np.ndarray:
  return prepared.index["patient_id"][positions]


def summarize(runs: dict, config: ml_collections.ConfigDict, tasks: dict) -> dict:
  """Per fraction and task: mean and sample std (ddof=1) over seeds of AUROC, AUPRC,
  F1, the first seed's intervals, and "overall" (see OVERALL)."""
  summary = {}
  for fraction in config.label_fractions:
    by_task = {}
    for task in tasks:
      seed_runs = [runs[f"fraction_{fraction:g}/seed_{s}/{task}"] for s in config.seeds]
      entry = {}
      for metric in ("auroc", "auprc", "f1"):
        values = np.array([r[metric] for r in seed_runs], np.float64)
        finite = values[np.isfinite(values)]
        entry[metric] = scores.macro(values)
        entry[f"{metric}_std"] = (float(np.std(finite, ddof=1)) if len(finite) > 1
                                  else float("nan"))
      for ci in ("auroc_ci", "auprc_ci"):
        if ci in seed_runs[0]:
          entry[ci] = seed_runs[0][ci]
      by_task[task] = entry
    binary = [t for t in tasks_lib.BINARY_TASKS if t in by_task]
    by_task["overall"] = float(sum(by_task[t]["auroc"] + by_task[t]["auprc"]
                                   for t in binary)) if binary else float("nan")
    summary[f"{fraction:g}"] = by_task
  return summary


# -------------------------------------------------------------------- analyses
def paired_differences(evaluated: dict, tasks: dict, config: ml_collections.ConfigDict
                       ) -> dict:
  """{"A - B": {task: {"difference", "ci", "p_value", "a", "b"}}}: each encoder after
  the first against the first, on the primary fits' test scores, with the same
  bootstrap resamples for both (a paired interval)."""
  names = list(evaluated)
  out = {}
  for other in names[1:]:
    key = f"{names[0]} - {other}"
    out[key] = {}
    for name, task in tasks.items():
      test = evaluated[names[0]]["frozen"]["test"]
      rows = task.rows(test["position"])
      groups = test["patient"][rows] if config.bootstrap_unit == "patient" else None
      a = evaluated[names[0]]["primary"][name].test_scores[rows]
      b = evaluated[other]["primary"][name].test_scores[rows]
      result = scores.paired_macro_auroc(task.labels[test["position"][rows]], a, b,
                                         num_samples=config.bootstrap,
                                         seed=config.seed, groups=groups)
      out[key][name] = result
  return out


def subgroup_scores(evaluated: dict, tasks: dict, prepared: storage.PreparedSource,
                    config: ml_collections.ConfigDict) -> dict:
  """{encoder: {task: {subgroup: {"n", "auroc", "auroc_ci"}}}} on the test fold: age
  bands (PTB-XL writes 300 for ages above 89: in 80+) and sex; unknown age or sex in
  no band."""
  out = {}
  for encoder, result in evaluated.items():
    test = result["frozen"]["test"]
    age = prepared.index["age"][test["position"]]
    sex = prepared.index["sex"][test["position"]]
    groups = {band: (age >= low) & (age < high) for band, low, high in AGE_BANDS}
    groups.update({f"sex={name}": sex == code for name, code in SEXES})
    out[encoder] = {}
    for name, task in tasks.items():
      fit = result["primary"][name]
      out[encoder][name] = {}
      for group, member in groups.items():
        rows = np.flatnonzero(member & task.keep[test["position"]])
        labels = task.labels[test["position"][rows]]
        entry = scores.score_task(labels, fit.test_scores[rows], fit.thresholds,
                                  task.classes, bootstrap=config.bootstrap,
                                  seed=config.seed) if len(rows) else {"n": 0}
        out[encoder][name][group] = {k: entry[k] for k in ("n", "auroc", "auroc_ci")
                                     if k in entry}
  return out


def reduced_lead_scores(encoder: Encoder, result: dict, tasks: dict,
                        prepared: storage.PreparedSource, positions: dict,
                        config: ml_collections.ConfigDict, mesh) -> dict:
  """ST-MEM's reduced-lead protocol: for each lead set, probes retrained on features
  of ECGs with only those leads ("retrained"), next to the 12-lead probe applied to
  them ("zeroed" at test time). {lead set: {task: {"leads", "retrained", "zeroed"}}}."""
  out = {}
  full, first = max(config.label_fractions), config.seeds[0]
  for lead_set in config.reduced_leads:
    leads = lead_list(lead_set)
    view_config = with_leads(encoder.config, leads)
    frozen = {s: encoder.extract(prepared, positions[s], mesh,
                                 config.feature_batch_size, config=view_config)
              for s in ("train", "val", "test")}
    out[lead_set] = {}
    for name in config.reduced_lead_tasks:
      task = tasks[name]
      rows = splits.fraction_by_patient(frozen["train"]["patient"], full, first)
      fit = probe_fit(task, frozen, rows, config, first)
      retrained = score(task, frozen["test"], fit.test_scores, fit.thresholds, config,
                        config.bootstrap, first)
      twelve = result["primary"][name].head
      zeroed = score(task, frozen["test"], twelve.logits(frozen["test"]["features"]),
                     twelve.thresholds, config, 0, first)
      out[lead_set][name] = {"leads": list(leads), "retrained": retrained,
                             "zeroed": zeroed}
  return out


@dataclasses.dataclass
class Domain:
  """Another hospital's prepared, labelled source and the split it is probed on."""
  name: str
  prepared: storage.PreparedSource
  tasks: dict[str, tasks_lib.Task]
  positions: dict[str, np.ndarray]  # {"train", "val", "test": prepared positions}
  split_file: pathlib.Path


def load_domains(config: ml_collections.ConfigDict, pretrain: ml_collections.ConfigDict,
                 trained: ml_collections.ConfigDict,
                 workdir: pathlib.Path) -> list[Domain]:
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


def domain_scores(encoder: Encoder, result: dict, domains: list[Domain],
                  config: ml_collections.ConfigDict, mesh) -> dict:
  """Each domain on its own test split: within-source probes at
  `domain_label_fractions`, and the primary PTB-XL probe transferred by class name.
  {source: {"path", "split_file", "ecgs", "tasks": {task: {"within": {fraction:
  scores}, "transferred": scores, "classes_matched"}}}}."""
  out = {}
  first = config.seeds[0]
  for domain in domains:
    positions = domain.positions
    frozen = {s: encoder.extract(domain.prepared, positions[s], mesh,
                                 config.feature_batch_size)
              for s in domains_lib.SPLITS}
    entry = {"path": str(domain.prepared.path), "split_file": str(domain.split_file),
             "ecgs": {s: int(len(p)) for s, p in positions.items()}, "tasks": {}}
    for task_name, task in domain.tasks.items():
      within = {}
      for fraction in config.domain_label_fractions:
        rows = splits.fraction_by_patient(frozen["train"]["patient"], fraction, first)
        fit = probe_fit(task, frozen, rows, config, first)
        within[f"{fraction:g}"] = score(task, frozen["test"], fit.test_scores,
                                        fit.thresholds, config, config.bootstrap, first)
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
      entry["tasks"][task_name]["transferred"] = score(
          sub, frozen["test"], logits, head.thresholds[head_cols], config,
          config.bootstrap, first)
      entry["tasks"][task_name]["classes_matched"] = list(sub.classes)
    out[domain.name] = entry
  return out


def write_classifiers(results: dict, result: dict, encoder: Encoder,
                      restored: restore.Restored, tasks: dict,
                      config: ml_collections.ConfigDict, workdir: pathlib.Path
                      ) -> pathlib.Path:
  """classifiers/TASK/ of the pretrained encoder's primary fit of every task (full
  label fraction, first seed): self-contained packages (`package.classifier`), each
  with its model card."""
  root = workdir / "classifiers"
  key = f"fraction_{max(config.label_fractions):g}/seed_{config.seeds[0]}"
  origin = restored.package.origin()
  trained = restored.trained
  for name, fit in result["primary"].items():
    test = results["encoders"][encoder.name]["runs"][f"{key}/{name}"]
    if config.mode == "probe":
      head, params = fit.head.raw_head(), restored.params
    else:
      head = (fit.params["head"]["w"], fit.params["head"]["b"])
      params = fit.params["crema"]
    thresholds = classifier_lib.probability(fit.thresholds)
    card = classifier_lib.card(
        task=name, definition=tasks[name].definition, classes=tasks[name].classes,
        thresholds=thresholds, encoder_config=encoder.config, mode=config.mode,
        checkpoint_ref=origin,
        pretraining={"data": {k: trained.data.get(k) for k in
                              ("source", "name", "data_dir", "pretrain_folds")},
                     "steps": restored.step, "loss": trained.loss.to_dict()},
        leakage=restored.leakage, test={k: v for k, v in test.items()
                                        if k != "history"},
        protocol=results["protocol"],
        training={k: v for k, v in fit.info.items() if k != "history"})
    classifier_lib.save(root / name, task=name, classes=tasks[name].classes,
                        thresholds=thresholds, head=head, config=encoder.config,
                        encoder_params=params, encoder=restored.package,
                        fine_tuned=config.mode != "probe", card=card)
  return root


# -------------------------------------------------------------------------- main
def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Probes (or fine-tunes) the checkpoint and a random-initialised encoder; writes the
  outputs to `workdir` and prints the tables. Returns the results dict."""
  check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh.fsdp)

  # Checkpoint.
  restored = restore.restore_encoder(config, mesh)
  pretrain = restored.config

  # Data: the folds, refused when another rate or length than the checkpoint's.
  prepared = storage.PreparedSource(pretrain.data.data_dir, pretrain.data.name)
  data = pretrain.data
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
  tasks = tasks_lib.build(config.tasks, prepared)
  # Every fit's training set, checked before any feature is extracted.
  planned = fits_lib.plan(tasks, config.label_fractions, config.seeds,
                          positions["train"],
                          frozen_patients(prepared, positions["train"]))
  domains = load_domains(config, pretrain, restored.trained, workdir)

  # Encoders: the pretrained one, and the baseline row.
  encoders = [Encoder(f"crema_step{restored.step}", pretrain, restored.model,
                      restored.params)]
  if config.random_init_baseline:
    encoders.append(Encoder("random_init", pretrain, restored.model, jax.device_put(
        models.init_params(restored.model, jax.random.key(config.seed + 1),
                           pretrain.mask_ratio), sharding.replicated(mesh))))

  # Probe or fine-tune each encoder, then the analyses of the primary fits.
  evaluated = {e.name: evaluate_encoder(e, config, prepared, tasks, positions, planned,
                                        mesh) for e in encoders}
  for encoder in encoders:
    result = evaluated[encoder.name]
    result["subgroups"] = subgroup_scores({encoder.name: result}, tasks, prepared,
                                          config)[encoder.name]
    if config.reduced_leads:
      result["reduced_leads"] = reduced_lead_scores(encoder, result, tasks, prepared,
                                                    positions, config, mesh)
    if domains:
      result["domains"] = domain_scores(encoder, result, domains, config, mesh)
  comparisons = paired_differences(evaluated, tasks, config) if len(encoders) > 1 else {}

  results = {
      "protocol": report.protocol(config, data, OVERALL),
      "config": config.to_dict(),
      "checkpoint": {"path": str(restored.path), "step": restored.step,
                     "training_config": restored.trained.to_dict()},
      "dataset": {"path": str(prepared.path), "name": data.name, "chosen_by": chosen,
                  **compatibility},
      "leakage": restored.leakage,
      "tasks": {name: tasks_lib.describe(task, positions) for name, task in
                tasks.items()},
      "encoders": {name: {k: e[k] for k in ("summary", "runs", "robustness",
                                            "subgroups", "reduced_leads", "domains")
                          if k in e} for name, e in evaluated.items()},
      "comparisons": comparisons,
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
    paths["classifiers"] = write_classifiers(results, evaluated[encoders[0].name],
                                             encoders[0], restored, tasks, config,
                                             workdir)
  report.write_results(results, paths["results"])  # Last: the run is complete.
  print(report.markdown(results, config))
  print("\n".join(f"{k}: {v}" for k, v in paths.items()))
  return results
