"""Orbax checkpoints of a training run: train state + Grain iterator state + config.

`{workdir}/checkpoints/{step}/` holds three items:
- `state`: the train state pytree (sharded arrays are saved and restored sharded),
- `data`: the Grain iterator state of every process (`process_{i}-of-{n}.json`, each
  written by its own process; in a multi-host job every process calls `save`),
- `config`: the run's config as JSON.
The manager keeps the latest `keep` checkpoints plus the one with the lowest loss.
Saves are asynchronous: the train state is copied off the devices, then written in the
background while training goes on (the iterator state and config are written before
`save` returns); `save(..., wait=True)` and `close` wait for the write to finish.

A run resumes on any number of devices (Orbax reshards the state), but only with the
number of processes that wrote the checkpoint: each process reads its own slice of the
records, so the data positions of n processes do not map onto m != n. `restore` refuses
that with a message rather than silently restarting the data stream.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"


def manager(workdir: str | pathlib.Path, *, every_steps: int = 1000, keep: int = 3,
            read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over `{workdir}/checkpoints` (created unless read_only)."""
  directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=0 if read_only else every_steps,
      preservation_policy=checkpoint_managers.AnyPreservationPolicy([
          checkpoint_managers.LatestN(n=keep),
          checkpoint_managers.BestN(get_metric_fn=lambda m: m["loss"], reverse=True,
                                    n=1, keep_checkpoints_without_metrics=False),
      ]),
      create=not read_only,
      read_only=read_only,
      enable_async_checkpointing=not read_only,
  )
  if not read_only:
    return ocp.CheckpointManager(directory, options=options)
  # Orbax warns that a read-only directory is read-only; a probe means it to be.
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return ocp.CheckpointManager(directory, options=options)
  finally:
    logging.set_verbosity(verbosity)


def save(mngr: ocp.CheckpointManager, step: int, state: Any,
         data_iterator: grain.DatasetIterator | None, config: ml_collections.ConfigDict,
         *, loss: float | None = None, force: bool = False, wait: bool = False) -> bool:
  """Saves when the interval says so (or `force`); returns whether it saved. The
  write goes on in the background unless `wait` (a preemption or the last step)."""
  items = {"state": ocp.args.StandardSave(state),
           "config": ocp.args.JsonSave(config.to_dict())}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  saved = mngr.save(step, args=ocp.args.Composite(**items),
                    metrics=None if loss is None else {"loss": float(loss)}, force=force)
  if wait:
    mngr.wait_until_finished()
  return saved


def restore(mngr: ocp.CheckpointManager, abstract_state: Any,
            data_iterator: grain.DatasetIterator | None = None,
            step: int | None = None) -> tuple[int, Any] | None:
  """Restores `step` (default: the latest) into the shapes and shardings of
  `abstract_state`, and the Grain iterator in place; None when there is no checkpoint."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    check_process_count(mngr, step)
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return step, restored["state"]


def saved_process_count(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes wrote checkpoint `step`'s data-iterator states (None: no
  data item)."""
  data_dir = epath.Path(mngr.directory) / str(step) / "data"
  if not data_dir.exists():
    return None
  counts = {int(m.group(1)) for f in data_dir.iterdir()
            if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", f.name))}
  if len(counts) != 1:
    raise ValueError(f"{data_dir}: expected process_<i>-of-<n>.json files of one n, "
                     f"found {sorted(f.name for f in data_dir.iterdir())}")
  return counts.pop()


def check_process_count(mngr: ocp.CheckpointManager, step: int) -> None:
  """Refuses to resume checkpoint `step` with another number of processes."""
  written = saved_process_count(mngr, step)
  if written is not None and written != jax.process_count():
    raise ValueError(
        f"checkpoint step {step} in {mngr.directory} was written by {written} "
        f"process(es); this run has {jax.process_count()}. Each process reads its own "
        f"slice of the data, so the input position cannot be carried over: restart "
        f"with {written} process(es) (any number of devices each), or start a new "
        "workdir (evaluation.restore reads the weights on any topology).")


def restore_config(mngr: ocp.CheckpointManager,
                   step: int | None = None) -> ml_collections.ConfigDict:
  """The config a checkpoint was written with."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
  restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored["config"])


def abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` carrying `shardings`: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def restore_params(mngr: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the model parameters of checkpoint `step` (no optimizer state, no iterator),
  into the shapes and shardings of `abstract_params`: what a probe needs."""
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item={"params": abstract_params}, partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(
          {"params": abstract_params}))))
  return restored["state"]["params"]
