"""The hybrid-learning step: one global batch of views -> the CREMA loss -> AdamW.

One jitted step takes a global batch of two masked views of each ECG (and, with
`data.patient_pairs`, one view of another ECG of the same patient), runs the encoder on
the visible tokens of every view, the decoder on the two views, computes
`L = L_rec + lambda_sample L_sample + lambda_patient L_patient` and applies AdamW. The
batch is sharded over every device; the contrastive losses see the whole global batch.
`build_run(config, mesh)` puts the model, optimizer, state layout and step together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from crema_jax import checkpoint
from crema_jax import losses
from crema_jax import models
from crema_jax import optim
from crema_jax import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_init_state(model: models.CREMA, optimizer: optax.GradientTransformation,
                    config: ml_collections.ConfigDict):
  """rng -> the initial TrainState (traceable, for jax.eval_shape and jax.jit)."""

  def init_state(rng: jax.Array) -> TrainState:
    params = models.init_params(model, rng, config.mask_ratio)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  return init_state


def forward(model: models.CREMA, params, batch: dict, config: ml_collections.ConfigDict,
            rng: jax.Array | None, train: bool = True) -> tuple[jax.Array, dict]:
  """The hybrid loss of one global batch; returns (loss, metrics).

  batch: view1, view2, pair [B, T, leads]; keep*, masked* [B, K] / [B, M]; has_pair [B];
  patient [B].
  """
  weights = config.loss
  with_pairs = config.data.patient_pairs and weights.patient > 0
  names = ("1", "2", "_pair") if with_pairs else ("1", "2")
  x = jnp.concatenate([batch["pair" if n == "_pair" else f"view{n}"] for n in names])
  keep = jnp.concatenate([batch[f"keep{n}"] for n in names])
  masked = jnp.concatenate([batch[f"masked{n}"] for n in names])
  b = batch["view1"].shape[0]
  rngs = {"dropout": rng} if rng is not None else {}

  def run(module: models.CREMA):
    latent = module.forward_encoder(x, keep, train=train)
    z = module.project(module.pool_latent(latent))
    if weights.reconstruction == 0:
      return z, None, None
    pred = module.forward_decoder(latent[:2 * b], keep[:2 * b], masked[:2 * b],
                                  train=train)
    return z, pred, module.targets(x[:2 * b], masked[:2 * b])

  z, pred, target = model.apply({"params": params}, method=run, rngs=rngs)
  if with_pairs:
    z_patient = jnp.concatenate([z[:b], z[2 * b:]])
    patient_ids = jnp.concatenate([batch["patient"], batch["patient"]])
    patient_valid = jnp.concatenate([jnp.ones((b,), bool), batch["has_pair"]])
  else:  # In-batch patients only (CLOCS-style): other ECGs of a patient in the batch.
    z_patient, patient_ids, patient_valid = z[:b], batch["patient"], jnp.ones((b,), bool)
  loss, parts = losses.hybrid_objective(
      {k: weights[k] for k in losses.LOSS_NAMES}, weights.temperature, pred=pred,
      target=target, z1=z[:b], z2=z[b:2 * b], z_patient=z_patient,
      patient_ids=patient_ids, patient_valid=patient_valid)
  return loss, {"loss": loss, **{f"loss_{k}": v for k, v in parts.items()}}


def make_train_step(model, optimizer, config, state_shardings, mesh):
  """The jitted, state-donating step: (state, batch) -> (state, metrics)."""
  base_rng = jax.random.key(config.seed)

  def step_fn(state: TrainState, batch: dict):
    rng = jax.random.fold_in(base_rng, state.step)
    grad_fn = jax.value_and_grad(
        lambda p: forward(model, p, batch, config, rng, train=True), has_aux=True)
    (_, step_metrics), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step_metrics["grad_norm"] = optax.global_norm(grads)
    return TrainState(state.step + 1, params, opt_state), step_metrics

  return jax.jit(step_fn, donate_argnums=0,
                 out_shardings=(state_shardings, sharding.replicated(mesh)))


@dataclasses.dataclass(frozen=True)
class CompiledRun:
  """Everything a run builds before its first step: the model, the optimizer, the
  train state's layout on the mesh and the jitted step."""
  model: models.CREMA
  optimizer: optax.GradientTransformation
  init_state: Callable[[jax.Array], TrainState]
  abstract_state: TrainState  # ShapeDtypeStructs.
  state_shardings: Any
  train_step: Callable

  def initial_state(self, rng: jax.Array) -> TrainState:
    """The initial train state, created sharded."""
    return jax.jit(self.init_state, out_shardings=self.state_shardings)(rng)

  def restore_target(self) -> TrainState:
    """ShapeDtypeStructs with the state's shardings: what Orbax restores into."""
    return checkpoint.abstract(self.abstract_state, self.state_shardings)


def build_run(config: ml_collections.ConfigDict, mesh) -> CompiledRun:
  """Model, optimizer, state shardings and step of `config` on `mesh`: the one build
  path of the training loop, the benchmarks and the tests."""
  model = models.build(config)
  optimizer = optim.make_optimizer(**config.optimizer, total_steps=config.total_steps)
  init_state = make_init_state(model, optimizer, config)
  abstract_state = jax.eval_shape(init_state, jax.random.key(0))  # Shapes only.
  state_shardings = sharding.param_shardings(mesh, abstract_state)
  return CompiledRun(model, optimizer, init_state, abstract_state, state_shardings,
                     make_train_step(model, optimizer, config, state_shardings, mesh))
