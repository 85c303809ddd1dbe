"""The CREMA model: parameter counts, shapes, masking semantics, dtypes, sharding."""

import dataclasses

import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from crema_jax import masking
from crema_jax import models
from crema_jax.models import sizing

# jax.eval_shape of init: exact parameter counts of every named variant.
PINNED_PARAMS = {
    "tiny": 604_184,
    "tiny_per_lead": 538_938,
    "paper": 35_644_124,
    "paper_p60": 34_445_264,
    "paper_p250": 37_949_624,
    "paper_per_lead": 33_549_181,
    "paper_d1": 23_047_900,
    "paper_d4": 60_836_572,
    "S": 5_706_972,
    "M": 33_721_052,
    "B": 94_465_756,
    "L": 161_606_364,
}

# A model small enough to compile in a second: 10 time patches of 50 samples.
SMALL = dict(seq_len=500, num_leads=12, patch_size=50, emb_dim=32, depth=1,
             num_heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2,
             proj_hidden_dim=32, proj_dim=8)


def small(**overrides) -> models.CREMA:
  return models.CREMA(**{**SMALL, **overrides})


def draw_masks(model: models.CREMA, batch: int, mask_ratio: float, seed: int = 0):
  """Per-example masks as the step draws them (sorted ids): [batch, K], [batch, M]."""
  rng = np.random.default_rng(seed)
  m = masking.num_masked(model.num_tokens, mask_ratio)
  orders = [rng.permutation(model.num_tokens).astype(np.int32) for _ in range(batch)]
  return (np.stack([np.sort(o[m:]) for o in orders]),
          np.stack([np.sort(o[:m]) for o in orders]))


def init(model: models.CREMA, seed: int = 0):
  """The real initial parameters (masks of ratio 0.75)."""
  return jax.jit(lambda rng: models.init_params(model, rng))(jax.random.key(seed))


def fake_params(model: models.CREMA, seed: int = 0):
  """Parameters shaped like `init`'s, drawn in numpy: compiling the initialisers costs
  seconds per model, and these tests only need some fixed weights."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if name == "kernel" else 50
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def apply(model: models.CREMA, params, *args, method=None, **kwargs):
  """model.apply under jit."""
  fn = lambda p, *a: model.apply({"params": p}, *a, method=method, **kwargs)
  return jax.jit(fn)(params, *args)


def signals(model: models.CREMA, batch: int, seed: int = 0) -> np.ndarray:
  """[batch, leads, time] float32."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch, model.num_leads, model.seq_len)).astype(np.float32)


# ------------------------------------------------------------------ variants
def test_every_variant_is_pinned():
  assert set(models.VARIANTS) == set(PINNED_PARAMS)


@pytest.mark.parametrize("name", sorted(PINNED_PARAMS))
def test_variant_param_count(name):
  model = models.CREMA(**models.VARIANTS[name])
  params = jax.eval_shape(lambda rng: models.init_params(model, rng),
                          jax.random.key(0))
  assert sizing.param_count(params) == PINNED_PARAMS[name]


def test_paper_variant_matches_the_paper():
  v = models.VARIANTS["paper"]
  assert (v["emb_dim"], v["depth"], v["patch_size"], v["decoder_dim"],
          v["decoder_depth"], v["num_leads"], v["seq_len"], v["token_layout"]) == (
              1024, 2, 125, 512, 2, 12, 5000, "joint")
  assert round(PINNED_PARAMS["paper"] / 1e6, 1) == 35.6


# ------------------------------------------------------------ patches, positions
@pytest.mark.parametrize("layout", ["joint", "per_lead"])
def test_patchify_round_trip_and_token_order(layout):
  x = signals(small(), 2)
  tokens = models.patchify(jnp.asarray(x), 50, layout)
  n = 500 // 50
  if layout == "joint":
    assert tokens.shape == (2, n, 50 * 12)
    np.testing.assert_array_equal(tokens[1, 3], x[1, :, 150:200].reshape(-1))
  else:
    assert tokens.shape == (2, 12 * n, 50)
    lead, patch = 7, 3
    np.testing.assert_array_equal(tokens[1, lead * n + patch], x[1, lead, 150:200])
  np.testing.assert_array_equal(models.unpatchify(tokens, 50, 12, layout), x)


