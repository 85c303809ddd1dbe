"""Named CREMA variants and the one way to build a model from a config.

`VARIANTS[name]` holds the constructor fields of `CREMA` for each named size (the
compute dtype is chosen by the run, not the variant); configs start from one
(`configs.common.model_config(name)`) and may override any field. `build(config)` is
the single build path of pretraining, evaluation and the benchmarks.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from crema_jax.models.crema import CREMA
from crema_jax.models.crema import shape_problems

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _variant(emb_dim: int, depth: int, num_heads: int, *, patch_size: int = 125,
             seq_len: int = 5000, token_layout: str = "joint", decoder_dim: int = 512,
             decoder_depth: int = 2, decoder_heads: int = 16, proj_dim: int = 256
             ) -> dict:
  return dict(seq_len=seq_len, num_leads=12, patch_size=patch_size,
              token_layout=token_layout, emb_dim=emb_dim, depth=depth,
              num_heads=num_heads, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
              decoder_heads=decoder_heads, mlp_ratio=4.0, proj_hidden_dim=emb_dim,
              proj_dim=proj_dim, use_cls=False, pool="mean", norm_targets=False,
              dropout=0.0, drop_path=0.0, remat=False)


_TINY = dict(decoder_dim=64, decoder_depth=1, decoder_heads=4, proj_dim=128)

VARIANTS = {
    # Minutes of CPU pretraining: the demo and the tests (100 tokens, or 240 per lead).
    "tiny": _variant(128, 2, 4, patch_size=50, **_TINY),
    "tiny_per_lead": _variant(128, 2, 4, patch_size=250, token_layout="per_lead",
                              **_TINY),
    # The paper's best setting (35.6 M parameters) and its ablations. 60 does not
    # divide 5000, so the patch-60 model takes 4980 samples (83 patches, 9.96 s at
    # 500 Hz), cropped from the 10 s record rather than padded.
    "paper": _variant(1024, 2, 16),
    "paper_p60": _variant(1024, 2, 16, patch_size=60, seq_len=4980),
    "paper_p250": _variant(1024, 2, 16, patch_size=250),
    "paper_per_lead": _variant(1024, 2, 16, token_layout="per_lead"),
    "paper_d1": _variant(1024, 1, 16),
    "paper_d4": _variant(1024, 4, 16),
    # Width x depth scaling at patch 125 (head width 64).
    "S": _variant(256, 4, 4, decoder_dim=256, decoder_heads=8),
    "M": _variant(512, 8, 8),
    "B": _variant(768, 12, 12),
    "L": _variant(1024, 12, 16),
}


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every reason `build(config)` would fail, without building anything."""
  problems = [f"model: {p}" for p in
              shape_problems(seq_len=config.data.seq_len, **config.model)]
  if config.compute_dtype not in COMPUTE_DTYPES:
    problems.append(f"compute_dtype={config.compute_dtype!r} is not one of "
                    f"{sorted(COMPUTE_DTYPES)}")
  return problems


def build(config: ml_collections.ConfigDict) -> CREMA:
  """The CREMA of a run config: `config.model` fields, `data.seq_len`, and
  `compute_dtype` ("float32" or "bfloat16"; parameters stay float32)."""
  problems = config_problems(config)
  if problems:
    raise ValueError("Invalid model config:\n  " + "\n  ".join(problems))
  return CREMA(seq_len=config.data.seq_len, dtype=COMPUTE_DTYPES[config.compute_dtype],
               **config.model)
