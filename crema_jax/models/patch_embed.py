"""Patch tokens of a 12-lead ECG: patchify, the patch embedding, fixed positions.

Layouts (see crema_jax.masking): `joint` tokens hold all leads of one time patch
(patch_dim = patch_size * leads); `per_lead` tokens hold one lead of one time patch
(patch_dim = patch_size), ordered lead-major: token = lead * num_patches + patch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def patchify(x: jnp.ndarray, patch_size: int, layout: str) -> jnp.ndarray:
  """x: [batch, time, leads] -> [batch, num_tokens, patch_dim]."""
  b, t, leads = x.shape
  n = t // patch_size
  if layout == "joint":
    return x.reshape(b, n, patch_size * leads)
  return x.transpose(0, 2, 1).reshape(b, leads * n, patch_size)


def unpatchify(tokens: jnp.ndarray, patch_size: int, num_leads: int,
               layout: str) -> jnp.ndarray:
  """[batch, num_tokens, patch_dim] -> x: [batch, time, leads] (inverse of patchify)."""
  b = tokens.shape[0]
  if layout == "joint":
    return tokens.reshape(b, -1, num_leads)
  return tokens.reshape(b, num_leads, -1).transpose(0, 2, 1)


def sincos_1d(length: int, dim: int) -> np.ndarray:
  """[length, dim] fixed sine-cosine position embedding (half sines, half cosines)."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def token_positions(num_patches: int, num_leads: int, layout: str) -> np.ndarray:
  """[num_tokens] time-patch index of each token."""
  if layout == "joint":
    return np.arange(num_patches)
  return np.tile(np.arange(num_patches), num_leads)


def token_leads(num_patches: int, num_leads: int) -> np.ndarray:
  """[num_tokens] lead index of each per_lead token."""
  return np.repeat(np.arange(num_leads), num_patches)


class PatchEmbed(nn.Module):
  """The CREMA patch embedder: a 1D convolution with kernel = stride = patch size.

  Applied to patches that are already cut out (as a matrix product with the
  convolution kernel, which is the same operation), so the encoder embeds only the
  visible ones.
  """
  emb_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jnp.ndarray) -> jnp.ndarray:
    """patches: [batch, n, patch_dim] -> [batch, n, emb_dim]."""
    return nn.Dense(self.emb_dim, dtype=self.dtype, name="conv")(patches)
