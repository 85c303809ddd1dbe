"""Features of every ECG in a folder of files, from an encoder package.

  python -m crema_jax.main --config configs/embed.py --workdir OUT \
      --config.checkpoint=CKPT --config.input=FOLDER

CKPT is a pretraining workdir or a classifier folder (`classifiers/TASK`), a package
(`crema_jax.package`) checked against its checksums before use. FOLDER is read by
`config.input_source` (default `ecg_files`: HL7 aECG, GE MUSE XML, Philips, SCP-ECG,
DICOM, EDF, WFDB, ... by content). Writes OUT/embeddings.npz (features [n, emb]
float32, key, source_file, ecg_id, patient_id, age, sex, start_seconds, seconds),
OUT/skipped.json (files that could not be read, and why) and OUT/embed.json (the run:
input, package and checksum, every setting that shaped the outputs; counts, speed).

The folder is embedded in parts of `part_files` files (OUT/embed.parts/): the same
command after a kill resumes at the first unfinished part and ends with the outputs an
uninterrupted run writes. The outputs replace each other together (`atomic.Outputs`);
a workdir holding another run's outputs is refused (`outputs.check_workdir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from typing import Any, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax import atomic
from crema_jax.inference import model as model_lib
from crema_jax.inference import outputs
from crema_jax.inference import reading
from crema_jax.inference import stream
from crema_jax.package import classifier as classifier_lib
from crema_jax.package import encoder as package
from crema_jax.package import preprocessing
from crema_jax import sharding

PARTS = "embed.parts"
FIELDS = ("key", "source_file", "ecg_id", "patient_id", "age", "sex", "start_seconds",
          "seconds")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before anything is read or compiled."""
  problems = []
  if not config.checkpoint:
    problems.append("checkpoint is empty: set --config.checkpoint=PRETRAIN_WORKDIR or "
                    "a classifiers/TASK folder")
  elif not (classifier_lib.is_classifier(config.checkpoint) or
            package.is_checkpoint(config.checkpoint)):
    problems.append(f"checkpoint={config.checkpoint!r}: neither a pretraining workdir "
                    "(with checkpoints/) nor a classifier folder (with "
                    f"{classifier_lib.SPEC_FILE})")
  if config.get("input") is not None:
    if not config.input:
      problems.append("input is empty: set --config.input=FOLDER of ECG files")
    elif not pathlib.Path(config.input).is_dir():
      problems.append(f"input={config.input!r} is not a folder")
  if config.batch_size <= 0:
    problems.append(f"batch_size={config.batch_size} must be positive")
  if config.get("part_files", 1) <= 0:
    problems.append(f"part_files={config.part_files} must be positive")
  if jax.process_count() > 1:
    problems.append(f"inference runs in one process, not {jax.process_count()}")
  if problems:
    raise ValueError("Invalid inference config:\n  " + "\n  ".join(problems))


def load_encoder(config: ml_collections.ConfigDict, mesh) -> package.Encoder:
  """The encoder package of `config.checkpoint` (a classifier folder's, or a
  pretraining checkpoint's latest step or `checkpoint_step`)."""
  return package.load(config.checkpoint, mesh, step=config.checkpoint_step or None)


def settings(config: ml_collections.ConfigDict, pre: preprocessing.Preprocessing
             ) -> dict:
  """Every choice beyond the package's preprocessing that shaped the outputs."""
  return {"input_source": config.input_source,
          "input_leads": list(reading.input_leads(config, pre)),
          "lead_aliases": config.lead_aliases,
          "derive_limb_leads": bool(config.derive_limb_leads),
          "read_memory_mb": int(config.read_memory_mb),
          "windows": {"long_seconds": float(config.long_seconds),
                      "stride_seconds": float(config.window_stride_seconds
                                              or pre.seconds)}}


