"""Converts a raw ECG source, or a corpus of several, into sharded ArrayRecord files.

  python -m crema_jax.data.prepare --config configs/demo.py \
      --config.data.raw_dir=/data/ptb-xl-1.0.3 --config.data.data_dir=/data/prepared
  python -m crema_jax.data.prepare --config configs/corpus.py \
      --config.data.corpus.code15.raw_dir=/data/code15 ... (see configs/corpus.py)
  python -m crema_jax.data.prepare --config ... --verify   # read every record back

Shards are written by `data.prepare_workers` processes, each streaming its records
(one in memory at a time). A finished shard leaves a marker, so re-running after an
interruption only writes the missing shards, and a corpus writes each source's shards
once. Records that cannot be read are skipped and listed, with the reason, in
`manifest.json`, and so are records whose stored (float16) signal is not finite or
reaches beyond `data.max_amplitude_mv` (a gain or unit error); with a PTB-XL
reference (`data.leakage.ptbxl_dir`) records matching
PTB-XL evaluation ECGs are excluded and counted there too (see `leakage`).
"""

from __future__ import annotations

from concurrent import futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import time

from absl import app
from absl import flags
from absl import logging
from array_record.python import array_record_module
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from crema_jax.data import labels_table
from crema_jax.data import leakage
from crema_jax.data.readers import registry
from crema_jax.data import records
from crema_jax.data import storage

_PROGRESS_DIR = storage.PROGRESS_DIR
_LEAKAGE_DIR = "_leakage"
# The reader, the leakage matcher and the amplitude limit, set once per worker process.
_SOURCE: records.Source | None = None
_EXCLUSION: leakage.Exclusion | None = None
_MAX_AMPLITUDE_MV = records.MAX_AMPLITUDE_MV


def _init_worker(source: records.Source, exclusion: leakage.Exclusion | None = None,
                 max_amplitude_mv: float = records.MAX_AMPLITUDE_MV) -> None:
  global _SOURCE, _EXCLUSION, _MAX_AMPLITUDE_MV
  _SOURCE, _EXCLUSION, _MAX_AMPLITUDE_MV = source, exclusion, max_amplitude_mv


