"""MAE patch tokens and how many of them a mask hides (the masks themselves are drawn
on the device, in the step: `crema_jax.input.device.random_mask`).

A signal `[leads, time]` becomes `num_tokens` patch tokens: `time // patch_size` in the
`joint` layout (one token holds all leads of a time patch) or `leads * time // patch_size`
in the `per_lead` layout (token `lead * num_patches + patch`). A mask is the pair of
sorted index arrays `(ids_keep [K], ids_masked [M])`, K + M = num_tokens; shapes depend
only on the ratio, so every batch has the same static shapes under `jax.jit`. A token
whose patch reaches into the zero padding of a short record is not valid
(`token_valid`): it is masked before any signal token, never a reconstruction target
and never pooled into an embedding.
"""

from __future__ import annotations

import numpy as np

TOKEN_LAYOUTS = ("joint", "per_lead")


def num_tokens(seq_len: int, patch_size: int, num_leads: int, token_layout: str) -> int:
  """Number of patch tokens of one signal in the given layout."""
  if token_layout not in TOKEN_LAYOUTS:
    raise ValueError(f"token_layout must be one of {TOKEN_LAYOUTS}, got {token_layout!r}")
  if seq_len % patch_size:
    raise ValueError(f"seq_len={seq_len} is not a multiple of patch_size={patch_size}")
  num_patches = seq_len // patch_size
  return num_patches * (num_leads if token_layout == "per_lead" else 1)


def num_masked(num_tokens_: int, mask_ratio: float) -> int:
  """M, the number of masked tokens: round(N * ratio), leaving at least one visible."""
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
  return min(int(round(num_tokens_ * mask_ratio)), num_tokens_ - 1)


def token_valid(valid_samples, seq_len: int, patch_size: int, num_leads: int,
                token_layout: str):
  """Which tokens hold signal only: valid_samples [...] (samples of signal at the
  start of each view; the rest is zero padding of a short record) -> [..., N] bool,
  True for a token whose whole patch lies within them. Works on numpy and jax arrays."""
  n = num_tokens(seq_len, patch_size, num_leads, token_layout)
  patch = np.arange(n) % (seq_len // patch_size)  # The time patch of each token.
  ends = (patch + 1) * patch_size
  return valid_samples[..., None] >= ends  # valid first: a jax array stays traced.
