"""TPU before you have one: compile the real programs for TPU topologies on any CPU and
print what XLA's TPU compiler estimates about them, as JSON.

  pip install --target .libtpu -r benchmarks/requirements-tpu.txt   # libtpu, ~700 MB
  python benchmarks/tpu_aot.py                                      # every topology
  python benchmarks/tpu_aot.py --topologies v5e:2x2 --programs train \
      --batch_per_chip 64,128,256 --max_batch

For each topology (compile-only TPU devices from libtpu: nothing runs) and program:
- `train`: the pretraining step of `crema_jax.step` (HL, patient pairs, bfloat16;
  `--variant`), on a (data, fsdp) mesh of the topology's devices;
- `embed`: the encoder's embedding function (`inference.model.encode_fn`: per-lead
  standardisation and pooled features, what embed/predict/export run);
- `finetune`: the fine-tuning step (`evaluation.finetune.make_step`).
it reports per chip: FLOPs (XLA's cost analysis), HBM use against the chip's HBM
(memory analysis), the step time from the compiler's per-instruction
`estimated_cycles` (`tpu_hlo.cycle_report`) and, beside it, libtpu's cost model
(`optimal_seconds`, corrected: it counts -1 s per ConcatBitcast custom call), the
estimated MFU and ECGs/s per chip of each, the cycle shares by stage (views,
encoder, decoder, attention core, loss, optimizer), the instructions without a cycle
estimate, lane-padded arrays, and the collectives with their bytes (and whether any
moves signals, tokens or latents). With `--max_batch`, the largest global batch whose
compiled step fits in 90% of HBM (a linear fit of the compiled batches' memory,
checked by compiling it). All of it is the compiler's estimate for a chip this
program never ran on: see README "On TPU, before you have one" for what that can
and cannot tell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBTPU_DIR = pathlib.Path(os.environ.get("CREMA_LIBTPU_DIR", ROOT / ".libtpu"))


def use_libtpu() -> None:
  """Makes libtpu importable from `.libtpu` (a `pip install --target` kept out of the
  runtime environment) and quiets its metadata lookups; call before importing jax."""
  if LIBTPU_DIR.is_dir() and str(LIBTPU_DIR) not in sys.path:
    sys.path.insert(0, str(LIBTPU_DIR))
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Compile-only TPU devices; runs on CPU.
  # Nothing runs on a TPU here, so several compiling processes may load libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


use_libtpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from configs import common  # noqa: E402
from configs import probe as probe_config  # noqa: E402
from crema_jax import models  # noqa: E402
from crema_jax import sharding  # noqa: E402
from crema_jax import step as step_lib  # noqa: E402
from crema_jax import train  # noqa: E402
from crema_jax.evaluation import finetune as finetune_lib  # noqa: E402
from crema_jax.inference import model as inference_model  # noqa: E402
from crema_jax.input import views  # noqa: E402
from crema_jax.models import sizing  # noqa: E402
import tpu_hlo  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures. The clock is the dense bf16 peak over the MXUs'
  multiply-adds per cycle (v4, v5e, v5p: 4 MXUs of 128x128 per TensorCore; v6e: 4 of
  256x256), the rate the compiler's cycle estimates are divided by."""
  name: str
  hbm_gib: float
  bf16_tflops: float
  mxu_flops_per_cycle_per_core: int
  cores: int  # TensorCores per chip.

  @property
  def clock_hz(self) -> float:
    return self.bf16_tflops * 1e12 / (self.mxu_flops_per_cycle_per_core * self.cores)


CHIPS = {
    "v4": Chip("TPU v4", 32, 275.0, 4 * 128 * 128 * 2, 2),
    "v5e": Chip("TPU v5e", 16, 197.0, 4 * 128 * 128 * 2, 1),
    "v5p": Chip("TPU v5p", 95, 459.0, 4 * 128 * 128 * 2, 2),
    "v6e": Chip("TPU v6e", 32, 918.0, 4 * 256 * 256 * 2, 1),
}
TOPOLOGIES = ("v5e:2x2", "v5e:2x4", "v5p:2x2x1", "v4:2x2x1", "v6e:2x2", "v5e:4x4")
PROGRAMS = ("train", "embed", "finetune")
HBM_BUDGET = 0.9  # Of a chip's HBM, what a recommended or maximal batch may use.
# configs/pretrain.py's budget (the paper does not state its own): 100,000 steps of
# 256 ECGs, ~23 passes over the paper's 1.1M ECGs.
PRETRAIN_EXAMPLES = 100_000 * 256
DUMP_DIR = os.environ.get("CREMA_TPU_HLO_DIR")  # Set: each compiled program's HLO there.
PAPER_ECGS = 1_100_000


