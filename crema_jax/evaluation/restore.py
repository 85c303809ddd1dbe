"""A pretraining checkpoint, read for evaluation through its package
(`crema_jax.package.encoder`): the encoder and decoder parameters (never the optimizer
state), and the leakage report recorded when it was pretrained."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections
import numpy as np

from crema_jax.data import leakage
from crema_jax.data import storage
from crema_jax import models
from crema_jax.package import encoder as package


@dataclasses.dataclass
class Restored:
  """A checkpoint read for evaluation.

  Attributes:
    config: the pretraining config, with the evaluation's data fields and pooling.
    trained: the pretraining config as saved (for results.json).
    model, params: the model and its parameters (replicated).
    step: the checkpoint's step.
    path: its package folder (the checkpoint step).
    leakage: the `leakage.pretraining_overlap` report on its pretraining data.
    package: the package it was read from (`origin()` for results and model cards).
  """
  config: ml_collections.ConfigDict
  trained: ml_collections.ConfigDict
  model: models.CREMA
  params: Any
  step: int
  path: pathlib.Path
  leakage: dict
  package: package.Encoder


def pretraining_leakage(found: package.Encoder, allow: bool) -> dict:
  """The checkpoint's leakage report as recorded at pretraining (computed from its
  data only for a checkpoint written before reports were recorded); LeakageError
  unless `allow` when it shows test-fold ECGs or an unchecked source."""
  data = found.config.data
  report = found.leakage
  if report is None:
    report = leakage.pretraining_overlap(data, data.test_folds)
  return leakage.refuse(report, f"{data.data_dir}/{data.name} (recorded in "
                        f"{found.path})", allow)


def restore_encoder(config: ml_collections.ConfigDict, mesh) -> Restored:
  """The checkpoint of `config.checkpoint` (the latest, or `checkpoint_step`): its
  config, model and parameters (replicated over `mesh`). The evaluation's data fields
  (data_dir, name, eval_leads) and pooling override the pretraining config's.

  Raises leakage.LeakageError when the checkpoint's pretraining data holds test-fold
  ECGs or an unchecked source (unless `allow_test_overlap`)."""
  found = package.load_checkpoint(config.checkpoint, mesh,
                                  step=config.checkpoint_step or None, parts="all")
  report = pretraining_leakage(found, config.allow_test_overlap)
  trained = found.config
  pretrain = trained.copy_and_resolve_references()
  pretrain.seed = config.seed
  for field in ("data_dir", "name", "eval_leads"):
    if config.data.get(field):
      pretrain.data[field] = config.data[field]
  if config.pool != "checkpoint":
    if config.pool == "cls" and not pretrain.model.use_cls:
      raise ValueError(f"pool='cls': the checkpoint at {found.path} has no CLS "
                       "token (model.use_cls=False); use pool='mean'")
    pretrain.model.pool = config.pool
  return Restored(pretrain, trained, models.build(pretrain), found.params, found.step,
                  found.path, report, found)


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