@pytest.mark.parametrize("layout", ["joint", "per_lead"])
def test_patch_embed_is_the_convolution_of_the_whole_signal(layout):
  x = jnp.asarray(signals(small(), 2))
  embed = models.PatchEmbed(emb_dim=16, patch_size=50)
  tokens = models.patchify(x, 50, layout)
  params = embed.init(jax.random.key(0), tokens)["params"]
  conv = nn.Conv(16, kernel_size=(50,), strides=(50,), padding="VALID")
  assert params["conv"]["kernel"].shape == (50, 12 if layout == "joint" else 1, 16)
  if layout == "joint":  # nn.Conv's channels last: [batch, time, leads].
    expected = conv.apply({"params": params["conv"]}, x.transpose(0, 2, 1))
  else:  # One input channel, the same kernel for every lead.
    per_lead = conv.apply({"params": params["conv"]}, x[..., None])
    expected = per_lead.reshape(2, -1, 16)
  np.testing.assert_allclose(embed.apply({"params": params}, tokens), expected,
                             rtol=1e-5, atol=1e-5)


def test_sincos_1d():
  table = models.sincos_1d(10, 8)
  assert table.shape == (10, 8) and table.dtype == np.float32
  np.testing.assert_allclose(table[0], [0] * 4 + [1] * 4)
  np.testing.assert_allclose(table[3, 0], np.sin(3.0), rtol=1e-6)
  np.testing.assert_allclose(table[3, 4], np.cos(3.0), rtol=1e-6)
  assert len({row.tobytes() for row in table}) == 10  # Every position is distinct.


# -------------------------------------------------------------------- shapes
@pytest.mark.parametrize("layout,use_cls,pool", [  # (joint, no CLS): every other test.
    ("joint", True, "cls"),
    ("per_lead", False, "mean"),
    ("per_lead", True, "mean"),
])
def test_output_shapes(layout, use_cls, pool):
  model = small(token_layout=layout, use_cls=use_cls, pool=pool)
  n = model.num_tokens
  assert n == (10 if layout == "joint" else 120)
  params = fake_params(model)
  # Applied with another ratio than at init: shapes follow K and M only.
  keep, masked = draw_masks(model, 3, 0.5)
  k, m = keep.shape[1], masked.shape[1]
  assert k + m == n and k != n
  x = signals(model, 3)
  out = apply(model, params, x, keep, masked)
  patch_dim = model.patch_dim
  assert patch_dim == (600 if layout == "joint" else 50)
  assert set(out) == {"pred", "target", "pooled", "z"}
  assert out["pred"].shape == out["target"].shape == (3, m, patch_dim)
  assert out["pooled"].shape == (3, 32)
  assert out["z"].shape == (3, 8)
  assert all(v.dtype == jnp.float32 for v in out.values())
  latent = apply(model, params, x, keep, method=models.CREMA.forward_encoder)
  assert latent.shape == (3, k + int(use_cls), 32)
  assert ("cls_token" in params) == use_cls
  assert ("lead_embed" in params) == (layout == "per_lead")