def stream_outputs(fn, params, config: ml_collections.ConfigDict,
                   pre: preprocessing.Preprocessing, mesh, source, keys: Sequence[str],
                   skipped: list[dict], bar: tqdm.tqdm) -> Iterator[dict]:
  """The batches of every ECG of `keys` (read from `source` in worker processes while
  the model runs), each with fn's outputs under "out"; unreadable files are appended
  to `skipped`, and `bar` advanced by the files done."""
  batch_size = model_lib.global_batch_size(config.batch_size, mesh)
  # Two batches ahead: the workers read the next while the model runs on this one.
  items = reading.read_items(source, keys, pre, config.read_workers,
                             windowing=reading.Windowing.of(config),
                             ahead=2 * batch_size, memory_mb=config.read_memory_mb)
  for batch in stream.batches(items, pre, batch_size, skipped,
                              reading.input_leads(config, pre)):
    batch["out"] = model_lib.apply_sharded(fn, params, batch, mesh, batch_size)
    bar.update(batch.pop("files_done"))
    yield batch


def list_keys(config: ml_collections.ConfigDict, pre: preprocessing.Preprocessing):
  """(the reader over `config.input`, its keys); FileNotFoundError when it has none."""
  source = reading.build_source(config, pre)
  keys = list(source.keys())
  if not keys:
    raise FileNotFoundError(f"{config.input}: no file that {config.input_source} "
                            "reads")
  return source, keys


def no_ecg_error(folder: str, skipped: list[dict]) -> ValueError:
  """The error of a folder in which no file could be read: the reasons, counted."""
  reasons: dict[str, list] = {}
  for report in skipped:
    reasons.setdefault(str(report.get("reason", "?")).split("\n")[0][:200], []).append(
        report.get("key"))
  lines = [f"{len(keys)} file(s): {reason} (e.g. {keys[0]})"
           for reason, keys in sorted(reasons.items(), key=lambda r: -len(r[1]))]
  return ValueError(f"{folder}: none of its {len(skipped)} file(s) could be read:\n  "
                    + "\n  ".join(lines[:20]))


# ------------------------------------------------------------------------- parts
def _keys_digest(keys: Sequence[str]) -> str:
  text = "\n".join(keys).encode("utf-8", "surrogateescape")
  return hashlib.sha256(text).hexdigest()


@dataclasses.dataclass
class Parts:
  """OUT/embed.parts/: the folder's keys in parts of `size`, each part's arrays
  (`part_NNNNN.npz`, written last) and skipped files (`part_NNNNN.skipped.json`)."""
  directory: pathlib.Path
  keys: Sequence[str]
  size: int

  @classmethod
  def open(cls, directory: pathlib.Path, run: dict, keys: Sequence[str], size: int,
           overwrite: bool) -> "Parts":
    """The parts of this run: resumed when `directory` holds the same run over the
    same files; refused when it holds another run's (unless `overwrite`)."""
    state = {"run": run, "keys": _keys_digest(keys), "files": len(keys),
             "part_files": size}
    found = directory / "run.json"
    if found.is_file():
      try:
        previous = json.loads(found.read_text())
      except json.JSONDecodeError:
        previous = None
      if previous != state:
        if not overwrite:
          raise FileExistsError(
              f"{directory} holds an interrupted embedding of another run or of other "
              f"files ({(previous or {}).get('files')} files then, {len(keys)} now): "
              "use another --workdir, or --config.overwrite=True to start over")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_json(found, state)
    atomic.remove_partials(directory)
    return cls(directory, keys, size)

  def ranges(self) -> list[tuple[int, Sequence[str]]]:
    return [(i, self.keys[start:start + self.size]) for i, start in
            enumerate(range(0, len(self.keys), self.size))]

  def path(self, index: int) -> pathlib.Path:
    return self.directory / f"part_{index:05d}.npz"

  def done(self, index: int) -> bool:
    return self.path(index).is_file()

  def write(self, index: int, arrays: dict, skipped: list[dict]) -> None:
    atomic.write_json(self.path(index).with_suffix(".skipped.json"), skipped)
    atomic.savez(self.path(index), **arrays)

  def gather(self) -> tuple[dict, list[dict]]:
    """Every part's arrays concatenated, and every part's skipped files, in order."""
    arrays, skipped = [], []
    for index, _ in self.ranges():
      with np.load(self.path(index), allow_pickle=False) as saved:
        arrays.append({k: saved[k] for k in saved.files})
      skipped += json.loads(self.path(index).with_suffix(".skipped.json").read_text())
    return {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}, skipped


