"""What an evaluation leaves for people: the protocol in words, the markdown tables,
results.json, embeddings.npz and the figures."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from crema_jax import atomic
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import plots
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.input import device
from crema_jax import metrics
from crema_jax import models
from crema_jax.package import encoder as package

REFERENCE = ("PTB-XL benchmark protocol (Strodthoff et al., IEEE JBHI 2021, "
             "helme/ecg_ptbxl_benchmarking), as used by Al-Masud, Lopez Alcaraz and "
             "Strodthoff (ICLR 2026, arXiv 2509.25095)")


def protocol(config: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
             overall: str, table=None) -> dict:
  """The evaluation protocol in words, for results.json (`table`: a labels table's
  `tasks.TableLabels`, whose split replaces PTB-XL's folds)."""
  out = _protocol(config, data, overall)
  if table is not None:
    described = table.describe()
    out["folds"] = (f"{described['split']}" + ("" if table.table.split is not None else
                    f", train/validation/test shares {tuple(config.labels.split_fractions)}"
                    f", seed {config.labels.split_seed}, patient-disjoint, stratified on "
                    "every label column of the table (numbers by quartile)"))
    out["metric"] += ("; regression tasks: MAE, R^2 and Pearson r (R^2 chooses on "
                      "validation, ridge regression on the frozen features)")
    out["selection"] = out["selection"].replace("fold", "split")
    del out["overall"]
  return out


def _protocol(config: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
              overall: str) -> dict:
  unit = "patients (every ECG of a drawn patient)" if config.bootstrap_unit == (
      "patient") else "ECGs"
  return {
      "reference": REFERENCE,
      "folds": {"train": list(data.train_folds), "validation": list(data.val_folds),
                "test": list(data.test_folds)},
      "metric": "macro AUROC over a task's classes that have positives and negatives "
                "among the test ECGs the task keeps; AUPRC and F1 (at the threshold "
                "maximising F1 on validation) beside it",
      "selection": "every choice (probe L2 penalty and step, fine-tuning's early stop, "
                   "F1 thresholds) is made on the validation fold; the test fold is "
                   "scored once per fit",
      "bootstrap": f"{config.bootstrap} resamples of the test {unit}, drawn again when "
                   "a class with positives in the test set has none (or no negative) "
                   "in the resample; percentile 95% intervals; paired differences use "
                   "the same resamples for both encoders",
      "label_fractions": "training ECGs sampled by whole patients, seeded",
      "seeds": "mean and sample standard deviation (ddof=1) over the seeds; intervals "
               "of the first seed",
      "linear_probe": "a linear layer on frozen pooled features (standardised with the "
                      "training statistics), binary cross-entropy per class, L2 "
                      f"penalty chosen on validation from {list(config.probe.l2_grid)}",
      "finetune": "LP-FT: the head starts from the fitted linear probe; encoder and head "
                  "trained end to end, head at head_lr_scale x lr, early-stopped on "
                  "validation macro AUROC (the probe start is a candidate)",
      "overall": overall,
  }


# ------------------------------------------------------------------------ tables
def _cell(entry: dict, seeds: int) -> str:
  """Macro AUROC, or a regression's MAE and R^2: mean ± std over seeds [interval]."""
  if "mae" in entry:
    cell = f"MAE {entry['mae']:.3g}"
    if seeds > 1 and np.isfinite(entry.get("mae_std", np.nan)):
      cell += f" ± {entry['mae_std']:.2g}"
    if "mae_ci" in entry:
      cell += f" [{entry['mae_ci'][0]:.3g}, {entry['mae_ci'][1]:.3g}]"
    return cell + f", R² {entry['r2']:.2f}"
  cell = f"{entry['auroc']:.3f}"
  if seeds > 1 and np.isfinite(entry.get("auroc_std", np.nan)):
    cell += f" ± {entry['auroc_std']:.3f}"
  if "auroc_ci" in entry:
    cell += f" [{entry['auroc_ci'][0]:.2f}, {entry['auroc_ci'][1]:.2f}]"
  return cell


def _headline(entry: dict) -> str:
  """The one number of a run: macro AUROC, or a regression's R^2."""
  value = entry.get("r2" if "mae" in entry else "auroc", float("nan"))
  return "-" if not entry.get("n") or not np.isfinite(value) else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def score_table(results: dict, config: ml_collections.ConfigDict) -> str:
  """Test macro AUROC (regression: MAE and R^2; mean ± std over seeds [95% interval of
  the first seed]) per encoder and label fraction."""
  names = list(results["tasks"])
  binary = any("overall" in by_task for e in results["encoders"].values()
               for by_task in e["summary"].values())
  header = ["encoder", "labels", *names] + (["overall"] if binary else [])
  rows = []
  for encoder, entry in results["encoders"].items():
    for fraction, by_task in entry["summary"].items():
      row = [encoder, f"{float(fraction):.0%}"]
      row += [_cell(by_task[t], len(config.seeds)) for t in names]
      if binary:
        row.append(f"{by_task['overall']:.3f}")
      rows.append(row)
  return _table(header, rows)


def comparison_table(results: dict) -> str:
  """Paired bootstrap differences of macro AUROC (R^2 for regression) between
  encoders, per task."""
  rows = []
  for pair, by_task in results["comparisons"].items():
    for task, c in by_task.items():
      rows.append([pair, task, c.get("metric", "auroc"), f"{c['a']:.3f}", f"{c['b']:.3f}",
                   f"{c['difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]",
                   f"{c['p_value']:.3f}"])
  return _table(["encoders (A - B)", "task", "metric", "A", "B",
                 "A - B [95% paired CI]", "p"], rows)


def subgroup_table(results: dict) -> str:
  """Macro AUROC (regression: R^2) [95% interval] per age band and sex, first
  encoder."""
  encoder = next(iter(results["encoders"]))
  by_task = results["encoders"][encoder]["subgroups"]
  names = list(by_task)
  groups = list(by_task[names[0]])
  rows = []
  for group in groups:
    row = [group, str(by_task[names[0]][group]["n"])]
    for task in names:
      e = by_task[task][group]
      cell = _headline(e)
      ci = e.get("r2_ci" if "mae" in e else "auroc_ci")
      if isinstance(ci, list) and cell != "-" and np.isfinite(ci).all():
        cell += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
      row.append(cell)
    rows.append(row)
  return f"{encoder}, test fold\n\n" + _table(["subgroup", "ECGs", *names], rows)


def reduced_leads_table(results: dict) -> str:
  """Per lead set and task: the probe retrained on those leads vs. the 12-lead probe
  applied with the other leads zeroed."""
  rows = []
  for encoder, entry in results["encoders"].items():
    for lead_set, by_task in entry.get("reduced_leads", {}).items():
      for task, e in by_task.items():
        rows.append([encoder, lead_set, task, _cell(e["retrained"], 1),
                     f"{e['zeroed']['auroc']:.3f}"])
  return _table(["encoder", "leads", "task", "probe retrained on them",
                 "12-lead probe, other leads zeroed"], rows)


def robustness_table(results: dict, config: ml_collections.ConfigDict) -> str:
  """Test macro AUROC (regression: R^2) of each task under each shift, per encoder."""
  names = list(results["tasks"])
  full, seed = f"{max(config.label_fractions):g}", config.seeds[0]
  rows = []
  for encoder, entry in results["encoders"].items():
    rows.append([encoder, "none"] + [
        _headline(entry['runs'][f'fraction_{full}/seed_{seed}/{t}']) for t in names])
    for shift, by_task in entry["robustness"].items():
      rows.append([encoder, shift] + [_headline(by_task[t]) for t in names])
  return _table(["encoder", "shift", *names], rows)


def domains_table(results: dict) -> str:
  """Other hospitals: within-source probes at each label fraction vs. the PTB-XL
  probe transferred, on each source's own test split."""
  rows = []
  for encoder, entry in results["encoders"].items():
    for domain, d in entry.get("domains", {}).items():
      for task, e in d["tasks"].items():
        within = [f"{f}: {_cell(s, 1)}" for f, s in e["within"].items()]
        transferred = _cell(e["transferred"], 1) if "transferred" in e else "-"
        rows.append([encoder, domain, task, "; ".join(within), transferred])
  return _table(["encoder", "source", "task", "within-source probe (label fraction)",
                 "PTB-XL probe transferred"], rows)


def markdown(results: dict, config: ml_collections.ConfigDict) -> str:
  """Every table of results.md."""
  full = f"{max(config.label_fractions):.0%}"
  table = results["dataset"].get("labels_table")
  if table:
    intro = (f"Labels table {table['path']} ({table['records_labelled']} ECGs labelled); "
             f"split: {table['split']}; patients: {table['patients']}. Test split, "
             f"macro AUROC, or MAE and R² for regression (mean ± std over seeds "
             f"{tuple(config.seeds)}; [95% bootstrap interval] of seed "
             f"{config.seeds[0]}).")
  else:
    intro = (f"Protocol: {REFERENCE}. Test fold {results['protocol']['folds']['test']}, "
             f"macro AUROC (mean ± std over seeds {tuple(config.seeds)}; [95% bootstrap "
             f"interval] of seed {config.seeds[0]}). Overall: "
             f"{results['protocol']['overall']}.")
  parts = [f"# CREMA {config.mode} on {results['dataset']['path']}", intro,
           score_table(results, config)]
  if results["comparisons"]:
    parts += [f"## Paired differences ({full} labels, seed {config.seeds[0]})",
              comparison_table(results)]
  if any("subgroups" in e for e in results["encoders"].values()):
    parts += [f"## Subgroups ({full} labels)", subgroup_table(results)]
  if any(e.get("reduced_leads") for e in results["encoders"].values()):
    parts += ["## Reduced leads", reduced_leads_table(results)]
  if config.robustness:
    parts += [f"## Robustness (test fold, {full} labels)",
              robustness_table(results, config)]
  if any(e.get("domains") for e in results["encoders"].values()):
    parts += ["## Other sources", domains_table(results)]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------- figures
def reconstruct(model: models.CREMA, params: Any, x: np.ndarray, mask_ratio: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The decoder's reconstruction of randomly masked ECGs.

  x: [n, leads, time] normalised -> (recon [n, leads, time], masked [n, leads, time]
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


def _embeddings(evaluated: dict, encoder_name: str, prepared: storage.PreparedSource,
                mode: str) -> dict:
  """embeddings.npz: probing, the frozen features of every split; fine-tuning, each
  task's fine-tuned encoder's test-fold features."""
  result = evaluated[encoder_name]
  if mode == "probe":
    return {f"{split}_{k}": v for split, f in result["frozen"].items()
            for k, v in f.items()}
  test = result["frozen"]["test"]["position"]
  out = {"test_position": test, "test_ecg_id": prepared.index["ecg_id"][test],
         "test_labels": prepared.index["labels"][test]}
  for task, fit in result["primary"].items():
    out[f"test_features_finetuned_{task}"] = fit.test_features
  return out


def write_outputs(results: dict, evaluated: dict, encoder, config: ml_collections.ConfigDict,
                  prepared: storage.PreparedSource, tasks: dict,
                  workdir: pathlib.Path) -> dict:
  """results.md, embeddings.npz and the figures, each written whole (`atomic`); returns
  their paths, and results.json's, which `write_results` writes once every other output
  is in place (a study takes results.json as "this cell is done")."""
  paths = {"results": workdir / "results.json", "table": workdir / "results.md",
           "embeddings": workdir / "embeddings.npz"}
  atomic.write_text(paths["table"], markdown(results, config))
  embeddings = _embeddings(evaluated, encoder.name, prepared, config.mode)
  atomic.savez(paths["embeddings"], **embeddings)
  if not config.plots:
    return paths
  test = evaluated[encoder.name]["frozen"]["test"]["position"]
  curves = {}
  for name, result in evaluated.items():
    for task in (t for t in tasks if tasks[t].kind == "binary"):
      rows = tasks[task].rows(test)
      curves.setdefault(name, {})[task] = (tasks[task].labels[test[rows], 0],
                                           result["primary"][task].test_scores[rows, 0])
  if curves:
    paths["roc_curves"] = plots.roc_curves(curves, workdir / "roc_curves.png")
  if results["comparisons"]:
    paths["paired_differences"] = plots.paired_differences(
        results["comparisons"], workdir / "paired_differences.png")
  features = (embeddings["test_features"] if config.mode == "probe" else
              embeddings[f"test_features_finetuned_{next(iter(tasks))}"])
  coloured = next((t for t in tasks.values() if t.kind != "regression"), None)
  if coloured is None or coloured.name in tasks_lib.TASKS:  # PTB-XL: the superclasses.
    labels, classes = prepared.index["labels"][test], records.SUPERCLASSES
  else:
    labels, classes = coloured.labels[test], coloured.classes
  paths["embeddings_pca"] = plots.embedding_map(
      features, labels, workdir / "embeddings_pca.png", classes=classes,
      title=f"{encoder.name}: test-fold features" + (
          "" if config.mode == "probe" else f" (fine-tuned on {next(iter(tasks))})"))
  n = config.num_reconstructions
  if n:
    batch = next(features_lib.views(encoder.config, prepared, (), n, positions=test))
    recon, masked = reconstruct(encoder.model, encoder.params, batch["view"],
                                encoder.config.mask_ratio, config.seed)
    titles = [f"ecg {i}: " + ",".join(c for c, v in zip(records.SUPERCLASSES, y) if v)
              for i, y in zip(batch["ecg_id"], batch["labels"])]
    paths["reconstructions"] = plots.reconstructions(
        batch["view"], masked, recon, encoder.config.data.sampling_rate,
        workdir / "reconstructions.png", titles=titles)
  loss_log = package.checkpoint_dir(config.checkpoint).parent / "metrics.jsonl"
  if loss_log.is_file():
    paths["loss_curves"] = plots.loss_curves(metrics.read_jsonl(loss_log),
                                             workdir / "pretraining_loss.png")
  return paths


def write_results(results: dict, path: pathlib.Path) -> None:
  """results.json, whole: the last output of an evaluation."""
  atomic.write_text(path, json.dumps(results, indent=1, default=_json_default))


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")
