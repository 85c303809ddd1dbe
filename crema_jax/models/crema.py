"""CREMA: a masked autoencoder over ECG patch tokens whose encoder is also trained
contrastively (arXiv 2407.07110).

  x -> patchify -> visible patches -> PatchEmbed + sin-cos positions (+ lead embedding)
    -> encoder -> latent -> pool -> projection head -> z      (contrastive losses)
                        \\-> decoder (+ mask tokens) -> masked patches  (reconstruction)

Masks come from the input pipeline as sorted index arrays (crema_jax.masking):
`ids_keep [batch, K]` and `ids_masked [batch, M]`, together the N tokens of a signal.
Every shape depends only on K and M, so one compiled step serves every mask.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crema_jax import masking
from crema_jax.models import patch_embed as pe
from crema_jax.models import transformer


def masked_targets(x: jnp.ndarray, ids_masked: jnp.ndarray, patch_size: int,
                   layout: str, norm_targets: bool) -> jnp.ndarray:
  """Reconstruction targets: x [..., leads, time], ids_masked [..., M] -> [..., M,
  patch_dim] float32 (any leading batch axes).

  With `norm_targets` every patch is standardised on its own (MAE's norm_pix_loss).
  """
  target = pe.select_patches(x, ids_masked, patch_size, layout).astype(jnp.float32)
  if norm_targets:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  return target


def shape_problems(seq_len: int, patch_size: int, emb_dim: int, num_heads: int,
                   decoder_dim: int, decoder_heads: int, token_layout: str, pool: str,
                   use_cls: bool, **unused_fields) -> list[str]:
  """Every reason a model with these fields cannot be built (empty: it can).

  Other CREMA fields are accepted and ignored, so a config's whole model block can be
  passed: `shape_problems(seq_len=..., **config.model)`."""
  del unused_fields
  problems = []
  if patch_size < 1 or seq_len % patch_size:
    problems.append(f"seq_len={seq_len} is not a multiple of patch_size={patch_size}")
  for dim_name, dim, heads_name, heads in (
      ("emb_dim", emb_dim, "num_heads", num_heads),
      ("decoder_dim", decoder_dim, "decoder_heads", decoder_heads)):
    if dim % 2:
      problems.append(f"{dim_name}={dim} must be even (sin-cos positions)")
    if heads < 1 or dim % heads:
      problems.append(f"{dim_name}={dim} is not divisible by {heads_name}={heads}")
  if token_layout not in masking.TOKEN_LAYOUTS:
    problems.append(f"token_layout={token_layout!r} is not one of "
                    f"{masking.TOKEN_LAYOUTS}")
  if pool not in ("mean", "cls"):
    problems.append(f"pool={pool!r} is not 'mean' or 'cls'")
  elif pool == "cls" and not use_cls:
    problems.append("pool='cls' needs use_cls=True")
  return problems


def check_shapes(**fields) -> None:
  """Raises a ValueError naming every field of a model that cannot be built."""
  problems = shape_problems(**fields)
  if problems:
    raise ValueError("Invalid CREMA model: " + "; ".join(problems))


class ProjectionHead(nn.Module):
  """Dense -> GELU -> Dense: pooled features to the contrastive embedding space."""
  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, emb] -> [batch, out_dim]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.gelu(nn.Dense(self.hidden_dim, name="fc1", **kw)(x))
    return nn.Dense(self.out_dim, name="fc2", **kw)(x)


class CREMA(nn.Module):
  """The CREMA model; defaults are the paper's best setting (`VARIANTS['paper']`).

  Attributes:
    seq_len: time samples per signal, a multiple of patch_size.
    num_leads: leads per signal.
    patch_size: samples per patch (kernel = stride of the patch convolution).
    token_layout: "joint" or "per_lead" (see crema_jax.masking).
    emb_dim, depth, num_heads: the encoder.
    decoder_dim, decoder_depth, decoder_heads: the lighter MAE decoder.
    mlp_ratio: MLP hidden width / model width, encoder and decoder.
    proj_hidden_dim, proj_dim: the projection head.
    use_cls: prepend a learned CLS token to the encoder (and decoder) input.
    pool: "mean" over the encoded patch tokens, or "cls" (needs use_cls).
    norm_targets: reconstruct per-patch standardised values (MAE norm_pix_loss).
    dropout, drop_path: regularisation in every block.
    remat: recompute each block's activations in the backward pass (saves memory).
    dtype: compute dtype, e.g. jnp.bfloat16; outputs are float32 regardless.
    param_dtype: parameter dtype.
  """
  seq_len: int = 5000
  num_leads: int = 12
  patch_size: int = 125
  token_layout: str = "joint"
  emb_dim: int = 1024
  depth: int = 2
  num_heads: int = 16
  decoder_dim: int = 512
  decoder_depth: int = 2
  decoder_heads: int = 16
  mlp_ratio: float = 4.0
  proj_hidden_dim: int = 1024
  proj_dim: int = 256
  use_cls: bool = False
  pool: str = "mean"
  norm_targets: bool = False
  dropout: float = 0.0
  drop_path: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    check_shapes(seq_len=self.seq_len, patch_size=self.patch_size,
                 emb_dim=self.emb_dim, num_heads=self.num_heads,
                 decoder_dim=self.decoder_dim, decoder_heads=self.decoder_heads,
                 token_layout=self.token_layout, pool=self.pool, use_cls=self.use_cls)
    super().__post_init__()

  @property
  def num_patches(self) -> int:
    """Time patches per signal."""
    return self.seq_len // self.patch_size

  @property
  def num_tokens(self) -> int:
    """N, tokens per signal."""
    per_lead = self.token_layout == "per_lead"
    return self.num_patches * (self.num_leads if per_lead else 1)

  @property
  def patch_dim(self) -> int:
    """Values per token."""
    per_lead = self.token_layout == "per_lead"
    return self.patch_size * (1 if per_lead else self.num_leads)

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    init = nn.initializers.normal(0.02)
    # Encoder.
    self.patch_embed = pe.PatchEmbed(self.emb_dim, self.patch_size, **kw)
    if self.token_layout == "per_lead":
      self.lead_embed = self.param("lead_embed", init, (self.num_leads, self.emb_dim),
                                   self.param_dtype)
    if self.use_cls:
      self.cls_token = self.param("cls_token", init, (1, 1, self.emb_dim),
                                  self.param_dtype)
    self.encoder = transformer.Transformer(
        self.depth, self.num_heads, self.mlp_ratio, self.dropout, self.drop_path,
        self.remat, **kw)
    # Decoder.
    self.decoder_embed = nn.Dense(self.decoder_dim, **kw)
    self.mask_token = self.param("mask_token", init, (1, 1, self.decoder_dim),
                                 self.param_dtype)
    if self.token_layout == "per_lead":
      self.decoder_lead_embed = self.param(
          "decoder_lead_embed", init, (self.num_leads, self.decoder_dim),
          self.param_dtype)
    self.decoder = transformer.Transformer(
        self.decoder_depth, self.decoder_heads, self.mlp_ratio, self.dropout,
        self.drop_path, self.remat, **kw)
    # Zero-initialised, so the untrained model predicts 0 (the standardised mean)
    # rather than noise of unit variance. With nn.Dense's default init a GL run of
    # the tiny model on the demo data spent its first ~100 steps shrinking that noise
    # and was still at the mean after 300; zero-initialised, it reached ~0.8 of the
    # zero predictor's loss in 400 steps (tests/integration/test_reconstruction.py).
    self.decoder_pred = nn.Dense(self.patch_dim, kernel_init=nn.initializers.zeros,
                                 **kw)
    # Contrastive projection.
    self.projector = ProjectionHead(self.proj_hidden_dim, self.proj_dim, **kw)

  def positions(self, dim: int, lead_embed: jnp.ndarray | None) -> jnp.ndarray:
    """[num_tokens, dim]: sin-cos of each token's time patch (+ its lead embedding)."""
    table = pe.sincos_1d(self.num_patches, dim)
    pos = jnp.asarray(table[pe.token_patch_index(self.num_patches, self.num_leads,
                                                 self.token_layout)])
    if lead_embed is not None:
      pos = pos + lead_embed[pe.token_lead_index(self.num_patches, self.num_leads)]
    return pos

  def forward_encoder(self, x: jnp.ndarray, ids_keep: jnp.ndarray | None,
                      train: bool = False) -> jnp.ndarray:
    """Encodes the visible patches.

    Args:
      x: [batch, leads, time] signals.
      ids_keep: [batch, K] int indices of the visible tokens; None: all N, in order.
      train: enables dropout and drop-path (needs a 'dropout' rng).

    Returns:
      latent: [batch, K, emb_dim], or [batch, 1 + K, emb_dim] with the CLS token first.
    """
    x = x.astype(self.dtype)  # Select in the compute dtype: half the bytes in bfloat16.
    pos = self.positions(self.emb_dim, getattr(self, "lead_embed", None))
    if ids_keep is None:
      tokens = self.patch_embed(pe.patchify(x, self.patch_size, self.token_layout))
      tokens = tokens + pos.astype(tokens.dtype)
    else:
      tokens = self.patch_embed(pe.select_patches(x, ids_keep, self.patch_size,
                                                  self.token_layout))
      batch_pos = jnp.broadcast_to(pos, (x.shape[0],) + pos.shape)
      tokens = tokens + pe.select(batch_pos, ids_keep).astype(tokens.dtype)
    if self.use_cls:
      cls = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, self.emb_dim))
      tokens = jnp.concatenate([cls.astype(tokens.dtype), tokens], axis=1)
    return self.encoder(tokens, train)

  def pool_latent(self, latent: jnp.ndarray,
                  keep_valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """latent: [batch, (1 +) K, emb_dim] -> pooled [batch, emb_dim] float32.

    keep_valid: optional [batch, K] bool, False for a token of zero padding: the mean
    leaves it out (a view with no valid token pools all of them).
    """
    if self.pool == "cls":
      return latent[:, 0].astype(jnp.float32)
    tokens = (latent[:, 1:] if self.use_cls else latent).astype(jnp.float32)
    if keep_valid is None:
      return tokens.mean(axis=1)
    weight = jnp.where(keep_valid.any(axis=1, keepdims=True), keep_valid, True)
    weight = weight.astype(jnp.float32)[..., None]
    return (tokens * weight).sum(axis=1) / weight.sum(axis=1)

  def embed(self, x: jnp.ndarray, train: bool = False,
            valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """Features of whole, unmasked signals (for probing): x [batch, leads, time] ->
    [batch, emb_dim] float32. valid: optional [batch] samples of signal at the start
    of each x (the rest is padding, left out of the pooling)."""
    keep_valid = None if valid is None else masking.token_valid(
        valid, x.shape[-1], self.patch_size, self.num_leads, self.token_layout)
    return self.pool_latent(self.forward_encoder(x, None, train), keep_valid)

  def project(self, pooled: jnp.ndarray) -> jnp.ndarray:
    """pooled: [batch, emb_dim] -> z: [batch, proj_dim] float32."""
    return self.projector(pooled).astype(jnp.float32)

  def forward_decoder(self, latent: jnp.ndarray, ids_keep: jnp.ndarray,
                      ids_masked: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Reconstructs the masked patches.

    Args:
      latent: [batch, (1 +) K, emb_dim] from `forward_encoder`.
      ids_keep: [batch, K] the visible tokens `latent` holds, in its order.
      ids_masked: [batch, M] the tokens to predict.
      train: enables dropout and drop-path.

    Returns:
      pred: [batch, M, patch_dim] float32, in the order of ids_masked.
    """
    tokens = self.decoder_embed(latent)
    if self.use_cls:
      cls, tokens = tokens[:, :1], tokens[:, 1:]
    # As in MAE: every visible token back at its position, the mask token elsewhere.
    full = pe.place(tokens, ids_keep, self.num_tokens, self.mask_token[0, 0])
    pos = self.positions(self.decoder_dim, getattr(self, "decoder_lead_embed", None))
    full = full + pos.astype(full.dtype)
    if self.use_cls:
      full = jnp.concatenate([cls, full], axis=1)
    full = self.decoder(full, train)
    if self.use_cls:
      full = full[:, 1:]
    # Only the masked tokens go through the prediction head.
    return self.decoder_pred(pe.select(full, ids_masked)).astype(jnp.float32)

  def targets(self, x: jnp.ndarray, ids_masked: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, leads, time] -> reconstruction targets [batch, M, patch_dim]."""
    return masked_targets(x, ids_masked, self.patch_size, self.token_layout,
                          self.norm_targets)

  def __call__(self, x: jnp.ndarray, ids_keep: jnp.ndarray, ids_masked: jnp.ndarray,
               train: bool = False) -> dict[str, jnp.ndarray]:
    """One masked view through the whole model.

    Args:
      x: [batch, leads, time] signals.
      ids_keep: [batch, K] visible token indices.
      ids_masked: [batch, M] masked token indices.
      train: enables dropout and drop-path.

    Returns:
      pred, target: [batch, M, patch_dim] reconstructions and their targets.
      pooled: [batch, emb_dim] encoder features.
      z: [batch, proj_dim] projections for the contrastive losses.
      (all float32)
    """
    latent = self.forward_encoder(x, ids_keep, train)
    pooled = self.pool_latent(latent)
    return {"pred": self.forward_decoder(latent, ids_keep, ids_masked, train),
            "target": self.targets(x, ids_masked),
            "pooled": pooled,
            "z": self.project(pooled)}


def init_params(model: CREMA, rng: jax.Array, mask_ratio: float = 0.75) -> Any:
  """Initial parameters; their shapes depend only on the model, not on the mask."""
  n = model.num_tokens
  m = masking.num_masked(n, mask_ratio)
  x = jnp.zeros((1, model.num_leads, model.seq_len), jnp.float32)
  ids_keep = jnp.arange(n - m, dtype=jnp.int32)[None]
  ids_masked = jnp.arange(n - m, n, dtype=jnp.int32)[None]
  return model.init({"params": rng}, x, ids_keep, ids_masked)["params"]
