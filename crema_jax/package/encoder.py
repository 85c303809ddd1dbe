"""A pretraining checkpoint as an encoder package, and how any package's encoder is read.

A pretraining workdir's checkpoint step is a package on its own:

  WORKDIR/checkpoints/STEP/
    state/, config/, data/   Orbax items: train state, the run's config, Grain state
    package.json             sealed when the step is written (`seal`): the sha256 of
                             every file above, and the run's provenance

The provenance is recorded when pretraining starts (`provenance`), while its data is
there to look at: which prepared data, how many ECGs, and the PTB-XL leakage report
(`data.leakage.pretraining_overlap`). A checkpoint folder copied alone to another
machine is therefore enough to embed, predict and export, and an evaluation reads the
leakage report from it instead of from data that may not be there.

`load` reads the encoder of a checkpoint or of a classifier folder (`classifier.py`),
after checking its files against its manifest (`manifest.verify`).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from crema_jax import atomic
from crema_jax import checkpoint
from crema_jax import models
from crema_jax import sharding
from crema_jax.package import manifest
from crema_jax.package import preprocessing

KIND = "pretraining_checkpoint"
PROVENANCE_FILE = "provenance.json"  # In the pretraining workdir.
# Modules the encoder's features do not use (the decoder and contrastive projector).
# The decoder's mask token and lead embeddings stay: linen creates a module's own
# parameters whenever it is bound (they are decoder_dim or 12 x decoder_dim numbers).
PRETRAINING_ONLY = ("decoder", "decoder_embed", "decoder_pred", "projector")


@dataclasses.dataclass
class Encoder:
  """A trained encoder, read from a package.

  Attributes:
    config: the pretraining config it was trained with (model, data: the preprocessing
      contract); never changed by whoever reads it.
    model, params: the model and its parameters (replicated over the mesh; the
      encoder's only, unless read with `parts="all"`).
    path: the package folder (a checkpoint step, or a classifier's `encoder/` owner).
    step: the pretraining step.
    provenance: recorded at pretraining (`provenance`); None for a checkpoint written
      before provenance was recorded.
    verified: `manifest.verify`'s report ("ok", or "unsealed": nothing to check).
  """
  config: ml_collections.ConfigDict
  model: models.CREMA
  params: Any
  path: pathlib.Path
  step: int
  provenance: dict | None
  verified: dict

  @property
  def preprocessing(self) -> preprocessing.Preprocessing:
    return preprocessing.Preprocessing.of(self.config)

  @property
  def leakage(self) -> dict | None:
    return (self.provenance or {}).get("leakage")

  def origin(self) -> dict:
    """Where the encoder came from, for the outputs' summaries."""
    return {"package": str(self.path), "step": self.step,
            "checksum": self.verified["checksum"], "verified": self.verified["status"]}


# ------------------------------------------------------------------ writing (training)
def provenance(config: ml_collections.ConfigDict, prepared) -> dict:
  """What a pretraining run learned from, recorded at its start: the prepared data
  (`storage.PreparedSource`), its ECG count and sources, and its leakage report."""
  from crema_jax.data import leakage  # pylint: disable=g-import-not-at-top
  data = config.data
  members = prepared.members or [prepared]
  return {
      "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "data": {"data_dir": str(data.data_dir), "name": data.name,
               "ecgs": int(len(prepared)),
               "sources": [m.manifest.get("source") for m in members],
               "sampling_rate": int(data.sampling_rate),
               "pretrain_folds": list(data.get("pretrain_folds") or ())},
      "leakage": leakage.pretraining_overlap(data, data.test_folds),
  }


def write_provenance(workdir: pathlib.Path, record: dict) -> None:
  atomic.write_json(workdir / PROVENANCE_FILE, record)


def read_provenance(workdir: pathlib.Path) -> dict | None:
  path = workdir / PROVENANCE_FILE
  if not path.is_file():
    return None
  return manifest.read_json(path)


def seal(mngr: ocp.CheckpointManager, record: dict | None,
         skip: int | None = None) -> list[int]:
  """Writes the manifest of every finished checkpoint step of `mngr` that has none
  (all but `skip`, a step whose asynchronous write may still be running); returns the
  steps sealed. Orbax finishes a step's write before it starts the next one, so after
  a `save` of step N every step before N is complete."""
  sealed = []
  for step in mngr.all_steps():
    directory = pathlib.Path(mngr.directory) / str(step)
    if step == skip or (directory / manifest.MANIFEST).is_file():
      continue
    try:
      manifest.write(directory, KIND, step=int(step), provenance=record)
    except FileNotFoundError:  # Deleted by the manager's preservation policy meanwhile.
      continue
    sealed.append(step)
  return sealed


# ------------------------------------------------------------------------- reading
def checkpoint_dir(path: str | pathlib.Path) -> pathlib.Path:
  """The pretraining workdir's checkpoint folder (`path` may be either)."""
  path = pathlib.Path(path)
  return path if path.name == checkpoint.CHECKPOINT_DIR else path / checkpoint.CHECKPOINT_DIR


def is_checkpoint(path: str | pathlib.Path) -> bool:
  return checkpoint_dir(path).is_dir()


def encoder_shapes(model: models.CREMA, config: ml_collections.ConfigDict, *,
                   parts: str = "encoder") -> Any:
  """The shapes of `model`'s parameters: the encoder's (`parts="encoder"`) or all."""
  shapes = jax.eval_shape(lambda r: models.init_params(model, r, config.mask_ratio),
                          jax.random.key(0))
  if parts == "encoder":
    shapes = {k: v for k, v in shapes.items() if k not in PRETRAINING_ONLY}
  return shapes


def replicated(shapes: Any, mesh) -> Any:
  return checkpoint.abstract(shapes,
                             jax.tree.map(lambda _: sharding.replicated(mesh), shapes))


def load_checkpoint(path: str | pathlib.Path, mesh, *, step: int | None = None,
                    parts: str = "encoder") -> Encoder:
  """The encoder of a pretraining checkpoint (`path`: its workdir or `checkpoints/`;
  the latest step, or `step`), after its files are checked against its manifest.
  `parts="all"` reads the decoder and projector too (the evaluation's reconstructions).
  No optimizer state is read, and nothing of its training data is needed."""
  mngr = checkpoint.manager(checkpoint_dir(path).parent, read_only=True)
  try:
    steps = sorted(mngr.all_steps())
    step = step or mngr.latest_step()
    if step is None or step not in steps:
      raise FileNotFoundError(f"{mngr.directory}: no checkpoint at step "
                              f"{step or 'latest'} (have {steps})")
    directory = pathlib.Path(mngr.directory) / str(step)
    verified = manifest.verify(directory)
    sealed = manifest.read(directory)
    record = (sealed or {}).get("provenance") or read_provenance(
        pathlib.Path(mngr.directory).parent)
    try:
      config = checkpoint.restore_config(mngr, step)
    except Exception as e:  # Orbax's JSON errors name no folder.
      raise manifest.PackageError(f"{directory}/config: unreadable ({e})") from e
    model = models.build(config)
    params = checkpoint.restore_params(
        mngr, step, replicated(encoder_shapes(model, config, parts=parts), mesh))
  finally:
    mngr.close()
  check_finite(params, directory)
  return Encoder(config, model, params, directory, int(step), record, verified)


def check_finite(params: Any, directory: pathlib.Path) -> None:
  """PackageError when any parameter is NaN or infinite: a damaged file that its
  compression did not catch, or a run that diverged. Such an encoder would embed every
  ECG as NaN (and a classifier decide every label negative)."""
  bad = [jax.tree_util.keystr(path) for path, leaf in
         jax.tree_util.tree_leaves_with_path(params)
         if not bool(jax.numpy.isfinite(leaf).all())]
  if bad:
    raise manifest.PackageError(
        f"{directory}: non-finite parameters in {', '.join(bad[:5])}"
        + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        + ": the package is damaged or its training diverged; verify it "
        "(configs/verify.py) or use another checkpoint")


def load(path: str | pathlib.Path, mesh, *, step: int | None = None) -> Encoder:
  """The encoder of a pretraining checkpoint or of a classifier folder."""
  from crema_jax.package import classifier  # pylint: disable=g-import-not-at-top
  if classifier.is_classifier(path):
    return classifier.load(path, mesh).encoder
  if is_checkpoint(path):
    return load_checkpoint(path, mesh, step=step)
  raise FileNotFoundError(f"{path}: neither a pretraining workdir (with checkpoints/) "
                          f"nor a classifier folder (with {classifier.SPEC_FILE})")

