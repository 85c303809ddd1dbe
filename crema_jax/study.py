"""The paper's experiments as one-command studies: a grid of cells, each a pretraining
run with the same budget (steps x batch) and a probe (and fine-tuning) of it, over
seeds; then one table, CSV and figure over whatever cells exist.

  python -m crema_jax.main --config configs/study.py:method --workdir DIR

Studies (`configs/study.py`): `method` (GL / CL / HL), `patch` (60 / 125 / 250),
`size` (embedding x depth), `data` (nested shares of the pretraining patients).
DIR/cells/CELL/seed_S is a pretraining workdir with `probe/` (and `finetune/`) in it: a
finished cell (its evaluation's results.json written) is skipped, an unfinished one
resumes from its last checkpoint, so a study survives preemption as a single run does.
`--config.study.cells=0,2` runs only those cells (one per SLURM array task:
launch/study_array.sbatch); every run ends by aggregating the cells that exist into
DIR/results.csv, DIR/results.md and DIR/study.png.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib

import ml_collections
import numpy as np

from configs import common
from crema_jax.data import storage
from crema_jax.evaluation import plots
from crema_jax.evaluation import scores
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax import metrics
from crema_jax.models import sizing
from crema_jax import train

STUDIES = ("method", "patch", "size", "data")
# The setting each study's figure puts on its x axis, and the one its lines follow.
AXES = {"method": ("method", None), "patch": ("patch", None), "size": ("depth", "emb"),
        "data": ("patients", None)}
RESULTS = "results.json"
RANDOM_INIT = "random_init"  # The untrained encoder of the reference cell's probes.


@dataclasses.dataclass(frozen=True)
class Cell:
  """One point of a study's grid: its name, the settings it varies (for the table),
  and the pretraining config overrides that make it."""
  name: str
  settings: dict
  overrides: dict


def cells(config: ml_collections.ConfigDict) -> list[Cell]:
  """The study's grid, in order (the reference cell is `study.reference`)."""
  study = config.study
  seq_len = config.pretrain.data.seq_len
  if study.name == "method":
    return [Cell(m, {"method": m},
                 {"loss": common.loss_config(m).to_dict(),
                  "mask_ratio": 0.0 if m == "cl" else config.pretrain.mask_ratio})
            for m in study.methods]
  if study.name == "patch":
    out = []
    for p in study.patches:
      length = seq_len // p * p  # The longest multiple of the patch in the view.
      out.append(Cell(f"patch{p}", {"patch": p, "seq_len": length},
                      {"model.patch_size": p, "data.seq_len": length}))
    return out
  if study.name == "size":
    return [Cell(f"emb{e}_depth{d}", {"emb": e, "depth": d},
                 {"model.emb_dim": e, "model.depth": d,
                  "model.num_heads": max(1, e // study.head_dim),
                  "model.proj_hidden_dim": e})
            for e in study.emb_dims for d in study.depths]
  if study.name == "data":
    return [Cell(f"patients{f:g}", {"patients": f},
                 {"data.pretrain_patient_fraction": f}) for f in study.fractions]
  raise ValueError(f"study.name={study.name!r} is not one of {STUDIES}")


def random_init_cell(config: ml_collections.ConfigDict) -> Cell | None:
  """The `random_init` row (`study.random_init`): an untrained encoder of the reference
  cell's architecture, probed alongside the reference cell (same run directories)."""
  if not config.study.get("random_init"):
    return None
  reference = next(c for c in cells(config) if c.name == config.study.reference)
  return Cell(RANDOM_INIT, {k: "-" for k in reference.settings}, {})


def table_cells(config: ml_collections.ConfigDict) -> list[Cell]:
  """The rows of the study's table: the grid, then the random-init row if any."""
  extra = random_init_cell(config)
  return cells(config) + ([extra] if extra else [])


def cell_config(config: ml_collections.ConfigDict, cell: Cell,
                seed: int) -> ml_collections.ConfigDict:
  """The cell's pretraining config: the study's `pretrain` with the cell's overrides
  and the seed (model initialisation, masks, views)."""
  out = config.pretrain.copy_and_resolve_references()
  for key, value in cell.overrides.items():
    node, field = out, key
    while "." in field:
      head, field = field.split(".", 1)
      node = node[head]
    node[field] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  out.seed = seed
  out.mode = "pretrain"
  return out


def selected(config: ml_collections.ConfigDict, grid: list[Cell]) -> list[Cell]:
  """`study.cells` ("" = all; "0,2": those indices) of the grid."""
  if not config.study.cells:
    return grid
  picked = []
  for part in str(config.study.cells).split(","):
    index = int(part)
    if not 0 <= index < len(grid):
      raise ValueError(f"study.cells={config.study.cells!r}: {index} is not a cell "
                       f"index (0..{len(grid) - 1})")
    picked.append(grid[index])
  return picked


def check_config(config: ml_collections.ConfigDict) -> list[Cell]:
  """Refuses a study that cannot run (an unknown study, a bad cell index, a cell
  whose pretraining config is invalid), before any cell starts."""
  grid = cells(config)
  names = [c.name for c in grid]
  if config.study.reference not in names:
    raise ValueError(f"study.reference={config.study.reference!r} is not a cell of "
                     f"{names}")
  if not config.study.seeds:
    raise ValueError("study.seeds is empty")
  picked = selected(config, grid)
  for cell in picked:
    try:
      train.check_config(cell_config(config, cell, config.study.seeds[0]))
    except ValueError as e:
      raise ValueError(f"cell {cell.name}: {e}") from e
  return picked


# --------------------------------------------------------------------------- run
def run_dir(workdir: pathlib.Path, cell: Cell, seed: int) -> pathlib.Path:
  return workdir / "cells" / cell.name / f"seed_{seed}"


def evaluations(config: ml_collections.ConfigDict) -> list[str]:
  return ["probe", "finetune"] if config.study.finetune else ["probe"]


def run_cell(config: ml_collections.ConfigDict, cell: Cell, seed: int,
             workdir: pathlib.Path) -> None:
  """Pretrains one cell and seed (resuming) and evaluates it; skips what is done."""
  from crema_jax.evaluation import run as evaluation  # pylint: disable=g-import-not-at-top
  directory = run_dir(workdir, cell, seed)
  todo = [e for e in evaluations(config) if not (directory / e / RESULTS).is_file()]
  if not todo:
    print(f"study {config.study.name}: {cell.name} seed {seed} done, skipped")
    return
  pretrain = cell_config(config, cell, seed)
  summary = train.pretrain(pretrain, directory)
  if summary["preempted"]:
    raise SystemExit(f"preempted in {directory}: run the study again to resume")
  if summary["start_step"] < pretrain.total_steps:  # This run trained: record it.
    (directory / "pretrain.json").write_text(json.dumps(summary, indent=1))
  for name in todo:
    evaluation_config = config[name].copy_and_resolve_references()
    evaluation_config.checkpoint = str(directory)
    evaluation_config.random_init_baseline = (random_init_cell(config) is not None
                                              and cell.name == config.study.reference)
    evaluation.evaluate(evaluation_config, directory / name)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Runs the selected cells (each seed), then aggregates every finished cell."""
  picked = check_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "study.json").write_text(config.to_json_best_effort(indent=1))
  if config.get("demo_data"):
    from crema_jax import demo  # pylint: disable=g-import-not-at-top
    demo.write_demo_data(config.pretrain)
  for cell in picked:
    for seed in config.study.seeds:
      run_cell(config, cell, seed, workdir)
  return aggregate(config, workdir)


# ------------------------------------------------------------------- aggregation
def _final_losses(directory: pathlib.Path) -> dict:
  """The last logged pretraining losses and samples/s of a run."""
  path = directory / "metrics.jsonl"
  rows = metrics.read_jsonl(path) if path.is_file() else []
  if not rows:
    return {}
  last = rows[-1]
  return {f"pretrain_{k}": v for k, v in last.items()
          if k not in ("step", "learning_rate")}


def _source(config: ml_collections.ConfigDict, cell: Cell) -> tuple[Cell, str | None]:
  """(the grid cell whose run directories hold `cell`'s results, the encoder's name in
  them: None for the checkpoint's own, the first)."""
  if cell.name == RANDOM_INIT:
    return next(c for c in cells(config) if c.name == config.study.reference), RANDOM_INIT
  return cell, None


def collect(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[dict]:
  """One row per finished cell and seed: settings, pretraining, per-task metrics."""
  rows = []
  for cell in table_cells(config):
    source, encoder_name = _source(config, cell)
    for seed in config.study.seeds:
      directory = run_dir(workdir, source, seed)
      found = {e: directory / e / RESULTS for e in evaluations(config)}
      if not found["probe"].is_file():
        continue
      pretrain = cell_config(config, source, seed)
      trained = encoder_name is None
      row = {"cell": cell.name, **cell.settings, "seed": seed,
             "parameters": sizing.count_params(pretrain.model.to_dict()),
             "steps": pretrain.total_steps if trained else 0,
             "batch_size": pretrain.batch_size,
             **(_final_losses(directory) if trained else {})}
      for name, path in found.items():
        if not path.is_file():
          continue
        results = json.loads(path.read_text())
        encoders = results["encoders"]
        if encoder_name is not None and encoder_name not in encoders:
          continue
        encoder = encoders[encoder_name or next(iter(encoders))]
        summary = encoder["summary"][f"{max(config[name].label_fractions):g}"]
        for task, entry in summary.items():
          if task == "overall":
            row[f"{name}_overall"] = entry
          else:
            row[f"{name}_{task}_auroc"] = entry["auroc"]
            row[f"{name}_{task}_auprc"] = entry["auprc"]
      if any(k.startswith(tuple(evaluations(config))) for k in row):
        rows.append(row)
  return rows


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


def _test_scores(config, workdir, cell, evaluation, task) -> list[np.ndarray]:
  """The cell's test logits of `task`, one [test ECGs, classes] array per seed."""
  source, encoder_name = _source(config, cell)
  key = task if encoder_name is None else f"{encoder_name}/{task}"
  out = []
  for seed in config.study.seeds:
    path = run_dir(workdir, source, seed) / evaluation / "test_scores.npz"
    if path.is_file():
      with np.load(path) as saved:
        if key in saved.files:
          out.append((saved["position"], saved[key]))
  return out


def paired_to_reference(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                        evaluation: str) -> dict:
  """{cell: {task: {"difference", "ci"}}}: the cell's test macro AUROC (mean over its
  seeds) minus the reference cell's, on the same bootstrap resamples of the test ECGs
  (PTB-XL benchmark resampling, `scores.bootstrap_samples`) for every cell and seed."""
  grid = {c.name: c for c in table_cells(config)}
  reference = grid[config.study.reference]
  prepared = storage.PreparedSource(config.pretrain.data.data_dir,
                                    config.pretrain.data.name)
  tasks = tasks_lib.build(config[evaluation].tasks, prepared)
  out = {}
  for name, task in tasks.items():
    base = _test_scores(config, workdir, reference, evaluation, name)
    if not base:
      continue
    positions = base[0][0]
    rows = task.rows(positions)
    labels = task.labels[positions[rows]]
    try:
      samples, _ = scores.bootstrap_samples(labels, config.study.bootstrap, 0)
    except ValueError:
      continue

    def mean_auroc(runs, index=None):
      return float(np.mean([scores.macro(scores.auroc_per_class(
          labels if index is None else labels[index],
          s[rows] if index is None else s[rows][index])) for _, s in runs]))

    base_full = mean_auroc(base)
    base_draws = np.array([mean_auroc(base, i) for i in samples])
    for cell_name, cell in grid.items():
      runs = _test_scores(config, workdir, cell, evaluation, name)
      if cell_name == reference.name or not runs:
        continue
      draws = np.array([mean_auroc(runs, i) for i in samples]) - base_draws
      finite = draws[np.isfinite(draws)]
      out.setdefault(cell_name, {})[name] = {
          "difference": mean_auroc(runs) - base_full,
          "ci": ([float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
                 if len(finite) else [float("nan")] * 2)}
  return out


def markdown(config: ml_collections.ConfigDict, rows: list[dict],
             paired: dict[str, dict]) -> str:
  """Mean ± sd over seeds per cell and task, best cell per task in bold; then the
  paired differences to the reference cell."""
  study = config.study
  grid = [c for c in table_cells(config) if any(r["cell"] == c.name for r in rows)]
  settings = list(grid[0].settings) if grid else []
  lines = [f"# Study `{study.name}`", "",
           f"Each cell: {config.pretrain.total_steps} pretraining steps x batch "
           f"{config.pretrain.batch_size}, seeds {list(study.seeds)}; test-fold macro "
           f"AUROC (PTB-XL benchmark protocol, `configs/probe.py`), mean ± sd over "
           "seeds; best cell per task in bold."]
  ratio = "pretrain_reconstruction_ratio"
  with_ratio = any(ratio in r for r in rows)
  if with_ratio:
    lines.append("`rec. ratio`: the last logged masked-reconstruction loss over the "
                 "best simple predictor's on the same masks (`crema_jax/references.py`; "
                 "1.0 = no better than copying or zero).")
  if any(c.name == RANDOM_INIT for c in grid):
    lines.append(f"`{RANDOM_INIT}`: an untrained encoder of the reference cell's "
                 "architecture, probed in the reference cell's runs.")
  lines.append("")
  for evaluation in evaluations(config):
    tasks = list(config[evaluation].tasks)
    header = ["cell", *settings, "params", "seeds",
              *(["rec. ratio"] if with_ratio else []), *tasks]
    lines += [f"## {evaluation}", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    means = {}
    for cell in grid:
      mine = [r for r in rows if r["cell"] == cell.name]
      for task in tasks:
        values = [r.get(f"{evaluation}_{task}_auroc", np.nan) for r in mine]
        means[cell.name, task] = (np.nanmean(values) if np.isfinite(values).any()
                                  else np.nan,
                                  np.nanstd(values, ddof=1) if len(values) > 1
                                  else np.nan)
    best = {}
    for task in tasks:
      finite = [c.name for c in grid if np.isfinite(means[c.name, task][0])]
      if finite:
        best[task] = max(finite, key=lambda n, t=task: means[n, t][0])
    for cell in grid:
      mine = [r for r in rows if r["cell"] == cell.name]
      cols = [cell.name + (" (reference)" if cell.name == study.reference else ""),
              *(str(cell.settings[s]) for s in settings),
              f"{mine[0]['parameters']:,}", str(len(mine))]
      if with_ratio:
        values = [r[ratio] for r in mine if ratio in r]
        cols.append(f"{np.mean(values):.2f}" if values else "-")
      for task in tasks:
        mean, sd = means[cell.name, task]
        text = f"{mean:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) else "")
        cols.append(f"**{text}**" if best.get(task) == cell.name else text)
      lines.append("| " + " | ".join(cols) + " |")
    lines.append("")
    diffs = paired[evaluation]
    if diffs:
      lines += [f"Paired differences to `{study.reference}` ({evaluation}; mean over "
                f"seeds, [95% interval] over {study.bootstrap} test resamples shared "
                "by every cell):", "", "| cell | " + " | ".join(tasks) + " |",
                "|" + "---|" * (len(tasks) + 1)]
      for cell_name, by_task in diffs.items():
        cols = [cell_name]
        for task in tasks:
          d = by_task.get(task)
          cols.append("-" if d is None or not np.isfinite(d["difference"]) else
                      f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
        lines.append("| " + " | ".join(cols) + " |")
      lines.append("")
  return "\n".join(lines)


def aggregate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """results.csv, results.md and study.png from every finished cell under workdir."""
  rows = collect(config, workdir)
  if not rows:
    print(f"study {config.study.name}: no finished cell under {workdir} yet")
    return {"rows": []}
  write_csv(rows, workdir / "results.csv")
  paired = {e: paired_to_reference(config, workdir, e) for e in evaluations(config)}
  text = markdown(config, rows, paired)
  (workdir / "results.md").write_text(text)
  x, series = AXES[config.study.name]
  plots.study_curves(rows, x, series, evaluations(config), config.study.plot_tasks,
                     workdir / "study.png")
  print(text)
  return {"rows": rows, "paired": paired}
