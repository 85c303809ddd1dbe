"""Converts a raw ECG source into sharded ArrayRecord files (see `storage`).

  python -m crema_jax.data.prepare --config configs/demo.py \
      --config.data.raw_dir=/data/ptb-xl-1.0.3 --config.data.data_dir=/data/prepared

Shards are written by `data.prepare_workers` processes. A finished shard leaves a marker,
so re-running after an interruption only writes the missing shards. Records that cannot
be read are skipped and listed, with the reason, in `manifest.json`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import time

from absl import app
from absl import logging
from array_record.python import array_record_module
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from crema_jax.data import records
from crema_jax.data import sources
from crema_jax.data import storage

_PROGRESS_DIR = "_progress"
_SOURCE: records.Source | None = None  # The reader, built once per worker process.


def _init_worker(source: records.Source) -> None:
  global _SOURCE
  _SOURCE = source


def _write_json_atomic(path: pathlib.Path, payload) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=1))
  os.replace(tmp, path)


def _write_shard(task: tuple[int, int, list[str], str]) -> tuple[int, int]:
  """Reads the records of one shard and writes them; returns (shard, keys done)."""
  shard, num_shards, keys, out_dir = task
  out_dir = pathlib.Path(out_dir)
  path = out_dir / storage.shard_filename(_SOURCE.name, shard, num_shards)
  tmp = path.with_name(path.name + ".tmp")
  writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")
  rows, skipped = [], []
  for key in keys:
    try:
      record = _SOURCE.read(key)
    except records.RecordError as e:
      skipped.append({"key": key, "path": e.path, "reason": e.reason})
      continue
    except Exception as e:  # pylint: disable=broad-except
      # Readers of third-party formats raise all sorts on corrupt files; one bad
      # record must not stop a million-record run, so it is reported like the rest.
      skipped.append({"key": key, "path": key, "reason": f"{type(e).__name__}: {e}"})
      continue
    writer.write(storage.FEATURES.serialize_example(record.to_example()))
    rows.append(storage.index_row(record))
  writer.close()
  os.replace(tmp, path)
  _write_json_atomic(out_dir / _PROGRESS_DIR / f"shard-{shard:05d}.json",
                     {"num_records": len(rows), "index": rows, "skipped": skipped})
  return shard, len(keys)


def _check_settings(out_dir: pathlib.Path, settings: dict) -> None:
  """Refuses to resume into a folder prepared with different settings."""
  path = out_dir / _PROGRESS_DIR / "settings.json"
  if path.is_file():
    previous = json.loads(path.read_text())
    if previous != settings:
      changed = sorted(k for k in settings if previous.get(k) != settings[k])
      raise ValueError(
          f"{out_dir} holds a preparation with other settings ({', '.join(changed)}); "
          "use another data_dir or delete that folder")
  else:
    _write_json_atomic(path, settings)


def prepare(source: records.Source, data_dir: str | pathlib.Path, *,
            records_per_shard: int = 1000, num_workers: int = 2,
            show_progress: bool = True) -> dict:
  """Writes `source` as a prepared dataset under `data_dir`; returns the manifest."""
  start = time.perf_counter()
  keys = list(source.keys())
  if not keys:
    raise records.SourceError(f"{getattr(source, 'root', source.name)}: no records")
  out_dir = storage.dataset_dir(data_dir, source.name)
  (out_dir / _PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
  num_shards = -(-len(keys) // records_per_shard)
  _check_settings(out_dir, {
      "source": source.name, "root": str(getattr(source, "root", "")),
      "sampling_rate": int(getattr(source, "sampling_rate", 0)),
      "num_keys": len(keys), "records_per_shard": records_per_shard,
      "first_key": keys[0], "last_key": keys[-1]})

  tasks = [(i, num_shards, keys[i * records_per_shard:(i + 1) * records_per_shard],
            str(out_dir)) for i in range(num_shards)
           if not (out_dir / _PROGRESS_DIR / f"shard-{i:05d}.json").is_file()]
  todo = sum(len(t[2]) for t in tasks)
  if tasks:
    logging.info("prepare %s: %d of %d shards to write", source.name, len(tasks),
                 num_shards)
  with tqdm.tqdm(total=todo, unit="rec", desc=f"prepare {source.name}",
                 disable=not show_progress or not tasks) as bar:
    if num_workers <= 1 or len(tasks) <= 1:
      _init_worker(source)
      for task in tasks:
        bar.update(_write_shard(task)[1])
    else:
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(min(num_workers, len(tasks)), initializer=_init_worker,
                    initargs=(source,)) as pool:
        for _, done in pool.imap_unordered(_write_shard, tasks):
          bar.update(done)
  seconds = time.perf_counter() - start
  return _finalize(source, out_dir, num_shards, todo, seconds)


def _finalize(source: records.Source, out_dir: pathlib.Path, num_shards: int,
              records_read: int, seconds: float) -> dict:
  """Merges the shard markers into TFDS metadata, `index.npz` and `manifest.json`."""
  shard_lengths, rows, skipped = [], [], []
  for shard in range(num_shards):
    marker = json.loads((out_dir / _PROGRESS_DIR / f"shard-{shard:05d}.json").read_text())
    shard_lengths.append(marker["num_records"])
    rows.extend(marker["index"])
    skipped.extend(marker["skipped"])
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=storage.FEATURES,
      split_infos=[tfds.core.SplitInfo(name=storage.SPLIT, shard_lengths=shard_lengths,
                                       num_bytes=0)],
      filename_template=storage.FILENAME_TEMPLATE, check_data=False,
      description=f"CREMA-JAX prepared ECGs from {source.name}")
  index = storage.index_arrays(rows)
  np.savez(out_dir / "index.npz", **index)
  manifest = {
      "source": source.name,
      "root": str(getattr(source, "root", "")),
      "sampling_rate": int(getattr(source, "sampling_rate", 0)),
      "num_records": len(rows),
      "num_patients": int(len(np.unique(index["patient_id"]))),
      "num_skipped": len(skipped),
      "label_counts": {c: int(n) for c, n in
                       zip(records.SUPERCLASSES, index["labels"].sum(axis=0))},
      "fold_counts": {str(f): int(n) for f, n in
                      zip(*np.unique(index["fold"], return_counts=True))},
      "num_shards": num_shards,
      "shard_lengths": shard_lengths,
      "records_read_this_run": records_read,
      "seconds_this_run": round(seconds, 3),
      "records_per_second": round(records_read / seconds, 1) if records_read else None,
      "skipped": skipped,
  }
  _write_json_atomic(out_dir / "manifest.json", manifest)
  return manifest


def prepare_from_config(data_config: ml_collections.ConfigDict,
                        show_progress: bool = True) -> dict:
  """Builds the configured reader (checking the folder) and prepares it."""
  source = sources.build_source(data_config)
  return prepare(source, data_config.data_dir,
                 records_per_shard=data_config.records_per_shard,
                 num_workers=data_config.prepare_workers, show_progress=show_progress)


def summarize(manifest: dict) -> str:
  lines = [f"{manifest['source']}: {manifest['num_records']} records of "
           f"{manifest['num_patients']} patients, {manifest['num_skipped']} skipped"]
  lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in
                                        manifest["label_counts"].items()))
  for item in manifest["skipped"][:10]:
    lines.append(f"  skipped {item['path']}: {item['reason']}")
  if manifest["num_skipped"] > 10:
    lines.append(f"  ... and {manifest['num_skipped'] - 10} more in manifest.json")
  return "\n".join(lines)


def main(argv):
  del argv
  manifest = prepare_from_config(_CONFIG.value.data)
  print(summarize(manifest))


if __name__ == "__main__":
  # Defined here, not at import: crema_jax.main defines its own --config.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config with a `data` field.")
  config_flags.mark_flags_as_required(["config"])
  app.run(main)
