"""Prepare at scale: records/s (per core) and peak memory.

  python benchmarks/prepare.py --source ptbxl [--records 4000] [--workers 2]
  python benchmarks/prepare.py [--source generated] [--records 100000] [--workers 2]
  python benchmarks/prepare.py --source ptbxl --profile 25   # cProfile, one process

Run from the repository root with the project installed (`pip install -e .`).

`--source ptbxl` writes `--records` 10 s, 12-lead, 500 Hz WFDB records in PTB-XL's
published layout (ptbxl_database.csv, scp_statements.csv, records500/, format 16 at
1000/mV as PTB-XL ships them; written once with wfdb.wrsamp, then copied under each
record's name) into a temporary folder, not timed, and prepares them with the real
PTB-XL reader: the numbers include reading and checking the WFDB files.
`--source generated` makes each record from its key (sines plus noise), so reading
costs little and the numbers measure prepare itself: serialisation, float16, ArrayRecord
writes, shard markers, the final index.

Prints one JSON object:
- records/s, and per core (per worker process: each keeps one core busy);
- records per CPU second of prepare's processes, which an idle machine would give as
  records/s per core and which other work on a shared machine does not lower; and the
  same without the CPU seconds that starting the workers costs (imports and the
  unpickled source: a fixed cost per run, measured apart on a pool that does nothing);
- the reader alone on one core (`--source ptbxl`), bytes on disk per record;
- peak resident memory of the main process and of the largest worker process. It
  must stay flat in the corpus size: workers stream one record at a time and the
  index is merged shard by shard as arrays.
With `--profile N`, prepare runs in this process under cProfile and the N costliest
functions (cumulative and own time) go to stderr.
"""

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pathlib
import pstats
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import wfdb

from crema_jax.data import prepare
from crema_jax.data.readers import ptbxl
from crema_jax.data import records

RATE, SECONDS = 500, 10
# As PTB-XL's headers spell them.
PTBXL_LEAD_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF",
                    "V1", "V2", "V3", "V4", "V5", "V6"]
STATEMENTS = (pathlib.Path(prepare.__file__).parent / "resources" /
              "scp_statements.csv")
NUM_TEMPLATES = 16  # Distinct waveforms; records cycle through them.


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


