"""CREMA models and their named variants.

`VARIANTS[name]` holds the constructor fields of `CREMA` for each named size; configs
start from one (`configs.common.model_config(name)`) and may override any field.
"""

from crema_jax.models.crema import CREMA
from crema_jax.models.crema import check_shapes
from crema_jax.models.crema import gather_tokens
from crema_jax.models.crema import init_params
from crema_jax.models.crema import masked_targets
from crema_jax.models.patch_embed import patchify
from crema_jax.models.patch_embed import unpatchify


def _variant(emb_dim, depth, num_heads, patch_size=125, decoder_dim=512,
             decoder_depth=2, decoder_heads=16, seq_len=5000, token_layout="joint"):
  return dict(seq_len=seq_len, num_leads=12, patch_size=patch_size,
              token_layout=token_layout, emb_dim=emb_dim, depth=depth,
              num_heads=num_heads, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
              decoder_heads=decoder_heads, mlp_ratio=4.0, proj_hidden_dim=emb_dim,
              proj_dim=256, use_cls=False, pool="mean", norm_targets=False,
              dropout=0.0, drop_path=0.0, remat=False)


VARIANTS = {
    # A few minutes of CPU pretraining: the demo and the tests.
    "tiny": _variant(128, 2, 4, patch_size=50, decoder_dim=64, decoder_depth=1,
                     decoder_heads=4),
    # The paper's best setting and its patch-size ablations (patch 60 needs a length
    # that 60 divides: 4980 samples, 9.96 s at 500 Hz).
    "paper": _variant(1024, 2, 16),
    "paper_p60": _variant(1024, 2, 16, patch_size=60, seq_len=4980),
    "paper_p250": _variant(1024, 2, 16, patch_size=250),
    "paper_per_lead": _variant(1024, 2, 16, token_layout="per_lead"),
    # Width and depth sweeps at patch 125.
    "S": _variant(256, 4, 4, decoder_dim=256, decoder_heads=8),
    "M": _variant(512, 4, 8, decoder_dim=256, decoder_heads=8),
    "B": _variant(768, 8, 12),
    "L": _variant(1024, 12, 16),
    "d1": _variant(1024, 1, 16),
    "d6": _variant(1024, 6, 16),
}
