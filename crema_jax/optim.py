"""AdamW with linear warmup and cosine decay, global-norm clipping, and no weight decay
on biases, normalisation parameters and embeddings."""

from __future__ import annotations

from typing import Any

import flax
import jax
import optax

# Parameter names (last path entry) that are never decayed: embeddings and tokens.
_NO_DECAY_NAMES = ("lead_embed", "decoder_lead_embed", "cls_token", "mask_token")


def make_schedule(lr: float, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.0, **unused) -> optax.Schedule:
  """0 -> lr linearly over warmup_steps, then cosine down to lr * min_lr_ratio."""
  del unused
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * min_lr_ratio)


def decay_mask(params: Any) -> Any:
  """True for the kernels that weight decay applies to, False for biases, LayerNorm
  scales and biases, position/lead/CLS/mask-token embeddings."""
  flat = flax.traverse_util.flatten_dict(params)
  mask = {path: (path[-1] == "kernel" and not any("norm" in str(p) for p in path))
          and path[-1] not in _NO_DECAY_NAMES for path in flat}
  return flax.traverse_util.unflatten_dict(mask)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.05, b1: float = 0.9, b2: float = 0.95,
                   clip_norm: float = 1.0, min_lr_ratio: float = 0.0
                   ) -> optax.GradientTransformation:
  schedule = make_schedule(lr, warmup_steps, total_steps, min_lr_ratio)
  return optax.chain(
      optax.clip_by_global_norm(clip_norm) if clip_norm > 0 else optax.identity(),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask))


def param_count(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
