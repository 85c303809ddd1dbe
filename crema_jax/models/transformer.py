"""The Signal Transformer: pre-LN blocks of multi-head self-attention and an MLP."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example."""
  rate: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) +
                                (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Attention(nn.Module):
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    b, s, d = x.shape
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, s, 3, self.num_heads, d // self.num_heads), 3,
                        axis=2)
    out = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    return nn.Dense(d, dtype=self.dtype, name="out")(out.reshape(b, s, d))


class Mlp(nn.Module):
  hidden_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class Block(nn.Module):
  """x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x)))."""
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = Attention(self.num_heads, self.dtype, name="attn")(
        nn.LayerNorm(dtype=self.dtype, name="norm1")(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.dropout, self.dtype, name="mlp")(
        nn.LayerNorm(dtype=self.dtype, name="norm2")(x), train)
    return x + DropPath(self.drop_path, name="drop_path2")(y, train)


class Transformer(nn.Module):
  """`depth` blocks and a final LayerNorm; stochastic depth grows linearly with depth."""
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  drop_path: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)
      x = block(self.num_heads, self.mlp_ratio, self.dropout, rate, self.dtype,
                name=f"block{i}")(x, train)
    return nn.LayerNorm(dtype=self.dtype, name="norm")(x)