def test_init_with_fewer_visible_than_all_tokens():
  model = small(token_layout="per_lead", use_cls=True)
  params = init(model)  # init_params builds with K = 30 of N = 120 tokens visible.
  shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))
  assert jax.tree.structure(params) == jax.tree.structure(shapes)
  assert params["patch_embed"]["conv"]["kernel"].shape == (50, 1, 32)
  assert params["lead_embed"].shape == (12, 32)
  assert params["decoder_pred"]["kernel"].shape == (16, 50)
  np.testing.assert_array_equal(params["encoder"]["norm"]["scale"], 1.0)
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_targets_are_the_masked_patches():
  model = small()
  x = signals(model, 2)
  keep, masked = draw_masks(model, 2, 0.7)
  params = fake_params(model)
  out = apply(model, params, x, keep, masked)
  tokens = np.asarray(models.patchify(jnp.asarray(x), 50, "joint"))
  for b in range(2):
    np.testing.assert_array_equal(out["target"][b], tokens[b, masked[b]])
  normed = models.masked_targets(x, masked, 50, "joint", norm_targets=True)
  np.testing.assert_allclose(normed.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(normed.std(-1), 1, atol=1e-3)


# ------------------------------------------- positions against reference models
def reference_positions(module: models.CREMA, dim: int, lead_embed) -> jnp.ndarray:
  """[N, dim] position of every token, written out per layout: joint token i is time
  patch i; per-lead token `lead * P + p` is time patch p of `lead`, plus its lead
  embedding."""
  table = jnp.asarray(models.sincos_1d(module.num_patches, dim))
  if module.token_layout == "joint":
    return table
  return jnp.concatenate([table + lead_embed[lead] for lead in range(module.num_leads)])


def reference_encoder(module: models.CREMA, x, ids_keep):
  """Embeds every patch at its position, then keeps the visible ones."""
  tokens = module.patch_embed(models.patchify(x, module.patch_size, module.token_layout))
  lead_embed = module.lead_embed if module.token_layout == "per_lead" else None
  tokens = tokens + reference_positions(module, module.emb_dim, lead_embed)
  tokens = jnp.stack([t[k] for t, k in zip(tokens, ids_keep)])  # [batch, K, emb]
  if module.use_cls:
    cls = jnp.broadcast_to(module.cls_token, (x.shape[0], 1, module.emb_dim))
    tokens = jnp.concatenate([cls, tokens], axis=1)
  return module.encoder(tokens, False)


def reference_decoder(module: models.CREMA, latent, ids_keep, ids_masked):
  """Scatters the visible tokens into a sequence of mask tokens, adds every position,
  decodes, and predicts the masked tokens."""
  tokens = module.decoder_embed(latent)
  if module.use_cls:
    cls, tokens = tokens[:, :1], tokens[:, 1:]
  b = tokens.shape[0]
  full = jnp.broadcast_to(module.mask_token, (b, module.num_tokens, module.decoder_dim))
  full = full.at[jnp.arange(b)[:, None], ids_keep].set(tokens)
  lead_embed = module.decoder_lead_embed if module.token_layout == "per_lead" else None
  full = full + reference_positions(module, module.decoder_dim, lead_embed)
  if module.use_cls:
    full = jnp.concatenate([cls, full], axis=1)
  full = module.decoder(full, False)
  if module.use_cls:
    full = full[:, 1:]
  return module.decoder_pred(jnp.stack([f[m] for f, m in zip(full, ids_masked)]))


POSITION_CASES = [("joint", False), ("joint", True), ("per_lead", False)]


@pytest.mark.parametrize("layout,use_cls", POSITION_CASES)
def test_encoder_equals_embedding_every_patch_then_keeping_the_visible(layout, use_cls):
  model = small(token_layout=layout, use_cls=use_cls)
  x = signals(model, 3)
  keep, _ = draw_masks(model, 3, 0.6, seed=1)  # Visible ids that are not 0..K-1.
  params = fake_params(model)
  got = apply(model, params, x, keep, method=models.CREMA.forward_encoder)
  want = apply(model, params, x, keep, method=reference_encoder)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,use_cls", POSITION_CASES)
def test_decoder_equals_scattering_the_visible_tokens_among_mask_tokens(layout, use_cls):
  model = small(token_layout=layout, use_cls=use_cls)
  keep, masked = draw_masks(model, 3, 0.6, seed=2)
  latent = np.random.default_rng(0).normal(
      size=(3, keep.shape[1] + int(use_cls), model.emb_dim)).astype(np.float32)
  params = fake_params(model)
  got = apply(model, params, latent, keep, masked, method=models.CREMA.forward_decoder)
  want = apply(model, params, latent, keep, masked, method=reference_decoder)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- validation
def test_refuses_seq_len_not_a_multiple_of_patch_size():
  with pytest.raises(ValueError, match=r"seq_len=5000 .*patch_size=60"):
    models.CREMA(seq_len=5000, patch_size=60)


def test_refuses_heads_that_do_not_divide_the_width():
  with pytest.raises(ValueError, match=r"emb_dim=100 .*num_heads=16"):
    small(emb_dim=100, num_heads=16)
  with pytest.raises(ValueError, match=r"decoder_dim=20 .*decoder_heads=3"):
    small(decoder_dim=20, decoder_heads=3)
  with pytest.raises(ValueError, match="use_cls"):
    small(pool="cls")


# ------------------------------------------------------------------ semantics
@pytest.mark.parametrize("layout", ["joint", "per_lead"])
def test_encoder_ignores_masked_patches(layout):
  model = small(token_layout=layout)
  x = signals(model, 2)
  keep, masked = draw_masks(model, 2, 0.75)
  tokens = np.array(models.patchify(jnp.asarray(x), 50, layout))
  for b in range(2):
    tokens[b, masked[b]] = 100.0 * np.random.default_rng(b).normal(
        size=tokens[b, masked[b]].shape)
  x_changed = np.asarray(models.unpatchify(jnp.asarray(tokens), 50, 12, layout))
  assert not np.allclose(x, x_changed)
  params = fake_params(model)
  encode = jax.jit(lambda x: model.apply({"params": params}, x, keep,
                                         method=models.CREMA.forward_encoder))
  np.testing.assert_array_equal(encode(x), encode(x_changed))


def test_embed_is_the_encoder_on_every_token():
  model = small(use_cls=True)
  x = signals(model, 2)
  params = fake_params(model)
  features = apply(model, params, x, method=models.CREMA.embed)
  every = np.tile(np.arange(model.num_tokens, dtype=np.int32), (2, 1))
  latent = apply(model, params, x, every, method=models.CREMA.forward_encoder)
  assert features.shape == (2, 32)
  np.testing.assert_allclose(features, latent[:, 1:].mean(axis=1), rtol=1e-6, atol=1e-6)


def test_mean_pool_leaves_padding_tokens_out():
  model = small(use_cls=True)
  latent = np.random.default_rng(0).normal(size=(2, 1 + 5, 32)).astype(np.float32)
  keep_valid = np.array([[True, True, False, False, False], [False] * 5])
  pooled = apply(model, fake_params(model), latent, keep_valid,
                 method=models.CREMA.pool_latent)
  np.testing.assert_allclose(pooled[0], latent[0, 1:3].mean(0), rtol=1e-6)
  # No valid token (all padding): the plain mean rather than 0 / 0.
  np.testing.assert_allclose(pooled[1], latent[1, 1:].mean(0), rtol=1e-6)


def test_decoder_predictions_follow_ids_masked():
  """Reordering the masked ids reorders the predictions the same way."""
  model = small()
  x = signals(model, 1)
  keep, masked = draw_masks(model, 1, 0.6)
  params = fake_params(model)
  reversed_pred = apply(model, params, x, keep, masked[:, ::-1])["pred"]
  pred = apply(model, params, x, keep, masked)["pred"]
  np.testing.assert_allclose(reversed_pred, pred[:, ::-1],
                             rtol=1e-5, atol=1e-6)


def test_dropout_and_drop_path_act_only_in_training():
  model = small(depth=2, dropout=0.1, drop_path=0.2)
  x = signals(model, 2)
  keep, masked = draw_masks(model, 2, 0.75)
  params = fake_params(model)
  eval_z = apply(model, params, x, keep, masked)["z"]
  train_z = apply(model, params, x, keep, masked, train=True,
                  rngs={"dropout": jax.random.key(1)})["z"]
  assert not np.allclose(train_z, eval_z)


def test_remat_gives_the_same_gradients():
  model = small(depth=2)
  x = signals(model, 2)
  keep, masked = draw_masks(model, 2, 0.75)
  params = fake_params(model)

  def loss(p, module):
    out = module.apply({"params": p}, x, keep, masked, train=True)
    return jnp.mean((out["pred"] - out["target"]) ** 2) + jnp.mean(out["z"] ** 2)

  grad_fn = jax.jit(jax.grad(loss), static_argnums=1)
  grads = grad_fn(params, model)
  remat_grads = grad_fn(params, dataclasses.replace(model, remat=True))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, remat_grads)


