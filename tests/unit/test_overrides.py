"""Misspelled config overrides are refused in a few lines, before anything runs."""

import subprocess
import sys

from crema_jax import overrides


def test_a_misspelled_field_names_the_closest_and_where_it_lives():
  message = overrides.check(["--config=configs/demo.py", "--workdir=w",
                             "--config.batchsize=8", "--config.model.emb_dimm=3",
                             "--config.optimizer.lr=0.1"])
  assert "--config.batchsize=8\n    no field 'batchsize' at the top level: did you " \
         "mean batch_size?" in message
  assert "no field 'emb_dimm' at model: did you mean model.emb_dim?" in message
  assert "optimizer.lr" not in message  # It exists.
  message = overrides.check(["--config", "configs/probe.py",
                             "--config.pretrain.batchsize=8"])
  assert "no field 'pretrain' at the top level" in message
  assert "closest field: --config.finetune.batch_size" in message
  assert overrides.check(["--config=configs/study.py:method,runlocal",
                          "--config.pretrain.total_steps=3"]) is None


def test_the_job_stops_in_a_few_lines_without_a_traceback():
  result = subprocess.run(
      [sys.executable, "-m", "crema_jax.main", "--config", "configs/embed.py",
       "--workdir", "/nonexistent", "--config.checkpont=x"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 5
  assert "did you mean checkpoint?" in result.stderr
