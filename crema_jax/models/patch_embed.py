"""Patch tokens of a 12-lead ECG: patchify, the patch embedding, fixed positions.

Signals are `[batch, leads, time]`: time last, the axis a TPU lays on its lanes.

Token layouts (see crema_jax.masking):
  joint:    one token per time patch holding every lead; N = time // patch_size,
            patch_dim = leads * patch_size, lead-major (value l * patch_size + t is
            sample t of lead l).
  per_lead: one token per lead and time patch, lead-major (token = lead * num_patches +
            patch); N = leads * time // patch_size, patch_dim = patch_size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def patchify(x: jnp.ndarray, patch_size: int, layout: str) -> jnp.ndarray:
  """Cuts signals into patch tokens.

  Args:
    x: [batch, leads, time], time a multiple of patch_size.
    patch_size: samples per patch.
    layout: "joint" or "per_lead".

  Returns:
    [batch, num_tokens, patch_dim].
  """
  b, leads, t = x.shape
  n = t // patch_size
  if layout == "joint":
    return x.reshape(b, leads, n, patch_size).swapaxes(1, 2).reshape(
        b, n, leads * patch_size)
  return x.reshape(b, leads * n, patch_size)


EXACT = jax.lax.Precision.HIGHEST  # A one-hot matmul copies float32 values exactly.


def one_hot(ids: jnp.ndarray, n: int, dtype) -> jnp.ndarray:
  """ids [..., k] -> [..., k, n] 0/1 of `dtype`."""
  return (ids[..., None] == jnp.arange(n)).astype(dtype)


def select(tokens: jnp.ndarray, ids: jnp.ndarray) -> jnp.ndarray:
  """tokens [batch, n, ...], ids [batch, k] -> tokens[b, ids[b]]: [batch, k, ...].

  A one-hot matmul, not a gather: a TPU runs it on the MXU, XLA's TPU compiler can
  estimate its cost, and its gradient is the transposed matmul where a gather's is a
  scatter. Full precision keeps it an exact copy of float32 values (a TPU's default
  would round them to bfloat16)."""
  return jnp.einsum("bkn,bn...->bk...", one_hot(ids, tokens.shape[1], tokens.dtype),
                    tokens, precision=EXACT)


def place(tokens: jnp.ndarray, ids: jnp.ndarray, n: int, fill: jnp.ndarray
          ) -> jnp.ndarray:
  """The inverse of `select`: tokens [batch, k, dim] put at positions ids [batch, k]
  (distinct) of n, `fill` [dim] everywhere else -> [batch, n, dim]; a one-hot matmul."""
  hot = one_hot(ids, n, tokens.dtype)  # [batch, k, n]
  placed = jnp.einsum("bkn,bkd->bnd", hot, tokens, precision=EXACT)
  empty = 1 - hot.sum(axis=1)  # [batch, n]: 1 where no token was put.
  return placed + empty[..., None] * fill.astype(tokens.dtype)


def select_patches(x: jnp.ndarray, ids: jnp.ndarray, patch_size: int,
                   layout: str) -> jnp.ndarray:
  """`patchify(x)[b, ids[b]]` without cutting every patch first: x [..., leads,
  time], ids [..., k] -> [..., k, patch_dim] (any leading batch axes), exactly (a
  one-hot matmul at full precision: see `select`)."""
  *batch, leads, t = x.shape
  n = t // patch_size
  k = ids.shape[-1]
  if layout == "joint":  # Contracts the time-patch axis of [.., leads, n, patch] directly.
    picked = jnp.einsum("...kn,...lnp->...klp", one_hot(ids, n, x.dtype),
                        x.reshape(*batch, leads, n, patch_size), precision=EXACT)
    return picked.reshape(*batch, k, leads * patch_size)
  return jnp.einsum("...kn,...np->...kp", one_hot(ids, leads * n, x.dtype),
                    x.reshape(*batch, leads * n, patch_size), precision=EXACT)


def unpatchify(tokens: jnp.ndarray, patch_size: int, num_leads: int,
               layout: str) -> jnp.ndarray:
  """Inverse of `patchify`: [batch, num_tokens, patch_dim] -> [batch, leads, time]."""
  b = tokens.shape[0]
  if layout == "joint":
    return tokens.reshape(b, -1, num_leads, patch_size).swapaxes(1, 2).reshape(
        b, num_leads, -1)
  return tokens.reshape(b, num_leads, -1)


def sincos_1d(length: int, dim: int) -> np.ndarray:
  """Fixed 1D sine-cosine position embedding (MAE/ViT): [length, dim].

  The first dim // 2 channels are sines, the rest cosines, of position * omega_i with
  omega_i = 10000 ** (-i / (dim / 2)).
  """
  if dim % 2:
    raise ValueError(f"sin-cos position embedding needs an even dim, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def token_patch_index(num_patches: int, num_leads: int, layout: str) -> np.ndarray:
  """[num_tokens] time-patch index of every token (its sin-cos position)."""
  if layout == "joint":
    return np.arange(num_patches)
  return np.tile(np.arange(num_patches), num_leads)


def token_lead_index(num_patches: int, num_leads: int) -> np.ndarray:
  """[num_tokens] lead of every per_lead token."""
  return np.repeat(np.arange(num_leads), num_patches)


class PatchConv(nn.Module):
  """The weights of a 1D convolution with kernel = stride = patch_size, applied to
  whole patches: kernel [patch_size, channels, features] and bias [features], as
  `nn.Conv` names, shapes and initialises them."""
  features: int
  patch_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jnp.ndarray) -> jnp.ndarray:
    """patches: [batch, n, channels, patch_size] -> [batch, n, features]."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.patch_size, patches.shape[2], self.features),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias,
                                                    dtype=self.dtype)
    return jnp.einsum("bncp,pcf->bnf", patches, kernel) + bias


class PatchEmbed(nn.Module):
  """The CREMA patch embedder: a 1D convolution with kernel = stride = patch_size.

  It takes patch tokens (`patchify` output, possibly only the visible ones) and runs the
  convolution over each token's samples, which is exactly the convolution of the whole
  signal restricted to those patches; the encoder therefore embeds only what it sees.
  One patch's convolution is one contraction over its leads and samples (an MXU
  matmul). In the per_lead layout the convolution has one input channel and is shared
  by all leads.

  Attributes:
    emb_dim: output channels.
    patch_size: kernel size and stride.
  """
  emb_dim: int
  patch_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jnp.ndarray) -> jnp.ndarray:
    """patches: [batch, n, channels * patch_size] -> [batch, n, emb_dim]."""
    b, n, patch_dim = patches.shape
    signal = patches.reshape(b, n, patch_dim // self.patch_size, self.patch_size)
    return PatchConv(self.emb_dim, self.patch_size, self.dtype, self.param_dtype,
                     name="conv")(signal)
