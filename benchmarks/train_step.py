"""Pretraining-step throughput and MFU.

  python benchmarks/train_step.py --variant paper --batch_size 64 [--pairs] \
      [--dtype bfloat16] [--fsdp 1] [--steps 5]

Times the fused, jitted step of crema_jax.train (both masked views through encoder and
decoder, the contrastive losses, AdamW) on random inputs of the real shapes, and
reports FLOPs per step from XLA's cost analysis, MFU against a large matmul timed on the
same device, and peak memory. Prints one JSON object.
"""

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from crema_jax import masking
from crema_jax import optim
from crema_jax import sharding
from crema_jax import train


def matmul_peak_flops(dtype, n: int = 4096, repeats: int = 10) -> float:
  """FLOP/s of an n x n matmul on the default device: the 'peak' MFU divides by."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def random_batch(config, rng: np.random.Generator) -> dict:
  b, t = config.batch_size, config.data.seq_len
  n = masking.num_tokens(t, config.model.patch_size, config.model.num_leads,
                         config.model.token_layout)
  batch = {"has_pair": np.ones((b,), bool),
           "patient": rng.integers(0, b // 2, size=b).astype(np.int32)}
  for name in ("1", "2", "_pair"):
    key = "pair" if name == "_pair" else f"view{name}"
    batch[key] = rng.standard_normal((b, t, 12), dtype=np.float32)
    masks = [masking.random_masking(rng, n, config.mask_ratio) for _ in range(b)]
    batch[f"keep{name}"] = np.stack([m[0] for m in masks])
    batch[f"masked{name}"] = np.stack([m[1] for m in masks])
  return batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--fsdp", type=int, default=1)
  parser.add_argument("--pairs", action="store_true",
                      help="Also encode a same-patient ECG (data.patient_pairs).")
  args = parser.parse_args()

  config = common.base_config(args.variant, "hl")
  config.batch_size = args.batch_size
  config.compute_dtype = args.dtype
  config.data.patient_pairs = args.pairs
  config.mesh.fsdp = args.fsdp
  train.check_config(config)

  mesh = sharding.make_mesh(args.fsdp)
  model = train.build_model(config)
  optimizer = optim.make_optimizer(**config.optimizer, total_steps=config.total_steps)

  init_state = train.make_init_state(model, optimizer, config)
  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  state_shardings = sharding.param_shardings(mesh, abstract_state)
  state = jax.jit(init_state, out_shardings=state_shardings)(jax.random.key(0))
  step = train.make_train_step(model, optimizer, config, state_shardings, mesh)
  batch = sharding.global_batch(mesh, random_batch(config, np.random.default_rng(0)))

  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))

  state, out = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(out)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  step_seconds = float(np.median(times))
  peak = matmul_peak_flops(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  device = jax.devices()[0]
  memory = device.memory_stats() or {}
  params = sum(x.size for x in jax.tree.leaves(state.params))
  print(json.dumps({
      "variant": args.variant, "parameters": int(params), "batch_size": args.batch_size,
      "dtype": args.dtype, "patient_pairs": args.pairs,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "device": f"{device.platform}:{device.device_kind}",
      "device_count": jax.device_count(),
      "compile_seconds": round(compile_seconds, 2),
      "step_seconds": round(step_seconds, 4),
      "samples_per_second": round(args.batch_size / step_seconds, 2),
      "tflops_per_step": round(flops / 1e12, 4),
      "achieved_tflops": round(flops / step_seconds / 1e12, 4),
      "matmul_peak_tflops": round(peak / 1e12, 4),
      "mfu": round(flops / step_seconds / (peak * jax.device_count()), 3),
      "loss": float(out["loss"]),
      "peak_device_bytes_per_device": memory.get("peak_bytes_in_use"),
      "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                / 1024, 1),
  }, indent=1))


if __name__ == "__main__":
  main()
