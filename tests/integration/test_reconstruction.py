"""The generative half learns: after a short GL run on a small fixed set of synthetic
ECGs, the decoder's masked reconstruction beats every simple predictor of
`crema_jax.references` on fresh masks (a decoder cut off from the encoder stays at
the best of them: ratio ~1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from crema_jax import references
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax.data import synthetic

STEPS, BATCH = 240, 32


@pytest.fixture(scope="module")
def ecgs():
  """[64, leads, time] float16 mV: the host's raw crops."""
  return synthetic.draw_ecgs(64, seed=3).transpose(0, 2, 1).astype(np.float16)


def host_batch(ecgs: np.ndarray, rows: np.ndarray, views: int) -> dict:
  b = len(rows)
  return {"signals": jnp.asarray(np.repeat(ecgs[rows][:, None], views, axis=1)),
          "valid": jnp.full((b, views), ecgs.shape[-1], jnp.int32),
          "patient": jnp.asarray(rows, jnp.int32),
          "has_pair": jnp.zeros((b,), bool)}


def test_decoder_beats_simple_predictors_after_a_short_run(ecgs):
  config = demo.get_config()
  config.loss.sample = config.loss.patient = 0.0   # GL: the decoder alone.
  config.total_steps, config.batch_size = STEPS, BATCH
  config.optimizer.update(lr=1e-3, warmup_steps=20, min_lr_ratio=1.0)  # No decay.
  run = step_lib.build_run(config, sharding.make_mesh(1))
  state = run.initial_state(jax.random.key(0))
  reference_fn = references.make_reference_fn(run.model, config)
  rng = np.random.default_rng(0)
  check = host_batch(ecgs, np.arange(BATCH), views=2)
  before = jax.device_get(reference_fn(state.params, 10**6, check))
  for _ in range(STEPS):
    batch = host_batch(ecgs, rng.choice(len(ecgs), BATCH, replace=False), views=2)
    state, _ = run.train_step(state, batch)
  after = jax.device_get(reference_fn(state.params, 10**6, check))  # Unseen masks.
  # Zero-initialised prediction: the untrained decoder is the zero predictor.
  assert before["ratio"] == pytest.approx(1.0, abs=0.02)
  assert after["model"] < after["visible_mean"]
  assert after["ratio"] < 0.93, {k: float(v) for k, v in after.items()}
