"""Pretraining-step throughput, MFU and memory per device, on a (data, fsdp) mesh.

  python benchmarks/train_step.py --variant paper --batch_size 64 [--pairs] \
      [--dtype bfloat16] [--mesh 4,2] [--remat] [--emb_dim 512 --depth 8] [--steps 5]
  python benchmarks/train_step.py --sweep [--batch_size 8] [--mesh 1,8]   # the table

Times the fused, jitted step of crema_jax.step (standardisation, augmentation and
masks of the raw crops, both masked views through encoder and decoder, the contrastive
losses, AdamW) on random inputs of the real shapes. Reports the compiled step's
collectives (kind, count, bytes per device) and how many of their bytes move
signals, tokens or latents. Reports
FLOPs per step from XLA's cost analysis, MFU against a large matmul timed on the same
machine, and memory per device from the compiled step (XLA's memory analysis: the
state, batch and temporaries one device holds) and from the live state shards. Prints
one JSON object (`--sweep`: one per model, then a markdown table with projections).

`--mesh DATA,FSDP` defaults to every device on `data` (`--fsdp F`: DATA = devices / F).
CPU timings use virtual devices that share the host's cores, so their MFU divides by
the host's matmul rate, not by device count x that rate.
"""

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax import train

# Published dense bf16 peaks and memory per chip / GPU, for projections only.
DEVICE_PEAKS = {
    "TPU v4": {"tflops": 275.0, "memory_gib": 32},
    "TPU v5e": {"tflops": 197.0, "memory_gib": 16},
    "H100 SXM": {"tflops": 989.0, "memory_gib": 80},
}
PROJECTION_MFU = 0.4  # Assumed model FLOPs utilisation for projected step times.
SWEEP_EMB = (256, 512, 768, 1024)
SWEEP_DEPTH = (2, 4, 8, 12)


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
  """A host batch of the step's shapes (`step.host_batch_spec`): raw float16 crops
  [batch, views, leads, time] (the step standardises, augments and masks them),
  valid, patient, has_pair."""
  spec = step_lib.host_batch_spec(config)
  b, v = spec["valid"][0]
  return {"signals": rng.standard_normal(spec["signals"][0],
                                         dtype=np.float32).astype(np.float16),
          "valid": np.full((b, v), config.data.seq_len, np.int32),
          "has_pair": np.ones((b,), bool),
          "patient": rng.integers(0, max(b // 2, 1), size=b).astype(np.int32)}


def collective_report(config, compiled, abstract_params) -> dict:
  """What the compiled step moves between devices, per device and step: by kind
  (count, bytes), and the bytes of the collectives that move signals, tokens or
  latents (`sharding.activation_collectives`; zero is the target)."""
  found = sharding.collectives(compiled.as_text())
  m = config.model
  patch_dim = m.patch_size * (1 if m.token_layout == "per_lead" else m.num_leads)
  moving = sharding.activation_collectives(
      found, [x.shape for x in jax.tree.leaves(abstract_params)],
      seq_len=config.data.seq_len, token_widths={patch_dim, m.emb_dim, m.decoder_dim},
      fsdp=config.mesh.fsdp)
  return {"by_kind": sharding.summarize_collectives(found),
          "activation_bytes": sum(c["bytes"] for c in moving),
          "activation_collectives": [
              {"kind": c["kind"], "shapes": [f"{t}{list(d)}" for t, d in c["shapes"]]}
              for c in moving[:10]]}


def parse_mesh(text: str | None, fsdp: int) -> tuple[int, int]:
  """'4,2' -> (4, 2); None -> (devices // fsdp, fsdp)."""
  if text is None:
    return jax.device_count() // fsdp, fsdp
  data, fsdp = (int(x) for x in text.replace("x", ",").split(","))
  if data * fsdp != jax.device_count():
    raise ValueError(f"mesh {data}x{fsdp} does not cover the {jax.device_count()} "
                     "devices")
  return data, fsdp


def make_config(variant: str, batch_size: int, dtype: str, pairs: bool, fsdp: int,
                remat: bool, emb_dim: int | None = None, depth: int | None = None,
                num_heads: int | None = None):
  config = common.base_config(variant, "hl")
  config.batch_size = batch_size
  config.compute_dtype = dtype
  config.data.patient_pairs = pairs
  config.mesh.fsdp = fsdp
  config.model.remat = remat
  if emb_dim:
    config.model.emb_dim = emb_dim
    config.model.proj_hidden_dim = emb_dim
    config.model.num_heads = num_heads or max(emb_dim // 64, 1)
  if depth:
    config.model.depth = depth
  train.check_config(config)
  return config


def measure(config, steps: int, run: bool = True) -> dict:
  """Compiles the step of `config` on its mesh; times `steps` steps when `run`."""
  mesh = sharding.make_mesh(config.mesh.fsdp)
  built = step_lib.build_run(config, mesh)
  host_batch = random_batch(config, np.random.default_rng(0))
  batch = sharding.global_batch(mesh, host_batch)

  start = time.perf_counter()
  compiled = built.train_step.lower(built.restore_target(), batch).compile()
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  device_flops = float(cost.get("flops", 0.0))  # Of one device's partitioned program.
  mem = compiled.memory_analysis()
  compiled_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                    - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(built.abstract_state.params))
  result = {
      "parameters": params, "emb_dim": config.model.emb_dim,
      "depth": config.model.depth, "batch_size": config.batch_size,
      "dtype": config.compute_dtype, "remat": bool(config.model.remat),
      "patient_pairs": bool(config.data.patient_pairs),
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "device_count": jax.device_count(),
      "compile_seconds": round(compile_seconds, 2),
      "tflops_per_step": round(device_flops * jax.device_count() / 1e12, 5),
      # Per device, from the compiled step (donated state counted once).
      "memory_per_device_mib": round(compiled_bytes / 2 ** 20, 2),
      "state_argument_mib": round(mem.argument_size_in_bytes / 2 ** 20, 2),
      "temp_mib": round(mem.temp_size_in_bytes / 2 ** 20, 2),
      "collectives": collective_report(config, compiled, built.abstract_state.params),
  }
  if not run:
    return result
  state = built.initial_state(jax.random.key(0))
  state_bytes = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state))
  state, out = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(out)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  step_seconds = float(np.median(times))
  device = jax.devices()[0]
  memory = device.memory_stats() or {}
  result.update({
      "device": f"{device.platform}:{device.device_kind}",
      "step_seconds": round(step_seconds, 4),
      "samples_per_second": round(config.batch_size / step_seconds, 2),
      "achieved_tflops": round(device_flops * jax.device_count() / step_seconds / 1e12,
                               4),
      "loss": float(out["loss"]),
      "state_shard_mib_per_device": round(state_bytes / 2 ** 20, 2),
      "peak_device_bytes_per_device": memory.get("peak_bytes_in_use"),
      "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                / 1024, 1),
  })
  return result


def add_mfu(result: dict, peak: float) -> dict:
  """MFU against `peak` FLOP/s: the host's on CPU, device count x it elsewhere."""
  if "step_seconds" in result:
    total_peak = peak * (1 if jax.devices()[0].platform == "cpu" else jax.device_count())
    result["matmul_peak_tflops"] = round(peak / 1e12, 4)
    result["mfu"] = round(result["achieved_tflops"] * 1e12 / total_peak, 3)
  return result


def projection(result: dict, batch_size: int) -> dict:
  """Projected step seconds on one device of each kind at `batch_size` per device:
  FLOPs scale linearly with the batch; time = FLOPs / (peak x PROJECTION_MFU)."""
  flops = result["tflops_per_step"] * 1e12 * batch_size / result["batch_size"]
  return {name: round(flops / (p["tflops"] * 1e12 * PROJECTION_MFU), 4)
          for name, p in DEVICE_PEAKS.items()}


def sweep(args) -> None:
  """emb x depth: parameters, memory per device (replicated and FSDP over every
  device), measured CPU step time, projected accelerator step times."""
  rows = []
  n = jax.device_count()
  peak = matmul_peak_flops(jnp.float32)
  for emb in args.sweep_emb:
    for depth in args.sweep_depth:
      row = {}
      for fsdp in (1, n):
        config = make_config(args.variant, args.batch_size, args.dtype, args.pairs,
                             fsdp, args.remat, emb, depth)
        result = add_mfu(measure(config, args.steps, run=fsdp == 1), peak)
        print(json.dumps(result), flush=True)
        row[fsdp] = result
      rows.append(row)
  per_device = args.projection_batch
  print(f"\n| emb | depth | params (M) | MiB/device replicated | MiB/device FSDP x{n} | "
        f"CPU s/step (batch {args.batch_size}, {n} devices) | TFLOP/step | "
        + " | ".join(f"{k} s/step (projected)" for k in DEVICE_PEAKS) + " |")
  print("|" + "---|" * (7 + len(DEVICE_PEAKS)))
  for row in rows:
    r, f = row[1], row[n]
    proj = projection(r, per_device)
    print(f"| {r['emb_dim']} | {r['depth']} | {r['parameters'] / 1e6:.1f} | "
          f"{r['memory_per_device_mib']:.0f} | {f['memory_per_device_mib']:.0f} | "
          f"{r['step_seconds']:.3f} | {r['tflops_per_step']:.4f} | "
          + " | ".join(f"{v:.4f}" for v in proj.values()) + " |")
  print(f"\nProjected: batch {per_device} per device, {args.dtype} FLOPs from XLA's CPU "
        f"cost analysis, MFU {PROJECTION_MFU} of the published bf16 peaks "
        + ", ".join(f"{k} {p['tflops']:.0f} TFLOP/s" for k, p in DEVICE_PEAKS.items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--batch_size", type=int, default=64, help="Global batch.")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--fsdp", type=int, default=1)
  parser.add_argument("--mesh", default=None, help="DATA,FSDP, e.g. 4,2.")
  parser.add_argument("--remat", action="store_true", help="Rematerialise each block.")
  parser.add_argument("--emb_dim", type=int, default=None)
  parser.add_argument("--depth", type=int, default=None)
  parser.add_argument("--num_heads", type=int, default=None)
  parser.add_argument("--compile_only", action="store_true",
                      help="Memory and FLOPs from the compiled step, no timing.")
  parser.add_argument("--pairs", action="store_true",
                      help="Also encode a same-patient ECG (data.patient_pairs).")
  parser.add_argument("--sweep", action="store_true",
                      help=f"emb {SWEEP_EMB} x depth {SWEEP_DEPTH}, with a table.")
  parser.add_argument("--sweep_emb", type=int, nargs="+", default=SWEEP_EMB)
  parser.add_argument("--sweep_depth", type=int, nargs="+", default=SWEEP_DEPTH)
  parser.add_argument("--projection_batch", type=int, default=64,
                      help="Per-device batch of the projected step times (--sweep).")
  args = parser.parse_args()
  if args.sweep:
    sweep(args)
    return
  _, fsdp = parse_mesh(args.mesh, args.fsdp)
  config = make_config(args.variant, args.batch_size, args.dtype, args.pairs, fsdp,
                       args.remat, args.emb_dim, args.depth, args.num_heads)
  result = measure(config, args.steps, run=not args.compile_only)
  if not args.compile_only:
    add_mfu(result, matmul_peak_flops(jnp.bfloat16 if args.dtype == "bfloat16"
                                      else jnp.float32))
  result["variant"] = args.variant
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