def _num_leads(source: records.Source) -> int:
  return len(getattr(source, "leads", records.LEADS))


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
  features = storage.features(_num_leads(_SOURCE))
  writer = array_record_module.ArrayRecordWriter(str(tmp), storage.SHARD_OPTIONS)
  rows, skipped, matches, notes = [], [], [], {}
  leads = getattr(_SOURCE, "leads", records.LEADS)
  for key in keys:
    try:
      record, stored = records.checked_record(_SOURCE, key, _MAX_AMPLITUDE_MV, leads)
      # Inside the try: a field the stored dtypes cannot hold (an id beyond int64) is
      # this record's problem, not the shard's.
      serialized = features.serialize_example(record.to_example(stored))
      row = storage.index_row(record)
    except Exception as e:  # pylint: disable=broad-except
      skipped.append(records.skip_report(key, e))
      continue
    for note in record.notes:
      notes[note] = notes.get(note, 0) + 1
    match = _EXCLUSION.check(record) if _EXCLUSION is not None else None
    if match is not None:
      matches.append({"key": key, **match})
      if match["excluded"]:
        continue
    writer.write(serialized)
    rows.append(row)
  writer.close()
  os.replace(tmp, path)
  _write_json_atomic(out_dir / _PROGRESS_DIR / f"shard-{shard:05d}.json",
                     {"num_records": len(rows), "index": rows, "skipped": skipped,
                      "leakage_matches": matches, "notes": notes})
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
            show_progress: bool = True,
            exclusion: leakage.Exclusion | None = None,
            reader: str | None = None,
            max_amplitude_mv: float = records.MAX_AMPLITUDE_MV) -> dict:
  """Writes `source` as a prepared dataset under `data_dir`; returns the manifest.

  exclusion: matches records against PTB-XL; matches in its excluded folds are left
    out and listed in the manifest's `leakage` entry.
  reader: the registry name of the source's reader, recorded in the manifest.
  max_amplitude_mv: records with a lead beyond it are skipped (`records.stored_signal`).
  """
  start = time.perf_counter()
  keys = list(source.keys())
  if not keys:
    raise records.SourceError(f"{getattr(source, 'root', source.name)}: no records")
  out_dir = storage.dataset_dir(data_dir, source.name)
  (out_dir / _PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
  num_shards = -(-len(keys) // records_per_shard)
  settings = {
      "source": source.name, "root": str(getattr(source, "root", "")),
      "sampling_rate": int(getattr(source, "sampling_rate", 0)),
      "num_keys": len(keys), "records_per_shard": records_per_shard,
      "first_key": keys[0], "last_key": keys[-1], "format": storage.FORMAT,
      "max_amplitude_mv": float(max_amplitude_mv)}
  leads = tuple(getattr(source, "leads", records.LEADS))
  if leads != records.LEADS:
    settings["leads"] = list(leads)
  if exclusion is not None:
    settings["leakage"] = exclusion.settings()
  _check_settings(out_dir, settings)

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
      _init_worker(source, exclusion, max_amplitude_mv)
      try:
        for task in tasks:
          bar.update(_write_shard(task)[1])
      finally:
        _init_worker(None, None)
    else:
      # A process pool that fails (BrokenProcessPool) when a worker dies, say killed
      # for memory, where multiprocessing.Pool would wait for it forever. Finished
      # shards keep their markers: re-running writes only the others.
      with futures.ProcessPoolExecutor(
          min(num_workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
          initializer=_init_worker,
          initargs=(source, exclusion, max_amplitude_mv)) as pool:
        for done in futures.as_completed([pool.submit(_write_shard, t) for t in tasks]):
          bar.update(done.result()[1])
  seconds = time.perf_counter() - start
  return _finalize(source, out_dir, num_shards, todo, seconds, exclusion, reader)


def _finalize(source: records.Source, out_dir: pathlib.Path, num_shards: int,
              records_read: int, seconds: float,
              exclusion: leakage.Exclusion | None = None,
              reader: str | None = None) -> dict:
  """Merges the shard markers into TFDS metadata, `index.npz` and `manifest.json`."""
  shard_lengths, parts, skipped, matches, notes = [], [], [], [], {}
  for shard in range(num_shards):
    marker = json.loads((out_dir / _PROGRESS_DIR / f"shard-{shard:05d}.json").read_text())
    shard_lengths.append(marker["num_records"])
    parts.append(storage.index_arrays(marker["index"]))  # Arrays, not dicts: flat memory.
    skipped.extend(marker["skipped"])
    matches.extend(marker.get("leakage_matches", []))
    for note, count in marker.get("notes", {}).items():
      notes[note] = notes.get(note, 0) + count
  leads = tuple(getattr(source, "leads", records.LEADS))
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=storage.features(len(leads)),
      split_infos=[tfds.core.SplitInfo(name=storage.SPLIT, shard_lengths=shard_lengths,
                                       num_bytes=0)],
      filename_template=storage.FILENAME_TEMPLATE, check_data=False,
      description=f"CREMA-JAX prepared ECGs from {source.name}")
  index = {field: np.concatenate([part[field] for part in parts])
           for field in parts[0] if all(field in part for part in parts)
           } if parts else storage.index_arrays([])
  np.savez(out_dir / "index.npz", **index)
  manifest = {
      "source": source.name,
      "source_reader": reader or source.name,
      "format": storage.FORMAT,
      "root": str(getattr(source, "root", "")),
      "sampling_rate": int(getattr(source, "sampling_rate", 0)),
      "leads": list(leads),
      "num_records": int(len(index["ecg_id"])),
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
      "notes": dict(sorted(notes.items(), key=lambda item: -item[1])),
      "leakage": leakage.summarize(matches, exclusion),
      "leakage_matches": matches,
      "skipped": skipped,
  }
  _write_json_atomic(out_dir / "manifest.json", manifest)
  return manifest


def _reference(data_config: ml_collections.ConfigDict,
               show_progress: bool) -> leakage.Reference | None:
  """The PTB-XL fingerprints named by `data.leakage.ptbxl_dir` (None when unset)."""
  settings = data_config.get("leakage")
  if settings is None or not settings.get("ptbxl_dir"):
    return None
  cache = (pathlib.Path(data_config.data_dir) / _LEAKAGE_DIR /
           f"ptbxl-{data_config.sampling_rate}hz.npz")
  return leakage.build_reference(settings.ptbxl_dir, data_config.sampling_rate, cache,
                                 show_progress, data_config.prepare_workers)


def _prepare_one(data_config, reference, show_progress, source=None) -> dict:
  source = source or registry.build_source(data_config)
  table = None
  if data_config.get("labels_table"):  # Checked against the folder before any read.
    table = labels_table.read(data_config.labels_table)
    matched = labels_table.match(table, source.keys())
    if not (matched.row >= 0).any():
      raise records.SourceError(
          f"{data_config.labels_table}: no row names a file of {source.root} (e.g. row "
          f"2: {table.files[0]!r}; the folder's files are like "
          f"{list(source.keys())[:2]}): give each file relative to the folder")
    for line in labels_table.describe_unmatched(table, matched, ())[:10]:
      print(f"labels table: {line}")
  exclusion = None
  if reference is not None:
    exclusion = leakage.Exclusion(reference, data_config.leakage.exclude_folds,
                                  data_config.source,
                                  getattr(source, "leads", records.LEADS))
  manifest = prepare(source, data_config.data_dir,
                     records_per_shard=data_config.records_per_shard,
                     num_workers=data_config.prepare_workers,
                     show_progress=show_progress, exclusion=exclusion,
                     reader=data_config.source,
                     max_amplitude_mv=data_config.get("max_amplitude_mv",
                                                      records.MAX_AMPLITUDE_MV))
  if table is not None:
    out_dir = storage.dataset_dir(data_config.data_dir, source.name)
    manifest["labels_table"] = _keep_table(table, out_dir, manifest)
    _write_json_atomic(out_dir / "manifest.json", manifest)
  return manifest


def _keep_table(table: labels_table.Table, out_dir: pathlib.Path, manifest: dict
                ) -> dict:
  """Copies the labels table into the prepared folder (`labels_table.PREPARED_NAME`,
  the evaluation's default table); returns the manifest's record of it."""
  with np.load(out_dir / "index.npz") as index:
    names = index["record_name"]
  matched = labels_table.match(table, names)
  unmatched = labels_table.describe_unmatched(table, matched, manifest["skipped"])
  data = table.path.read_bytes()
  tmp = out_dir / (labels_table.PREPARED_NAME + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(out_dir / labels_table.PREPARED_NAME)
  return {"from": str(table.path), "sha256": hashlib.sha256(data).hexdigest(),
          "rows": int(len(table.files)), "label_columns": list(table.label_columns),
          "records_labelled": int((matched.row >= 0).sum()),
          "unmatched": unmatched}


def corpus_members(data_config: ml_collections.ConfigDict
                   ) -> list[tuple[str, float, ml_collections.ConfigDict]]:
  """(name, weight, member data config) of each corpus source with a raw_dir.

  A member's data config is the corpus's `data` with the member's fields on top:
  source = its `reader`, name = its key in `data.corpus`, raw_dir, and any other data
  field it sets (window_seconds, min_seconds, ...).
  """
  members = []
  for name, member in data_config.corpus.items():
    if not member.get("raw_dir"):
      continue
    if member.get("weight", 1.0) <= 0:
      raise ValueError(f"data.corpus.{name}.weight={member.weight} must be positive")
    config = ml_collections.ConfigDict(data_config.to_dict())
    del config["corpus"]
    config.source, config.name = member.reader, name
    for field, value in member.items():
      if field not in ("reader", "weight"):
        config[field] = value
    members.append((name, float(member.get("weight", 1.0)), config))
  if not members:
    raise ValueError("data.corpus has no source with a raw_dir: set "
                     f"--config.data.corpus.<name>.raw_dir (names: "
                     f"{', '.join(data_config.corpus.keys())})")
  if data_config.name in [m[0] for m in members]:
    raise ValueError(f"data.name={data_config.name!r} is also a corpus source name")
  return members


def prepare_corpus(data_config: ml_collections.ConfigDict,
                   show_progress: bool = True) -> dict:
  """Prepares each corpus source (once: finished shards are kept) and writes the corpus
  manifest `{data_dir}/{name}/{VERSION}/manifest.json` that `storage.PreparedSource`
  opens as one mixed dataset."""
  members = corpus_members(data_config)
  # Every folder is checked (its reader built) before any long work.
  readers = {name: registry.build_source(member) for name, _, member in members}
  reference = _reference(data_config, show_progress)
  manifests = {name: _prepare_one(member, reference, show_progress, readers[name])
               for name, _, member in members}
  out_dir = storage.dataset_dir(data_config.data_dir, data_config.name)
  out_dir.mkdir(parents=True, exist_ok=True)
  excluded = {name: (m["leakage"] or {}).get("num_excluded", 0)
              for name, m in manifests.items()}
  manifest = {
      "kind": "corpus",
      "source": data_config.name,
      "sampling_rate": int(data_config.sampling_rate),
      "members": [{"name": name, "reader": member.source, "weight": weight,
                   "root": str(member.raw_dir),
                   "num_records": manifests[name]["num_records"],
                   "num_patients": manifests[name]["num_patients"],
                   "num_skipped": manifests[name]["num_skipped"]}
                  for name, weight, member in members],
      "num_records": sum(m["num_records"] for m in manifests.values()),
      "num_patients": sum(m["num_patients"] for m in manifests.values()),
      "num_skipped": sum(m["num_skipped"] for m in manifests.values()),
      "label_counts": {c: sum(m["label_counts"][c] for m in manifests.values())
                       for c in records.SUPERCLASSES},
      "leakage": None if reference is None else {
          "reference": reference.root, "reference_records": len(reference),
          "exclude_folds": list(leakage.Exclusion(
              reference, data_config.leakage.exclude_folds, "").exclude_folds),
          "num_excluded": sum(excluded.values()),
          "excluded_from": excluded},
      "skipped": [dict(item, source=name) for name, m in manifests.items()
                  for item in m["skipped"]],
  }
  _write_json_atomic(out_dir / "manifest.json", manifest)
  return manifest


def prepare_from_config(data_config: ml_collections.ConfigDict,
                        show_progress: bool = True) -> dict:
  """Builds the configured reader (checking the folder) and prepares it; a corpus
  (`data.source == "corpus"`) prepares each of its sources."""
  if data_config.source == "corpus":
    return prepare_corpus(data_config, show_progress)
  return _prepare_one(data_config, _reference(data_config, show_progress),
                      show_progress)


def verify_from_config(data_config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
  """Reads every record of the configured prepared source (each corpus member) once;
  returns {source: damaged shards} and removes those shards' progress markers, so
  that running prepare again rewrites exactly them."""
  names = ([name for name, _, _ in corpus_members(data_config)]
           if data_config.source == "corpus" else [data_config.name])
  report = {}
  for name in names:
    damaged = storage.verify_shards(data_config.data_dir, name)
    out_dir = storage.dataset_dir(data_config.data_dir, name)
    for item in damaged:
      (out_dir / _PROGRESS_DIR / f"shard-{item['index']:05d}.json").unlink(
          missing_ok=True)
    report[name] = damaged
  return report


def summarize(manifest: dict) -> str:
  lines = [f"{manifest['source']}: {manifest['num_records']} records of "
           f"{manifest['num_patients']} patients, {manifest['num_skipped']} skipped"]
  for member in manifest.get("members", []):
    lines.append(f"  {member['name']} ({member['reader']}, weight {member['weight']:g}):"
                 f" {member['num_records']} records, {member['num_skipped']} skipped")
  lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in
                                        manifest["label_counts"].items()))
  if manifest.get("leakage"):
    excluded = manifest["leakage"]
    where = excluded.get("excluded_from") or excluded.get("excluded_by") or {}
    lines.append(f"  excluded as PTB-XL folds {excluded['exclude_folds']}: "
                 f"{excluded['num_excluded']} "
                 f"({', '.join(f'{k} {v}' for k, v in where.items()) or 'none'})")
  if manifest.get("labels_table"):
    table = manifest["labels_table"]
    lines.append(f"  labels table {table['from']}: {table['records_labelled']} records "
                 f"labelled by {table['rows']} rows, columns {table['label_columns']}")
    lines += [f"  labels table: {line}" for line in table["unmatched"][:10]]
    if len(table["unmatched"]) > 10:
      lines.append(f"  ... and {len(table['unmatched']) - 10} more in manifest.json")
  for note, count in list(manifest.get("notes", {}).items())[:5]:
    lines.append(f"  note: {note} ({count} records)")
  for item in manifest["skipped"][:10]:
    lines.append(f"  skipped {item['path']}: {item['reason']}")
  if manifest["num_skipped"] > 10:
    lines.append(f"  ... and {manifest['num_skipped'] - 10} more in manifest.json")
  return "\n".join(lines)


def main(argv):
  del argv
  if _VERIFY.value:
    report = verify_from_config(_CONFIG.value.data)
    for name, damaged in report.items():
      print(f"{name}: {len(damaged)} damaged shard(s)")
      for item in damaged:
        print(f"  {item['shard']}: {item['problem']}")
    if any(report.values()):
      print("their markers are removed: run prepare again (without --verify) to "
            "rewrite them")
      raise SystemExit(1)
    return
  manifest = prepare_from_config(_CONFIG.value.data)
  print(summarize(manifest))


if __name__ == "__main__":
  # Defined here, not at import: crema_jax.main defines its own --config.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config with a `data` field.")
  _VERIFY = flags.DEFINE_bool("verify", False, "Read every prepared record once and "
                              "report damaged shards (marked to be rewritten).")
  flags.mark_flags_as_required(["config"])
  app.run(main)
