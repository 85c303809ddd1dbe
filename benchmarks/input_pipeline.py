"""Can the host feed the step? Input-pipeline records/s per core, next to what the
paper step consumes.

  python benchmarks/input_pipeline.py [--patients 300] [--batches 20] [--workers 0,2]

Writes a synthetic PTB-XL folder into a temporary directory and prepares it, then
times, in the same run:
- the pipeline that feeds the step now (`crema_jax.input.pipeline`: read the stored
  float16 record, slice the crops of its views; the step standardises, augments and
  masks them on the device), with one reading thread (records/s per core) and with
  Grain worker processes;
- the host-side augmentation it replaced (`host_views_reference.py`: crop,
  standardisation, augmentation and masks in numpy per record), the same ways;
- the step's consumption: the demo step measured on this machine, and the paper step
  (emb 1024, depth 2, patch 125, HL with pair views, bfloat16) projected on one H100
  and one TPU v5e from XLA's FLOP count at 40% of the published peak (projections,
  not measurements), with the host cores each would need at the measured rates.
Prints one JSON object.
"""

import argparse
import itertools
import json
import os
import pathlib
import sys
import tempfile
import time

import grain
import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import host_views_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import demo  # pylint: disable=g-import-not-at-top,wrong-import-position
from crema_jax.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position
from crema_jax.data import storage  # pylint: disable=g-import-not-at-top,wrong-import-position
from crema_jax.data import synthetic  # pylint: disable=g-import-not-at-top,wrong-import-position
from crema_jax.input import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

PROJECTED = ("H100 SXM", "TPU v5e")


def records_per_second(make_iterator, batches: int, batch_size: int,
                       one_core: bool = False) -> float:
  """Records/s of the iterator `make_iterator()` makes; with `one_core`, this process
  (its reading threads included) is pinned to one CPU for the measurement."""
  cpus = os.sched_getaffinity(0)
  if one_core:
    os.sched_setaffinity(0, {min(cpus)})
  try:
    return _records_per_second(make_iterator, batches, batch_size)
  finally:
    os.sched_setaffinity(0, cpus)


def _records_per_second(make_iterator, batches: int, batch_size: int) -> float:
  it = make_iterator()
  next(it)  # Start-up (worker processes, first reads) is not throughput.
  start = time.perf_counter()
  for _ in itertools.islice(it, batches):
    pass
  seconds = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return batches * batch_size / seconds


def reference_dataset(config, prepared):
  """Today's pipeline chain with the host-side views of before."""
  subset = host_views_reference.DecodedRecords(
      prepared, storage.fold_positions(prepared, config.data.pretrain_folds))
  ds = grain.MapDataset.source(subset).shuffle(seed=0).repeat()
  ds = ds.random_map(host_views_reference.HostPretrainViews(subset, config), seed=1)
  ds = ds.batch(config.batch_size, drop_remainder=True)
  return pipeline._iterate(ds, config.data)  # pylint: disable=protected-access


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--patients", type=int, default=300)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--workers", default="0,2", help="Grain worker counts to time.")
  parser.add_argument("--prepare_workers", type=int, default=2)
  parser.add_argument("--step_steps", type=int, default=3)
  args = parser.parse_args()

  result = {"cpu_count": os.cpu_count(), "batch_size": args.batch_size}
  with tempfile.TemporaryDirectory() as tmp:
    config = demo.get_config()
    config.data.raw_dir = str(pathlib.Path(tmp) / "ptbxl")
    config.data.data_dir = str(pathlib.Path(tmp) / "prepared")
    config.data.prepare_workers = args.prepare_workers
    config.batch_size = args.batch_size
    synthetic.write_synthetic_ptbxl(config.data.raw_dir, num_patients=args.patients)
    manifest = prepare.prepare_from_config(config.data, show_progress=False)
    result["prepare_records_per_second"] = manifest["records_per_second"]
    prepared = storage.PreparedSource(config.data.data_dir, config.data.name)

    pipelines = {"device_views": lambda c: pipeline.pretrain_dataset(c, prepared),
                 "host_views_reference": lambda c: reference_dataset(c, prepared)}
    for name, make in pipelines.items():
      rates = {}
      # No worker processes, this process pinned to one CPU: the rate of one core.
      single = config.copy_and_resolve_references()
      single.data.update(worker_count="0", read_threads=1)
      rates["per_core"] = records_per_second(lambda: iter(make(single)), args.batches,
                                             args.batch_size, one_core=True)
      for workers in [int(w) for w in args.workers.split(",")]:
        config.data.worker_count = str(workers)
        rates[f"workers{workers}"] = records_per_second(
            lambda: iter(make(config)), args.batches, args.batch_size)
      result[name] = {k: round(v, 1) for k, v in rates.items()}
    result["per_core_speedup"] = round(result["device_views"]["per_core"] /
                                       result["host_views_reference"]["per_core"], 1)

  # What the step consumes: the demo step here, the paper step projected.
  measured = train_step.measure(config, args.step_steps)
  result["demo_step_samples_per_second_here"] = measured["samples_per_second"]
  paper = train_step.make_config("paper", 64, "bfloat16", True, 1, False)
  flops_per_ecg = train_step.measure(paper, 0, run=False)["tflops_per_step"] * 1e12 / 64
  result["paper_step_gflop_per_ecg"] = round(flops_per_ecg / 1e9, 2)
  projected = {}
  for device in PROJECTED:
    peak = train_step.DEVICE_PEAKS[device]["tflops"] * 1e12 * train_step.PROJECTION_MFU
    ecgs = peak / flops_per_ecg
    projected[device] = {
        "ecgs_per_second": round(ecgs),
        "host_cores_needed_device_views": round(
            ecgs / result["device_views"]["per_core"], 1),
        "host_cores_needed_host_views_reference": round(
            ecgs / result["host_views_reference"]["per_core"], 1)}
  result["projected_paper_step_at_40pct_peak"] = projected
  result["jax_devices"] = jax.device_count()
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
