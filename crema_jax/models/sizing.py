"""How big a CREMA is, without building it: its parameter count from the config fields,
and the memory one device holds during a pretraining step (what
`configs/pretrain.py:fit_memory` sizes a model by)."""

from __future__ import annotations

from typing import Any

import jax

# XLA keeps more per example than the tensors counted below (copies, fusion buffers):
# measured at 2-3x on the compiled CPU step (tests/test_train.py checks the bound).
ACTIVATION_SLACK = 3


def count_params(model: dict) -> int:
  """Parameters of a CREMA model from its config fields (joint token layout, no CLS
  token), without building it: the patch convolution, encoder and decoder blocks, the
  final norms, the projection head and the decoder's embedding and prediction."""
  e, dd, r = model["emb_dim"], model["decoder_dim"], model["mlp_ratio"]
  leads, patch = model["num_leads"], model["patch_size"]

  def blocks(d: int, depth: int) -> int:  # LN, qkv, proj, LN, fc1, fc2.
    hidden = int(d * r)
    return depth * (4 * d + 3 * d * d + 3 * d + d * d + d + 2 * d * hidden + hidden + d)

  patch_dim = patch * leads
  encoder = patch_dim * e + e + blocks(e, model["depth"]) + 2 * e
  head = e * model["proj_hidden_dim"] + model["proj_hidden_dim"] + (
      model["proj_hidden_dim"] * model["proj_dim"] + model["proj_dim"])
  decoder = (e * dd + dd + dd + blocks(dd, model["decoder_depth"]) + 2 * dd +
             dd * patch_dim + patch_dim)
  return encoder + head + decoder


def estimate_train_bytes(model: dict, *, seq_len: int, mask_ratio: float,
                         batch_per_device: int, compute_bytes: int = 4, fsdp: int = 1,
                         views: int = 3) -> int:
  """Rough bytes one device holds during a pretraining step (an upper-end estimate,
  checked against XLA's compiled memory analysis in tests/test_train.py).

  State: float32 parameters, gradients and two AdamW moments (16 bytes/parameter),
  split over `fsdp`; with fsdp > 1 plus one gathered copy in the compute dtype.
  Activations per example, `views` signals (two views, one patient pair) of `seq_len`
  x 12 float32: each encoder block keeps ~16 emb-wide tensors and the attention
  weights of the visible tokens (1 tensor with `remat`, plus one block's worth), the
  decoder the same over every token of the two views.
  """
  params = count_params(model)
  state = 16 * params // fsdp + (compute_bytes * params if fsdp > 1 else 0)
  tokens = seq_len // model["patch_size"]
  visible = views * max(int(tokens * (1 - mask_ratio)), 1)
  e, dd = model["emb_dim"], model["decoder_dim"]

  def block_bytes(width: int, n: int, heads: int) -> int:
    return compute_bytes * n * (16 * width + 2 * heads * n)

  enc = block_bytes(e, visible, model["num_heads"])
  dec = block_bytes(dd, 2 * tokens, model["decoder_heads"])
  if model.get("remat"):
    encoder = model["depth"] * compute_bytes * visible * e + enc
    decoder = model["decoder_depth"] * compute_bytes * 2 * tokens * dd + dec
  else:
    encoder, decoder = model["depth"] * enc, model["decoder_depth"] * dec
  signals = 4 * views * seq_len * model["num_leads"] * 3  # Inputs, crops, patches.
  return int(state + ACTIVATION_SLACK * batch_per_device * (encoder + decoder + signals))


def param_count(params: Any) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
  return sum(x.size for x in jax.tree.leaves(params))


def forward_flops(model: dict, *, seq_len: int, mask_ratio: float, views: int = 3,
                  decoded_views: int = 2) -> int:
  """Model FLOPs of one pretraining example's forward pass (joint token layout): the
  multiply-adds (x2) of the patch embedding, encoder blocks (projections, MLP and the
  attention core) and projection head on the K visible tokens of each of `views`
  views, and of the decoder (embedding, blocks over all N tokens, prediction of the
  M masked ones) on `decoded_views`. What MFU counts: an implementation's extra
  work (one-hot selections, masked heads) is not the model's."""
  e, dd, r = model["emb_dim"], model["decoder_dim"], model["mlp_ratio"]
  n = seq_len // model["patch_size"]
  m = min(int(round(n * mask_ratio)), n - 1)
  k = n - m
  patch_dim = model["patch_size"] * model["num_leads"]

  def block(d: int, tokens: int) -> int:  # qkv, proj, MLP; QK^T and PV.
    return 2 * tokens * (4 * d * d + 2 * d * int(d * r)) + 4 * tokens * tokens * d

  encoder = (2 * k * patch_dim * e + model["depth"] * block(e, k)
             + 2 * e * model["proj_hidden_dim"]
             + 2 * model["proj_hidden_dim"] * model["proj_dim"])
  decoder = (2 * k * e * dd + model["decoder_depth"] * block(dd, n)
             + 2 * m * dd * patch_dim)
  return views * encoder + decoded_views * decoder


def train_flops(model: dict, **kwargs) -> int:
  """Model FLOPs of one pretraining example's step: forward and backward (2x)."""
  return 3 * forward_flops(model, **kwargs)


def embed_flops(model: dict, *, seq_len: int) -> int:
  """Model FLOPs of embedding one whole ECG (every token through the encoder)."""
  return forward_flops(model, seq_len=seq_len, mask_ratio=0.0, views=1,
                       decoded_views=0) - 2 * model["emb_dim"] * model["proj_hidden_dim"] - (
                           2 * model["proj_hidden_dim"] * model["proj_dim"])
