"""Multi-host start-up: `jax.distributed.initialize()` when the job spans processes.

One JAX process runs per host (TPU VM workers), per GPU node or per GPU (SLURM), or per
slice of the CPU devices (`launch/local_multiprocess.sh`, the tests). `plan` decides
from the flags and the environment whether to initialise and with what; `initialize`
does it. A single-process run needs nothing and initialises nothing.

Where the settings come from, first match wins:
- explicit values (`--coordinator_address`, `--num_processes`, `--process_id`), else the
  environment contract of `launch/local_multiprocess.sh`: JAX_COORDINATOR_ADDRESS
  (host:port of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID;
- SLURM (SLURM_JOB_ID with more than one task in the step): JAX's own SLURM detection
  (coordinator on the first node, one process per task);
- a Cloud TPU VM: JAX's own TPU detection (workers from the TPU metadata), also for a
  single-host TPU VM, where it is harmless.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import jax
from jax._src import distributed as jax_distributed  # Its client: initialize() ran.
from jax.experimental import multihost_utils

MODES = ("auto", "on", "off")
_barrier_counts: dict[str, int] = {}  # Barrier ids are used once: name:count.


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `initialize` will do: `kwargs` go to `jax.distributed.initialize`."""
  initialize: bool
  source: str  # "explicit", "env", "slurm", "tpu", or why nothing is initialised.
  kwargs: dict = dataclasses.field(default_factory=dict)


def _on_cloud_tpu_vm() -> bool:
  try:  # JAX's own check (libtpu present and a TPU device on the PCI bus).
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    return bool(cloud_tpu_init.running_in_cloud_tpu_vm)
  except (ImportError, AttributeError):
    return False


def _slurm_tasks(environ: Mapping[str, str]) -> int:
  """The number of tasks of this SLURM job step (0 outside SLURM)."""
  if "SLURM_JOB_ID" not in environ:
    return 0
  for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
    if environ.get(name, "").isdigit():
      return int(environ[name])
  return 0


def parse_device_ids(text: str | None) -> list[int] | None:
  """'0,1,2,3' -> [0, 1, 2, 3]; '' or None -> None (JAX's default)."""
  if not text:
    return None
  try:
    return [int(x) for x in text.split(",")]
  except ValueError:
    raise ValueError(f"local_device_ids={text!r}: expected comma-separated integers, "
                     "e.g. 0,1,2,3") from None


def plan(mode: str = "auto", *, coordinator_address: str | None = None,
         num_processes: int | None = None, process_id: int | None = None,
         local_device_ids: Sequence[int] | None = None,
         environ: Mapping[str, str] | None = None,
         on_tpu_vm: bool | None = None) -> Plan:
  """Whether and how to call `jax.distributed.initialize` (pure: no side effects).

  Args:
    mode: "auto" (initialise when a multi-process setting is found), "on" (always:
      JAX detects the cluster where nothing is given) or "off" (never).
    coordinator_address, num_processes, process_id, local_device_ids: explicit values
      (flags); unset ones are read from the environment.
    environ: the environment (default os.environ).
    on_tpu_vm: whether this is a Cloud TPU VM (default: JAX's own check).
  """
  if mode not in MODES:
    raise ValueError(f"distributed={mode!r} is not one of {MODES}")
  environ = os.environ if environ is None else environ
  if mode == "off":
    return Plan(False, "off")

  def env_int(name: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
      return None
    if not value.lstrip("-").isdigit():
      raise ValueError(f"{name}={value!r} is not an integer")
    return int(value)

  explicit = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  from_env = dict(coordinator_address=environ.get("JAX_COORDINATOR_ADDRESS") or None,
                  num_processes=env_int("JAX_NUM_PROCESSES"),
                  process_id=env_int("JAX_PROCESS_ID"))
  given = {k: v if v is not None else from_env[k] for k, v in explicit.items()}
  source = ("explicit" if any(v is not None for v in explicit.values()) else
            "env" if any(v is not None for v in from_env.values()) else None)
  device_kw = {} if local_device_ids is None else {"local_device_ids":
                                                    list(local_device_ids)}
  if source is not None:
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(
          f"multi-process settings are incomplete: {', '.join(missing)} not given "
          "(flags --coordinator_address/--num_processes/--process_id or the "
          "environment JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID)")
    if not 0 <= given["process_id"] < given["num_processes"]:
      raise ValueError(f"process_id={given['process_id']} is not in "
                       f"[0, num_processes={given['num_processes']})")
    if given["num_processes"] == 1 and mode == "auto":
      return Plan(False, "a single process")
    return Plan(True, source, {**given, **device_kw})
  if _slurm_tasks(environ) > 1:
    return Plan(True, "slurm", device_kw)
  if on_tpu_vm is None:
    on_tpu_vm = _on_cloud_tpu_vm()
  if on_tpu_vm:
    return Plan(True, "tpu", device_kw)
  if mode == "on":
    return Plan(True, "jax cluster detection", device_kw)
  return Plan(False, "no multi-process setting found")


def initialize(mode: str = "auto", **kwargs) -> Plan:
  """Calls `jax.distributed.initialize` when `plan(mode, **kwargs)` says so.

  Must run before anything touches a JAX backend (jax.devices(), any array)."""
  p = plan(mode, **kwargs)
  if p.initialize and not is_initialized():
    jax.distributed.initialize(**p.kwargs)
  return p


def is_initialized() -> bool:
  """Whether this process belongs to a `jax.distributed` job."""
  return jax_distributed.global_state.client is not None


def barrier(name: str, timeout_s: float = 3600) -> None:
  """Waits until every process gets here (a no-op outside `jax.distributed`).

  A coordination-service barrier, not a device collective: it may wait long (process
  0 preparing data) where a collective would time out after 30 s."""
  if is_initialized() and jax.process_count() > 1:
    count = _barrier_counts[name] = _barrier_counts.get(name, 0) + 1
    jax_distributed.global_state.client.wait_at_barrier(f"{name}:{count}",
                                                        int(timeout_s * 1000))


def reached_preemption_sync_point(step: int) -> bool:
  """True on every process at the same step once any process got a preemption notice
  (SIGTERM, as TPU VMs and SLURM send it); False outside `jax.distributed`.

  Every process must call it at every step."""
  if not is_initialized():
    return False
  return multihost_utils.reached_preemption_sync_point(step)
