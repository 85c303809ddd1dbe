"""Patch tokens of a 12-lead ECG: patchify, the patch embedding, fixed positions.

Token layouts (see crema_jax.masking):
  joint:    one token per time patch holding every lead; N = time // patch_size,
            patch_dim = patch_size * leads, time-major (value t * leads + l is
            sample t of lead l).
  per_lead: one token per lead and time patch, lead-major (token = lead * num_patches +
            patch); N = leads * time // patch_size, patch_dim = patch_size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def patchify(x: jnp.ndarray, patch_size: int, layout: str) -> jnp.ndarray:
  """Cuts signals into patch tokens.

  Args:
    x: [batch, time, leads], time a multiple of patch_size.
    patch_size: samples per patch.
    layout: "joint" or "per_lead".

  Returns:
    [batch, num_tokens, patch_dim].
  """
  b, t, leads = x.shape
  n = t // patch_size
  if layout == "joint":
    return x.reshape(b, n, patch_size * leads)
  return x.transpose(0, 2, 1).reshape(b, leads * n, patch_size)


def unpatchify(tokens: jnp.ndarray, patch_size: int, num_leads: int,
               layout: str) -> jnp.ndarray:
  """Inverse of `patchify`: [batch, num_tokens, patch_dim] -> [batch, time, leads]."""
  b = tokens.shape[0]
  if layout == "joint":
    return tokens.reshape(b, -1, num_leads)
  return tokens.reshape(b, num_leads, -1).transpose(0, 2, 1)


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


class PatchEmbed(nn.Module):
  """The CREMA patch embedder: a 1D convolution with kernel = stride = patch_size.

  It takes patch tokens (`patchify` output, possibly only the visible ones) and runs the
  convolution over each token's samples, which is exactly the convolution of the whole
  signal restricted to those patches; the encoder therefore embeds only what it sees.
  In the per_lead layout the convolution has one input channel and is shared by all
  leads.

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
    """patches: [batch, n, patch_size * channels] -> [batch, n, emb_dim]."""
    b, n, patch_dim = patches.shape
    signal = patches.reshape(b, n, self.patch_size, patch_dim // self.patch_size)
    tokens = nn.Conv(self.emb_dim, kernel_size=(self.patch_size,),
                     strides=(self.patch_size,), padding="VALID", dtype=self.dtype,
                     param_dtype=self.param_dtype, name="conv")(signal)
    return tokens[:, :, 0]
