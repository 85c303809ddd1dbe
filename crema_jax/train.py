"""CREMA pretraining, top-down: config checks, prepared data, mesh, input, model and
optimizer (`step.build_run`), checkpoint, loop.

Pretraining reads a dataset that `python -m crema_jax.data.prepare` wrote; it never
writes data itself (the demo, `crema_jax.demo`, puts the whole path together).
"""

from __future__ import annotations

import json
import pathlib
import signal as signal_lib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import checkpoint
from crema_jax.data import storage
from crema_jax import distributed
from crema_jax.input import pipeline
from crema_jax import losses
from crema_jax import metrics
from crema_jax import models
from crema_jax import optim
from crema_jax.package import encoder as package
from crema_jax import references
from crema_jax import sharding
from crema_jax import step as step_lib


# ------------------------------------------------------------------------- config
def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before any data is read or compiled."""
  problems = models.config_problems(config)
  if not 0.0 <= config.mask_ratio < 1.0:
    problems.append(f"mask_ratio={config.mask_ratio} is not in [0, 1)")
  devices = jax.device_count()
  if config.batch_size % devices:
    problems.append(f"batch_size={config.batch_size} is not divisible by the "
                    f"{devices} devices")
  weights = {name: config.loss[name] for name in losses.LOSS_NAMES}
  for name, weight in weights.items():
    if weight < 0:
      problems.append(f"loss.{name}={weight} is negative")
  if all(w == 0 for w in weights.values()):
    problems.append(f"loss weights {weights} are all zero: nothing to learn")
  if config.loss.temperature <= 0:
    problems.append(f"loss.temperature={config.loss.temperature} must be positive")
  fraction = config.data.get("pretrain_patient_fraction", 1.0)
  if not 0.0 < fraction <= 1.0:
    problems.append(f"data.pretrain_patient_fraction={fraction} is not in (0, 1]")
  if config.total_steps < 1:
    problems.append(f"total_steps={config.total_steps} must be at least 1")
  try:
    pipeline.worker_count(config.data.worker_count)
  except ValueError as e:
    problems.append(str(e))
  if problems:
    raise ValueError("Invalid config:\n  " + "\n  ".join(problems))


# -------------------------------------------------------------------------- input
def prepared_source(data: ml_collections.ConfigDict) -> storage.PreparedSource:
  """The prepared dataset `data.data_dir/data.name`; a missing one is refused with the
  command that prepares it (every process checks: no process waits on another)."""
  manifest = storage.dataset_dir(data.data_dir, data.name) / "manifest.json"
  if not data.data_dir or not manifest.is_file():
    raise FileNotFoundError(
        f"no prepared dataset at {manifest} (data.data_dir={data.data_dir!r}, "
        f"data.name={data.name!r}). Prepare it first:\n  python -m "
        "crema_jax.data.prepare --config CONFIG --config.data.raw_dir=RAW "
        f"--config.data.data_dir={data.data_dir or 'PREPARED'}")
  return storage.PreparedSource(data.data_dir, data.name)


# -------------------------------------------------------------------------- loop
class _Preemption:
  """Preemption notices, checked once after each step.

  In a `jax.distributed` job JAX's preemption service owns SIGTERM (TPU VMs and SLURM
  send it before evicting a host): it tells every process the same step at which to
  save (`reached_preemption_sync_point`), so all of them write one checkpoint together.
  In a single process SIGTERM sets a flag.
  """

  def __init__(self):
    self.requested = False
    self._multiprocess = distributed.is_initialized()
    if not self._multiprocess:
      self._previous = signal_lib.signal(signal_lib.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (call at every step, on every process)."""
    if self._multiprocess:
      return distributed.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    if not self._multiprocess:
      signal_lib.signal(signal_lib.SIGTERM, self._previous)