def write_ptbxl_layout(root: pathlib.Path, num_records: int) -> pathlib.Path:
  """Writes `num_records` 500 Hz records and their tables in PTB-XL's layout."""
  templates = root / "_templates"
  templates.mkdir(parents=True)
  rng = np.random.default_rng(0)
  t = np.arange(RATE * SECONDS)[:, None] / RATE
  for k in range(NUM_TEMPLATES):
    freq = rng.uniform(0.8, 3.0, (1, 12))
    mv = 0.8 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal((len(t), 12))
    wfdb.wrsamp(f"t{k}", fs=RATE, units=["mV"] * 12, sig_name=PTBXL_LEAD_NAMES,
                d_signal=np.round(mv * 1000).astype(np.int16), fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(templates))
  headers = [(templates / f"t{k}.hea").read_text() for k in range(NUM_TEMPLATES)]
  rows = []
  for ecg_id in range(1, num_records + 1):
    k = ecg_id % NUM_TEMPLATES
    folder = f"{(ecg_id // 1000) * 1000:05d}"
    hr = f"records500/{folder}/{ecg_id:05d}_hr"
    (root / hr).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(templates / f"t{k}.dat", root / f"{hr}.dat")
    name = pathlib.PurePosixPath(hr).name
    (root / f"{hr}.hea").write_text(headers[k].replace(f"t{k}", name))
    rows.append({"ecg_id": ecg_id, "patient_id": float(ecg_id // 3 + 1),
                 "age": 60.0, "sex": ecg_id % 2,
                 "scp_codes": "{'NORM': 100.0, 'SR': 0.0}" if k % 2 else
                              "{'IMI': 50.0, 'LVH': 100.0, 'SR': 0.0}",
                 "strat_fold": ecg_id % 10 + 1,
                 "filename_lr": f"records100/{folder}/{ecg_id:05d}_lr",
                 "filename_hr": hr})
  shutil.rmtree(templates)
  pd.DataFrame(rows).to_csv(root / ptbxl.DATABASE_CSV, index=False)
  shutil.copyfile(STATEMENTS, root / ptbxl.STATEMENTS_CSV)
  return root


def _peak_mb(who: int) -> float:
  """Peak resident set size in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
  peak = resource.getrusage(who).ru_maxrss
  return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _cpu_seconds() -> float:
  """User + system CPU seconds of this process and its reaped children."""
  return sum(r.ru_utime + r.ru_stime for r in (
      resource.getrusage(resource.RUSAGE_SELF),
      resource.getrusage(resource.RUSAGE_CHILDREN)))


def _noop(_):
  return None


def _pool_start_cpu_seconds(source, processes: int) -> float:
  """CPU seconds to start `processes` workers as prepare does (spawn, imports, the
  source unpickled), measured on a pool that does nothing else."""
  start = _cpu_seconds()
  init = prepare._init_worker  # pylint: disable=protected-access
  pool = multiprocessing.get_context("spawn").Pool(processes, initializer=init,
                                                   initargs=(source,))
  pool.map(_noop, range(processes), chunksize=1)
  pool.close()
  pool.join()  # Not terminate(): each worker finishes starting, and is counted.
  return _cpu_seconds() - start


def _read_rate(source, keys) -> float:
  """Records/s of `source.read` alone, in this process."""
  start = time.perf_counter()
  for key in keys:
    source.read(key)
  return round(len(keys) / (time.perf_counter() - start), 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", choices=("generated", "ptbxl"), default="generated")
  parser.add_argument("--records", type=int, default=None,
                      help="Default: 100000 generated, 4000 ptbxl.")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--records_per_shard", type=int, default=None,
                      help="Default: 1000 generated, 250 ptbxl (so workers share it).")
  parser.add_argument("--profile", type=int, default=0,
                      help="Profile prepare in this process; print N functions.")
  parser.add_argument("--dir", default=None, help="Where to write (default: a temp dir).")
  args = parser.parse_args()
  num_records = args.records or (4000 if args.source == "ptbxl" else 100_000)
  per_shard = args.records_per_shard or (250 if args.source == "ptbxl" else 1000)
  workers = 1 if args.profile else args.workers
  result = {"source": args.source}

  with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
    if args.source == "ptbxl":
      start = time.perf_counter()
      source = ptbxl.PTBXL(write_ptbxl_layout(pathlib.Path(tmp) / "raw", num_records))
      result["write_seconds"] = round(time.perf_counter() - start, 1)
      result["read_records_per_second_one_core"] = _read_rate(
          source, source.keys()[:min(num_records, 500)])
    else:
      source = GeneratedSource(num_records)
    out = pathlib.Path(tmp) / "prepared"
    profiler = cProfile.Profile() if args.profile else None
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    if profiler:
      profiler.enable()
    manifest = prepare.prepare(source, out, records_per_shard=per_shard,
                               num_workers=workers, show_progress=False)
    if profiler:
      profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  if profiler:
    for order in ("cumulative", "tottime"):
      text = io.StringIO()
      pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(args.profile)
      print(text.getvalue(), file=sys.stderr)
  main_mb = _peak_mb(resource.RUSAGE_SELF)
  worker_mb = _peak_mb(resource.RUSAGE_CHILDREN)  # Before the start-up pool below.
  # Prepare runs one process per shard up to `workers` (the main one alone when
  # either is 1), each keeping one core busy.
  processes = min(workers, manifest["num_shards"]) if workers > 1 else 1
  cores = min(processes, os.cpu_count() or 1)
  start_cpu = _pool_start_cpu_seconds(source, processes) if processes > 1 else 0.0
  rate = num_records / seconds
  result.update({
      "records": manifest["num_records"], "skipped": manifest["num_skipped"],
      "workers": workers, "processes": processes, "cpu_count": os.cpu_count(),
      "records_per_shard": per_shard, "seconds": round(seconds, 1),
      "records_per_second": round(rate, 1),
      "records_per_second_per_core": round(rate / cores, 1),
      # CPU seconds of prepare's processes, worker start-up included: the per-core
      # rate that does not depend on what else runs on the machine.
      "cpu_seconds": round(cpu_seconds, 1),
      "records_per_cpu_second": round(num_records / cpu_seconds, 1),
      # The same without starting the workers (imports: a fixed cost per run).
      "worker_start_cpu_seconds": round(start_cpu, 1),
      "records_per_cpu_second_after_start": round(
          num_records / max(1e-9, cpu_seconds - start_cpu), 1),
      "bytes_per_record": round(size / max(1, manifest["num_records"])),
      "peak_rss_main_mb": main_mb, "peak_rss_largest_worker_mb": worker_mb,
      "peak_rss_bound_mb": round(main_mb + processes * worker_mb
                                 if processes > 1 else main_mb, 1),
  })
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
