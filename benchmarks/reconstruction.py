"""Does the decoder learn? Masked reconstruction against simple predictors, and what
checking it costs.

  python benchmarks/reconstruction.py --steps 300,1200 --methods gl,hl
  python benchmarks/reconstruction.py --timing_only
  python benchmarks/reconstruction.py --steps 600 --methods gl \
      --set model.decoder_dim=256 --set model.decoder_depth=2 \
      --set model.decoder_heads=8 --set mask_ratio=0.6

For each method and budget, pretrains the demo config (`configs/demo.py`: the tiny
model, batch 32, the demo's synthetic PTB-XL, prepared first when absent) with the
real training loop into a fresh workdir, and reports from its log (every `log_every`
steps, `crema_jax.references`: the decoder and the simple predictors on that step's
own views and masks) the last reconstruction losses and `reconstruction_ratio`, the
decoder's loss over the best predictor's (target: <= 0.5).

Then times the jitted HL step of the demo config (random crops of the real shapes,
median of `--timing_steps`) and the log steps' reference check on the same batch, in
the same process, alternating, and prints the check's share of a run's step time
(once every `log_every` steps; the step itself is unchanged by it). Prints one JSON
object. `--set FIELD=VALUE` (repeated) changes the demo config of the runs, and the
timing then puts the changed config's step beside the demo's, alternating (the ratio
is the cost of the change; the CPU step's budget is 1.05x the demo's).
"""

import argparse
import ast
import json
import pathlib
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import demo as demo_config
from crema_jax import demo
from crema_jax import metrics
from crema_jax import references
from crema_jax import sharding
from crema_jax import step as step_lib
from crema_jax import train

METHOD_WEIGHTS = {"gl": (1.0, 0.0, 0.0), "hl": (1.0, 1.0, 1.0)}


def demo_with(sets: list[str]):
  """The demo config with `--set FIELD=VALUE` overrides (values as Python literals)."""
  config = demo_config.get_config()
  for item in sets:
    field, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = field.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise SystemExit(f"--set {item}: the demo config has no field {field}")
    node[leaf] = value
  return config


def pretrain_run(method: str, steps: int, root: pathlib.Path,
                 sets: list[str] = ()) -> dict:
  config = demo_with(list(sets))
  config.total_steps = steps
  config.optimizer.warmup_steps = max(steps // 10, 1)
  config.checkpoint_every = steps
  config.progress_bar = False
  (config.loss.reconstruction, config.loss.sample,
   config.loss.patient) = METHOD_WEIGHTS[method]
  demo.write_demo_data(config)
  workdir = root / ("_".join([method, str(steps), *sets]).replace("/", "_"))
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  train.pretrain(config, workdir)
  rows = [r for r in metrics.read_jsonl(workdir / "metrics.jsonl")
          if "reconstruction_ratio" in r]
  last = rows[-3:]  # The last three log steps, averaged (one batch each).
  mean = lambda k: round(float(np.mean([r[k] for r in last])), 4)
  return {"method": method, "steps": steps, "set": list(sets),
          "seconds": round(time.perf_counter() - start),
          "reconstruction_ratio": mean("reconstruction_ratio"),
          "decoder": mean("reference_model"),
          **{name: mean(f"reference_{name}") for name in
             ("zero", "visible_mean", "nearest_visible", "one_rr")},
          "ratio_by_step": {r["step"]: round(r["reconstruction_ratio"], 3)
                            for r in rows[::max(len(rows) // 10, 1)]},
          "workdir": str(workdir)}


def timers(repeats: int, rng: np.random.Generator, sets: list[str] = ()) -> dict:
  """{name: () -> [seconds]}: the demo config's jitted HL step, and the log steps'
  reference check (`references.make_reference_fn`) on the same batch; with `sets`,
  also the changed config's HL step ("train_step_set")."""
  config = demo_config.get_config()
  timed_steps = {"train_step": config}
  if sets:
    timed_steps["train_step_set"] = demo_with(list(sets))
  out = {}
  for name, step_config in timed_steps.items():
    out.update(_timers(step_config, repeats, rng, name))
  return out


def _timers(config, repeats: int, rng: np.random.Generator, key: str) -> dict:
  run = step_lib.build_run(config, sharding.make_mesh(1))
  state = run.initial_state(jax.random.key(0))
  batch = {}
  for name, (shape, dtype) in step_lib.host_batch_spec(config).items():
    if name == "signals":
      batch[name] = jnp.asarray(rng.normal(size=shape).astype(dtype))
    elif name == "valid":
      batch[name] = jnp.full(shape, config.data.seq_len, dtype)
    else:
      batch[name] = jnp.asarray(np.arange(np.prod(shape)).reshape(shape) % 7, dtype)
  reference_fn = references.make_reference_fn(run.model, config)
  state, m = run.train_step(state, batch)
  jax.block_until_ready((m, reference_fn(state.params, 0, batch)))

  def timed(call):
    def go():
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
      return times
    return go

  def step():
    nonlocal state
    state, out = run.train_step(state, batch)
    return out

  out = {key: timed(step)}
  if key == "train_step":
    out["reference_check"] = timed(lambda: reference_fn(state.params, 0, batch))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", default="300,1200")
  parser.add_argument("--methods", default="gl,hl")
  parser.add_argument("--timing_steps", type=int, default=20)
  parser.add_argument("--timing_only", action="store_true")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--set", action="append", default=[], dest="sets",
                      help="FIELD=VALUE of the demo config, e.g. model.decoder_dim=256")
  args = parser.parse_args()
  out = {"devices": jax.device_count(), "runs": []}
  if not args.timing_only:
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="reconstruction_"))
    for steps in (int(s) for s in args.steps.split(",")):
      for method in args.methods.split(","):
        out["runs"].append(pretrain_run(method, steps, root, args.sets))
        print(json.dumps(out["runs"][-1]), flush=True)
  timed = timers(args.timing_steps, np.random.default_rng(0), args.sets)
  times = {name: [] for name in timed}
  for _ in range(3):  # Alternating rounds: the machine's load hits both alike.
    for name, go in timed.items():
      times[name] += go()
  median = {name: float(np.median(t)) for name, t in times.items()}
  out["seconds_median"] = {k: round(v, 4) for k, v in median.items()}
  log_every = demo_config.get_config().log_every
  # The check runs once per log step: its share of a run's step time.
  out["reference_overhead_per_step"] = round(
      median["reference_check"] / (log_every * median["train_step"]), 3)
  if args.sets:
    out["set_step_ratio"] = round(median["train_step_set"] / median["train_step"], 3)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
