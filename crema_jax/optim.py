"""AdamW with linear warmup and cosine decay, global-norm clipping, and no weight decay
on biases, normalisation parameters and learned embeddings/tokens."""

from __future__ import annotations

from typing import Any

import jax
import optax

# Learned embeddings and tokens: matrices, but not weights to shrink towards 0. (The
# sin-cos positions are fixed, not parameters.)
NO_DECAY_NAMES = frozenset({"lead_embed", "decoder_lead_embed", "cls_token",
                            "mask_token"})


def make_schedule(lr: float, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.0, **unused_optimizer_fields
                  ) -> optax.Schedule:
  """The learning rate: 0 -> lr linearly over warmup_steps, then a cosine down to
  lr * min_lr_ratio at total_steps (and held there).

  Other optimizer fields are accepted and ignored, so that a config's whole optimizer
  block can be passed: `make_schedule(**config.optimizer, total_steps=...)`.
  """
  del unused_optimizer_fields
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps} must be at least 1")
  # optax needs at least one decay step after the warmup.
  warmup_steps = max(0, min(warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * min_lr_ratio)


def _leaf_name(path: tuple[Any, ...]) -> str:
  last = path[-1]
  return str(getattr(last, "key", getattr(last, "name", last)))


def decay_mask(params: Any) -> Any:
  """A tree of bools like `params`: True where weight decay applies.

  Decayed: weight matrices and convolution kernels (ndim >= 2). Not decayed: biases
  and LayerNorm scales/biases (ndim 1) and the learned lead/CLS/mask-token embeddings
  (by name).
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and _leaf_name(path) not in NO_DECAY_NAMES, params)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.05, b1: float = 0.9, b2: float = 0.95,
                   clip_norm: float = 1.0, min_lr_ratio: float = 0.0
                   ) -> optax.GradientTransformation:
  """Global-norm clipping (off when clip_norm <= 0), then AdamW on `make_schedule`."""
  schedule = make_schedule(lr, warmup_steps, total_steps, min_lr_ratio)
  clip = optax.clip_by_global_norm(clip_norm) if clip_norm > 0 else optax.identity()
  return optax.chain(
      clip,
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask))