@dataclasses.dataclass
class Target:
  """A topology's compile-only devices and what one device of it is."""
  name: str
  devices: list
  chip: Chip

  @property
  def chips(self) -> int:
    return len({(d.process_index, tuple(d.coords)) for d in self.devices})

  @property
  def devices_per_chip(self) -> int:
    return len(self.devices) // self.chips

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})

  @property
  def device_hbm_bytes(self) -> float:
    return self.chip.hbm_gib * 2 ** 30 / self.devices_per_chip

  @property
  def device_peak_flops(self) -> float:
    return self.chip.bf16_tflops * 1e12 / self.devices_per_chip


def target(name: str) -> Target:
  generation = name.split(":")[0]
  if generation not in CHIPS:
    raise ValueError(f"topology {name!r}: generation not one of {sorted(CHIPS)}")
  topo = topologies.get_topology_desc(topology_name=name, platform="tpu")
  return Target(name, list(topo.devices), CHIPS[generation])


# ------------------------------------------------------------------ the programs
def pretrain_config(variant: str, global_batch: int, fsdp: int = 1,
                    shard_optimizer: bool = False):
  """The paper step's config: HL with patient pairs, bfloat16 compute."""
  config = common.base_config(variant, "hl")
  config.batch_size = global_batch
  config.compute_dtype = "bfloat16"
  config.data.patient_pairs = True
  config.mesh.fsdp = fsdp
  config.mesh.shard_optimizer = shard_optimizer
  train.check_config(config)
  return config


def _batch_struct(mesh, shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh))


def _replicated_struct(mesh, tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(mesh, P())), tree)


def lower_train(config, mesh):
  """The pretraining step, traced on abstract state and host batch."""
  built = step_lib.build_run(config, mesh)
  batch = {k: _batch_struct(mesh, shape, dtype)
           for k, (shape, dtype) in step_lib.host_batch_spec(config).items()}
  return built.train_step.trace(built.restore_target(), batch).lower()


def lower_embed(config, mesh):
  """The encoder's embedding function on whole signals, parameters replicated."""
  model = models.build(config)
  params = _replicated_struct(mesh, jax.eval_shape(
      lambda r: models.init_params(model, r), jax.random.key(0)))
  b, t, leads = config.batch_size, config.data.seq_len, config.model.num_leads
  fn = jax.jit(inference_model.encode_fn(model, config.data.normalize))
  return fn.trace(params, _batch_struct(mesh, (b, leads, t), jnp.float32),
                  _batch_struct(mesh, (b,), jnp.int32)).lower()


def lower_finetune(config, mesh, classes: int = 5):
  """The fine-tuning step (encoder + linear head, its own augmentation)."""
  model = models.build(config)
  ft = probe_config.get_config().finetune
  optimizer, initial_params = finetune_lib.make_optimizer(model, ft, classes)
  params = jax.eval_shape(lambda r: initial_params(
      models.init_params(model, r),
      (jnp.zeros((model.emb_dim, classes)), jnp.zeros((classes,)))), jax.random.key(0))
  opt_state = jax.eval_shape(optimizer.init, params)
  step = finetune_lib.make_step(model, optimizer, config, ft, seed=0)
  b, t, leads = config.batch_size, config.data.seq_len, config.model.num_leads
  return step.trace(_replicated_struct(mesh, params), _replicated_struct(mesh, opt_state),
                    _batch_struct(mesh, (b, leads, t), jnp.float16),
                    _batch_struct(mesh, (b,), jnp.int32),
                    _batch_struct(mesh, (b, classes), jnp.float32),
                    jax.ShapeDtypeStruct((), jnp.int32,
                                         sharding=NamedSharding(mesh, P()))).lower()


LOWER = {"train": lower_train, "embed": lower_embed, "finetune": lower_finetune}


