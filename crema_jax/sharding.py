"""Device mesh and shardings: batch over every device, parameters replicated or FSDP.

The mesh has axes ('data', 'fsdp'). The batch is split over both axes together (every
device gets its own examples); with fsdp > 1 each parameter's largest divisible
dimension is additionally split over 'fsdp', and XLA gathers it where it is used.
"""

from __future__ import annotations

from typing import Any

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


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]) -> dict:
  """This process's numpy batch -> global jax Arrays sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
