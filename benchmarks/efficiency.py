"""Compute efficiency of every named CREMA variant's encode, float32 and bfloat16, next
to a PyTorch eager twin of the paper encoder.

  python benchmarks/efficiency.py [--variants paper,tiny] [--dtypes float32,bfloat16] \
      [--throughput_batch 256] [--repeats 3] [--latency_calls 20] [--no_torch] \
      [--twin_repeats 5] [--memory_fraction 0.5] [--out FILE.json] [--plot FILE.png] \
      [--markdown]
  python benchmarks/efficiency.py --report FILE.json --plot FILE.png --markdown

Encode is what evaluation computes: `crema_jax.evaluation.features.embed(model, params,
x, valid)`, the mean-pooled encoder features of whole 12-lead ECGs of the variant's
seq_len (10 s at 500 Hz; 9.96 s for patch 60). Every model is built the project's one
way, `crema_jax.models.build(config)`, from the variant's pretraining config
(`configs.common.base_config`, as benchmarks/train_step.py) with `compute_dtype` set;
parameters are float32 in both dtypes. On the CPU always, and also on
`jax.devices()[0]` when that is an accelerator, each row holds:

- params: `sizing.param_count` of the whole model (encoder_params: the patch
  embedding and encoder, all that encode uses);
- gflops_per_ecg: XLA's cost analysis of the compiled encode at the throughput
  batch, divided by the batch;
- latency_ms_p50, latency_ms_p95: batch 1, over --latency_calls calls after warm-up;
- ecgs_per_second: throughput_batch ECGs / the median of --repeats calls;
- peak_mb: the compiled encode's memory analysis at the throughput batch (temp +
  argument + output; peak_mb_batch1 the same at batch 1), and device_peak_mb, the
  device's own peak so far in this process, where it reports memory_stats.

The throughput batch is --throughput_batch, halved while the compiled encode needs
more than --memory_fraction of the memory free on the device (the host's available
memory on the CPU): throughput_batch_requested and peak_mb_requested say what the
requested batch would have needed.

"torch_eager_twin": `benchmarks/twins.py`'s paper encoder (emb 1024, depth 2, patch
125; Conv1d patch embedding, both blocks over all 40 patches, mean pool) in PyTorch
eager, float32, no_grad, on the CPU, timed call by call in turn with CREMA's paper
float32 encode so that both see the same machine noise: throughput_ratio_crema_vs_torch
is CREMA's ECGs/s over torch's at the throughput batch (medians of --twin_repeats).

Prints one JSON object (`--out` also writes it); `--markdown` prints a table after it;
`--plot` draws throughput against parameters; `--report` redraws both from a JSON
written earlier, measuring nothing. Measure with XLA_FLAGS as they are (one
CPU device): more virtual devices would split the host's threads.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from configs import common
from crema_jax import models
from crema_jax.evaluation import features
from crema_jax.models import sizing

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import twins  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

DTYPES = tuple(models.COMPUTE_DTYPES)
TWIN_VARIANT = "paper"  # The model benchmarks/twins.py mirrors.
ENCODER_KEYS = ("patch_embed", "encoder", "lead_embed", "cls_token")
MB = 2 ** 20
MEMORY_FRACTION = 0.5  # Of the free memory, the most one compiled encode may need.


def make_config(variant: str, dtype: str):
  """The pretraining config of `variant` with compute dtype `dtype`."""
  config = common.base_config(variant, "hl")
  config.compute_dtype = dtype
  return config


def init_params(model: models.CREMA, device) -> dict:
  """The model's initial float32 parameters, on `device`."""
  with jax.default_device(device):
    return jax.jit(models.init_params, static_argnums=0)(model, jax.random.key(0))


def encode_inputs(config, batch: int, device) -> tuple[jax.Array, jax.Array]:
  """Random standardised ECGs [batch, leads, seq_len] float32 and valid [batch]."""
  t, leads = config.data.seq_len, config.model.num_leads
  x = np.random.default_rng(0).standard_normal((batch, leads, t), dtype=np.float32)
  valid = np.full((batch,), t, np.int32)
  return jax.device_put(x, device), jax.device_put(valid, device)


def compile_encode(model, params, config, batch: int, device):
  """`features.embed` compiled for `batch` ECGs on `device`, and a call of it that
  blocks on the features."""
  x, valid = encode_inputs(config, batch, device)
  compiled = features.embed.lower(model, params, x, valid).compile()
  return compiled, lambda: compiled(params, x, valid).block_until_ready()


