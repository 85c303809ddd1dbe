"""Training metrics: a JSONL log and TensorBoard event files, written by process 0 only."""

from __future__ import annotations

import json
import pathlib
from typing import Mapping

import jax
import tensorboardX


class MetricWriter:
  """Writes `{workdir}/metrics.jsonl` (one object per logged step) and TensorBoard
  scalars under `{workdir}/tensorboard`. A no-op on processes other than 0."""

  def __init__(self, workdir: str | pathlib.Path, start_step: int = 0):
    """Rows after `start_step` (logged by an interrupted run past its last checkpoint)
    are dropped, so a resumed run's log has each step once."""
    self._active = jax.process_index() == 0
    if not self._active:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "metrics.jsonl"
    if path.is_file():
      kept = [row for row in read_jsonl(path) if row["step"] <= start_step]
      path.write_text("".join(json.dumps(row) + "\n" for row in kept))
    self._jsonl = open(path, "a", encoding="utf-8")
    self._tb = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, global_step=step)

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tb.close()


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  """The rows of a metrics.jsonl file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
