"""The hybrid-learning step on in-memory batches (no files): one step, what the step
assembles from a batch (pair views, in-batch patients), and that each objective learns.
"""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from crema_jax import masking
from crema_jax import sharding
from crema_jax import step as step_lib

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
  config.mask_ratio = 0.5
  config.batch_size = BATCH
  config.total_steps = 50
  config.optimizer.update(lr=lr, warmup_steps=0, min_lr_ratio=1.0)  # Constant.
  return config


def in_memory_batch(config: ml_collections.ConfigDict, seed: int = 0, *,
                    patients=None, has_pair=None, with_pair: bool = True) -> dict:
  """A batch as the input pipeline yields it: two views of each ECG (the second a
  noisy copy of the first), a view of another ECG of the same patient, their masks."""
  rng = np.random.default_rng(seed)
  t, leads = config.data.seq_len, config.model.num_leads
  n = masking.num_tokens(t, config.model.patch_size, leads, config.model.token_layout)
  ecg = rng.standard_normal((BATCH, t, leads)).astype(np.float32)
  batch = {"view1": ecg,
           "view2": ecg + 0.1 * rng.standard_normal(ecg.shape).astype(np.float32),
           "patient": np.arange(BATCH, dtype=np.int32) if patients is None
                      else np.asarray(patients, np.int32),
           "has_pair": np.ones(BATCH, bool) if has_pair is None
                       else np.asarray(has_pair, bool)}
  names = ("1", "2", "_pair") if with_pair else ("1", "2")
  if with_pair:
    batch["pair"] = rng.standard_normal(ecg.shape).astype(np.float32)
  for name in names:
    keep, masked = zip(*(masking.random_masking(rng, n, config.mask_ratio)
                         for _ in range(BATCH)))
    batch[f"keep{name}"], batch[f"masked{name}"] = np.stack(keep), np.stack(masked)
  return batch


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
  forward = jax.jit(lambda p, b: step_lib.forward(run.model, p, b, config, None,
                                                  train=False))
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
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                       jax.device_get(state.params))
  assert all(jax.tree.leaves(moved)), moved  # Every parameter has a gradient.


# ------------------------------------------------------------ step assembly
def test_pair_views_count_only_where_has_pair():
  config, params, forward = jitted_forward("hl", True)
  none = in_memory_batch(config, has_pair=np.zeros(BATCH, bool))
  other_pairs = dict(none, pair=np.random.default_rng(9).standard_normal(
      none["pair"].shape).astype(np.float32))
  loss_none, _ = forward(params, none)
  loss_other, _ = forward(params, other_pairs)
  np.testing.assert_allclose(float(loss_none), float(loss_other), rtol=1e-6)
  # With pairs marked present, the pair views are positives: they change the loss.
  with_pairs = dict(none, has_pair=np.ones(BATCH, bool))
  loss_with, _ = forward(params, with_pairs)
  loss_with_other, _ = forward(params, dict(other_pairs, has_pair=np.ones(BATCH, bool)))
  assert abs(float(loss_with) - float(loss_with_other)) > 1e-4


def test_without_patient_pairs_the_patient_loss_is_over_the_batch_only():
  config, params, forward = jitted_forward("hl", False)
  # The step reads no pair view at all.
  distinct = in_memory_batch(config, with_pair=False)
  _, metrics = forward(params, distinct)
  assert float(metrics["loss_patient"]) == 0.0  # No two ECGs of one patient.
  shared = in_memory_batch(config, with_pair=False, patients=np.arange(BATCH) // 2)
  _, metrics = forward(params, shared)
  assert float(metrics["loss_patient"]) > 0.0  # ECGs 2i and 2i+1 are positives.


# ------------------------------------------------------------------- learning
# 50 AdamW steps on one fixed batch: the loss must fall to below this fraction of its
# first value (measured: GL ~0.25, CL ~0.02, HL ~0.3 of the first loss).
LEARNS_TO = {"gl": 0.6, "cl": 0.3, "hl": 0.6}


def fit_one_batch(preset: str, steps: int = 50):
  """(losses, initial params, final params) of `steps` steps on one batch."""
  config, mesh, run = built(preset)
  batch = sharding.global_batch(mesh, in_memory_batch(config))
  state = run.initial_state(jax.random.key(0))
  initial = jax.device_get(state.params)
  losses = []
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