def memory_budget(device, fraction: float) -> float:
  """Bytes one compiled encode may use: `fraction` of the device's free memory (on
  the CPU, of the host's MemAvailable)."""
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return fraction * (stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  with open("/proc/meminfo") as f:
    info = dict(line.split(":", 1) for line in f)
  return fraction * int(info["MemAvailable"].split()[0]) * 1024


def compile_fitting(model, params, config, batch: int, device, budget: float):
  """`compile_encode` at `batch`, halved until its compiled memory fits `budget`
  bytes; returns the batch used, the compiled encode and its call, and the compiled
  memory the requested batch needs."""
  requested = None
  while True:
    compiled, call = compile_encode(model, params, config, batch, device)
    peak = memory_bytes(compiled)["peak"]
    requested = requested or peak
    if peak <= budget or batch == 1:
      return batch, compiled, call, requested
    del compiled, call
    batch //= 2


def flops(compiled) -> float:
  """FLOPs of one call of a compiled program (XLA's cost analysis)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def memory_bytes(compiled) -> dict:
  """Argument, output and temporary bytes of a compiled program, and their sum."""
  mem = compiled.memory_analysis()
  out = {"argument": int(mem.argument_size_in_bytes),
         "output": int(mem.output_size_in_bytes),
         "temp": int(mem.temp_size_in_bytes)}
  out["peak"] = sum(out.values())
  return out


def timed(calls: dict, n: int, warmup: int = 1) -> dict:
  """Seconds of `n` calls of every function of `calls`, taken in turn (one call of
  each per round, so that all see the same machine noise), after `warmup` rounds."""
  times = {name: [] for name in calls}
  for i in range(warmup + n):
    for name, fn in calls.items():
      start = time.perf_counter()
      fn()
      if i >= warmup:
        times[name].append(time.perf_counter() - start)
  return times


def latency_ms(seconds: list) -> dict:
  """p50 and p95 of call times, in milliseconds."""
  ms = np.asarray(seconds) * 1e3
  return {"latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
          "latency_ms_p95": round(float(np.percentile(ms, 95)), 3)}


def device_peak_mb(device) -> float | None:
  """The device's peak bytes in use so far in this process (None: not reported)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  peak = (stats or {}).get("peak_bytes_in_use")
  return None if peak is None else round(peak / MB, 1)


def encoder_params(params: dict) -> int:
  """Parameters of what encode uses: the patch embedding and the encoder."""
  return sizing.param_count({k: v for k, v in params.items() if k in ENCODER_KEYS})


def measure(variant: str, dtype: str, params: dict, device, *, throughput_batch: int,
            repeats: int, latency_calls: int,
            memory_fraction: float = MEMORY_FRACTION) -> dict:
  """One row: size, FLOPs, batch-1 latency, throughput and memory of the encode of
  `variant` in `dtype` on `device` (with `params`, the variant's, on it)."""
  config = make_config(variant, dtype)
  model = models.build(config)
  start = time.perf_counter()
  one, call_one = compile_encode(model, params, config, 1, device)
  batch, many, call_many, requested_bytes = compile_fitting(
      model, params, config, throughput_batch, device,
      memory_budget(device, memory_fraction))
  compile_seconds = time.perf_counter() - start
  latency = timed({"one": call_one}, latency_calls, warmup=2)["one"]
  batch_seconds = float(np.median(timed({"many": call_many}, repeats)["many"]))
  flops_per_ecg = flops(many) / batch
  mem = memory_bytes(many)
  row = {
      "variant": variant, "dtype": dtype, "platform": device.platform,
      "device": device.device_kind, "params": sizing.param_count(params),
      "encoder_params": encoder_params(params), "seq_len": config.data.seq_len,
      "tokens": model.num_tokens, "emb_dim": model.emb_dim, "depth": model.depth,
      "patch_size": model.patch_size, "token_layout": model.token_layout,
      "gflops_per_ecg": round(flops_per_ecg / 1e9, 4),
      **latency_ms(latency),
      "throughput_batch": batch, "throughput_batch_requested": throughput_batch,
      "batch_seconds": round(batch_seconds, 4),
      "ecgs_per_second": round(batch / batch_seconds, 2),
      "achieved_gflops_per_second": round(
          flops_per_ecg * batch / batch_seconds / 1e9, 1),
      "peak_mb": round(mem["peak"] / MB, 1),
      "peak_mb_requested": round(requested_bytes / MB, 1),
      "peak_mb_batch1": round(memory_bytes(one)["peak"] / MB, 1),
      "memory_bytes": mem,
      "compile_seconds": round(compile_seconds, 2),
  }
  peak = device_peak_mb(device)
  if peak is not None:
    row["device_peak_mb"] = peak
  return row


def torch_twin(*, throughput_batch: int, repeats: int, latency_calls: int) -> dict:
  """The torch eager paper encoder next to CREMA's, float32 on the CPU, timed in
  turn: batch-1 latencies, throughputs and their ratio, and both FLOP counts."""
  import torch  # pylint: disable=g-import-not-at-top

  cpu = jax.devices("cpu")[0]
  config = make_config(TWIN_VARIANT, "float32")
  model = models.build(config)
  params = init_params(model, cpu)
  many, crema_many = compile_encode(model, params, config, throughput_batch, cpu)
  _, crema_one = compile_encode(model, params, config, 1, cpu)
  one = timed({"crema": crema_one, "torch": twins.make_torch_encode(1)},
              latency_calls, warmup=2)
  batch = timed({"crema": crema_many,
                 "torch": twins.make_torch_encode(throughput_batch)}, repeats)
  ecgs = {k: throughput_batch / float(np.median(v)) for k, v in batch.items()}
  crema, twin = latency_ms(one["crema"]), latency_ms(one["torch"])
  return {
      "variant": TWIN_VARIANT, "dtype": "float32", "platform": "cpu",
      "framework": f"torch {torch.__version__} eager, no_grad",
      "torch_threads": torch.get_num_threads(),
      "params": sum(p.numel() for p in twins.torch_encoder().parameters()),
      "gflops_per_ecg": round(twins.torch_encode_flops() / 1e9, 4),
      "crema_gflops_per_ecg": round(flops(many) / throughput_batch / 1e9, 4),
      **twin,
      "crema_latency_ms_p50": crema["latency_ms_p50"],
      "crema_latency_ms_p95": crema["latency_ms_p95"],
      "throughput_batch": throughput_batch,
      "ecgs_per_second": round(ecgs["torch"], 2),
      "crema_ecgs_per_second": round(ecgs["crema"], 2),
      "throughput_ratio_crema_vs_torch": round(ecgs["crema"] / ecgs["torch"], 3),
      "latency_p50_ratio_torch_vs_crema": round(
          twin["latency_ms_p50"] / crema["latency_ms_p50"], 3),
  }


def platforms() -> list:
  """The CPU, and the default device too when it is an accelerator."""
  cpu = jax.devices("cpu")[0]
  default = jax.devices()[0]
  return [cpu] if default.platform == "cpu" else [cpu, default]


def host() -> dict:
  """What the measurements ran on."""
  return {"machine": platform.machine(), "processor": platform.processor(),
          "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
          "jax": jax.__version__, "jax_device_count": jax.device_count(),
          "default_platform": jax.devices()[0].platform,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def run(variants=tuple(models.VARIANTS), dtypes=DTYPES, *, throughput_batch: int = 256,
        repeats: int = 3, latency_calls: int = 20, torch_eager_twin: bool = True,
        twin_repeats: int | None = None, memory_fraction: float = MEMORY_FRACTION,
        log=None) -> dict:
  """The efficiency report: one row per variant, dtype and platform, and the torch
  twin (when `torch_eager_twin` and the paper model is among `variants`)."""
  start = time.perf_counter()
  rows = []
  for device in platforms():
    for variant in variants:
      params = init_params(models.build(make_config(variant, "float32")), device)
      for dtype in dtypes:
        row = measure(variant, dtype, params, device, throughput_batch=throughput_batch,
                      repeats=repeats, latency_calls=latency_calls,
                      memory_fraction=memory_fraction)
        rows.append(row)
        if log:
          log(row)
      del params
  report = {"benchmark": "efficiency", "host": host(),
            "settings": {"throughput_batch": throughput_batch, "repeats": repeats,
                         "latency_calls": latency_calls,
                         "twin_repeats": twin_repeats or repeats,
                         "memory_fraction": memory_fraction,
                         "variants": list(variants),
                         "dtypes": list(dtypes)},
            "rows": rows}
  if torch_eager_twin and TWIN_VARIANT in variants:
    report["torch_eager_twin"] = torch_twin(
        throughput_batch=throughput_batch, repeats=twin_repeats or repeats,
        latency_calls=latency_calls)
    if log:
      log(report["torch_eager_twin"])
  report["elapsed_seconds"] = round(time.perf_counter() - start, 1)
  return report


def markdown(report: dict) -> str:
  """The rows (and the torch twin) as a markdown table."""
  lines = ["| variant | platform | dtype | params (M) | GFLOPs/ECG | p50 ms (b=1) | "
           "p95 ms (b=1) | ECGs/s | peak MB |", "|" + "---|" * 9]
  rows = list(report["rows"])
  if "torch_eager_twin" in report:
    twin = dict(report["torch_eager_twin"], variant="paper (torch eager twin)",
                peak_mb=None)
    rows.append(twin)
  batch = report["settings"]["throughput_batch"]
  for r in rows:
    peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
    reduced = "" if r["throughput_batch"] == batch else f" (b={r['throughput_batch']})"
    lines.append(
        f"| {r['variant']} | {r['platform']} | {r['dtype']} | "
        f"{r['params'] / 1e6:.2f} | {r['gflops_per_ecg']:.3f} | "
        f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | "
        f"{r['ecgs_per_second']:.1f}{reduced} | {peak} |")
  note = (f"\nECGs/s and peak MB (the compiled encode's) at batch {batch}, or at the "
          "batch (b=) that fitted in memory.")
  if "torch_eager_twin" in report:
    t = report["torch_eager_twin"]
    note += (f" Torch twin params: encoder only. CREMA / torch throughput (timed in "
             f"turn): {t['throughput_ratio_crema_vs_torch']:.2f}x.")
  return "\n".join(lines) + "\n" + note


def plot(report: dict, path: str) -> None:
  """Throughput against parameters (log x), one marker per variant and dtype; the
  torch twin a star; one panel per platform."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = sorted({r["platform"] for r in report["rows"]})
  fig, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 5), squeeze=False)
  style = {"float32": ("o", "tab:blue"), "bfloat16": ("s", "tab:orange")}
  for ax, name in zip(axes[0], names):
    for r in (r for r in report["rows"] if r["platform"] == name):
      marker, color = style.get(r["dtype"], ("^", "tab:gray"))
      ax.scatter(r["params"], r["ecgs_per_second"], marker=marker, color=color)
      if r["dtype"] == "float32":  # One label per variant.
        ax.annotate(r["variant"], (r["params"], r["ecgs_per_second"]), fontsize=7,
                    xytext=(4, -3), textcoords="offset points")
    for dtype, (marker, color) in style.items():
      ax.scatter([], [], marker=marker, color=color, label=f"CREMA {dtype}")
    twin = report.get("torch_eager_twin")
    if twin and name == "cpu":
      paper = next(r for r in report["rows"] if r["variant"] == twin["variant"])
      ax.scatter(paper["params"], twin["ecgs_per_second"], marker="*", s=160,
                 color="tab:red", label="torch eager twin (paper, float32)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (whole model)")
    ax.set_ylabel(f"ECGs/s at batch {report['settings']['throughput_batch']}")
    ax.set_title(f"CREMA encode throughput, {name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse_list(text: str, allowed) -> list[str]:
  """'a,b' -> ['a', 'b'], each one of `allowed`."""
  items = [t for t in text.split(",") if t]
  unknown = [t for t in items if t not in allowed]
  if unknown:
    raise SystemExit(f"unknown {unknown}; choose from {list(allowed)}")
  return items


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default=",".join(models.VARIANTS),
                      help="Comma-separated names of crema_jax.models.VARIANTS.")
  parser.add_argument("--dtypes", default=",".join(DTYPES))
  parser.add_argument("--throughput_batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3,
                      help="Timed calls at the throughput batch (median).")
  parser.add_argument("--latency_calls", type=int, default=20,
                      help="Timed batch-1 calls (p50, p95).")
  parser.add_argument("--no_torch", action="store_true", help="Skip the torch twin.")
  parser.add_argument("--twin_repeats", type=int, default=None,
                      help="Timed calls of each at the throughput batch, in turn, for "
                      "the torch twin and CREMA (default: --repeats).")
  parser.add_argument("--memory_fraction", type=float, default=MEMORY_FRACTION,
                      help="Halve a variant's throughput batch until its compiled "
                      "encode needs at most this fraction of the free memory.")
  parser.add_argument("--out", default=None, help="Also write the JSON here.")
  parser.add_argument("--plot", default=None, help="Throughput vs parameters, PNG.")
  parser.add_argument("--markdown", action="store_true", help="Print a table too.")
  parser.add_argument("--quiet", action="store_true", help="No per-row progress.")
  parser.add_argument("--report", default=None,
                      help="Plot / tabulate this JSON of an earlier run; no measuring.")
  args = parser.parse_args()
  if args.report:
    report = json.loads(pathlib.Path(args.report).read_text())
  else:
    log = None if args.quiet else functools.partial(print, file=sys.stderr, flush=True)
    report = run(parse_list(args.variants, models.VARIANTS),
                 parse_list(args.dtypes, DTYPES),
                 throughput_batch=args.throughput_batch, repeats=args.repeats,
                 latency_calls=args.latency_calls,
                 torch_eager_twin=not args.no_torch, twin_repeats=args.twin_repeats,
                 memory_fraction=args.memory_fraction,
                 log=lambda r: log and log(json.dumps(r)))
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
      pathlib.Path(args.out).write_text(text + "\n")
  if args.plot:
    plot(report, args.plot)
  if args.markdown:
    print(markdown(report))


if __name__ == "__main__":
  main()
