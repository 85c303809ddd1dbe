"""The figures people look at: ROC curves, reconstructions, an embedding map and the
pretraining loss curves. Each function writes one PNG and returns its path."""

from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; no display on a TPU VM or in CI.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from sklearn import metrics as skmetrics

from crema_jax.data import records


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def roc_curves(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
               path: str | pathlib.Path) -> pathlib.Path:
  """One panel per task, one curve per encoder.

  Args:
    curves: {encoder: {task: (labels [n], scores [n])}} on the test fold.
  """
  tasks = list(next(iter(curves.values())))
  fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for encoder, by_task in curves.items():
      labels, scores = by_task[task]
      if 0 < labels.sum() < len(labels):
        fpr, tpr, _ = skmetrics.roc_curve(labels, scores)
        auc = skmetrics.roc_auc_score(labels, scores)
        ax.plot(fpr, tpr, label=f"{encoder} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(title=task, xlabel="false positive rate", ylabel="true positive rate",
           xlim=(0, 1), ylim=(0, 1))
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7, loc="lower right")
  return _save(fig, path)


def reconstructions(x: np.ndarray, masked_time: np.ndarray, recon: np.ndarray,
                    sampling_rate: float, path: str | pathlib.Path,
                    leads: Sequence[str] = ("II", "V2"),
                    titles: Sequence[str] | None = None) -> pathlib.Path:
  """Original, masked spans and reconstruction, a row per ECG and a column per lead.

  Args:
    x: [n, 12, time] normalised input ECGs.
    masked_time: [n, 12, time] bool, True where the model saw nothing.
    recon: [n, 12, time] the decoder's output (valid where masked).
  """
  n = len(x)
  fig, axes = plt.subplots(n, len(leads), figsize=(6 * len(leads), 1.9 * n),
                           squeeze=False)
  t = np.arange(x.shape[-1]) / sampling_rate
  for i in range(n):
    for j, lead in enumerate(leads):
      k = records.LEADS.index(lead)
      ax = axes[i, j]
      ax.plot(t, x[i, k], color="black", linewidth=0.7, label="original")
      shown = np.where(masked_time[i, k], recon[i, k], np.nan)
      ax.plot(t, shown, color="tab:red", linewidth=0.8, label="reconstruction")
      ax.fill_between(t, 0, 1, where=masked_time[i, k], color="tab:red", alpha=0.08,
                      transform=ax.get_xaxis_transform(), label="masked")
      title = f"lead {lead}" + (f" - {titles[i]}" if titles else "")
      ax.set_title(title, fontsize=8)
      ax.tick_params(labelsize=7)
  axes[0, 0].legend(fontsize=7, loc="upper right")
  for ax in axes[:, 0]:
    ax.set_ylabel("standardised\n(per lead, z)", fontsize=7)
  axes[-1, 0].set_xlabel("seconds")
  return _save(fig, path)


def pca(features: np.ndarray, n: int = 2) -> np.ndarray:
  """[samples, dim] -> [samples, n]: projections on the top principal components."""
  centred = features - features.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:n].T


def embedding_map(features: np.ndarray, labels: np.ndarray,
                  path: str | pathlib.Path, title: str = "",
                  classes: Sequence[str] = records.SUPERCLASSES) -> pathlib.Path:
  """A 2-D PCA of [n, emb] features, coloured by class ([n, classes] multi-hot
  `labels`; PTB-XL's superclasses by default): every class present gets a colour and
  its count in the legend; an ECG with several classes takes its first non-NORM one
  (in `classes` order), as the legend's title says."""
  xy = pca(features)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  classes = list(classes)
  order = [k for k, c in enumerate(classes) if c != "NORM"] + [
      k for k, c in enumerate(classes) if c == "NORM"]  # Pathologies before NORM.
  first = np.full(len(labels), -1)
  for k in reversed(order):
    first = np.where(labels[:, k] > 0, k, first)
  for k, name in enumerate(classes):
    sel = first == k
    if sel.any():
      ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7,
                 label=f"{name} ({int(sel.sum())})")
  if (first < 0).any():
    ax.scatter(xy[first < 0, 0], xy[first < 0, 1], s=8, alpha=0.5, color="grey",
               label=f"no label ({int((first < 0).sum())})")
  ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
  ax.legend(fontsize=7, markerscale=2, title_fontsize=7,
            title="several classes: the first of " + ", ".join(
                classes[k] for k in order if classes[k] != "NORM"))
  return _save(fig, path)


