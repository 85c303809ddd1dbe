"""CREMA pretraining, top-down: config checks, mesh, input, model and optimizer,
sharding, step, checkpoint, loop.

One jitted step takes a global batch of two masked views of each ECG (and, with
`data.patient_pairs`, one view of another ECG of the same patient), runs the encoder on
the visible tokens of every view, the decoder on the two views, computes the hybrid
loss, and applies AdamW. The batch is sharded over every device; the contrastive losses
see the whole global batch.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal as signal_lib
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from crema_jax import checkpoint
from crema_jax import distributed
from crema_jax import losses
from crema_jax import masking
from crema_jax import metrics
from crema_jax import models
from crema_jax import optim
from crema_jax import sharding
from crema_jax.data import pipeline
from crema_jax.data import prepare
from crema_jax.data import storage
from crema_jax.data import synthetic

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


# ------------------------------------------------------------------------- config
def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before any data is read or compiled."""
  problems = []
  m, d = config.model, config.data
  if d.seq_len % m.patch_size:
    problems.append(f"data.seq_len={d.seq_len} is not a multiple of "
                    f"model.patch_size={m.patch_size}")
  if m.emb_dim % m.num_heads:
    problems.append(f"model.emb_dim={m.emb_dim} is not divisible by "
                    f"model.num_heads={m.num_heads}")
  if m.decoder_dim % m.decoder_heads:
    problems.append(f"model.decoder_dim={m.decoder_dim} is not divisible by "
                    f"model.decoder_heads={m.decoder_heads}")
  if m.token_layout not in masking.TOKEN_LAYOUTS:
    problems.append(f"model.token_layout={m.token_layout!r} is not one of "
                    f"{masking.TOKEN_LAYOUTS}")
  if not 0.0 <= config.mask_ratio < 1.0:
    problems.append(f"mask_ratio={config.mask_ratio} is not in [0, 1)")
  if config.compute_dtype not in COMPUTE_DTYPES:
    problems.append(f"compute_dtype={config.compute_dtype!r} is not one of "
                    f"{sorted(COMPUTE_DTYPES)}")
  devices = jax.device_count()
  if config.batch_size % devices:
    problems.append(f"batch_size={config.batch_size} is not divisible by the "
                    f"{devices} devices")
  for name in ("reconstruction", "sample", "patient"):
    if config.loss[name] < 0:
      problems.append(f"loss.{name}={config.loss[name]} is negative")
  if config.loss.temperature <= 0:
    problems.append(f"loss.temperature={config.loss.temperature} must be positive")
  if config.total_steps < 1:
    problems.append(f"total_steps={config.total_steps} must be at least 1")
  if problems:
    raise ValueError("Invalid config:\n  " + "\n  ".join(problems))


def make_init_state(model: models.CREMA, optimizer: optax.GradientTransformation,
                    config: ml_collections.ConfigDict):
  """rng -> the initial TrainState (traceable, for jax.eval_shape and jax.jit)."""

  def init_state(rng: jax.Array) -> TrainState:
    params = models.init_params(model, rng, config.mask_ratio)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  return init_state


def restore_params(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                   mesh, step: int | None = None) -> tuple[int, Any]:
  """The encoder parameters of a pretraining checkpoint (latest, or `step`),
  replicated over `mesh`."""
  model = build_model(config)
  optimizer = optim.make_optimizer(**config.optimizer, total_steps=config.total_steps)
  abstract_state = jax.eval_shape(make_init_state(model, optimizer, config),
                                  jax.random.key(config.seed))
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_state)
  mngr = checkpoint.manager(workdir, read_only=True)
  restored = checkpoint.restore(mngr, checkpoint.abstract(abstract_state, shardings),
                                step=step)
  mngr.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/{checkpoint.CHECKPOINT_DIR}")
  return restored[0], restored[1].params


def build_model(config: ml_collections.ConfigDict) -> models.CREMA:
  return models.CREMA(seq_len=config.data.seq_len,
                      dtype=COMPUTE_DTYPES[config.compute_dtype], **config.model)


# -------------------------------------------------------------------------- input
def prepared_source(config: ml_collections.ConfigDict) -> storage.PreparedSource:
  """The prepared dataset; writes the demo data and prepares it when missing."""
  data = config.data
  if config.get("demo_patients") and not pathlib.Path(data.raw_dir).exists():
    if jax.process_index() == 0:
      synthetic.write_synthetic_ptbxl(data.raw_dir, num_patients=config.demo_patients,
                                      seed=config.seed)
  manifest = storage.dataset_dir(data.data_dir, data.name) / "manifest.json"
  if not manifest.is_file() and jax.process_index() == 0:
    print(prepare.summarize(prepare.prepare_from_config(data)))
  distributed.barrier("prepared data")  # Other processes wait for process 0 to write it.
  return storage.PreparedSource(data.data_dir, data.name)


# ------------------------------------------------------------------------- step
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
  """Model, optimizer, state shardings and step of `config` on `mesh`."""
  model = build_model(config)
  optimizer = optim.make_optimizer(**config.optimizer, total_steps=config.total_steps)
  init_state = make_init_state(model, optimizer, config)
  abstract_state = jax.eval_shape(init_state, jax.random.key(0))  # Shapes only.
  state_shardings = sharding.param_shardings(mesh, abstract_state)
  return CompiledRun(model, optimizer, init_state, abstract_state, state_shardings,
                     make_train_step(model, optimizer, config, state_shardings, mesh))


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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | pathlib.Path) -> dict:
  """Pretrains CREMA (resuming from `workdir` when it holds a checkpoint).

  Returns a summary: first and last logged losses, the final step, samples/s.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

  # Mesh.
  mesh = sharding.make_mesh(config.mesh.fsdp)

  # Input.
  prepared = prepared_source(config)
  data_iter = iter(pipeline.pretrain_dataset(
      config, prepared, process_index=jax.process_index(),
      process_count=jax.process_count()))

  # Model, optimizer, sharding and step.
  run = build_run(config, mesh)
  state = run.initial_state(jax.random.key(config.seed))

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
      batch = sharding.global_batch(mesh, next(data_iter))
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
        writer.write(step, scalars)
        summary.setdefault("first_loss", scalars["loss"])
        summary["last_loss"] = scalars["loss"]
        summary["samples_per_second"] = scalars["samples_per_second"]
        bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                        samples_s=f"{scalars['samples_per_second']:.1f}")
        window, window_start = [], time.perf_counter()
        if wants_save:
          checkpoint.save(mngr, step, state, data_iter, config, loss=scalars["loss"],
                          force=True)
          last_saved = step
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
    mngr.close()
  summary["step"] = last_saved
  if is_main:
    if "first_loss" in summary:
      print(f"pretraining loss {summary['first_loss']:.4f} (first logged) -> "
            f"{summary['last_loss']:.4f} (last); checkpoint step {last_saved} in "
            f"{workdir / checkpoint.CHECKPOINT_DIR}")
    print(json.dumps({"pretrain": summary}))
  return summary
