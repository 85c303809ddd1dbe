"""The Signal Transformer: pre-LN blocks of multi-head self-attention and an MLP."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch for whole examples, rescales the rest."""
  rate: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [batch, ...] -> [batch, ...]; identity unless training with rate > 0."""
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention (no attention mask: every token sees every token)."""
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    b, s, d = x.shape
    qkv = nn.Dense(3 * d, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="qkv")(x)
    qkv = qkv.reshape(b, s, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [batch, seq, heads, head_dim]
    out = jax.nn.dot_product_attention(q, k, v)
    return nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="proj")(out.reshape(b, s, d))


class Mlp(nn.Module):
  """Dense -> GELU -> dropout -> Dense, back to the input width."""
  hidden_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    y = nn.Dense(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="fc1")(x)
    y = nn.Dropout(self.dropout)(nn.gelu(y), deterministic=not train)
    return nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                    name="fc2")(y)


class Block(nn.Module):
  """Pre-LN block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.LayerNorm(name="norm1", **kw)(x)
    y = Attention(self.num_heads, name="attn", **kw)(y)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = nn.LayerNorm(name="norm2", **kw)(x)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.dropout, name="mlp", **kw)(y, train)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return x + DropPath(self.drop_path, name="drop_path2")(y, train)


class Transformer(nn.Module):
  """`depth` blocks and a final LayerNorm.

  The drop-path rate grows linearly from 0 in the first block to `drop_path` in the
  last. With `remat` each block's activations are recomputed in the backward pass
  instead of being stored.
  """
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  drop_path: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    # argnum 0 is the module itself, so `train` (a Python bool) is argnum 2.
    block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)
      x = block(self.num_heads, self.mlp_ratio, self.dropout, rate, self.dtype,
                self.param_dtype, name=f"block{i}")(x, train)
    return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
