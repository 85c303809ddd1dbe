"""Prepare at scale: records/s and peak memory on generated records.

  python benchmarks/prepare.py [--records 100000] [--workers 2] [--records_per_shard 1000]

Prepares `--records` generated 10 s, 12-lead, 500 Hz records (a reader that makes
each record from its key, so reading costs little and the numbers measure prepare
itself: serialisation, float16, ArrayRecord writes, shard markers, the final index)
into a temporary folder. Prints one JSON object: records/s, bytes on disk per record,
and peak resident memory of the main process and of the largest worker process. Memory
must stay flat in the corpus size: workers stream one record at a time and the index
is merged shard by shard as arrays.
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

from crema_jax.data import prepare
from crema_jax.data import records

RATE, SECONDS = 500, 10


class GeneratedSource:
  """`num_records` records made from their keys: sines plus noise, 3 per patient."""

  name = "generated"
  root = ""
  sampling_rate = RATE

  def __init__(self, num_records: int):
    self.num_records = num_records

  def keys(self) -> list[str]:
    return [f"{i:08d}" for i in range(self.num_records)]

  def read(self, key: str) -> records.Record:
    i = int(key)
    rng = np.random.default_rng(i)
    t = np.arange(RATE * SECONDS, dtype=np.float32)[:, None] / RATE
    freq = rng.uniform(0.8, 3.0, (1, 12)).astype(np.float32)
    ecg = np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(
        (len(t), 12), dtype=np.float32)
    return records.Record(ecg=ecg, sampling_rate=RATE, ecg_id=i, patient_id=i // 3,
                          source=self.name, record_name=key)


def _peak_mb(who: int) -> float:
  """Peak resident set size in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
  peak = resource.getrusage(who).ru_maxrss
  return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--records", type=int, default=100_000)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--records_per_shard", type=int, default=1000)
  parser.add_argument("--dir", default=None, help="Where to write (default: a temp dir).")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
    start = time.perf_counter()
    manifest = prepare.prepare(GeneratedSource(args.records), tmp,
                               records_per_shard=args.records_per_shard,
                               num_workers=args.workers, show_progress=False)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in pathlib.Path(tmp).rglob("*") if f.is_file())
  main_mb = _peak_mb(resource.RUSAGE_SELF)
  worker_mb = _peak_mb(resource.RUSAGE_CHILDREN)
  print(json.dumps({
      "records": manifest["num_records"], "workers": args.workers,
      "cpu_count": os.cpu_count(), "records_per_shard": args.records_per_shard,
      "seconds": round(seconds, 1), "records_per_second": round(args.records / seconds, 1),
      "bytes_per_record": round(size / max(1, manifest["num_records"])),
      "peak_rss_main_mb": main_mb, "peak_rss_largest_worker_mb": worker_mb,
      "peak_rss_bound_mb": round(main_mb + max(1, args.workers) * worker_mb
                                 if args.workers > 1 else main_mb, 1),
  }, indent=1))


if __name__ == "__main__":
  main()