def pretrain(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Pretrains CREMA on a prepared dataset (resuming from `workdir` when it holds a
  checkpoint).

  Returns a summary: first and last logged losses, the final step, samples/s, and
  whether a preemption notice stopped it.
  """
  check_config(config)
  prepared = prepared_source(config.data)  # Before anything is written or compiled.
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  # What this run learns from, recorded now, while its data is there to look at: each
  # checkpoint step is sealed with it, so a checkpoint copied alone still says it.
  record = package.provenance(config, prepared)
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    package.write_provenance(workdir, record)

  # Mesh.
  mesh = sharding.make_mesh(config.mesh.fsdp)

  # Input.
  data_iter = iter(pipeline.pretrain_dataset(
      config, prepared, process_index=jax.process_index(),
      process_count=jax.process_count()))

  # Model, optimizer, sharding and step.
  run = step_lib.build_run(config, mesh)
  state = run.initial_state(jax.random.key(config.seed))
  # On log steps, the decoder against simple predictors on that step's own views.
  reference_fn = (references.make_reference_fn(run.model, config)
                  if config.loss.reconstruction > 0 and config.mask_ratio > 0 else None)

  # Checkpoint.
  mngr = checkpoint.manager(workdir, every_steps=config.checkpoint_every,
                            keep=config.checkpoint_keep)
  restored = checkpoint.restore(mngr, run.restore_target(), data_iter)
  start_step = 0
  if restored is not None:
    start_step, state = restored
    if is_main:
      print(f"Resumed from step {start_step} in {mngr.directory}")

  # Loop.
  writer = metrics.MetricWriter(workdir, start_step)
  preemption = _Preemption()
  summary = {"start_step": start_step, "preempted": False}
  window, window_start = [], time.perf_counter()
  last_saved = start_step
  bar = tqdm.tqdm(total=config.total_steps, initial=start_step, unit="step",
                  disable=not is_main or not config.progress_bar, desc="pretrain")
  # Processes meet before the first step: its collectives give up after 30 s on CPU.
  distributed.barrier("training loop")
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      batch = sharding.global_batch(mesh, step_lib.host_inputs(next(data_iter)))
      state, step_metrics = run.train_step(state, batch)
      window.append(step_metrics)
      preempted = preemption.reached(step)  # Once: a later signal waits a step.
      is_log_step = step % config.log_every == 0 or step == config.total_steps
      wants_save = (step % config.checkpoint_every == 0 or step == config.total_steps
                    or preempted)
      if is_log_step or wants_save:
        host = jax.device_get(window)
        losses_ = np.array([m["loss"] for m in host])
        if not np.all(np.isfinite(losses_)):
          bad = step - len(host) + int(np.flatnonzero(~np.isfinite(losses_))[0]) + 1
          raise FloatingPointError(
              f"loss is {losses_[~np.isfinite(losses_)][0]} at step {bad}; the last "
              f"good checkpoint is step {mngr.latest_step()} in {mngr.directory}")
        elapsed = time.perf_counter() - window_start
        scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        scalars["samples_per_second"] = len(host) * config.batch_size / elapsed
        scalars["learning_rate"] = float(optim.make_schedule(
            **config.optimizer, total_steps=config.total_steps)(step - 1))
        if reference_fn is not None and is_log_step:
          scores = jax.device_get(reference_fn(state.params, step - 1, batch))
          scalars["reconstruction_ratio"] = float(scores.pop("ratio"))
          scalars.update({f"reference_{k}": float(v) for k, v in scores.items()})
        writer.write(step, scalars)
        summary.setdefault("first_loss", scalars["loss"])
        summary["last_loss"] = scalars["loss"]
        summary["samples_per_second"] = scalars["samples_per_second"]
        bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                        samples_s=f"{scalars['samples_per_second']:.1f}")
        window, window_start = [], time.perf_counter()
        if wants_save:
          wait = preempted or step == config.total_steps
          checkpoint.save(mngr, step, state, data_iter, config, loss=scalars["loss"],
                          force=True, wait=wait)
          last_saved = step
          if is_main:  # The steps whose writes have finished get their checksums.
            package.seal(mngr, record, skip=None if wait else step)
      bar.update(1)
      if preempted:
        summary["preempted"] = True
        if is_main:
          print(f"SIGTERM (preemption): saved step {last_saved}, exiting")
        break
  finally:
    bar.close()
    writer.close()
    preemption.restore()
    mngr.wait_until_finished()
    if is_main:
      package.seal(mngr, record)
    mngr.close()
  summary["step"] = last_saved
  if is_main:
    if "first_loss" in summary:
      print(f"pretraining loss {summary['first_loss']:.4f} (first logged) -> "
            f"{summary['last_loss']:.4f} (last); checkpoint step {last_saved} in "
            f"{workdir / checkpoint.CHECKPOINT_DIR}")
    print(json.dumps({"pretrain": summary}))
  return summary
