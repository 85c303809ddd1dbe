"""The embedded demo, end to end: synthetic PTB-XL -> prepare -> pretrain -> probe.

  python -m crema_jax.main --config configs/demo.py --workdir demo_output/run

The only job that writes data: a synthetic dataset in PTB-XL's own folder layout
(`data.synthetic`) goes through the real PTB-XL reader into prepared shards
(`data.prepare`), then pretraining (`train.pretrain`) and the probe
(`evaluation.run.evaluate`) run exactly as they do on downloaded data.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections

from crema_jax.data import prepare
from crema_jax.data import storage
from crema_jax.data import synthetic
from crema_jax import distributed
from crema_jax import train


def write_demo_data(config: ml_collections.ConfigDict) -> None:
  """Writes the synthetic PTB-XL folder (`data.raw_dir`, when absent) with its
  own-labels table (`synthetic.write_labels_table`) and prepares it into
  `data.data_dir` (when its manifest is missing). Process 0 writes; the others
  wait for it."""
  data = config.data
  if jax.process_index() == 0:
    if not pathlib.Path(data.raw_dir).exists():
      synthetic.write_synthetic_ptbxl(data.raw_dir, num_patients=config.demo_patients,
                                      seed=config.seed)
    # The same ECGs as "a hospital's folder" with its own labels table (README: "Train
    # on your own labels").
    if not (pathlib.Path(data.raw_dir) / "records500" / "labels.csv").is_file():
      synthetic.write_labels_table(data.raw_dir, config.demo_patients, config.seed)
    if not (storage.dataset_dir(data.data_dir, data.name) / "manifest.json").is_file():
      print(prepare.summarize(prepare.prepare_from_config(data)))
  distributed.barrier("demo data")


def probe_config(config: ml_collections.ConfigDict,
                 workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The demo's probe (`config.evaluation`), pointed at the checkpoint in `workdir`."""
  evaluation = config.evaluation.copy_and_resolve_references()
  evaluation.checkpoint = str(workdir)
  return evaluation


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Demo data, pretraining into `workdir`, then the probe into `workdir/probe`.

  Returns {"pretrain": summary, "probe": results}; a preempted pretraining returns
  before the probe (rerun the command to resume), as does `probe_after=False`."""
  train.check_config(config)
  write_demo_data(config)
  summary = train.pretrain(config, workdir)
  if summary["preempted"] or not config.probe_after:
    return {"pretrain": summary}
  from crema_jax.evaluation import run as evaluation  # pylint: disable=g-import-not-at-top
  return {"pretrain": summary,
          "probe": evaluation.evaluate(probe_config(config, workdir),
                                       pathlib.Path(workdir) / "probe")}
