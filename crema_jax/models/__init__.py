"""CREMA models: the patch embedder, the Signal Transformer, CREMA itself, its named
variants (`VARIANTS`, `build(config)`) and their sizes (`sizing`)."""

from crema_jax.models.crema import check_shapes
from crema_jax.models.crema import CREMA
from crema_jax.models.crema import init_params
from crema_jax.models.crema import masked_targets
from crema_jax.models.crema import ProjectionHead
from crema_jax.models.patch_embed import PatchEmbed
from crema_jax.models.patch_embed import patchify
from crema_jax.models.patch_embed import select
from crema_jax.models.patch_embed import select_patches
from crema_jax.models.patch_embed import sincos_1d
from crema_jax.models.patch_embed import unpatchify
from crema_jax.models import sizing
from crema_jax.models.transformer import Block
from crema_jax.models.transformer import Transformer
from crema_jax.models.variants import build
from crema_jax.models.variants import COMPUTE_DTYPES
from crema_jax.models.variants import config_problems
from crema_jax.models.variants import VARIANTS
