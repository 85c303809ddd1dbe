"""PTB-XL evaluation of a pretrained CREMA checkpoint, top-down: config checks,
checkpoint, data, encoders, probe or fine-tune, robustness, outputs.

  python -m crema_jax.main --config configs/probe.py --workdir DIR \
      --config.checkpoint=PRETRAIN_WORKDIR

The encoder is restored from an Orbax pretraining checkpoint (the latest, or
`checkpoint_step`) without its optimizer state, and evaluated on PTB-XL's folds (1-8
train, 9 validation, 10 test) for the paper's four binary tasks (MI, STTC, CD, HYP, each
vs. the rest) and the 5-class superdiagnostic multi-label task:
- linear probing (`mode="probe"`): a linear head on frozen, cached pooled features;
- fine-tuning (`mode="finetune"`): encoder and head end to end, early-stopped on fold 9;
at each label fraction (sampled by patient) and seed, next to a random-initialised
encoder (the baseline row). Test-fold AUROC, AUPRC and F1 (at the validation-chosen
threshold) get bootstrap 95% intervals; the same metrics are computed under robustness
shifts of the test signals. Outputs in the workdir: `results.json`, `results.md`,
`roc_curves.png`, `reconstructions.png`, `embeddings_pca.png`, `embeddings.npz`.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import checkpoint
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune as finetune_lib
from crema_jax.evaluation import plots
from crema_jax.evaluation import probe
from crema_jax.evaluation import restore
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import splits
from crema_jax.input import device
from crema_jax import metrics
from crema_jax import models
from crema_jax import sharding

BINARY_TASKS = ("MI", "STTC", "CD", "HYP")
TASKS = {**{t: (t,) for t in BINARY_TASKS}, "superdiagnostic": records.SUPERCLASSES}
MODES = ("probe", "finetune")


# ------------------------------------------------------------------------- config
def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses an evaluation config that cannot run, before anything is restored."""
  problems = []
  if config.mode not in MODES:
    problems.append(f"mode={config.mode!r} is not one of {MODES}")
  if not config.checkpoint:
    problems.append("checkpoint is empty: set --config.checkpoint=PRETRAIN_WORKDIR")
  elif not restore.checkpoint_dir(config.checkpoint).is_dir():
    problems.append(f"checkpoint={config.checkpoint!r}: no "
                    f"{checkpoint.CHECKPOINT_DIR}/ folder there")
  unknown = [t for t in config.tasks if t not in TASKS]
  if unknown or not config.tasks:
    problems.append(f"tasks={tuple(config.tasks)}: each must be one of {tuple(TASKS)}")
  bad = [f for f in config.label_fractions if not 0 < f <= 1]
  if bad or not config.label_fractions:
    problems.append(f"label_fractions={tuple(config.label_fractions)} must be in (0, 1]")
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
  if jax.process_count() > 1:
    # Features are small; one host (all its local devices) computes them all.
    problems.append(f"evaluation runs in one process, not {jax.process_count()}: "
                    "start it on one host")
  if problems:
    raise ValueError("Invalid evaluation config:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------- probing
def fraction_positions(train: dict, prepared: storage.PreparedSource, fraction: float,
                       seed: int) -> np.ndarray:
  """Rows of the training split at `fraction` of its ECGs, sampled by patient."""
  patient_ids = prepared.index["patient_id"][train["position"]]
  return splits.fraction_by_patient(patient_ids, fraction, seed)


def _rows(split: dict, rows: np.ndarray | None = None) -> dict:
  return split if rows is None else {k: v[rows] for k, v in split.items()}


def probe_task(features: dict, task: str, rows: np.ndarray, seed: int,
               probe_config: ml_collections.ConfigDict) -> probe.LinearProbe:
  columns = [records.SUPERCLASSES.index(c) for c in TASKS[task]]
  train = _rows(features["train"], rows)
  return probe.train_linear_probe(
      train["features"], train["labels"][:, columns], features["val"]["features"],
      features["val"]["labels"][:, columns], steps=probe_config.steps,
      lr=probe_config.lr, weight_decay=probe_config.weight_decay,
      eval_every=probe_config.eval_every, seed=seed)


def score_split(split: dict, task: str, logits: np.ndarray, thresholds: np.ndarray,
                bootstrap: int, seed: int) -> dict:
  columns = [records.SUPERCLASSES.index(c) for c in TASKS[task]]
  return scores.score_task(split["labels"][:, columns], logits, thresholds, TASKS[task],
                           bootstrap=bootstrap, seed=seed)


def evaluate_encoder(name: str, model: models.CREMA, params: Any,
                     pretrain: ml_collections.ConfigDict,
                     config: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, mesh) -> dict:
  """Every fraction x seed x task of one encoder, then robustness at the full label
  fraction and first seed. Returns {"runs", "summary", "robustness", "curves",
  "features"}."""
  data = pretrain.data
  extract = lambda p, folds, shift=None, fn=None: features_lib.extract_features(
      model, p, pretrain, prepared, folds, mesh, batch_size=config.feature_batch_size,
      shift=shift, embed_fn=fn)
  feats = {"train": extract(params, data.train_folds),
           "val": extract(params, data.val_folds),
           "test": extract(params, data.test_folds)}
  runs, heads = {}, {}
  combos = [(f, s, t) for f in config.label_fractions for s in config.seeds
            for t in config.tasks]
  bar = tqdm.tqdm(combos, desc=f"{config.mode} {name}", unit="task",
                  disable=not config.progress_bar or jax.process_index() != 0)
  for fraction, seed, task in bar:
    rows = fraction_positions(feats["train"], prepared, fraction, seed)
    if config.mode == "probe":
      fitted = probe_task(feats, task, rows, seed, config.probe)
      head = (lambda f, fitted=fitted: fitted.logits(f["features"]), fitted.thresholds,
              None)
      val_auroc = fitted.val_auroc
    else:
      columns = [records.SUPERCLASSES.index(c) for c in TASKS[task]]
      result = finetune_lib.finetune(
          model, params, pretrain, config.finetune, prepared,
          feats["train"]["position"][rows], columns, mesh, seed=seed)
      logits_fn = functools.partial(finetune_lib.logits, model)
      val = extract(result.params, data.val_folds, fn=logits_fn)
      val_logits = val["features"]
      thresholds = scores.best_f1_thresholds(val["labels"][:, columns], val_logits)
      test = extract(result.params, data.test_folds, fn=logits_fn)
      head = (lambda f, logits=test["features"]: logits, thresholds,
              (result.params, logits_fn))
      val_auroc = result.val_auroc
    first_seed = seed == config.seeds[0]
    key = f"fraction_{fraction:g}/seed_{seed}/{task}"
    runs[key] = score_split(feats["test"], task, head[0](feats["test"]), head[1],
                            config.bootstrap if first_seed else 0, seed)
    runs[key]["val_auroc"] = val_auroc
    runs[key]["train_ecgs"] = int(len(rows))
    if fraction == max(config.label_fractions) and first_seed:
      heads[task] = head
  robustness = {}
  for shift in config.robustness:
    robustness[shift] = {}
    shifted = None
    for task, (logits_fn, thresholds, finetuned) in heads.items():
      if finetuned is None:  # A linear probe: shared shifted features, its own head.
        if shifted is None:
          shifted = extract(params, data.test_folds, shift)
        split, logits = shifted, logits_fn(shifted)
      else:  # A fine-tuned encoder: its own logits.
        split = extract(finetuned[0], data.test_folds, shift, finetuned[1])
        logits = split["features"]
      robustness[shift][task] = score_split(split, task, logits, thresholds, 0, 0)
  curves = {}
  for task, (logits_fn, _, _) in heads.items():
    if len(TASKS[task]) == 1:
      curves[task] = (feats["test"]["labels"][:, records.SUPERCLASSES.index(task)],
                      logits_fn(feats["test"])[:, 0])
  return {"runs": runs, "summary": summarize(runs, config), "robustness": robustness,
          "curves": curves, "features": feats}


def summarize(runs: dict, config: ml_collections.ConfigDict) -> dict:
  """Per fraction and task: mean and std over seeds of AUROC, AUPRC, F1, the first
  seed's intervals, and the "overall" number (sum of the binary tasks' mean AUROC and
  AUPRC)."""
  summary = {}
  for fraction in config.label_fractions:
    by_task = {}
    for task in config.tasks:
      seed_runs = [runs[f"fraction_{fraction:g}/seed_{s}/{task}"] for s in config.seeds]
      entry = {}
      for metric in ("auroc", "auprc", "f1"):
        values = np.array([r[metric] for r in seed_runs], np.float64)
        entry[metric] = scores.macro(values)
        entry[f"{metric}_std"] = (float(np.nanstd(values)) if np.isfinite(values).any()
                                  else float("nan"))
      for ci in ("auroc_ci", "auprc_ci"):
        if ci in seed_runs[0]:
          entry[ci] = seed_runs[0][ci]
      by_task[task] = entry
    binary = [t for t in BINARY_TASKS if t in by_task]
    by_task["overall"] = float(sum(by_task[t]["auroc"] + by_task[t]["auprc"]
                                   for t in binary)) if binary else float("nan")
    summary[f"{fraction:g}"] = by_task
  return summary


# ------------------------------------------------------------------------ outputs
def results_table(results: dict, config: ml_collections.ConfigDict) -> str:
  """Markdown: test-fold AUROC (mean +- std over seeds) per encoder and fraction."""
  tasks = list(config.tasks)
  header = ["encoder", "labels", *tasks, "overall"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, encoder in results["encoders"].items():
    for fraction, by_task in encoder["summary"].items():
      cells = [name, f"{float(fraction):.0%}"]
      for task in tasks:
        entry = by_task[task]
        cell = f"{entry['auroc']:.3f}"
        if len(config.seeds) > 1:
          cell += f" ± {entry['auroc_std']:.3f}"
        if "auroc_ci" in entry:
          cell += f" [{entry['auroc_ci'][0]:.2f}, {entry['auroc_ci'][1]:.2f}]"
        cells.append(cell)
      cells.append(f"{by_task['overall']:.3f}")
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def robustness_table(results: dict, config: ml_collections.ConfigDict) -> str:
  """Markdown: test-fold macro AUROC of each task under each shift, per encoder."""
  tasks = list(config.tasks)
  lines = ["| encoder | shift | " + " | ".join(tasks) + " |",
           "|" + "---|" * (len(tasks) + 2)]
  full = f"{max(config.label_fractions):g}"
  seed = config.seeds[0]
  for name, encoder in results["encoders"].items():
    clean = [encoder["runs"][f"fraction_{full}/seed_{seed}/{t}"]["auroc"] for t in tasks]
    lines.append(f"| {name} | none | " + " | ".join(f"{v:.3f}" for v in clean) + " |")
    for shift, by_task in encoder["robustness"].items():
      lines.append(f"| {name} | {shift} | " +
                   " | ".join(f"{by_task[t]['auroc']:.3f}" for t in tasks) + " |")
  return "\n".join(lines)


def reconstruct(model: models.CREMA, params: Any, x: np.ndarray, mask_ratio: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The decoder's reconstruction of randomly masked ECGs.

  x: [n, time, leads] normalised -> (recon [n, time, leads], masked [n, time, leads]
  bool). With per-patch normalised targets the prediction is mapped back with each
  original patch's mean and std, as MAE's figures do.
  """
  keys = jax.random.split(jax.random.key(seed), len(x))
  keep, masked = jax.vmap(lambda k: device.random_mask(k, model.num_tokens,
                                                       mask_ratio))(keys)
  keep, masked = np.asarray(keep), np.asarray(masked)
  out = model.apply({"params": params}, x, keep, masked)
  pred = np.asarray(out["pred"])
  if model.norm_targets:
    raw = np.take_along_axis(np.asarray(models.patchify(x, model.patch_size,
                                                        model.token_layout)),
                             masked[:, :, None], axis=1)
    pred = pred * np.sqrt(raw.var(-1, keepdims=True) + 1e-6) + raw.mean(-1, keepdims=True)
  tokens = np.zeros((len(x), model.num_tokens, model.patch_dim), np.float32)
  flags = np.zeros_like(tokens, dtype=bool)
  np.put_along_axis(tokens, masked[:, :, None], pred, axis=1)
  np.put_along_axis(flags, masked[:, :, None], True, axis=1)
  unpatch = lambda t: np.asarray(models.unpatchify(t, model.patch_size, model.num_leads,
                                                   model.token_layout))
  return unpatch(tokens), unpatch(flags)


def write_outputs(results: dict, evaluated: dict, model: models.CREMA, params: Any,
                  pretrain: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                  prepared: storage.PreparedSource, workdir: pathlib.Path) -> dict:
  """results.json, results.md, embeddings.npz and the figures; returns their paths."""
  paths = {"results": workdir / "results.json", "table": workdir / "results.md"}
  paths["results"].write_text(json.dumps(results, indent=1))
  paths["table"].write_text(
      f"# CREMA {config.mode} on {prepared.path}\n\nTest-fold AUROC (mean ± std over "
      f"seeds {tuple(config.seeds)}; [95% bootstrap interval] of seed "
      f"{config.seeds[0]})\n\n{results_table(results, config)}\n\n"
      f"## Robustness (test fold, {max(config.label_fractions):.0%} labels)\n\n"
      f"{robustness_table(results, config)}\n")
  pretrained_name = next(iter(evaluated))
  feats = evaluated[pretrained_name]["features"]
  paths["embeddings"] = workdir / "embeddings.npz"
  np.savez(paths["embeddings"], **{f"{split}_{k}": v for split, f in feats.items()
                                   for k, v in f.items()})
  if not config.plots:
    return paths
  curves = {name: e["curves"] for name, e in evaluated.items() if e["curves"]}
  if curves:
    paths["roc_curves"] = plots.roc_curves(curves, workdir / "roc_curves.png")
  paths["embeddings_pca"] = plots.embedding_map(
      feats["test"]["features"], feats["test"]["labels"], workdir / "embeddings_pca.png",
      title=f"{pretrained_name}: test-fold features")
  n = config.num_reconstructions
  if n:
    batch = next(features_lib.views(pretrain, prepared, pretrain.data.test_folds, n))
    recon, masked = reconstruct(model, params, batch["view"], pretrain.mask_ratio,
                                config.seed)
    titles = [f"ecg {i}: " + ",".join(c for c, v in zip(records.SUPERCLASSES, y) if v)
              for i, y in zip(batch["ecg_id"], batch["labels"])]
    paths["reconstructions"] = plots.reconstructions(
        batch["view"], masked, recon, pretrain.data.sampling_rate,
        workdir / "reconstructions.png", titles=titles)
  loss_log = restore.checkpoint_dir(config.checkpoint).parent / "metrics.jsonl"
  if loss_log.is_file():
    paths["loss_curves"] = plots.loss_curves(metrics.read_jsonl(loss_log),
                                             workdir / "pretraining_loss.png")
  return paths


# -------------------------------------------------------------------------- main
def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Probes (or fine-tunes) the checkpoint and a random-initialised encoder; writes the
  outputs to `workdir` and prints the tables. Returns the results dict."""
  check_config(config)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  mesh = sharding.make_mesh(config.mesh.fsdp)

  # Checkpoint.
  pretrain, model, step, params = restore.restore_encoder(config, mesh)

  # Data.
  prepared = storage.PreparedSource(pretrain.data.data_dir, pretrain.data.name)

  # Encoders: the pretrained one, and the baseline row.
  encoders = {f"crema_step{step}": params}
  if config.random_init_baseline:
    encoders["random_init"] = jax.device_put(
        models.init_params(model, jax.random.key(config.seed + 1), pretrain.mask_ratio),
        sharding.replicated(mesh))

  # Probe or fine-tune each, with robustness.
  evaluated = {name: evaluate_encoder(name, model, p, pretrain, config, prepared, mesh)
               for name, p in encoders.items()}
  results = {"mode": config.mode,
             "checkpoint": str(restore.checkpoint_dir(config.checkpoint)),
             "step": step, "dataset": str(prepared.path),
             "encoders": {name: {k: e[k] for k in ("summary", "runs", "robustness")}
                          for name, e in evaluated.items()}}

  # Outputs.
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = write_outputs(results, evaluated, model, params, pretrain, config, prepared,
                          workdir)
    print(results_table(results, config))
    print("\n" + robustness_table(results, config))
    print("\n" + "\n".join(f"{k}: {v}" for k, v in paths.items()))
  return results
