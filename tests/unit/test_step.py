"""The hybrid-learning step on in-memory batches (no files): one step, what the step
assembles from a batch (pair views, in-batch patients), and that each objective learns.
"""

import dataclasses
import functools

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax.input import device
from crema_jax.input import views

BATCH = 8  # One example per CPU device.


def tiny_config(preset: str = "hl", patient_pairs: bool = True,
                lr: float = 3e-3) -> ml_collections.ConfigDict:
  """A run config for a model that compiles in seconds: 10 patches of 50 samples."""
  config = common.base_config("tiny", preset)
  config.data.seq_len = 500
  config.data.patient_pairs = patient_pairs
  config.model.update(patch_size=50, emb_dim=32, depth=1, num_heads=4, decoder_dim=16,
                      decoder_depth=1, decoder_heads=2, proj_hidden_dim=32,
                      proj_dim=16)
  config.mask_ratio = 0.0 if preset == "cl" else 0.5  # CL: whole views.
  config.batch_size = BATCH
  config.total_steps = 50
  config.optimizer.update(lr=lr, warmup_steps=0, min_lr_ratio=1.0)  # Constant.
  # One fixed batch: no augmentation (its effects are tested in test_device.py), so
  # what changes from step to step is the masks alone.
  config.data.augment.update(scale=0.0, noise_std=0.0, wander_amplitude=0.0,
                             lead_dropout=0.0, max_shift_seconds=0.0)
  return config


def in_memory_batch(config: ml_collections.ConfigDict, seed: int = 0, *,
                    patients=None, has_pair=None) -> dict:
  """A host batch as the input pipeline yields it: raw crops `signals [B, V, L, T]`
  float16 (two crops of each ECG, the second a noisy copy of the first, then a crop of
  another ECG of the same patient when the run uses pair views), valid (every sample),
  patient, has_pair."""
  rng = np.random.default_rng(seed)
  t, leads = config.data.seq_len, config.model.num_leads
  ecg = rng.standard_normal((BATCH, 1, leads, t))
  crops = [ecg, ecg + 0.1 * rng.standard_normal(ecg.shape)]
  if views.num_views(config) == 3:
    crops.append(rng.standard_normal(ecg.shape))
  signals = np.concatenate(crops, axis=1).astype(np.float16)
  return {"signals": signals,
          "valid": np.full(signals.shape[:2], t, np.int32),
          "patient": np.arange(BATCH, dtype=np.int32) if patients is None
                     else np.asarray(patients, np.int32),
          "has_pair": np.ones(BATCH, bool) if has_pair is None
                      else np.asarray(has_pair, bool)}


def step_inputs(config: ml_collections.ConfigDict, batch: dict) -> dict:
  """What the step hands the loss: the batch's views standardised and masked (no
  augmentation), in the schema of `crema_jax.input.device`."""
  transform = dataclasses.replace(device.ViewTransform.from_config(config), augment=None)
  keys = device.example_keys(0, 0, BATCH)
  return {**device.pretrain_views(transform, keys, batch["signals"], batch["valid"]),
          "patient": batch["patient"], "has_pair": batch["has_pair"]}


@functools.lru_cache(maxsize=None)
def built(preset: str, patient_pairs: bool = True):
  """(config, mesh, CompiledRun), built once per setting for the whole module."""
  config = tiny_config(preset, patient_pairs)
  mesh = sharding.make_mesh()
  return config, mesh, step_lib.build_run(config, mesh)


@functools.lru_cache(maxsize=None)
def jitted_forward(preset: str, patient_pairs: bool):
  """(config, params, jitted (params, batch) -> (loss, metrics)) without dropout."""
  config, _, run = built(preset, patient_pairs)
  params = run.initial_state(jax.random.key(0)).params
  forward = jax.jit(lambda p, b: step_lib.forward(
      run.model, p, step_inputs(config, b), config, None, train=False))
  return config, params, forward


