"""Studies at demo size: every study's grid runs and writes its three outputs; a study
killed mid-cell finishes on restart without redoing finished cells."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import study as study_configs
from crema_jax import study


def _study(name, demo_config, **overrides):
  """configs/study.py:NAME,runlocal on the tests' prepared demo data, 2-step cells,
  one seed, the super-diagnostic probe only."""
  config = study_configs.get_config(f"{name},runlocal")
  config.pretrain.data = demo_config.data.copy_and_resolve_references()
  config.pretrain.update(total_steps=2, batch_size=8, log_every=1, checkpoint_every=1,
                         progress_bar=False)
  config.demo_data = False
  config.study.update(seeds=(0,), bootstrap=20, plot_tasks=("superdiagnostic",))
  config.probe.update(tasks=("superdiagnostic",), bootstrap=0)
  config.probe.probe.steps = 20
  config.study.update(**overrides)
  return config


def test_the_grids_are_the_papers():
  grids = {name: study.cells(study_configs.get_config(name)) for name in
           study_configs.STUDIES}
  assert [c.name for c in grids["method"]] == ["gl", "cl", "hl"]
  assert grids["method"][1].overrides["mask_ratio"] == 0.0  # CL sees whole views.
  assert [(c.settings["patch"], c.settings["seq_len"]) for c in grids["patch"]] == [
      (60, 4980), (125, 5000), (250, 5000)]
  assert len(grids["size"]) == 12 and grids["size"][-1].overrides[
      "model.num_heads"] == 16
  assert [c.settings["patients"] for c in grids["data"]] == [0.1, 0.25, 0.5, 1.0]
  for name, grid in grids.items():
    config = study_configs.get_config(name)
    assert config.study.reference in [c.name for c in grid]
    study.check_config(config)  # Every cell's pretraining config is valid.
  config = study_configs.get_config("size")
  cell = study.cell_config(config, grids["size"][0], seed=3)
  assert (cell.model.emb_dim, cell.model.depth, cell.seed) == (256, 1, 3)
  assert config.pretrain.model.emb_dim == 1024  # The study's base is untouched.


def test_bad_study_configs_are_refused():
  with pytest.raises(ValueError, match="one of"):
    study_configs.get_config("depth")
  config = study_configs.get_config("method")
  config.study.cells = "0,7"
  with pytest.raises(ValueError, match="7 is not a cell"):
    study.check_config(config)
  config = study_configs.get_config("method")
  config.pretrain.total_steps = 0
  with pytest.raises(ValueError, match=r"(?s)cell gl.*total_steps=0"):
    study.check_config(config)


# One cell each; the cells whose model is the demo's tiny one, so that their steps
# come from the tests' compilation cache (patch 50, emb 128 x depth 2, 25% of patients).
@pytest.mark.parametrize("name,cell", [("patch", 0), ("size", 3), ("data", 0)])
def test_each_study_runs_a_cell_and_writes_its_outputs(name, cell, demo_config,
                                                       tmp_path):
  config = _study(name, demo_config, cells=str(cell))
  if name == "data":  # One study fine-tunes too: its own table and figure panel.
    config.study.finetune = True
    config.finetune.update(tasks=("superdiagnostic",), bootstrap=0)
    config.finetune.finetune.update(steps=2, eval_every=2, batch_size=8)
  result = study.run(config, tmp_path)
  (row,) = result["rows"]
  assert row["cell"] == study.cells(config)[cell].name and row["seed"] == 0
  assert 0 <= row["probe_superdiagnostic_auroc"] <= 1 or row[
      "probe_superdiagnostic_auroc"] != row["probe_superdiagnostic_auroc"]  # NaN ok.
  for output in ("results.csv", "results.md", "study.png"):
    assert (tmp_path / output).is_file()
  if name == "data":  # A quarter of the patients pretrained: its config says so.
    assert "finetune_superdiagnostic_auroc" in row
    assert "## finetune" in (tmp_path / "results.md").read_text()
    saved = json.loads((tmp_path / "cells" / "patients0.25" / "seed_0" /
                        "config.json").read_text())
    assert saved["data"]["pretrain_patient_fraction"] == 0.25


def test_a_killed_study_resumes_without_redoing_finished_cells(demo_config, tmp_path):
  """The method study (CL, HL) in a subprocess, killed once CL is done and HL has a
  checkpoint; run again, it skips CL and resumes HL; the table pairs CL with the
  reference HL on the same test resamples."""
  config = _study("method", demo_config, methods=("cl", "hl"))
  config.pretrain.total_steps = 12
  config.pretrain.checkpoint_every = 2
  overrides = [f"--config.pretrain.data.{k}={v}" for k, v in
               (("raw_dir", config.pretrain.data.raw_dir),
                ("data_dir", config.pretrain.data.data_dir))]
  command = [sys.executable, "-m", "crema_jax.main", "--config",
             "configs/study.py:method,runlocal", "--workdir", str(tmp_path),
             "--config.demo_data=False", "--config.study.seeds=(0,)",
             "--config.study.methods=('cl','hl')",
             "--config.study.bootstrap=20", "--config.probe.tasks=('superdiagnostic',)",
             "--config.probe.bootstrap=0", "--config.probe.probe.steps=20",
             "--config.study.plot_tasks=('superdiagnostic',)",
             "--config.pretrain.total_steps=12", "--config.pretrain.batch_size=8",
             "--config.pretrain.checkpoint_every=2", "--config.pretrain.log_every=1",
             "--config.pretrain.progress_bar=False", *overrides]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
  cl_done = tmp_path / "cells" / "cl" / "seed_0" / "probe" / "results.json"
  hl_checkpoints = tmp_path / "cells" / "hl" / "seed_0" / "checkpoints"
  deadline = time.time() + 600
  try:
    while time.time() < deadline and process.poll() is None:
      if cl_done.is_file() and hl_checkpoints.is_dir() and any(
          p.name.isdigit() for p in hl_checkpoints.iterdir()):
        break
      time.sleep(0.2)
    assert process.poll() is None, "the study ended before it could be killed"
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  finished = cl_done.stat().st_mtime_ns
  assert not (hl_checkpoints.parent / "probe" / "results.json").exists()

  result = study.run(config, tmp_path)
  assert cl_done.stat().st_mtime_ns == finished  # Not redone.
  resumed = json.loads((tmp_path / "cells" / "hl" / "seed_0" /
                        "pretrain.json").read_text())
  assert resumed["start_step"] > 0  # HL resumed from its checkpoint.
  # The method study's floor: HL's probes also probed an untrained encoder.
  assert [r["cell"] for r in result["rows"]] == ["cl", "hl", "random_init"]
  with open(tmp_path / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == ["cl", "hl", "-"]
  assert "pretrain_loss" in rows[0] and "probe_superdiagnostic_auroc" in rows[0]
  assert rows[2]["steps"] == "0" and not rows[2]["pretrain_loss"]
  assert rows[2]["probe_superdiagnostic_auroc"]  # Read from HL's results ("nan" here).
  text = (tmp_path / "results.md").read_text()
  assert "hl (reference)" in text and "Paired differences to `hl`" in text
  assert "| random_init | - |" in text and "rec. ratio" in text
  assert set(result["paired"]["probe"]) == {"cl", "random_init"}
