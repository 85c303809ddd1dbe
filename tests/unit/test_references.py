"""The simple predictors of masked patches (crema_jax.references)."""

import jax.numpy as jnp
import numpy as np
import pytest

from crema_jax import models
from crema_jax import references

RATE = 500


def periodic_view(period: int = 400, leads: int = 12, t: int = 5000) -> np.ndarray:
  """[leads, time]: a sharp beat every `period` samples, a different gain per lead."""
  phase = np.arange(t) % period
  beat = np.exp(-0.5 * ((phase - 100) / 8.0) ** 2) - 0.3 * np.exp(
      -0.5 * ((phase - 250) / 30.0) ** 2)
  return (np.linspace(0.5, 1.5, leads)[:, None] * beat[None]).astype(np.float32)


def tiny(layout: str) -> models.CREMA:
  return models.CREMA(seq_len=5000, patch_size=500 if layout == "per_lead" else 50,
                      token_layout=layout, emb_dim=32, depth=1, num_heads=2,
                      decoder_dim=16, decoder_depth=1, decoder_heads=2,
                      proj_hidden_dim=16, proj_dim=8)


def test_rr_is_the_period_of_the_visible_samples():
  x = periodic_view(period=430)
  seen = np.zeros(x.shape, bool)
  seen[:, :2500] = True  # Half the record visible.
  assert int(references.rr_samples(jnp.asarray(x), jnp.asarray(seen), RATE)) == 430


@pytest.mark.parametrize("layout", ["joint", "per_lead"])
def test_predictors_on_a_periodic_signal(layout):
  model = tiny(layout)
  x = jnp.asarray(periodic_view(period=450))  # Odd in 50-sample patches.
  n = model.num_tokens
  ids_keep = jnp.arange(0, n, 2)  # Every other token visible.
  preds = references.predictions(x, ids_keep, model, RATE)
  seen = np.asarray(references.visible_samples(ids_keep, 12, 5000, model.patch_size,
                                               layout))
  assert seen.mean() == pytest.approx(0.5)
  masked = ~seen
  # A beat one RR away is visible for most masked samples: copied exactly there.
  err = np.square(np.asarray(preds["one_rr"]) - np.asarray(x))[masked]
  assert np.mean(err) < 0.15 * np.mean(np.square(np.asarray(x))[masked])
  # The nearest visible patch of the same lead, and each lead's visible mean.
  nearest = np.asarray(preds["nearest_visible"])
  p = model.patch_size
  if layout == "joint":
    np.testing.assert_array_equal(nearest[:, p:2 * p], np.asarray(x)[:, :p])
  else:  # Token 1 of lead 0 (samples p..2p) is masked; its earlier neighbour is token 0.
    np.testing.assert_array_equal(nearest[0, p:2 * p], np.asarray(x)[0, :p])
  np.testing.assert_allclose(np.asarray(preds["visible_mean"])[:, 0],
                             np.asarray(x)[seen.reshape(12, -1)].reshape(12, -1).mean(1)
                             if layout == "joint" else
                             [np.asarray(x)[l][seen[l]].mean() for l in range(12)],
                             rtol=1e-5)


def test_the_log_check_sees_the_steps_own_first_views():
  from configs import demo
  from crema_jax.input import device
  transform = device.ViewTransform.from_config(demo.get_config())
  rng = np.random.default_rng(0)
  signals = jnp.asarray(rng.normal(size=(4, 3, 12, 5000)).astype(np.float16))
  valid = jnp.asarray([[5000] * 3, [3000] * 3, [5000] * 3, [4000] * 3], jnp.int32)
  step = device.pretrain_views(
      transform, device.example_keys(0, jnp.int32(7), 4), signals, valid)
  x, keep, masked, masked_valid = references.first_views(transform, 0, jnp.int32(7),
                                                         signals, valid)
  np.testing.assert_array_equal(x, step["signals"][:, 0])
  np.testing.assert_array_equal(keep, step["ids_keep"][:, 0])
  np.testing.assert_array_equal(masked, step["ids_masked"][:, 0])
  np.testing.assert_array_equal(masked_valid, step["masked_valid"][:, 0])
