"""A pretraining checkpoint, read for evaluation: its config and encoder parameters
(never its optimizer state), with the leakage check on what it was pretrained on."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections

from crema_jax import checkpoint
from crema_jax.data import leakage
from crema_jax import models
from crema_jax import sharding


def checkpoint_dir(path: str | pathlib.Path) -> pathlib.Path:
  """The pretraining workdir's checkpoint folder (`path` may be either)."""
  path = pathlib.Path(path)
  return path if path.name == checkpoint.CHECKPOINT_DIR else path / checkpoint.CHECKPOINT_DIR


def restore_encoder(config: ml_collections.ConfigDict, mesh
                    ) -> tuple[ml_collections.ConfigDict, models.CREMA, int, Any]:
  """The pretraining config, the model, the step and its parameters (replicated over
  `mesh`; the optimizer state is not read). The evaluation's data fields and pooling
  override the pretraining config's.

  Raises leakage.LeakageError when the checkpoint's pretraining data holds test-fold
  ECGs (unless `allow_test_overlap`)."""
  mngr = checkpoint.manager(checkpoint_dir(config.checkpoint).parent, read_only=True)
  step = config.checkpoint_step or mngr.latest_step()
  if step is None or step not in mngr.all_steps():
    raise FileNotFoundError(f"{mngr.directory}: no checkpoint at step "
                            f"{config.checkpoint_step or 'latest'} "
                            f"(have {sorted(mngr.all_steps())})")
  pretrain = checkpoint.restore_config(mngr, step)
  # Before the data fields are pointed at the probe's dataset: what it pretrained on.
  leakage.check_pretraining_data(pretrain.data, pretrain.data.test_folds,
                                 allow=config.allow_test_overlap)
  pretrain.seed = config.seed
  for field in ("data_dir", "name"):
    if config.data[field]:
      pretrain.data[field] = config.data[field]
  if config.pool != "checkpoint":
    if config.pool == "cls" and not pretrain.model.use_cls:
      raise ValueError(f"pool='cls': the checkpoint at {mngr.directory} has no CLS "
                       "token (model.use_cls=False); use pool='mean'")
    pretrain.model.pool = config.pool
  model = models.build(pretrain)
  abstract = jax.eval_shape(lambda r: models.init_params(model, r, pretrain.mask_ratio),
                            jax.random.key(0))
  params = checkpoint.restore_params(mngr, step, checkpoint.abstract(
      abstract, jax.tree.map(lambda _: sharding.replicated(mesh), abstract)))
  mngr.close()
  return pretrain, model, step, params
