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


class DenseParams(nn.Module):
  """The kernel [in, features] and bias [features] of an `nn.Dense`, as it names,
  shapes and initialises them, for a layer that applies them itself."""
  features: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (in_features, self.features), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    return kernel, bias


class Attention(nn.Module):
  """Multi-head self-attention (no attention mask: every token sees every token).

  The projections go straight to and from head-major `[batch, heads, seq, head_dim]`
  (the qkv kernel [dim, 3 * dim] read as [dim, 3, heads, head_dim]): with ECG
  sequences of 10-40 tokens, splitting heads out of a [batch, seq, 3 * dim] tensor
  and back cost a TPU more than the attention itself. Scores and softmax in float32.
  """
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, seq, dim] -> [batch, seq, dim]."""
    d = x.shape[-1]
    h, hd = self.num_heads, d // self.num_heads
    w_qkv, b_qkv = DenseParams(3 * d, self.param_dtype, name="qkv")(d)
    w_out, b_out = DenseParams(d, self.param_dtype, name="proj")(d)
    x, w_qkv, b_qkv, w_out, b_out = nn.dtypes.promote_dtype(
        x, w_qkv, b_qkv, w_out, b_out, dtype=self.dtype)
    w_qkv, b_qkv = w_qkv.reshape(d, 3, h, hd), b_qkv.reshape(3, h, 1, hd)
    q, k, v = (jnp.einsum("bsm,mhd->bhsd", x, w_qkv[:, i]) + b_qkv[i]
               for i in range(3))                      # [batch, heads, seq, head_dim]
    with jax.named_scope("core"):
      scores = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32)
      weights = jax.nn.softmax(scores / jnp.sqrt(hd).astype(jnp.float32), axis=-1)
      out = jnp.einsum("bhts,bhsd->bhtd", weights.astype(v.dtype), v)
    return jnp.einsum("bhtd,hdm->btm", out, w_out.reshape(h, hd, d)) + b_out


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