def model_flops(program: str, config) -> float:
  """The model FLOPs of one call of `program` on the global batch (`models.sizing`):
  what MFU divides, so that an implementation's extra work is not counted as
  useful."""
  fields = {**config.model.to_dict(), "seq_len": config.data.seq_len}
  if program == "train":
    per_example = sizing.train_flops(fields, seq_len=config.data.seq_len,
                                     mask_ratio=config.mask_ratio,
                                     views=views.num_views(config))
  elif program == "embed":
    per_example = sizing.embed_flops(fields, seq_len=config.data.seq_len)
  else:  # Fine-tuning: the whole-signal encoder, forward and backward.
    per_example = 3 * sizing.embed_flops(fields, seq_len=config.data.seq_len)
  return float(per_example * config.batch_size)


# ------------------------------------------------------------------ the estimates
def estimate(tgt: Target, program: str, config, mesh) -> dict:
  """Compiles `program` for `tgt` and reads the compiler's estimates (per device and
  per chip)."""
  start = time.perf_counter()
  compiled = LOWER[program](config, mesh).compile()
  compile_s = time.perf_counter() - start
  hlo = compiled.as_text()
  if DUMP_DIR:
    path = pathlib.Path(DUMP_DIR) / f"{tgt.name.replace(':', '_')}_{program}_{config.batch_size}.hlo"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hlo)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  hbm = (mem.argument_size_in_bytes + mem.output_size_in_bytes
         - mem.alias_size_in_bytes + mem.temp_size_in_bytes
         + mem.generated_code_size_in_bytes)
  cycles = tpu_hlo.cycle_report(hlo)
  xla_flops = float(cost.get("flops", 0.0))  # One device's partitioned program.
  flops = model_flops(program, config) / len(tgt.devices)  # Per device.
  cycle_s = cycles["total_cycles"] / tgt.chip.clock_hz
  raw_s = float(cost.get("optimal_seconds", float("nan")))
  bitcasts = tpu_hlo.concat_bitcasts(hlo)
  model_s = raw_s + bitcasts
  per_chip = tgt.devices_per_chip
  chips = tgt.chips
  b = config.batch_size

  def rates(seconds):
    if not seconds > 0:
      return {"step_ms": None, "mfu": None, "ecgs_per_s_per_chip": None}
    return {"step_ms": round(seconds * 1e3, 3),
            "mfu": round(flops / seconds / tgt.device_peak_flops, 4),
            "ecgs_per_s_per_chip": round(b / seconds / chips, 1)}

  found = sharding.collectives(hlo)
  m = config.model
  patch_dim = m.patch_size * (1 if m.token_layout == "per_lead" else m.num_leads)
  param_shapes = [x.shape for x in jax.tree.leaves(jax.eval_shape(
      lambda r: models.init_params(models.build(config), r), jax.random.key(0)))]
  moving = sharding.activation_collectives(
      found, param_shapes, seq_len=config.data.seq_len,
      token_widths={patch_dim, m.emb_dim, m.decoder_dim},
      fsdp=len(tgt.devices) if config.mesh.shard_optimizer else config.mesh.fsdp)
  uncosted_share = (None if not model_s > cycle_s else round(1 - cycle_s / model_s, 4))
  return {
      "program": program, "global_batch": b, "batch_per_chip": b // chips,
      "compile_seconds": round(compile_s, 1),
      "model_tflop_per_chip": round(flops * per_chip / 1e12, 4),
      "xla_tflop_per_chip": round(xla_flops * per_chip / 1e12, 4),
      "hbm_gib_per_chip": round(hbm * per_chip / 2 ** 30, 3),
      "hbm_fraction": round(hbm / tgt.device_hbm_bytes, 4),
      "fits": bool(hbm <= tgt.device_hbm_bytes),
      "estimated_from_cycles": rates(cycle_s),
      "estimated_from_cost_model": {
          **rates(model_s), "optimal_seconds_raw": round(raw_s, 6),
          "concat_bitcasts_added_back": bitcasts},
      "cycle_share_by_stage": cycles["share_by_stage"],
      # The cost model's time the cycle sum does not cover, when it is larger:
      # the uncosted instructions' share (together) by the cost model.
      "uncosted_share_of_cost_model": uncosted_share,
      "uncosted_instructions": cycles["uncosted"],
      "top_instructions": tpu_hlo.top_instructions(hlo, 8),
      "lane_padded_arrays": tpu_hlo.lane_padded_arrays(hlo)[:8],
      "large_gathers": tpu_hlo.gathers(hlo)[:8],
      "collectives": sharding.summarize_collectives(found),
      "activation_collective_bytes": sum(c["bytes"] for c in moving),
  }


