"""One run on the accelerator at hand: the paper pretraining step, its real-shard feed
and the encoder's embedding throughput, as one JSON object, in under 8 minutes.

  bash benchmarks/accelerator_check.sh [OUT.json]           # on a GPU or TPU host
  bash benchmarks/accelerator_check.sh --smoke [OUT.json]   # shrunk: any CPU, ~2 min
  python benchmarks/accelerator_check.py [--batch_per_device 256] [--out OUT.json]

Every figure is a measurement on the devices this process sees, unlike
benchmarks/tpu_aot.py, whose figures are the compiler's estimates for a TPU that need
not be present. Three sections, each under its own time budget and in its own try/except
(a section that fails or runs out of time records its error, and what it had measured
by then, and the next one runs):

- train_step: the paper pretraining step (HL loss with patient pairs, bfloat16) at the
  recommended global batch, --batch_per_device x the device count (halved while it
  runs out of device memory), timed by `train_step.measure`: step seconds, samples/s,
  XLA's FLOPs per step, MFU against the device's published dense bf16 peak (when its
  kind is in PUBLISHED_BF16_PEAKS) and against a bf16 matmul timed on the same device,
  and the device's own peak_bytes_in_use (`memory_stats`, where it reports one).
- input_feed: a synthetic PTB-XL folder (`crema_jax.data.synthetic`) written to a
  temporary directory and prepared into ArrayRecord shards (`crema_jax.data.prepare`);
  then the same step fed by the Grain pretraining pipeline
  (`crema_jax.input.pipeline.pretrain_dataset`, worker processes as `data.worker_count`
  sizes them) next to the step fed one in-memory batch again and again (steps/s of
  both, dispatched without waiting as the training loop does, and their ratio), and
  the pipeline alone (records/s, `input_pipeline.records_per_second`). The shards sit
  in the page cache: this times the host's reading and slicing, not a disk.
- embed: ECGs/s of `crema_jax.evaluation.features.embed` (the encoder's mean-pooled
  features) at a large batch on one device, bfloat16 and float32
  (`efficiency.measure`; inputs already on the device).

The JSON also holds the device kind and count, the JAX version and each section's wall
time. With --out it is written there after every section (`"complete": false` and
`"running"` until the end), so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import signal
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from crema_jax import models
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax.data import prepare
from crema_jax.data import storage
from crema_jax.data import synthetic
from crema_jax.input import pipeline

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import efficiency  # pylint: disable=g-import-not-at-top,wrong-import-position
import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position

# Published dense bf16 FLOP/s per GPU or TPU chip, by a substring of
# `device_kind`; the first match wins, so a more specific name comes first.
PUBLISHED_BF16_PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5", 459e12),  # v5p.
    ("TPU v6 lite", 918e12),
)
MIN_BATCH_PER_DEVICE = 8  # Below this an out-of-memory step is an error, not halved.
SOFT_MARGIN = 0.1  # Share of a section's budget its timing loops leave unused.
SECTIONS = ("train_step", "input_feed", "embed")
EMBED_DTYPES = ("bfloat16", "float32")

# Sizes of a run on an accelerator, and of --smoke (every one overridable by its flag).
FULL = dict(variant="paper", batch_per_device=256, steps=20, matmul_n=8192,
            patients=120, feed_steps=50, pipeline_batches=20, embed_batch=4096,
            embed_repeats=5, latency_calls=10)
SMOKE = dict(variant="tiny", batch_per_device=8, steps=3, matmul_n=512, patients=12,
             feed_steps=4, pipeline_batches=3, embed_batch=32, embed_repeats=2,
             latency_calls=3)


class SectionTimeout(Exception):
  """A section ran past its time budget."""


# ------------------------------------------------------------------ time budgets
@contextlib.contextmanager
def alarm(seconds: float):
  """Raises SectionTimeout in the main thread after `seconds` (a backstop: a compile
  in progress is only interrupted once it returns to Python)."""
  def fire(signum, frame):
    del signum, frame
    raise SectionTimeout(f"ran past its budget of {seconds:.0f} s")

  previous = signal.signal(signal.SIGALRM, fire)
  signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def soft_deadline(deadline: float) -> float:
  """When timing loops stop: SOFT_MARGIN of the time left before `deadline`, so that
  they end, and their results are kept, before the section's alarm."""
  now = time.perf_counter()
  return deadline - SOFT_MARGIN * max(deadline - now, 0.0)


