"""A pretraining checkpoint, read for evaluation: its config and encoder parameters
(never its optimizer state), with the leakage check on what it was pretrained on."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from crema_jax import checkpoint
from crema_jax.data import leakage
from crema_jax.data import storage
from crema_jax import models
from crema_jax import sharding


def checkpoint_dir(path: str | pathlib.Path) -> pathlib.Path:
  """The pretraining workdir's checkpoint folder (`path` may be either)."""
  path = pathlib.Path(path)
  return path if path.name == checkpoint.CHECKPOINT_DIR else path / checkpoint.CHECKPOINT_DIR


@dataclasses.dataclass
class Restored:
  """A checkpoint read for evaluation.

  Attributes:
    config: the pretraining config, with the evaluation's data fields and pooling.
    trained: the pretraining config as saved (for results.json).
    model, params: the model and its parameters (replicated).
    step: the checkpoint's step.
    path: its checkpoint folder.
    leakage: `leakage.pretraining_overlap`'s report on its pretraining data.
  """
  config: ml_collections.ConfigDict
  trained: ml_collections.ConfigDict
  model: models.CREMA
  params: Any
  step: int
  path: pathlib.Path
  leakage: dict


def replicated_target(model: models.CREMA, config: ml_collections.ConfigDict,
                      mesh) -> Any:
  """The shapes of `model`'s parameters, replicated over `mesh`: what a checkpoint's
  parameters are restored into."""
  shapes = jax.eval_shape(lambda r: models.init_params(model, r, config.mask_ratio),
                          jax.random.key(0))
  return checkpoint.abstract(shapes,
                             jax.tree.map(lambda _: sharding.replicated(mesh), shapes))


def restore_encoder(config: ml_collections.ConfigDict, mesh) -> Restored:
  """The checkpoint of `config.checkpoint` (the latest, or `checkpoint_step`): its
  config, model and parameters (replicated over `mesh`; the optimizer state is not
  read). The evaluation's data fields (data_dir, name, eval_leads) and pooling
  override the pretraining config's.

  Raises leakage.LeakageError when the checkpoint's pretraining data holds test-fold
  ECGs or an unchecked source (unless `allow_test_overlap`)."""
  mngr = checkpoint.manager(checkpoint_dir(config.checkpoint).parent, read_only=True)
  step = config.checkpoint_step or mngr.latest_step()
  if step is None or step not in mngr.all_steps():
    raise FileNotFoundError(f"{mngr.directory}: no checkpoint at step "
                            f"{config.checkpoint_step or 'latest'} "
                            f"(have {sorted(mngr.all_steps())})")
  pretrain = checkpoint.restore_config(mngr, step)
  trained = pretrain.copy_and_resolve_references()
  # Before the data fields are pointed at the probe's dataset: what it pretrained on.
  report = leakage.check_pretraining_data(pretrain.data, pretrain.data.test_folds,
                                          allow=config.allow_test_overlap)
  pretrain.seed = config.seed
  for field in ("data_dir", "name", "eval_leads"):
    if config.data.get(field):
      pretrain.data[field] = config.data[field]
  if config.pool != "checkpoint":
    if config.pool == "cls" and not pretrain.model.use_cls:
      raise ValueError(f"pool='cls': the checkpoint at {mngr.directory} has no CLS "
                       "token (model.use_cls=False); use pool='mean'")
    pretrain.model.pool = config.pool
  model = models.build(pretrain)
  params = checkpoint.restore_params(mngr, step,
                                     replicated_target(model, pretrain, mesh))
  mngr.close()
  return Restored(pretrain, trained, model, params, step, pathlib.Path(mngr.directory),
                  report)


def check_compatible(config: ml_collections.ConfigDict, trained: ml_collections.ConfigDict,
                     prepared: storage.PreparedSource, positions: np.ndarray) -> dict:
  """Refuses evaluation data at another sampling rate than the checkpoint's, or whose
  records (at `positions`) are all shorter than its views (they would be zero-padded
  silently); returns {"sampling_rate", "seq_len", "shorter_ecgs"}."""
  manifests = [m.manifest for m in prepared.members] or [prepared.manifest]
  rates = {int(m.get("sampling_rate", 0)) for m in manifests}
  want = int(trained.data.sampling_rate)
  if rates != {want}:
    raise ValueError(
        f"{prepared.path} was prepared at {sorted(rates)} Hz but the checkpoint was "
        f"trained at {want} Hz: prepare it with --config.data.sampling_rate={want}")
  lengths = prepared.index["num_samples"][positions]
  seq_len = int(config.data.seq_len)
  if len(lengths) and lengths.max() < seq_len:
    raise ValueError(
        f"{prepared.path}: its records hold at most {int(lengths.max())} samples "
        f"({lengths.max() / want:g} s) but the checkpoint's views are {seq_len} "
        f"({seq_len / want:g} s): they would be zero-padded; evaluate a checkpoint "
        "trained on that length")
  return {"sampling_rate": want, "seq_len": seq_len,
          "shorter_ecgs": int((lengths < seq_len).sum())}