def _arrays(batches: list[dict], emb_dim: int) -> dict:
  """One part's outputs: the FIELDS and features [n, emb] of its batches."""
  if not batches:
    out = {f: np.array([], dtype=np.float32 if f in ("age", "start_seconds", "seconds")
                       else np.int64 if f == "ecg_id" else str) for f in FIELDS}
    out["features"] = np.zeros((0, emb_dim), np.float32)
    return out
  out = {f: np.concatenate([b[f] for b in batches]) for f in FIELDS}
  out["features"] = np.concatenate([b["out"] for b in batches]).astype(np.float32)
  return out


def embed_folder(encoder: package.Encoder, config: ml_collections.ConfigDict, mesh,
                 parts: Parts | None = None, listed: tuple | None = None
                 ) -> tuple[dict, list[dict], int]:
  """(arrays: features [n, emb] and the FIELDS, skipped files, keys listed) of every
  ECG in `config.input` under `encoder`: the parts `parts` has not done yet, then all
  of them (`parts` None: in memory, one part). `listed`: `list_keys`'s (source, keys)
  when the caller has listed the folder already (a large folder is listed once)."""
  pre = encoder.preprocessing
  source, keys = listed if listed is not None else list_keys(config, pre)
  encode = jax.jit(model_lib.encode_fn(encoder.model, pre.normalize))
  todo = parts.ranges() if parts is not None else [(0, keys)]
  results = {}
  with tqdm.tqdm(total=len(keys), unit="file", desc="embed",
                 disable=not config.progress_bar) as bar:
    for index, part_keys in todo:
      if parts is not None and parts.done(index):
        bar.update(len(part_keys))
        continue
      skipped: list[dict] = []
      batches = list(stream_outputs(encode, encoder.params, config, pre, mesh, source,
                                    part_keys, skipped, bar))
      arrays = _arrays(batches, encoder.model.emb_dim)
      outputs.check_finite("features", arrays["features"], encoder.origin())
      if parts is None:
        results = (arrays, skipped)
      else:
        parts.write(index, arrays, skipped)
  out, skipped = parts.gather() if parts is not None else results
  return out, skipped, len(keys)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Embeds every ECG of `config.input`; returns the embed.json summary."""
  check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  encoder = load_encoder(config, mesh)
  pre = encoder.preprocessing
  run_id = outputs.identity("embed", config, encoder.origin())
  outputs.check_workdir(workdir, run_id, config.overwrite)
  source, keys = list_keys(config, pre)
  parts = Parts.open(workdir / PARTS, run_id, keys, config.part_files, config.overwrite)
  resumed = sum(parts.done(i) for i, _ in parts.ranges())
  if resumed:
    print(f"resuming: {resumed} of {len(parts.ranges())} parts done in {parts.directory}")
  start = time.perf_counter()
  out, skipped, num_keys = embed_folder(encoder, config, mesh, parts, (source, keys))
  seconds = time.perf_counter() - start
  if not len(out["features"]):
    raise no_ecg_error(config.input, skipped)
  summary = {"run": run_id, "input": str(config.input), "encoder": encoder.origin(),
             "ecgs": int(len(out["features"])), "keys": num_keys,
             "skipped": len(skipped), "resumed_parts": resumed,
             "emb_dim": encoder.model.emb_dim,
             "seconds": round(seconds, 3),
             "ecgs_per_second": round(len(out["features"]) / seconds, 2),
             "settings": settings(config, pre), "preprocessing": pre.describe()}
  files = atomic.Outputs(workdir)
  with open(files.path("embeddings.npz"), "wb") as f:
    np.savez(f, **out)
  atomic.write_json(files.path("skipped.json"), skipped)
  files.commit("embed.json", summary)
  shutil.rmtree(workdir / PARTS)
  print(f"embedded {summary['ecgs']} ECGs ({len(skipped)} skipped: see "
        f"{workdir / 'skipped.json'}) in {seconds:.1f} s -> "
        f"{workdir / 'embeddings.npz'}")
  return summary
