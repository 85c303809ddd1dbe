"""CREMA: a masked autoencoder over ECG patch tokens whose encoder is also trained
contrastively (arXiv 2407.07110).

  patchify -> PatchEmbed (visible patches) + positions -> encoder -> pooled -> projection
                                                        \\-> decoder (+ mask tokens) -> patches

The masks come from the input pipeline as sorted index arrays (see crema_jax.masking):
`ids_keep [batch, K]` and `ids_masked [batch, M]` over the N tokens of each signal.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crema_jax import masking
from crema_jax.models import patch_embed as pe
from crema_jax.models import transformer


def gather_tokens(tokens: jnp.ndarray, ids: jnp.ndarray) -> jnp.ndarray:
  """tokens: [batch, n, dim], ids: [batch, k] -> [batch, k, dim]."""
  return jnp.take_along_axis(tokens, ids[:, :, None], axis=1)


def masked_targets(x: jnp.ndarray, ids_masked: jnp.ndarray, patch_size: int,
                   layout: str, norm_targets: bool) -> jnp.ndarray:
  """The reconstruction targets: x: [batch, time, leads] -> [batch, M, patch_dim].

  With `norm_targets` each patch is standardised (MAE's norm_pix_loss).
  """
  target = gather_tokens(pe.patchify(x, patch_size, layout), ids_masked)
  if norm_targets:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  return target


class ProjectionHead(nn.Module):
  """The 2-layer MLP mapping pooled features to the contrastive embedding space."""
  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.out_dim, dtype=self.dtype, name="fc2")(x)


class CREMA(nn.Module):
  """The CREMA model. Defaults are the paper's best setting (emb 1024, depth 2, patch 125).

  Attributes:
    seq_len: time samples per signal (must be a multiple of patch_size).
    num_leads: leads per signal.
    patch_size: time samples per patch (kernel = stride of the patch convolution).
    token_layout: "joint" or "per_lead" (see crema_jax.masking).
    emb_dim, depth, num_heads: the encoder.
    decoder_dim, decoder_depth, decoder_heads: the (lighter) decoder.
    mlp_ratio: MLP hidden size / width, encoder and decoder.
    proj_hidden_dim, proj_dim: the projection head.
    use_cls: prepend a learned CLS token to the encoder input.
    pool: "mean" (over encoded visible tokens) or "cls".
    norm_targets: reconstruct per-patch standardised values.
    dropout, drop_path: regularisation in the encoder and decoder blocks.
    remat: recompute each block's activations in the backward pass (saves memory).
    dtype: compute dtype (parameters stay float32).
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

  def __post_init__(self):
    check_shapes(self.seq_len, self.patch_size, self.emb_dim, self.num_heads,
                 self.decoder_dim, self.decoder_heads, self.token_layout, self.pool,
                 self.use_cls)
    super().__post_init__()

  @property
  def num_patches(self) -> int:
    return self.seq_len // self.patch_size

  @property
  def num_tokens(self) -> int:
    per_lead = self.token_layout == "per_lead"
    return self.num_patches * (self.num_leads if per_lead else 1)

  @property
  def patch_dim(self) -> int:
    per_lead = self.token_layout == "per_lead"
    return self.patch_size * (1 if per_lead else self.num_leads)

  def setup(self):
    self.patch_embed = pe.PatchEmbed(self.emb_dim, self.dtype)
    if self.token_layout == "per_lead":
      init = nn.initializers.normal(0.02)
      self.lead_embed = self.param("lead_embed", init, (self.num_leads, self.emb_dim))
      self.decoder_lead_embed = self.param("decoder_lead_embed", init,
                                           (self.num_leads, self.decoder_dim))
    if self.use_cls:
      self.cls_token = self.param("cls_token", nn.initializers.normal(0.02),
                                  (1, 1, self.emb_dim))
    self.encoder = transformer.Transformer(
        self.depth, self.num_heads, self.mlp_ratio, self.dropout, self.drop_path,
        self.remat, self.dtype)
    self.decoder_embed = nn.Dense(self.decoder_dim, dtype=self.dtype)
    self.mask_token = self.param("mask_token", nn.initializers.normal(0.02),
                                 (1, 1, self.decoder_dim))
    self.decoder = transformer.Transformer(
        self.decoder_depth, self.decoder_heads, self.mlp_ratio, self.dropout,
        self.drop_path, self.remat, self.dtype)
    self.decoder_pred = nn.Dense(self.patch_dim, dtype=self.dtype)
    self.projector = ProjectionHead(self.proj_hidden_dim, self.proj_dim, self.dtype)

  def _positions(self, dim: int, lead_embed: jnp.ndarray | None) -> jnp.ndarray:
    """[num_tokens, dim]: sin-cos of the time patch (+ the lead embedding per lead)."""
    table = pe.sincos_1d(self.num_patches, dim)
    pos = jnp.asarray(table[pe.token_positions(self.num_patches, self.num_leads,
                                               self.token_layout)])
    if lead_embed is not None:
      pos = pos + lead_embed[pe.token_leads(self.num_patches, self.num_leads)]
    return pos

  def forward_encoder(self, x: jnp.ndarray, ids_keep: jnp.ndarray,
                      train: bool = False) -> jnp.ndarray:
    """x: [batch, time, leads], ids_keep: [batch, K] -> latent [batch, (1 +) K, emb]."""
    patches = gather_tokens(pe.patchify(x, self.patch_size, self.token_layout),
                            ids_keep)
    tokens = self.patch_embed(patches.astype(self.dtype))
    pos = self._positions(self.emb_dim, getattr(self, "lead_embed", None))
    tokens = tokens + jnp.take(pos, ids_keep, axis=0).astype(self.dtype)
    if self.use_cls:
      cls = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, self.emb_dim))
      tokens = jnp.concatenate([cls.astype(self.dtype), tokens], axis=1)
    return self.encoder(tokens, train)

  def pool_latent(self, latent: jnp.ndarray) -> jnp.ndarray:
    """latent: [batch, (1 +) K, emb] -> [batch, emb] float32."""
    if self.pool == "cls":
      return latent[:, 0].astype(jnp.float32)
    tokens = latent[:, 1:] if self.use_cls else latent
    return tokens.mean(axis=1).astype(jnp.float32)

  def project(self, pooled: jnp.ndarray) -> jnp.ndarray:
    """pooled: [batch, emb] -> z: [batch, proj_dim] float32."""
    return self.projector(pooled).astype(jnp.float32)

  def forward_decoder(self, latent: jnp.ndarray, ids_keep: jnp.ndarray,
                      ids_masked: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Predicts the masked patches: -> pred [batch, M, patch_dim] float32."""
    tokens = self.decoder_embed(latent)
    b, n = tokens.shape[0], self.num_tokens
    if self.use_cls:
      cls, tokens = tokens[:, :1], tokens[:, 1:]
    full = jnp.broadcast_to(self.mask_token.astype(tokens.dtype),
                            (b, n, self.decoder_dim))
    full = full.at[jnp.arange(b)[:, None], ids_keep].set(tokens)
    full = full + self._positions(self.decoder_dim,
                                  getattr(self, "decoder_lead_embed", None)).astype(
                                      full.dtype)
    if self.use_cls:
      full = jnp.concatenate([cls, full], axis=1)
    full = self.decoder(full, train)
    if self.use_cls:
      full = full[:, 1:]
    return self.decoder_pred(gather_tokens(full, ids_masked)).astype(jnp.float32)

  def targets(self, x: jnp.ndarray, ids_masked: jnp.ndarray) -> jnp.ndarray:
    """The reconstruction targets of x: [batch, time, leads] -> [batch, M, patch_dim]."""
    return masked_targets(x, ids_masked, self.patch_size, self.token_layout,
                          self.norm_targets)

  def embed(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Pooled encoder features of whole (unmasked) signals: -> [batch, emb] float32."""
    ids = jnp.broadcast_to(jnp.arange(self.num_tokens, dtype=jnp.int32),
                           (x.shape[0], self.num_tokens))
    return self.pool_latent(self.forward_encoder(x, ids, train))

  def __call__(self, x: jnp.ndarray, ids_keep: jnp.ndarray, ids_masked: jnp.ndarray,
               train: bool = False) -> dict[str, jnp.ndarray]:
    """One masked view: pred/target [batch, M, patch_dim], pooled [batch, emb],
    z [batch, proj_dim]."""
    latent = self.forward_encoder(x, ids_keep, train)
    pooled = self.pool_latent(latent)
    return {"pred": self.forward_decoder(latent, ids_keep, ids_masked, train),
            "target": self.targets(x, ids_masked), "pooled": pooled,
            "z": self.project(pooled)}


def check_shapes(seq_len: int, patch_size: int, emb_dim: int, num_heads: int,
                 decoder_dim: int, decoder_heads: int, token_layout: str, pool: str,
                 use_cls: bool) -> None:
  """Raises ValueError for a model that cannot be built (before any compute)."""
  problems = []
  if seq_len % patch_size:
    problems.append(f"seq_len={seq_len} is not a multiple of patch_size={patch_size}")
  if emb_dim % num_heads:
    problems.append(f"emb_dim={emb_dim} is not divisible by num_heads={num_heads}")
  if decoder_dim % decoder_heads:
    problems.append(f"decoder_dim={decoder_dim} is not divisible by "
                    f"decoder_heads={decoder_heads}")
  if token_layout not in ("joint", "per_lead"):
    problems.append(f"token_layout={token_layout!r} is not 'joint' or 'per_lead'")
  if pool not in ("mean", "cls") or (pool == "cls" and not use_cls):
    problems.append(f"pool={pool!r} needs to be 'mean', or 'cls' with use_cls=True")
  if problems:
    raise ValueError("Invalid CREMA model: " + "; ".join(problems))


def init_params(model: CREMA, rng: jax.Array, mask_ratio: float = 0.75) -> Any:
  """Initial parameters (shapes depend only on the model, not on the mask)."""
  n = model.num_tokens
  m = masking.num_masked(n, mask_ratio)
  x = jnp.zeros((1, model.seq_len, model.num_leads), jnp.float32)
  keep = jnp.arange(n - m, dtype=jnp.int32)[None]
  masked = jnp.arange(n - m, n, dtype=jnp.int32)[None]
  return model.init({"params": rng}, x, keep, masked, train=False)["params"]