def error_record(e: BaseException) -> dict:
  """An exception as JSON: its type and message, and where it was raised."""
  lines = traceback.format_exception(type(e), e, e.__traceback__)
  return {"error": f"{type(e).__name__}: {e}"[:2000],
          "traceback": "".join(lines)[-3000:]}


def out_of_memory(e: Exception) -> bool:
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


# ------------------------------------------------------------------ devices
def published_peak(device_kind: str) -> tuple[str | None, float | None]:
  """(table key, dense bf16 FLOP/s) of PUBLISHED_BF16_PEAKS for `device_kind`."""
  for key, flops in PUBLISHED_BF16_PEAKS:
    if key in device_kind:
      return key, flops
  return None, None


def device_memory() -> dict:
  """Bytes the first device reports: peak in use so far in this process, and limit."""
  device = jax.devices()[0]
  stats = (device.memory_stats() if hasattr(device, "memory_stats") else None) or {}
  return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"),
          "bytes_limit": stats.get("bytes_limit")}


def environment() -> dict:
  """What the measurements ran on."""
  device = jax.devices()[0]
  key, peak = published_peak(device.device_kind)
  return {"platform": device.platform, "device_kind": device.device_kind,
          "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(),
          "process_count": jax.process_count(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "python": platform.python_version(), "host_cpus": os.cpu_count(),
          "published_peak_key": key,
          "published_bf16_peak_tflops_per_device": peak and peak / 1e12,
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR")}


# ------------------------------------------------------------------ train_step
def paper_config(args, global_batch: int):
  """The pretraining config of the measured step: `args.variant`, HL with patient
  pairs, bfloat16, every device on the data axis."""
  return train_step.make_config(args.variant, global_batch, "bfloat16", pairs=True,
                                fsdp=1, remat=False)


def add_mfus(result: dict, matmul_flops: float) -> dict:
  """MFU of a measured step against the timed bf16 matmul and the published peak."""
  train_step.add_mfu(result, matmul_flops)
  result["mfu_vs_matmul"] = result.pop("mfu", None)
  device = jax.devices()[0]
  _, peak = published_peak(device.device_kind)
  if peak and device.platform != "cpu":
    total = peak * jax.device_count()
    result["mfu_vs_published_peak"] = round(result["achieved_tflops"] * 1e12 / total, 3)
  else:
    result["mfu_vs_published_peak"] = None
  return result


def train_step_section(args, out: dict, deadline: float) -> None:
  """The paper step at the recommended batch (halved on out-of-memory): time, MFU,
  memory."""
  del deadline  # `measure` runs a fixed number of steps; the alarm bounds it.
  batch = args.batch_per_device * jax.device_count()
  out["recommended_global_batch"] = batch
  while True:
    try:
      result = train_step.measure(paper_config(args, batch), args.steps)
      break
    except Exception as e:  # pylint: disable=broad-except
      if not out_of_memory(e) or batch // jax.device_count() <= MIN_BATCH_PER_DEVICE:
        raise
      out.setdefault("out_of_memory_at_global_batch", []).append(batch)
      batch //= 2
  out.update(result)
  add_mfus(out, train_step.matmul_peak_flops(jnp.bfloat16, n=args.matmul_n))
  out["matmul_n"] = args.matmul_n
  out["device_memory"] = device_memory()


# ------------------------------------------------------------------ input_feed
def write_prepared(config, tmp: pathlib.Path, patients: int, out: dict
                   ) -> storage.PreparedSource:
  """A synthetic PTB-XL folder of `patients` under `tmp`, prepared as `config.data`
  says (its raw_dir and data_dir set here); times both."""
  config.data.raw_dir = str(tmp / "ptbxl")
  config.data.data_dir = str(tmp / "prepared")
  config.data.records_per_shard = 50  # Shards enough for the preparing workers.
  config.data.prepare_workers = max(1, min(8, (os.cpu_count() or 2) - 1))
  start = time.perf_counter()
  synthetic.write_synthetic_ptbxl(config.data.raw_dir, num_patients=patients)
  out["write_seconds"] = round(time.perf_counter() - start, 1)
  start = time.perf_counter()
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  out["prepare_seconds"] = round(time.perf_counter() - start, 1)
  out["records"] = manifest["num_records"]
  out["patients"] = manifest["num_patients"]
  return storage.PreparedSource(config.data.data_dir, config.data.name)


def timed_steps(train, state, next_batch, steps: int, stop: float):
  """Up to `steps` calls `state, metrics = train(state, next_batch())`, dispatched
  without waiting (as the training loop does), fewer when time passes `stop`; returns
  (state, steps run, seconds until the last step's metrics were ready)."""
  start = time.perf_counter()
  n, metrics = 0, None
  while n < steps and time.perf_counter() < stop:
    state, metrics = train(state, next_batch())
    n += 1
  jax.block_until_ready(metrics)
  return state, n, time.perf_counter() - start


def rates(steps: int, seconds: float, batch: int) -> dict:
  """Steps and samples per second of `steps` steps of `batch` ECGs in `seconds`."""
  return {"steps": steps, "seconds": round(seconds, 3),
          "steps_per_second": round(steps / seconds, 3) if steps else None,
          "samples_per_second": round(steps * batch / seconds, 1) if steps else None}


def input_feed_section(args, out: dict, deadline: float, global_batch: int) -> None:
  """The step fed by the Grain pipeline over prepared shards vs fed one in-memory
  batch; and the pipeline alone."""
  config = paper_config(args, global_batch)
  out["global_batch"] = global_batch
  with tempfile.TemporaryDirectory(prefix="crema_accelerator_check_") as tmp:
    prepared = write_prepared(config, pathlib.Path(tmp), args.patients, out)
    out["grain_workers"] = pipeline.worker_count(config.data.worker_count)
    out["read_threads"] = config.data.read_threads

    def dataset():
      return pipeline.pretrain_dataset(config, prepared,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())

    mesh = sharding.make_mesh(config.mesh.fsdp)
    built = step_lib.build_run(config, mesh)
    state = built.initial_state(jax.random.key(0))
    memory_batch = sharding.global_batch(
        mesh, train_step.random_batch(config, np.random.default_rng(0)))
    start = time.perf_counter()
    state, metrics = built.train_step(state, memory_batch)  # Compiles.
    jax.block_until_ready(metrics)
    out["compile_seconds"] = round(time.perf_counter() - start, 2)

    state, n, seconds = timed_steps(built.train_step, state, lambda: memory_batch,
                                    args.feed_steps, soft_deadline(deadline))
    out["in_memory"] = rates(n, seconds, global_batch)

    local_batch = global_batch // jax.process_count()
    out["pipeline_only_records_per_second"] = round(input_pipeline.records_per_second(
        lambda: iter(dataset()), args.pipeline_batches, local_batch), 1)

    it = iter(dataset())
    try:
      next(it)  # Start-up (worker processes, first reads) is not throughput.
      state, n, seconds = timed_steps(
          built.train_step, state,
          lambda: sharding.global_batch(mesh, step_lib.host_inputs(next(it))),
          args.feed_steps, soft_deadline(deadline))
    finally:
      if hasattr(it, "close"):
        it.close()
    out["real_shards"] = rates(n, seconds, global_batch)
    fed = out["real_shards"]["steps_per_second"]
    alone = out["in_memory"]["steps_per_second"]
    if fed and alone:
      out["feed_ratio"] = round(fed / alone, 3)  # 1.0: the feed keeps up with the step.


# ------------------------------------------------------------------ embed
def embed_section(args, out: dict, deadline: float) -> None:
  """ECGs/s of the encoder's embedding on one device, each of EMBED_DTYPES (one that
  fails records its error and the other still runs)."""
  del deadline  # The alarm bounds it.
  device = jax.devices()[0]
  model = models.build(efficiency.make_config(args.variant, "float32"))
  params = efficiency.init_params(model, device)
  for dtype in EMBED_DTYPES:
    try:
      out[dtype] = efficiency.measure(
          args.variant, dtype, params, device, throughput_batch=args.embed_batch,
          repeats=args.embed_repeats, latency_calls=args.latency_calls)
    except SectionTimeout:
      raise
    except Exception as e:  # pylint: disable=broad-except
      out[dtype] = error_record(e)


# ------------------------------------------------------------------ the run
def write(report: dict, path: str | None) -> None:
  """The report to `path` (replaced atomically), or to stdout without one."""
  text = json.dumps(report, indent=1, default=str)
  if path is None:
    print(text, flush=True)
    return
  tmp = pathlib.Path(path).with_name(pathlib.Path(path).name + ".tmp")
  tmp.write_text(text + "\n")
  os.replace(tmp, path)


def log(message: str) -> None:
  print(f"[accelerator_check] {message}", file=sys.stderr, flush=True)


def run_section(report: dict, name: str, fn, budget: float, end: float, out_path
                ) -> None:
  """Runs `fn(out, deadline)` under an alarm at min(now + budget, end); its results,
  wall time and any error go to report["sections"][name]."""
  start = time.perf_counter()
  deadline = min(start + budget, end)
  out = report["sections"][name] = {"budget_seconds": round(deadline - start, 1)}
  report["running"] = name
  if out_path:
    write(report, out_path)
  log(f"{name}: budget {deadline - start:.0f} s")
  try:
    if deadline - start < 1:
      raise SectionTimeout("no time left in the total budget")
    with alarm(deadline - start):
      fn(out, deadline)
  except Exception as e:  # pylint: disable=broad-except
    out.update(error_record(e))
    log(f"{name}: {out['error'].splitlines()[0]}")
  out["wall_seconds"] = round(time.perf_counter() - start, 1)
  log(f"{name}: done in {out['wall_seconds']} s")


def fitted_batch(report: dict, args) -> int:
  """The global batch train_step ran (after any halving), else the recommended one."""
  return (report["sections"].get("train_step", {}).get("batch_size")
          or args.batch_per_device * jax.device_count())


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true",
                      help="Tiny model, batch and dataset: checks the script on a CPU.")
  parser.add_argument("--out", default=None,
                      help="Write the JSON here (after every section), not to stdout.")
  parser.add_argument("--sections", default=",".join(SECTIONS))
  parser.add_argument("--total_budget", type=float, default=450.0,
                      help="Seconds for all sections together.")
  parser.add_argument("--train_budget", type=float, default=150.0)
  parser.add_argument("--feed_budget", type=float, default=180.0)
  parser.add_argument("--embed_budget", type=float, default=100.0)
  for name, value in FULL.items():
    parser.add_argument(f"--{name}", type=type(value), default=None,
                        help=f"Default {value}; with --smoke {SMOKE[name]}.")
  args = parser.parse_args()
  unknown = set(args.sections.split(",")) - set(SECTIONS)
  if unknown:
    parser.error(f"--sections: {sorted(unknown)} not among {list(SECTIONS)}")
  for name in FULL:
    if getattr(args, name) is None:
      setattr(args, name, (SMOKE if args.smoke else FULL)[name])
  return args


def main():
  args = parse_args()
  start = time.perf_counter()
  end = start + args.total_budget
  report = {"benchmark": "accelerator_check", "complete": False, "smoke": args.smoke,
            "figures": "measured on the devices at hand (not compiler estimates)",
            **environment(),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "sections": {}}
  sections = {
      "train_step": (lambda out, d: train_step_section(args, out, d),
                     args.train_budget),
      "input_feed": (lambda out, d: input_feed_section(args, out, d,
                                                       fitted_batch(report, args)),
                     args.feed_budget),
      "embed": (lambda out, d: embed_section(args, out, d), args.embed_budget),
  }
  for name in args.sections.split(","):
    fn, budget = sections[name]
    run_section(report, name, fn, budget, end, args.out)
  report.pop("running", None)
  report["complete"] = True
  report["wall_seconds"] = round(time.perf_counter() - start, 1)
  write(report, args.out)


if __name__ == "__main__":
  main()
