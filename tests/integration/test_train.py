"""Pretraining: config refusal, the loop, 1-vs-8-device equivalence, exact resume after
a kill, SIGTERM checkpoints, NaN detection."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crema_jax import checkpoint
from crema_jax.data import storage
from crema_jax.input import pipeline
from crema_jax import metrics
from crema_jax import models
from crema_jax.models import sizing
from crema_jax import optim
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax import train

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(demo_config, **overrides):
  config = demo_config.copy_and_resolve_references()
  config.log_every = 1
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def _losses(workdir):
  return {row["step"]: row["loss"] for row in
          metrics.read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")}


@pytest.mark.parametrize("key,value,message", [
    ("model.patch_size", 60, "model: seq_len=5000 is not a multiple of patch_size=60"),
    ("model.emb_dim", 126, "model: emb_dim=126 is not divisible by num_heads=4"),
    ("model.decoder_dim", 63, "model: decoder_dim=63 must be even"),
    ("model.pool", "cls", "model: pool='cls' needs use_cls=True"),
    ("loss.reconstruction", 0.0, None),  # With the two below: all weights zero.
    ("data.worker_count", "many", "data.worker_count='many'"),
    ("batch_size", 12, "batch_size=12 is not divisible by the 8 devices"),
    ("loss.sample", -1.0, "loss.sample=-1.0 is negative"),
    ("mask_ratio", 1.0, "mask_ratio=1.0 is not in"),
    ("compute_dtype", "float64", "compute_dtype='float64'"),
])
def test_bad_config_refused_before_any_work(demo_config, tmp_path, key, value, message):
  config = _config(demo_config, **{key: value})
  if message is None:
    config.loss.sample = config.loss.patient = 0.0
    message = "are all zero: nothing to learn"
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
    train.pretrain(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_missing_prepared_data_is_refused_with_the_prepare_command(demo_config,
                                                                    tmp_path):
  config = _config(demo_config, **{"data.data_dir": str(tmp_path / "not_prepared")})
  with pytest.raises(FileNotFoundError, match=r"no prepared dataset at .*not_prepared"
                     r"(.|\n)*python -m crema_jax.data.prepare"):
    train.pretrain(config, tmp_path / "run")
  assert not (tmp_path / "run").exists() and not (tmp_path / "not_prepared").exists()


@pytest.fixture(scope="module")
def reference_run(demo_config, tmp_path_factory):
  """An uninterrupted 6-step run, logging every step."""
  workdir = tmp_path_factory.mktemp("reference")
  summary = train.pretrain(_config(demo_config), workdir)
  return workdir, summary


def test_pretraining_writes_checkpoints_and_metrics(reference_run):
  workdir, summary = reference_run
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 7))
  assert all(np.isfinite(v) for v in losses.values())
  assert summary["step"] == 6 and summary["start_step"] == 0
  assert (workdir / "config.json").is_file()
  assert list((workdir / "tensorboard").iterdir())
  mngr = checkpoint.manager(workdir, read_only=True)
  assert mngr.latest_step() == 6
  assert checkpoint.restore_config(mngr).batch_size == 8


def _step_inputs(demo_config):
  """(config, one host batch, model, optimizer, host params) for direct step tests."""
  config = _config(demo_config)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  batch = step_lib.host_inputs(next(iter(pipeline.pretrain_dataset(config, prepared))))
  model = models.build(config)
  optimizer = optim.make_optimizer(**config.optimizer, total_steps=config.total_steps)
  params = jax.device_get(models.init_params(model, jax.random.key(0)))
  return config, batch, model, optimizer, params


def test_one_and_eight_devices_give_the_same_step(demo_config):
  """The same views (augmentation and masks drawn per example, not per device), the
  same losses and the same updated parameters on 1 and on 8 devices."""
  config, batch, model, optimizer, params = _step_inputs(demo_config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(1, devices)
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    state = jax.device_put(state, shardings)
    step = step_lib.make_train_step(model, optimizer, config, shardings, mesh)
    losses, norms = [], []
    for _ in range(3):
      global_batch = sharding.global_batch(mesh, batch)
      assert len(global_batch["signals"].sharding.device_set) == len(devices)
      state, step_metrics = step(state, global_batch)
      losses.append(float(step_metrics["loss"]))
      norms.append(float(step_metrics["grad_norm"]))
    results.append((jax.device_get(state.params), losses, norms))
  (p1, l1, g1), (p8, l8, g8) = results
  np.testing.assert_allclose(l1, l8, rtol=1e-5)  # Losses before and after updates.
  np.testing.assert_allclose(g1, g8, rtol=1e-4)
  # Adam divides by the gradients' own scale: near-zero gradients' float noise
  # moves a parameter by up to ~1e-5 of the 3e-3 that three steps can move it.
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


def _start(demo_config, workdir, *extra):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, "-m", "crema_jax.main", "--config", "configs/demo.py:test",
       "--workdir", str(workdir), "--config.mode=pretrain",
       f"--config.data.raw_dir={demo_config.data.raw_dir}",
       f"--config.data.data_dir={demo_config.data.data_dir}", "--config.log_every=1",
       *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    if process.poll() is not None:
      raise AssertionError(f"run exited early:\n{process.stdout.read().decode()}")
    if time.time() > deadline:
      process.kill()
      raise AssertionError("timed out")
    time.sleep(0.05)


def test_killed_run_resumes_exactly(demo_config, reference_run, tmp_path):
  reference, _ = reference_run
  workdir = tmp_path / "run"
  process = _start(demo_config, workdir)
  _wait_for(lambda: (workdir / "checkpoints" / "4").is_dir() and
            (workdir / "checkpoints" / "4" / "_CHECKPOINT_METADATA").exists(), process)
  process.kill()  # SIGKILL: no chance to save anything more.
  process.wait()
  summary = train.pretrain(_config(demo_config), workdir)
  assert summary["start_step"] >= 4
  rows = metrics.read_jsonl(workdir / "metrics.jsonl")
  assert [row["step"] for row in rows] == list(range(1, 7))  # Each step logged once.
  resumed, expected = _losses(workdir), _losses(reference)
  for step in range(summary["start_step"] + 1, 7):
    np.testing.assert_allclose(resumed[step], expected[step], rtol=1e-6)


def test_sigterm_saves_a_checkpoint_and_exits(demo_config, tmp_path):
  workdir = tmp_path / "run"
  process = _start(demo_config, workdir, "--config.total_steps=100000",
                   "--config.checkpoint_every=1000")
  _wait_for(lambda: (workdir / "metrics.jsonl").is_file() and
            len(_losses(workdir)) >= 2, process)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=120)[0].decode()
  assert process.returncode == 0, output
  assert "SIGTERM" in output and '"preempted": true' in output
  saved = checkpoint.manager(workdir, read_only=True).latest_step()
  assert saved is not None and saved >= 2 and saved == max(_losses(workdir))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(demo_config,
                                                                  tmp_path):
  config = _config(demo_config, checkpoint_every=1, **{"optimizer.lr": 1e38,
                                                      "optimizer.warmup_steps": 0,
                                                      "optimizer.clip_norm": 0.0})
  with pytest.raises(FloatingPointError, match=r"at step \d+; the last good checkpoint"):
    train.pretrain(config, tmp_path)
  losses = _losses(tmp_path)
  mngr = checkpoint.manager(tmp_path, read_only=True)
  assert mngr.latest_step() == max(losses)
  assert all(np.isfinite(v) for v in losses.values())


def test_fsdp_and_sharded_optimizer_match_replicated(demo_config):
  """FSDP (parameters split over 2 devices) and ZeRO-1 (`mesh.shard_optimizer`:
  AdamW's moments split over all 8, parameters replicated) take the replicated
  run's steps."""
  config, batch, model, optimizer, params = _step_inputs(demo_config)
  runs = {}
  for name, fsdp, shard_optimizer in (("replicated", 1, False), ("fsdp", 2, False),
                                      ("zero1", 1, True)):
    mesh = sharding.make_mesh(fsdp)
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    shardings = sharding.param_shardings(mesh, state, min_size=1024)
    if shard_optimizer:
      shardings = shardings.replace(opt_state=sharding.optimizer_shardings(
          mesh, state.opt_state, min_size=1024))
    state = jax.device_put(state, shardings)
    step = step_lib.make_train_step(model, optimizer, config, shardings, mesh)
    losses = []
    for _ in range(3):
      state, step_metrics = step(state, sharding.global_batch(mesh, batch))
      losses.append(float(step_metrics["loss"]))
    kernel = state.params["encoder"]["block0"]["mlp"]["fc1"]["kernel"]
    moment = max(jax.tree.leaves(state.opt_state), key=lambda x: x.size)
    runs[name] = (losses, kernel.addressable_shards[0].data.nbytes / kernel.nbytes,
                  moment.addressable_shards[0].data.nbytes / moment.nbytes, kernel)
  assert runs["replicated"][1:3] == (1.0, 1.0)  # Every device holds everything.
  assert runs["fsdp"][1] == 0.5 and "fsdp" in str(runs["fsdp"][3].sharding.spec)
  assert runs["zero1"][1:3] == (1.0, 1 / 8)
  for name in ("fsdp", "zero1"):
    np.testing.assert_allclose(runs[name][0], runs["replicated"][0], rtol=1e-5)
    np.testing.assert_allclose(runs[name][3], runs["replicated"][3], rtol=1e-5,
                               atol=1e-6)


def _compiled_step(config, batch, devices):
  """(compiled step, state) of `config` on a mesh over `devices`."""
  mesh = sharding.make_mesh(1, devices)
  run = step_lib.build_run(config, mesh)
  global_batch = sharding.global_batch(mesh, batch)
  compiled = run.train_step.lower(run.restore_target(), global_batch).compile()
  state = run.initial_state(jax.random.key(0))
  return compiled, state, global_batch


def test_bfloat16_step_and_the_memory_estimate_on_the_compiled_step(demo_config):
  config, batch, *_ = _step_inputs(demo_config)
  devices = jax.devices()[:1]  # The whole batch on one device: activations dominate.
  runs = {}
  for dtype in ("float32", "bfloat16"):
    compiled, state, global_batch = _compiled_step(
        _config(demo_config, compute_dtype=dtype), batch, devices)
    state, out = compiled(state, global_batch)
    runs[dtype] = (compiled.memory_analysis(), float(out["loss"]), state)
  (f32, loss32, _), (_, loss16, state16) = runs["float32"], runs["bfloat16"]
  # bfloat16 compute keeps float32 master weights and optimizer state.
  assert {x.dtype for x in jax.tree.leaves(state16.params)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(state16.opt_state)
          if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(loss16, loss32, rtol=5e-2)
  # The analytic estimate behind configs/pretrain.py:fit_memory is an upper-end one.
  compiled_bytes = (f32.argument_size_in_bytes + f32.output_size_in_bytes
                    - f32.alias_size_in_bytes + f32.temp_size_in_bytes)
  estimate = sizing.estimate_train_bytes(
      config.model.to_dict(), seq_len=config.data.seq_len, mask_ratio=config.mask_ratio,
      batch_per_device=config.batch_size)
  assert compiled_bytes <= estimate <= 4 * compiled_bytes, (compiled_bytes, estimate)


def test_parameter_count_without_building_the_model():
  from configs import common  # pylint: disable=g-import-not-at-top
  for variant in ("tiny", "paper", "L"):
    fields = dict(common.model_config(variant))
    model = models.CREMA(seq_len=models.VARIANTS[variant]["seq_len"], **fields)
    shapes = jax.eval_shape(lambda m=model: models.init_params(m, jax.random.key(0), 0.75))
    assert sizing.count_params(fields) == sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("fsdp", [1, 2])
def test_the_step_moves_no_signals_tokens_or_latents_between_devices(demo_config, fsdp):
  """Compiled on 8 devices (HL with pair views), the step's collectives carry only the
  contrastive embeddings, the loss and the gradient reductions (and FSDP's parameter
  gathers): what XLA's HLO says moves between devices."""
  # Sizes chosen apart: 2 x batch (similarities), proj_dim, the widths, the time.
  config = _config(demo_config, batch_size=56, **{"mesh.fsdp": fsdp,
                                                  "model.proj_dim": 96})
  mesh = sharding.make_mesh(fsdp)
  run = step_lib.build_run(config, mesh)
  rng = np.random.default_rng(0)
  batch = {"signals": rng.standard_normal((56, 3, 12, 5000)).astype(np.float16),
           "valid": np.full((56, 3), 5000, np.int32),
           "patient": np.arange(56, dtype=np.int32) // 2, "has_pair": np.ones(56, bool)}
  compiled = run.train_step.lower(run.restore_target(),
                                  sharding.global_batch(mesh, batch)).compile()
  found = sharding.collectives(compiled.as_text())
  m = config.model
  moving = sharding.activation_collectives(
      found, [x.shape for x in jax.tree.leaves(run.abstract_state.params)],
      seq_len=config.data.seq_len,
      token_widths={m.patch_size * m.num_leads, m.emb_dim, m.decoder_dim}, fsdp=fsdp)
  assert found and not moving, moving
  kinds = {c["kind"] for c in found}
  assert "all-reduce" in kinds  # Gradients and the loss.
