"""AdamW: the weight-decay mask, the warmup-cosine schedule, gradient clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crema_jax import models
from crema_jax.models import sizing
from crema_jax import optim


def abstract_params(**overrides):
  model = models.CREMA(**{**models.VARIANTS["tiny_per_lead"], **overrides})
  return jax.eval_shape(lambda rng: models.init_params(model, rng), jax.random.key(0))


def flat(tree):
  return {"/".join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_decay_mask_on_a_crema_param_tree():
  params = abstract_params(use_cls=True)
  mask = flat(optim.decay_mask(params))
  assert set(mask) == set(flat(params))
  decayed = {name for name, decay in mask.items() if decay}
  assert {"patch_embed/conv/kernel", "encoder/block0/attn/qkv/kernel",
          "encoder/block1/mlp/fc2/kernel", "decoder_embed/kernel",
          "decoder/block0/attn/proj/kernel", "decoder_pred/kernel",
          "projector/fc1/kernel", "projector/fc2/kernel"} <= decayed
  assert all(name.endswith("/kernel") for name in decayed)
  kept = set(mask) - decayed
  assert {"lead_embed", "decoder_lead_embed", "cls_token", "mask_token",
          "patch_embed/conv/bias", "encoder/norm/scale", "encoder/norm/bias",
          "encoder/block0/norm1/scale", "decoder/block0/mlp/fc1/bias"} <= kept
  # Every kernel decays; nothing else does.
  assert decayed == {name for name in mask if name.endswith("/kernel")}


def test_weight_decay_skips_the_masked_leaves():
  params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
            "norm": {"scale": jnp.ones(2)}, "mask_token": jnp.ones((1, 1, 2))}
  tx = optim.make_optimizer(lr=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zero_grads, tx.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5)
  for leaf in (updates["dense"]["bias"], updates["norm"]["scale"],
               updates["mask_token"]):
    np.testing.assert_array_equal(leaf, 0.0)


def test_schedule_warmup_and_cosine():
  schedule = optim.make_schedule(lr=1e-3, warmup_steps=100, total_steps=1000,
                                 min_lr_ratio=0.1)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(50), 0.5e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(550), 0.55e-3, rtol=1e-5)  # Half-way down.
  np.testing.assert_allclose(schedule(1000), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(5000), 1e-4, rtol=1e-6)
  decay = [float(schedule(s)) for s in range(100, 1001, 50)]
  assert decay == sorted(decay, reverse=True)


def test_schedule_takes_a_whole_optimizer_config_and_short_runs():
  fields = dict(lr=1e-3, warmup_steps=1000, min_lr_ratio=0.0, weight_decay=0.05,
                b1=0.9, b2=0.95, clip_norm=1.0)
  schedule = optim.make_schedule(**fields, total_steps=10)  # Warmup > run: clipped.
  assert float(schedule(9)) == pytest.approx(1e-3)
  assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
  optim.make_optimizer(**fields, total_steps=10)
  with pytest.raises(ValueError, match="total_steps"):
    optim.make_schedule(1e-3, 10, 0)


@pytest.mark.parametrize("clip_norm", [1.0, 0.0])
def test_clipping_bounds_the_gradient_adam_sees(clip_norm):
  params = {"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}
  grads = {"w": jnp.full((4, 4), 100.0), "b": jnp.full(4, -50.0)}
  tx = optim.make_optimizer(lr=1e-2, warmup_steps=0, total_steps=10,
                            weight_decay=0.0, b1=0.9, clip_norm=clip_norm)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  mu = optax.tree_utils.tree_get(state, "mu")
  expected = clip_norm if clip_norm else optax.global_norm(grads)
  np.testing.assert_allclose(optax.global_norm(mu), 0.1 * expected, rtol=1e-5)
  assert all(np.isfinite(u).all() and np.abs(u).max() <= 1e-2 * (1 + 1e-5)
             for u in jax.tree.leaves(updates))


def test_param_count():
  assert sizing.param_count({"a": jnp.ones((2, 3)), "b": [jnp.ones(4)]}) == 10
