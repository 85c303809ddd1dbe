"""The hybrid-learning step: one global batch of raw crops -> views -> the CREMA loss
-> AdamW.

One jitted step takes the host's raw crops (two of each ECG and, with the patient loss
and `data.patient_pairs`, one of another ECG of the same patient), standardises,
augments and masks them (`crema_jax.input.device`), runs the encoder on the visible
tokens of every view and the decoder on the two views of each ECG, computes
`L = L_rec + lambda_sample L_sample + lambda_patient L_patient` and applies AdamW. The
batch is sharded over every device on its batch axis only: the views of an example
never leave its device, and only the contrastive embeddings, the loss and the
gradients are communicated. `build_run(config, mesh)` puts the model, optimizer, state
layout and step together.
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
from crema_jax.input import device
from crema_jax.input import views as views_lib


# What the step reads of a pipeline batch (the rest, such as positions, stays on the host).
STEP_INPUTS = ("signals", "valid", "patient", "has_pair")


def host_inputs(batch: dict) -> dict:
  """The arrays of a host batch that the step reads."""
  return {k: batch[k] for k in STEP_INPUTS}


def host_batch_spec(config: ml_collections.ConfigDict) -> dict:
  """{name: (shape, dtype)} of the global host batch the step reads: raw float16
  crops `signals [batch, views, leads, time]`, their `valid` samples [batch, views],
  `patient` and `has_pair` [batch]."""
  b, v = config.batch_size, views_lib.num_views(config)
  return {"signals": ((b, v, config.model.num_leads, config.data.seq_len), jnp.float16),
          "valid": ((b, v), jnp.int32),
          "patient": ((b,), jnp.int32),
          "has_pair": ((b,), jnp.bool_)}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_init_state(model: models.CREMA, optimizer: optax.GradientTransformation):
  """rng -> the initial TrainState (traceable, for jax.eval_shape and jax.jit)."""

  def init_state(rng: jax.Array) -> TrainState:
    params = models.init_params(model, rng)  # Shapes do not depend on the mask.
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  return init_state


def forward(model: models.CREMA, params, batch: dict, config: ml_collections.ConfigDict,
            rng: jax.Array | None, train: bool = True) -> tuple[jax.Array, dict]:
  """The hybrid loss of one global batch of views; returns (loss, metrics).

  batch (the schema of `crema_jax.input.device`): signals [B, V, leads, T]; ids_keep
  [B, V, K]; ids_masked [B, V, M]; keep_valid [B, V, K], masked_valid [B, V, M]
  (False: a token of padding, left out of the pooling and of the targets); patient
  [B]; has_pair [B]. Views 0 and 1 are two views of each ECG; view 2, when V = 3, a
  view of another ECG of the same patient.
  The views of an example stay on its device: they are flattened into the batch
  ([B * V, ...], example-major) and sliced on their own axis, never across the batch.
  """
  weights = config.loss
  x, keep, masked = batch["signals"], batch["ids_keep"], batch["ids_masked"]
  b, v = x.shape[:2]

  def flat(a):  # [B, V', ...] -> [B * V', ...]
    return a.reshape((b * a.shape[1],) + a.shape[2:])

  def run(module: models.CREMA):
    latent = module.forward_encoder(flat(x), flat(keep), train=train)
    pooled = module.pool_latent(latent, flat(batch["keep_valid"]))
    z = module.project(pooled).reshape(b, v, -1)   # [B, V, P]
    if weights.reconstruction == 0:
      return z, None, None
    latent = latent.reshape((b, v) + latent.shape[1:])[:, :2]  # The two ECG views.
    pred = module.forward_decoder(flat(latent), flat(keep[:, :2]),
                                  flat(masked[:, :2]), train=train)
    # Targets from the views' own [B, 2, ...] axes: flattening a slice of x would
    # copy the signals.
    target = module.targets(x[:, :2], masked[:, :2])  # [B, 2, M, patch_dim]
    return z, pred, flat(target)

  rngs = {"dropout": rng} if rng is not None else {}
  z, pred, target = model.apply({"params": params}, method=run, rngs=rngs)
  with jax.named_scope("loss"):
    return _hybrid_loss(z, pred, target, batch, weights, b, v)


def _hybrid_loss(z, pred, target, batch, weights, b, v):
  """The three losses of `forward` from its projections z [B, V, P] and its
  reconstructions and targets."""
  if v == 3:  # Each ECG and its pair view, example-major: [z0, pair0, z1, pair1, ...].
    z_patient = z[:, ::2].reshape(2 * b, -1)
    patient_ids = jnp.repeat(batch["patient"], 2)
    patient_valid = jnp.stack([jnp.ones((b,), bool), batch["has_pair"]], 1).reshape(-1)
  else:  # In-batch patients only (CLOCS-style): other ECGs of a patient in the batch.
    z_patient, patient_ids, patient_valid = z[:, 0], batch["patient"], jnp.ones((b,), bool)
  loss, parts = losses.hybrid_objective(
      {k: weights[k] for k in losses.LOSS_NAMES}, weights.temperature, pred=pred,
      target=target,
      target_valid=batch["masked_valid"][:, :2].reshape(2 * b, -1),
      z1=z[:, 0], z2=z[:, 1], z_patient=z_patient,
      patient_ids=patient_ids, patient_valid=patient_valid)
  return loss, {"loss": loss, **{f"loss_{name}": part for name, part in parts.items()}}


def make_train_step(model, optimizer, config, state_shardings, mesh):
  """The jitted, state-donating step: (state, host batch) -> (state, metrics).

  The host batch holds raw crops (`signals [B, V, leads, T]`), their `valid` samples
  [B, V], `patient` and `has_pair`; the step standardises, augments and masks them (`input.device`) with
  keys of (seed, step, example) before the loss."""
  transform = device.ViewTransform.from_config(config)
  view_seed, dropout_rng = config.seed, jax.random.fold_in(jax.random.key(config.seed), 1)

  def step_fn(state: TrainState, batch: dict):
    keys = device.example_keys(view_seed, state.step, batch["signals"].shape[0])
    # Each device draws its own examples' randomness: without this XLA may draw it
    # elsewhere and move it (all-to-all of per-example values).
    keys = jax.lax.with_sharding_constraint(keys, sharding.batch_sharding(mesh))
    with jax.named_scope("views"):
      views = device.pretrain_views(transform, keys, batch["signals"], batch["valid"])
    inputs = {**views, "patient": batch["patient"], "has_pair": batch["has_pair"]}
    rng = jax.random.fold_in(dropout_rng, state.step)
    grad_fn = jax.value_and_grad(
        lambda p: forward(model, p, inputs, config, rng, train=True), has_aux=True)
    (_, step_metrics), grads = grad_fn(state.params)
    # Gradients are reduced whole, as the parameters are laid out: with AdamW's
    # moments split (`mesh.shard_optimizer`), XLA would otherwise split the
    # gradient matmuls to match them and move their operands.
    grads = jax.lax.with_sharding_constraint(grads, state_shardings.params)
    with jax.named_scope("optimizer"):
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      step_metrics["grad_norm"] = optax.global_norm(grads)
    return TrainState(state.step + 1, params, opt_state), step_metrics

  # The state is donated (its update reuses its buffers). The batch is not: XLA reuses
  # a donated buffer only for an output of its shape and dtype, and the step has none
  # like the batch, so donating it would only be refused ("donated buffers were not
  # usable").
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
  init_state = make_init_state(model, optimizer)
  abstract_state = jax.eval_shape(init_state, jax.random.key(0))  # Shapes only.
  state_shardings = sharding.param_shardings(mesh, abstract_state)
  if config.mesh.get("shard_optimizer", False):
    state_shardings = state_shardings.replace(
        opt_state=sharding.optimizer_shardings(mesh, abstract_state.opt_state))
  return CompiledRun(model, optimizer, init_state, abstract_state, state_shardings,
                     make_train_step(model, optimizer, config, state_shardings, mesh))