def extrapolated_max_batch(tgt: Target, fits: list[tuple[int, float]]) -> int:
  """The largest global batch (a multiple of 8 x devices) within HBM_BUDGET of a
  device's HBM by a line through `fits` [(global batch, hbm fraction)]: HBM use is
  the state plus activations linear in the batch."""
  (b0, f0), (b1, f1) = fits[0], fits[-1]
  per_example = (f1 - f0) / (b1 - b0)
  fixed = f0 - per_example * b0
  quantum = 8 * len(tgt.devices)
  return int((HBM_BUDGET - fixed) / per_example) // quantum * quantum


def max_batch(tgt: Target, fits: list[tuple[int, float]], config_at, mesh,
              program: str) -> dict:
  """`extrapolated_max_batch`, then compiled at that batch (and stepped down by an
  eighth until it fits)."""
  quantum = 8 * len(tgt.devices)
  guess = extrapolated_max_batch(tgt, fits)
  checked = []
  while guess >= quantum:
    result = estimate(tgt, program, config_at(guess), mesh)
    checked.append((guess, result["hbm_fraction"]))
    if result["hbm_fraction"] <= HBM_BUDGET:
      return {"global_batch": guess, "batch_per_chip": guess // tgt.chips,
              "hbm_fraction": result["hbm_fraction"],
              "estimated_from_cycles": result["estimated_from_cycles"],
              "checked": checked}
    guess = (guess - guess // 8) // quantum * quantum
  return {"global_batch": None, "checked": checked}


def recommend(rows: list[dict]) -> dict | None:
  """The batch per chip to train at: the smallest within 3% of the best estimated
  ECGs/s per chip (cycles) among the compiled ones that fit in HBM_BUDGET."""
  ok = [r for r in rows if r["hbm_fraction"] <= HBM_BUDGET
        and r["estimated_from_cycles"]["ecgs_per_s_per_chip"]]
  if not ok:
    return None
  best = max(r["estimated_from_cycles"]["ecgs_per_s_per_chip"] for r in ok)
  pick = min((r for r in ok
              if r["estimated_from_cycles"]["ecgs_per_s_per_chip"] >= 0.97 * best),
             key=lambda r: r["batch_per_chip"])
  ecgs_per_s = pick["estimated_from_cycles"]["ecgs_per_s_per_chip"]
  return {"batch_per_chip": pick["batch_per_chip"],
          "estimated_ecgs_per_s_per_chip": ecgs_per_s,
          "estimated_chip_hours_for_pretraining": round(
              PRETRAIN_EXAMPLES / ecgs_per_s / 3600, 1)}


def run_target(name: str, args) -> dict:
  tgt = target(name)
  out = {"topology": name, "chip": tgt.chip.name, "chips": tgt.chips,
         "hosts": tgt.hosts, "devices": len(tgt.devices),
         "devices_per_chip": tgt.devices_per_chip,
         "hbm_gib_per_chip": tgt.chip.hbm_gib,
         "peak_bf16_tflops_per_chip": tgt.chip.bf16_tflops,
         "clock_ghz": round(tgt.chip.clock_hz / 1e9, 3), "programs": {}}
  # A Mesh of the devices as listed: jax.make_mesh wants one device per chip, and
  # libtpu's v4 topologies list each chip's two TensorCores.
  mesh = jax.sharding.Mesh(
      np.asarray(tgt.devices).reshape(-1, args.fsdp), ("data", "fsdp"),
      axis_types=(jax.sharding.AxisType.Auto,) * 2)
  for program in args.programs:
    config_at = lambda b: pretrain_config(args.variant, b, args.fsdp,
                                          args.shard_optimizer)
    rows = []
    per_chip = args.batch_per_chip if program == "train" else args.batch_per_chip[-1:]
    for b in per_chip:
      rows.append(estimate(tgt, program, config_at(b * tgt.chips), mesh))
      print(json.dumps({"topology": name, **_brief(rows[-1])}), file=sys.stderr,
            flush=True)
    entry = {"at_batch": rows}
    if program == "train":
      entry["recommended"] = recommend(rows)
      if len(rows) >= 2:
        fits = [(r["global_batch"], r["hbm_fraction"]) for r in rows]
        entry["max_batch_extrapolated"] = extrapolated_max_batch(tgt, fits)
      if args.max_batch and len(rows) >= 2:
        entry["max_batch"] = max_batch(
            tgt, [(r["global_batch"], r["hbm_fraction"]) for r in rows], config_at,
            mesh, program)
    out["programs"][program] = entry
  return out


def table(results: list[dict]) -> str:
  """The README's per-generation table from tpu_aot JSON results: each topology's
  recommended batch of the paper step, with its estimates."""
  lines = [
      "| topology | chips (hosts) | batch / chip (global) | HBM / chip | est. step "
      "(cycles; cost model) | est. MFU (cycles; cost model) | est. ECGs/s / chip | "
      "views share | largest batch / chip that fits | est. chip-hours (wall hours) "
      "for 25.6M ECG-steps |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for result in results:
    for t in result["targets"]:
      train = t["programs"].get("train")
      if not train or not train.get("recommended"):
        continue
      per_chip = train["recommended"]["batch_per_chip"]
      row = next(r for r in train["at_batch"] if r["batch_per_chip"] == per_chip)
      c, m = row["estimated_from_cycles"], row["estimated_from_cost_model"]
      largest = train.get("max_batch", {}).get("batch_per_chip")
      largest = (f"{largest} (compiled)" if largest else
                 f"~{train['max_batch_extrapolated'] // t['chips']} (extrapolated)"
                 if train.get("max_batch_extrapolated") else "-")
      hours = result["pretraining_budget_examples"] / c["ecgs_per_s_per_chip"] / 3600
      lines.append(
          f"| {t['topology']} ({t['chip']}) | {t['chips']} ({t['hosts']}) | "
          f"{per_chip} ({row['global_batch']}) | {row['hbm_gib_per_chip']:.2f} of "
          f"{t['hbm_gib_per_chip']} GiB | {c['step_ms']:.1f} ms; "
          f"{m['step_ms']:.1f} ms | {c['mfu']:.2f}; {m['mfu']:.2f} | "
          f"{c['ecgs_per_s_per_chip']:,.0f} | "
          f"{row['cycle_share_by_stage'].get('views', 0):.1%} | {largest} | "
          f"{hours:,.1f} ({hours / t['chips']:,.2f}) |")
  return "\n".join(lines)


def _brief(row: dict) -> dict:
  c = row["estimated_from_cycles"]
  return {"program": row["program"], "global_batch": row["global_batch"],
          "compile_s": row["compile_seconds"], "hbm": row["hbm_fraction"],
          "step_ms": c["step_ms"], "mfu": c["mfu"],
          "views": row["cycle_share_by_stage"].get("views")}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
  parser.add_argument("--programs", default=",".join(PROGRAMS))
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--batch_per_chip", default="64,256",
                      help="Comma-separated batches per chip to compile (train); the "
                      "other programs use the last.")
  parser.add_argument("--fsdp", type=int, default=1)
  parser.add_argument("--shard_optimizer", action="store_true",
                      help="AdamW's moments split over every device (ZeRO-1).")
  parser.add_argument("--max_batch", action="store_true",
                      help="Also find the largest global batch that fits (train).")
  parser.add_argument("--out", default=None, help="Also write the JSON here.")
  parser.add_argument("--table", nargs="+", default=None, metavar="JSON",
                      help="Print the README table of these results and exit.")
  args = parser.parse_args(argv)
  if args.table:
    print(table([json.loads(pathlib.Path(p).read_text()) for p in args.table]))
    return None
  args.programs = [p for p in args.programs.split(",") if p]
  unknown = set(args.programs) - set(PROGRAMS)
  if unknown:
    parser.error(f"unknown programs {sorted(unknown)}; choose from {PROGRAMS}")
  args.batch_per_chip = [int(b) for b in args.batch_per_chip.split(",")]
  result = {
      "what": "XLA TPU compiler estimates (compile-only devices on a CPU); nothing ran "
              "on a TPU: every time, MFU and throughput here is an estimate",
      "jax": jax.__version__, "variant": args.variant, "fsdp": args.fsdp,
      "hbm_budget": HBM_BUDGET,
      "pretraining_budget_examples": PRETRAIN_EXAMPLES,
      "targets": [run_target(name, args) for name in args.topologies.split(",") if name],
  }
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  return result


if __name__ == "__main__":
  main()