def loss_curves(rows: Sequence[Mapping[str, float]],
                path: str | pathlib.Path) -> pathlib.Path:
  """Pretraining loss and its parts against the step, from `metrics.jsonl` rows; when
  the log has them (`crema_jax.references`), a second panel: the decoder's masked
  loss on a log step's views beside the simple predictors' on the same masks."""
  keys = [k for k in rows[0] if k == "loss" or k.startswith("loss_")]
  steps = [row["step"] for row in rows]
  reference_rows = [row for row in rows if "reference_model" in row]
  fig, axes = plt.subplots(1, 2 if reference_rows else 1, squeeze=False,
                           figsize=(12 if reference_rows else 6, 3.8))
  ax = axes[0, 0]
  for key in keys:
    ax.plot(steps, [row.get(key, np.nan) for row in rows], label=key)
  ax.set(xlabel="step", ylabel="loss", title="pretraining")
  ax.legend(fontsize=8)
  if reference_rows:
    ax = axes[0, 1]
    ref_steps = [row["step"] for row in reference_rows]
    for key in sorted(k for k in reference_rows[-1] if k.startswith("reference_")):
      name = key[len("reference_"):]
      ax.plot(ref_steps, [row.get(key, np.nan) for row in reference_rows],
              label="decoder" if name == "model" else name,
              color="black" if name == "model" else None,
              linewidth=1.6 if name == "model" else 0.9,
              linestyle="-" if name == "model" else "--")
    last = reference_rows[-1]
    ax.set(xlabel="step", ylabel="masked MSE (standardised units)",
           title=f"masked reconstruction vs simple predictors (last ratio "
                 f"{last['reconstruction_ratio']:.2f})")
    ax.legend(fontsize=8)
  return _save(fig, path)


def paired_differences(comparisons: Mapping[str, Mapping[str, Mapping]],
                       path: str | pathlib.Path, level: float = 95.0) -> pathlib.Path:
  """A forest plot: per task, the macro AUROC (R^2 for regression tasks) difference
  between two encoders with its paired 95% bootstrap interval, one panel per pair.

  Args:
    comparisons: {"A - B": {task: {"difference", "ci": [low, high]}}}.
  """
  fig, axes = plt.subplots(1, len(comparisons), squeeze=False,
                           figsize=(4.2 * len(comparisons),
                                    0.9 + 0.32 * max(len(c) for c in
                                                     comparisons.values())))
  for ax, (pair, by_task) in zip(axes[0], comparisons.items()):
    tasks = list(by_task)[::-1]
    diff = np.array([by_task[t]["difference"] for t in tasks], np.float64)
    ci = np.array([by_task[t]["ci"] for t in tasks], np.float64)
    y = np.arange(len(tasks))
    err = np.abs(np.stack([diff - ci[:, 0], ci[:, 1] - diff]))
    ax.errorbar(diff, y, xerr=np.nan_to_num(err), fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0, color="grey", linestyle=":", linewidth=1)
    ax.set(yticks=y, yticklabels=tasks, title=pair,
           xlabel=("macro AUROC" + (" (R² for regression)" if any(
               c.get("metric") == "r2" for c in by_task.values()) else "")
                   + f" difference, {level:g}% paired bootstrap interval"))
  return _save(fig, path)


def study_curves(rows: Sequence[Mapping], x: str, series: str | None,
                 evaluations: Sequence[str], tasks: Sequence[str],
                 path: str | pathlib.Path) -> pathlib.Path:
  """A study's test macro AUROC against its varied setting `x`: mean over seeds with
  ±1 sd error bars, one panel per evaluation (linear probe, fine-tuning) side by side;
  one line per task, or per value of `series` (for `tasks[0]`) when given.

  rows: `study.collect` rows ({"cell", settings..., "seed", "<evaluation>_<task>_auroc"}).
  """
  xs = list(dict.fromkeys(r[x] for r in rows))
  numeric = all(isinstance(v, (int, float)) for v in xs)
  xs = sorted(xs) if numeric else xs
  fig, axes = plt.subplots(1, len(evaluations), squeeze=False,
                           figsize=(4.6 * len(evaluations), 3.6), sharey=True)
  lines = ([(None, t) for t in tasks] if series is None else
           [(v, tasks[0]) for v in dict.fromkeys(r[series] for r in rows)])
  for ax, evaluation in zip(axes[0], evaluations):
    for value, task in lines:
      key = f"{evaluation}_{task}_auroc"
      mean, sd = [], []
      for point in xs:
        got = [r[key] for r in rows if r[x] == point and key in r and
               (series is None or r[series] == value)]
        mean.append(np.nanmean(got) if got else np.nan)
        sd.append(np.nanstd(got, ddof=1) if len(got) > 1 else 0.0)
      where = xs if numeric else np.arange(len(xs))
      label = task if series is None else f"{series} {value}"
      ax.errorbar(where, mean, yerr=sd, marker="o", capsize=3, label=label)
    if not numeric:
      ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs])
    elif x in ("patch", "patients"):
      ax.set_xscale("log")
      ax.set_xticks(xs, [f"{v:g}" for v in xs])
    title = {"probe": "linear probe", "finetune": "fine-tuning"}.get(evaluation,
                                                                     evaluation)
    ax.set(xlabel=x, title=title + ("" if series is None else f" ({tasks[0]})"))
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel("test macro AUROC")
  return _save(fig, path)
