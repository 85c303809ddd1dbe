"""Input-pipeline throughput: prepare records/s and Grain pretraining records/s.

  python benchmarks/input_pipeline.py [--patients 300] [--batches 20] [--workers 0,2]

Writes a synthetic PTB-XL folder into a temporary directory, prepares it with the
configured number of processes, then times the pretraining pipeline (two augmented,
masked views plus a same-patient view per ECG) at batch 64. Prints one JSON object.
"""

import argparse
import itertools
import json
import os
import pathlib
import tempfile
import time

from configs import demo
from crema_jax.data import prepare
from crema_jax.data import storage
from crema_jax.data import synthetic
from crema_jax.input import pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--patients", type=int, default=300)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--workers", default="0,2", help="Grain worker counts to time.")
  parser.add_argument("--prepare_workers", type=int, default=2)
  args = parser.parse_args()

  result = {"cpu_count": os.cpu_count(), "batch_size": args.batch_size}
  with tempfile.TemporaryDirectory() as tmp:
    config = demo.get_config()
    config.data.raw_dir = str(pathlib.Path(tmp) / "ptbxl")
    config.data.data_dir = str(pathlib.Path(tmp) / "prepared")
    config.data.prepare_workers = args.prepare_workers
    config.batch_size = args.batch_size

    start = time.perf_counter()
    synthetic.write_synthetic_ptbxl(config.data.raw_dir, num_patients=args.patients)
    result["synthetic_write_seconds"] = round(time.perf_counter() - start, 2)

    manifest = prepare.prepare_from_config(config.data, show_progress=False)
    result["prepare_records"] = manifest["num_records"]
    result["prepare_workers"] = args.prepare_workers
    result["prepare_records_per_second"] = manifest["records_per_second"]

    prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
    for workers in [int(w) for w in args.workers.split(",")]:
      config.data.worker_count = workers
      it = iter(pipeline.pretrain_dataset(config, prepared))
      next(it)  # Start-up (worker processes, first reads) is not throughput.
      start = time.perf_counter()
      for _ in itertools.islice(it, args.batches):
        pass
      seconds = time.perf_counter() - start
      result[f"pipeline_records_per_second_workers{workers}"] = round(
          args.batches * args.batch_size / seconds, 1)
      if hasattr(it, "close"):
        it.close()
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
