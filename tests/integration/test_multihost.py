"""Multi-host pretraining on one machine: 2 processes x 4 CPU devices in one
`jax.distributed` job on 127.0.0.1, started by `launch/local_multiprocess.sh` (its
environment contract: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).

What "the same losses as 1 process x 8 devices" means here. With 2 processes each one
reads its own half of the records (`pipeline.pretrain_dataset(process_index=i,
process_count=2)`) and the global batch is process 0's 4 examples followed by process
1's 4 (process 0 owns the first 4 devices of the mesh). A 1-process run of the same
config reads other examples in another order, so its losses are no reference. The
reference is 1 process x 8 devices stepping the same train step, from the same seed, on
the same global batches, assembled in this process from the two per-process streams:
only the number of processes differs, not the data.

One job, two launches on one workdir:
1. after checkpoint 2, process 1 is SIGKILLed; the launcher stops process 0 (as a
   scheduler tears down a job whose host died);
2. the relaunch resumes from the last checkpoint; after a few steps process 1 alone gets
   SIGTERM (a preemption notice): both processes save one checkpoint at the same step
   and exit 0.
Every logged step's loss, across both launches, equals the 1 x 8 reference.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crema_jax import checkpoint
from crema_jax.data import storage
from crema_jax import distributed
from crema_jax.input import pipeline
from crema_jax import metrics
from crema_jax import sharding
from crema_jax import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
PROCESSES, DEVICES_PER_PROCESS = 2, 4
TOTAL_STEPS = 12
LAUNCH_TIMEOUT = 300  # Seconds for one launch (import, compile, a few tiny steps).


class _Launch:
  """launch/local_multiprocess.sh running crema_jax.main on `workdir`; process 0's
  output in `log_dir/launcher.log`, process i's pid in `log_dir/process_i.pid`."""

  def __init__(self, demo_config, workdir, log_dir: pathlib.Path):
    log_dir.mkdir(parents=True)
    self.log_dir = log_dir
    self.log = log_dir / "launcher.log"
    with open(self.log, "wb") as out:
      self.process = subprocess.Popen(
          ["bash", "launch/local_multiprocess.sh", "-n", str(PROCESSES), "-d",
           str(DEVICES_PER_PROCESS), "-l", str(log_dir), "--",
           "--config", "configs/demo.py:test", "--workdir", str(workdir),
           "--config.mode=pretrain", f"--config.data.raw_dir={demo_config.data.raw_dir}",
           f"--config.data.data_dir={demo_config.data.data_dir}",
           f"--config.total_steps={TOTAL_STEPS}", "--config.log_every=1",
           "--config.checkpoint_every=2", "--config.checkpoint_keep=20"],
          cwd=REPO, env=dict(os.environ, PYTHON=sys.executable, STOP_GRACE="3"),
          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

  def output(self) -> str:
    return self.log.read_text(errors="replace")

  def pid(self, i: int) -> int:
    return int((self.log_dir / f"process_{i}.pid").read_text())

  def wait_for(self, predicate, timeout: float = LAUNCH_TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not predicate():
      if self.process.poll() is not None:
        raise AssertionError(f"launch exited early ({self.process.returncode}):\n"
                             f"{self.output()[-3000:]}")
      if time.time() > deadline:
        raise AssertionError(f"timed out; process 0:\n{self.output()[-3000:]}")
      time.sleep(0.05)

  def wait(self, timeout: float = LAUNCH_TIMEOUT) -> int:
    return self.process.wait(timeout=timeout)

  def kill(self) -> None:
    """SIGKILL to the launcher and every process it started."""
    if self.process.poll() is None:
      os.killpg(self.process.pid, signal.SIGKILL)  # Its own session: start_new_session.
      self.process.wait(timeout=30)


def _losses(workdir) -> dict[int, float]:
  return {row["step"]: row["loss"] for row in
          metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")}


def _completed(workdir, step: int) -> bool:
  return (pathlib.Path(workdir) / "checkpoints" / str(step) /
          "_CHECKPOINT_METADATA").exists()


def _latest_step(workdir) -> int | None:
  mngr = checkpoint.manager(workdir, read_only=True)
  step = mngr.latest_step()
  mngr.close()
  return step


@pytest.fixture(scope="module")
def job_life(demo_config, tmp_path_factory):
  """The two launches of one job (see the module docstring); returns what each saw."""
  root = tmp_path_factory.mktemp("multihost")
  workdir = root / "run"
  life = {"workdir": workdir}
  launches = []
  try:
    # 1. SIGKILL process 1 after checkpoint 2; the launcher stops process 0.
    launch = _Launch(demo_config, workdir, root / "launch1")
    launches.append(launch)
    launch.wait_for(lambda: _completed(workdir, 2))
    os.kill(launch.pid(1), signal.SIGKILL)
    life["killed_returncode"] = launch.wait()
    life["killed_output"] = launch.output()
    life["killed_saved"] = _latest_step(workdir)

    # 2. Resume; SIGTERM to process 1 after two more steps.
    launch = _Launch(demo_config, workdir, root / "launch2")
    launches.append(launch)
    resumed_from = life["killed_saved"]
    launch.wait_for(lambda: "Resumed from" in launch.output() and
                    max(_losses(workdir)) >= resumed_from + 2)
    os.kill(launch.pid(1), signal.SIGTERM)
    life["preempted_returncode"] = launch.wait()
    life["preempted_output"] = launch.output()
    life["preempted_saved"] = _latest_step(workdir)
    life["preempted_data_files"] = sorted(
        f.name for f in (workdir / "checkpoints" / str(life["preempted_saved"]) /
                         "data").glob("process_*.json"))
  finally:
    for launch in launches:
      launch.kill()
  return life


def _reference_losses(demo_config, steps: int) -> list[float]:
  """1 process x 8 devices on the global batches a 2-process job assembles."""
  config = demo_config.copy_and_resolve_references()
  config.total_steps = TOTAL_STEPS
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  streams = [iter(pipeline.pretrain_dataset(config, prepared, process_index=i,
                                            process_count=PROCESSES))
             for i in range(PROCESSES)]
  mesh = sharding.make_mesh(config.mesh.fsdp)
  assert mesh.devices.size == PROCESSES * DEVICES_PER_PROCESS
  run = step_lib.build_run(config, mesh)
  state = run.initial_state(jax.random.key(config.seed))
  step = run.train_step
  losses = []
  for _ in range(steps):
    parts = [next(s) for s in streams]  # Process 0's examples, then process 1's.
    batch = jax.tree.map(lambda *x: np.concatenate(x), *parts)
    state, step_metrics = step(state, sharding.global_batch(mesh,
                                                             step_lib.host_inputs(batch)))
    losses.append(float(step_metrics["loss"]))
  return losses


def test_killed_process_job_resumes_from_the_last_checkpoint(job_life):
  killed = job_life["killed_saved"]
  assert job_life["killed_returncode"] != 0  # The launcher reports the lost process.
  assert "stopping the others" in job_life["killed_output"]
  assert 2 <= killed < TOTAL_STEPS  # Killed mid-run.
  assert f"Resumed from step {killed}" in job_life["preempted_output"]
  rows = metrics.read_jsonl(job_life["workdir"] / "metrics.jsonl")
  assert [row["step"] for row in rows] == list(range(1, job_life["preempted_saved"] + 1))


def test_preemption_notice_to_one_process_saves_one_step_on_every_process(job_life):
  assert job_life["preempted_returncode"] == 0, job_life["preempted_output"][-3000:]
  assert "SIGTERM (preemption): saved step" in job_life["preempted_output"]
  saved = job_life["preempted_saved"]
  assert job_life["killed_saved"] + 2 <= saved < TOTAL_STEPS
  assert saved == max(_losses(job_life["workdir"]))
  assert job_life["preempted_data_files"] == ["process_0-of-2.json",
                                              "process_1-of-2.json"]


def test_two_processes_give_the_losses_of_one_process_on_the_same_batches(
    job_life, demo_config):
  losses = _losses(job_life["workdir"])
  got = [losses[s] for s in range(1, max(losses) + 1)]
  np.testing.assert_allclose(got, _reference_losses(demo_config, len(got)), rtol=2e-5)


def test_two_processes_read_disjoint_halves_other_than_one_process(demo_config):
  """Why the reference assembles batches: 1 process alone would read other examples."""
  prepared = storage.PreparedSource(demo_config.data.data_dir, demo_config.data.name)
  first = [next(iter(pipeline.pretrain_dataset(demo_config, prepared, process_index=i,
                                               process_count=n)))["position"]
           for n in (1, 2) for i in range(n)]
  alone, half0, half1 = first
  assert not set(half0) & set(half1)
  assert sorted(alone) != sorted(np.concatenate([half0, half1]))


def test_resume_with_another_process_count_is_refused(job_life, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(job_life["workdir"] / "checkpoints", workdir / "checkpoints")
  mngr = checkpoint.manager(workdir, read_only=True)
  with pytest.raises(ValueError, match=r"written by 2 process\(es\); this run has 1"):
    checkpoint.restore(mngr, {}, data_iterator=object())
  assert checkpoint.saved_process_count(mngr, mngr.latest_step()) == 2


@pytest.mark.parametrize("kwargs,environ,expected", [
    ({}, {}, (False, "no multi-process setting found")),
    ({"mode": "off", "coordinator_address": "h:1", "num_processes": 2, "process_id": 0},
     {}, (False, "off")),
    ({}, {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:5", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": "1"},
     (True, "env", {"coordinator_address": "127.0.0.1:5", "num_processes": 2,
                    "process_id": 1})),
    ({"coordinator_address": "h:7", "num_processes": 4, "process_id": 3,
      "local_device_ids": [0, 1]}, {"JAX_NUM_PROCESSES": "2"},
     (True, "explicit", {"coordinator_address": "h:7", "num_processes": 4,
                         "process_id": 3, "local_device_ids": [0, 1]})),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1",
          "JAX_PROCESS_ID": "0"}, (False, "a single process")),
    ({}, {"SLURM_JOB_ID": "42", "SLURM_STEP_NUM_TASKS": "8"}, (True, "slurm", {})),
    ({}, {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "1"},
     (False, "no multi-process setting found")),
    ({"on_tpu_vm": True}, {}, (True, "tpu", {})),
    ({"mode": "on"}, {}, (True, "jax cluster detection", {})),
])
def test_distributed_plan(kwargs, environ, expected):
  kwargs = {"on_tpu_vm": False, **kwargs}
  got = distributed.plan(kwargs.pop("mode", "auto"), environ=environ, **kwargs)
  assert (got.initialize, got.source, *([got.kwargs] if got.initialize else [])) == \
      expected


@pytest.mark.parametrize("kwargs,environ,message", [
    ({"coordinator_address": "h:1"}, {}, "num_processes, process_id not given"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": "2"}, r"process_id=2 is not in \[0, num_processes=2\)"),
    ({}, {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({"mode": "sometimes"}, {}, "distributed='sometimes' is not one of"),
])
def test_distributed_plan_refuses_incomplete_settings(kwargs, environ, message):
  with pytest.raises(ValueError, match=message):
    distributed.plan(kwargs.pop("mode", "auto"), environ=environ, on_tpu_vm=False,
                     **kwargs)


def test_parse_device_ids():
  assert distributed.parse_device_ids("0,1,3") == [0, 1, 3]
  assert distributed.parse_device_ids("") is None
  with pytest.raises(ValueError, match="comma-separated integers"):
    distributed.parse_device_ids("0;1")