# ------------------------------------------------------------------ one step
def test_one_train_step_on_an_in_memory_batch():
  config, mesh, run = built("hl")
  state = run.initial_state(jax.random.key(0))
  before = jax.device_get(state.params)
  batch = sharding.global_batch(mesh, in_memory_batch(config))
  state, metrics = run.train_step(state, batch)
  assert int(state.step) == 1
  assert set(metrics) == {"loss", "loss_reconstruction", "loss_sample", "loss_patient",
                          "grad_norm"}
  parts = {k: float(v) for k, v in metrics.items()}
  assert all(np.isfinite(v) and v > 0 for v in parts.values()), parts
  np.testing.assert_allclose(parts["loss"], parts["loss_reconstruction"] +
                             parts["loss_sample"] + parts["loss_patient"], rtol=1e-5)
  # Every parameter has a gradient; two steps, as the zero-initialised reconstruction
  # head passes none back into the decoder on the first.
  state, _ = run.train_step(state, batch)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                       jax.device_get(state.params))
  assert all(jax.tree.leaves(moved)), moved


# ------------------------------------------------------------ step assembly
def test_pair_views_count_only_where_has_pair():
  config, params, forward = jitted_forward("hl", True)
  none = in_memory_batch(config, has_pair=np.zeros(BATCH, bool))
  assert none["signals"].shape[1] == 3
  other = none["signals"].copy()
  other[:, 2] = np.random.default_rng(9).standard_normal(other[:, 2].shape)
  other_pairs = dict(none, signals=other)
  loss_none, _ = forward(params, none)
  loss_other, _ = forward(params, other_pairs)
  np.testing.assert_allclose(float(loss_none), float(loss_other), rtol=1e-6)
  # With pairs marked present, the pair views are positives: they change the loss.
  loss_with, _ = forward(params, dict(none, has_pair=np.ones(BATCH, bool)))
  loss_with_other, _ = forward(params, dict(other_pairs, has_pair=np.ones(BATCH, bool)))
  assert abs(float(loss_with) - float(loss_with_other)) > 1e-4


def test_without_patient_pairs_the_patient_loss_is_over_the_batch_only():
  config, params, forward = jitted_forward("hl", False)
  distinct = in_memory_batch(config)
  assert distinct["signals"].shape[1] == 2  # No pair view is read or sent.
  _, metrics = forward(params, distinct)
  assert float(metrics["loss_patient"]) == 0.0  # No two ECGs of one patient.
  shared = in_memory_batch(config, patients=np.arange(BATCH) // 2)
  _, metrics = forward(params, shared)
  assert float(metrics["loss_patient"]) > 0.0  # ECGs 2i and 2i+1 are positives.


# ------------------------------------------------------------------- learning
# 50 AdamW steps on one fixed batch: the loss must fall to below this fraction of its
# first value (measured: GL 0.49, CL 0.0001, HL 0.11 of the first loss).
# GL starts at the zero predictor's loss (~1, the head is zero-initialised), so what it
# loses in 50 steps is learned, not the shrinking of an initial unit-variance output.
LEARNS_TO = {"gl": 0.9, "cl": 0.1, "hl": 0.3}


def fit_one_batch(preset: str, steps: int = 50):
  """(losses, initial params, final params) of `steps` steps on one batch."""
  config, mesh, run = built(preset)
  batch = in_memory_batch(config)
  state = run.initial_state(jax.random.key(0))
  initial = jax.device_get(state.params)
  losses = []
  batch = sharding.global_batch(mesh, batch)
  for _ in range(steps):
    state, metrics = run.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  return np.array(losses), initial, jax.device_get(state.params)


@pytest.mark.parametrize("preset", ["gl", "cl", "hl"])
def test_each_objective_fits_one_batch_through_the_encoder(preset):
  losses, initial, final = fit_one_batch(preset)
  assert np.isfinite(losses).all()
  assert losses[-1] < LEARNS_TO[preset] * losses[0], (preset, losses[0], losses[-1])
  # The encoder itself learns (not only the decoder or the projection head).
  for name in ("patch_embed", "encoder"):
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), initial[name], final[name])
    assert max(jax.tree.leaves(moved)) > 1e-3, (preset, name)
