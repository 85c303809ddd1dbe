"""Device mesh and shardings: batch over every device, parameters replicated or FSDP;
and what a compiled program moves between devices (`collectives`).

The mesh has axes ('data', 'fsdp'). The batch is split over both axes together (every
device gets its own examples); with fsdp > 1 each parameter's largest divisible
dimension is additionally split over 'fsdp', and XLA gathers it where it is used.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

BATCH_AXES = ("data", "fsdp")


def make_mesh(fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must divide the {n} devices")
  return jax.make_mesh((n // fsdp, fsdp), ("data", "fsdp"), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """Splits the largest dimension divisible by `fsdp` (if the array is big enough)."""
  if fsdp == 1 or int(np.prod(shape)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def param_shardings(mesh: jax.sharding.Mesh, abstract_tree: Any,
                    min_size: int = 2 ** 14) -> Any:
  """NamedShardings for a parameter (or optimizer state) tree."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), fsdp, min_size)),
      abstract_tree)


def optimizer_shardings(mesh: jax.sharding.Mesh, abstract_tree: Any,
                        min_size: int = 2 ** 14) -> Any:
  """NamedShardings that split each large optimizer-state leaf over every device (its
  largest dimension divisible by the device count), as ZeRO stage 1 does: each
  device updates its share of the parameters and XLA gathers them back, so the
  AdamW update (memory-bound: ~28 bytes per parameter) costs each device 1/n."""
  n = mesh.size

  def spec(x):
    shape = tuple(x.shape)
    if int(np.prod(shape, dtype=np.int64)) < min_size:
      return NamedSharding(mesh, P())
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % n == 0:
        axes = [None] * len(shape)
        axes[dim] = BATCH_AXES
        return NamedSharding(mesh, P(*axes))
    return NamedSharding(mesh, P())

  return jax.tree.map(spec, abstract_tree)


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading dimension of `x` with zeros to `n` (a last, smaller batch to the
  size the step was compiled for)."""
  return np.pad(x, [(0, n - len(x))] + [(0, 0)] * (x.ndim - 1))


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]) -> dict:
  """This process's numpy batch -> global jax Arrays sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


# ------------------------------------------------------------------ collectives
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute",
               "all-to-all")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_COLLECTIVE_LINE = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shapes>.+?)\s+"
    r"(?P<kind>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_SHAPE = re.compile(r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")


def collectives(hlo_text: str) -> list[dict]:
  """The collectives of a compiled program's HLO (`compiled.as_text()`), one dict
  each: kind, shapes (a list of (dtype, dims) results; asynchronous `-start` ops
  list their one result) and bytes (what one device receives or sends)."""
  found = []
  for line in hlo_text.splitlines():
    match = _COLLECTIVE_LINE.match(line)
    if not match:
      continue
    shapes = [(s["dtype"], tuple(int(d) for d in s["dims"].split(",") if d))
              for s in _SHAPE.finditer(match["shapes"]) if s["dtype"] in _DTYPE_BYTES]
    sizes = [_DTYPE_BYTES[dtype] * int(np.prod(dims)) for dtype, dims in shapes]
    if match["start"] and shapes:  # (operand, result[, scratch]): the largest.
      largest = int(np.argmax(sizes))
      shapes, sizes = [shapes[largest]], [sizes[largest]]
    found.append({"kind": match["kind"], "shapes": shapes, "bytes": int(sum(sizes))})
  return found


def summarize_collectives(found: list[dict]) -> dict:
  """{kind: {"count", "bytes"}} per device and step."""
  summary = {}
  for c in found:
    entry = summary.setdefault(c["kind"], {"count": 0, "bytes": 0})
    entry["count"] += 1
    entry["bytes"] += c["bytes"]
  return summary


def activation_collectives(found: list[dict], param_shapes: Iterable[tuple[int, ...]],
                           *, seq_len: int, token_widths: Iterable[int],
                           fsdp: int = 1) -> list[dict]:
  """The collectives of `found` that move signals, tokens or latents.

  A shape is a signal's when it has the time axis (`seq_len`), and a token's or
  latent's when it is not a parameter's (up to a transpose, unit axes and a split of
  its axes: gradient reductions use XLA's layouts and the shapes layers read kernels
  in; or an FSDP shard of one, one axis divided by `fsdp`), has rank 2 or more and
  ends in a token width (a token's patch values, the encoder or decoder width). The contrastive embeddings
  and similarities, the loss and per-example scalars are none of these."""
  def canonical(shape):
    return tuple(sorted(d for d in shape if d != 1))

  params = set()
  for shape in map(tuple, param_shapes):
    params.add(tuple(d for d in shape if d != 1))
    for axis, size in enumerate(shape):
      if fsdp > 1 and size % fsdp == 0:
        params.add(tuple(d for d in shape[:axis] + (size // fsdp,) + shape[axis + 1:]
                         if d != 1))
  widths = set(token_widths)

  def splits(shape, param) -> bool:
    """Whether shape's axes, grouped in order, multiply to param's (a reshape that
    splits axes, as a layer that reads a kernel [dim, dim] as [heads, head_dim, dim]
    reduces its gradient)."""
    i = 0
    for size in param:
      product = 1
      while product < size and i < len(shape):
        product *= shape[i]
        i += 1
      if product != size:
        return False
    return i == len(shape)

  def is_param(shape) -> bool:
    shape = tuple(d for d in shape if d != 1)
    return any(canonical(shape) == canonical(p) or
               any(splits(shape, order) for order in itertools.permutations(p))
               for p in params)

  def moves_activations(shape) -> bool:
    if seq_len in shape:
      return True
    return len(shape) >= 2 and shape[-1] in widths and not is_param(shape)

  return [c for c in found if any(moves_activations(d) for _, d in c["shapes"])]