def test_bfloat16_compute_keeps_float32_params_and_close_outputs():
  model = small()
  model16 = small(dtype=jnp.bfloat16)
  x = signals(model, 4)
  keep, masked = draw_masks(model, 4, 0.75)
  shapes = jax.eval_shape(lambda r: models.init_params(model16, r), jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
  params = fake_params(model16)
  out = apply(model, params, x, keep, masked)
  out16 = apply(model16, params, x, keep, masked)
  for key in ("pred", "pooled", "z"):
    assert out16[key].dtype == jnp.float32
    scale = np.abs(out[key]).max()
    np.testing.assert_allclose(out16[key], out[key], atol=0.05 * scale)


def test_sharded_batch_gives_the_same_outputs():
  model = small(token_layout="per_lead")
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch = 2 * jax.device_count()
  x = signals(model, batch)
  keep, masked = draw_masks(model, batch, 0.75)
  params = fake_params(model)
  forward = jax.jit(lambda x, k, m: model.apply({"params": params}, x, k, m))
  expected = forward(x, keep, masked)
  sharding = NamedSharding(mesh, P("data"))
  sharded = forward(*(jax.device_put(a, sharding) for a in (x, keep, masked)))
  assert sharded["z"].sharding.is_equivalent_to(sharding, 2)
  for key in expected:
    np.testing.assert_allclose(sharded[key], expected[key], rtol=1e-5, atol=1e-5)
