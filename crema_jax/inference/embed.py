"""Features of every ECG in a folder of files, from a checkpoint.

  python -m crema_jax.main --config configs/embed.py --workdir OUT \
      --config.checkpoint=CKPT --config.input=FOLDER

CKPT is a pretraining workdir or a classifier folder (`classifiers/TASK`, whose
fine-tuned encoder is used). FOLDER is read by `config.input_source` (default
`ecg_files`: HL7 aECG, GE MUSE XML, Philips, SCP-ECG, DICOM, EDF, WFDB, ... by
content). Writes OUT/embeddings.npz (features [n, emb] float32, key, source_file,
ecg_id, patient_id, age, sex, start_seconds, seconds), OUT/skipped.json (files that
could not be read, and why) and OUT/embed.json (what was done, how fast).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from crema_jax.evaluation import restore
from crema_jax.inference import classifier as classifier_lib
from crema_jax.inference import model as model_lib
from crema_jax.inference import preprocessing
from crema_jax.inference import reading
from crema_jax.inference import stream
from crema_jax import models
from crema_jax import sharding


@dataclasses.dataclass
class Loaded:
  """An encoder read for inference: its config, model, parameters, and where from."""
  config: ml_collections.ConfigDict
  model: models.CREMA
  params: Any
  origin: dict
  classifier: classifier_lib.Classifier | None = None  # When read from one.


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before anything is read or compiled."""
  problems = []
  if not config.checkpoint:
    problems.append("checkpoint is empty: set --config.checkpoint=PRETRAIN_WORKDIR or "
                    "a classifiers/TASK folder")
  elif not (classifier_lib.is_classifier(config.checkpoint) or
            restore.checkpoint_dir(config.checkpoint).is_dir()):
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
  if jax.process_count() > 1:
    problems.append(f"inference runs in one process, not {jax.process_count()}")
  if problems:
    raise ValueError("Invalid inference config:\n  " + "\n  ".join(problems))


def load_encoder(config: ml_collections.ConfigDict, mesh) -> Loaded:
  """The encoder of `config.checkpoint`: a classifier folder's (fine-tuned or not), or
  a pretraining checkpoint's (the latest step, or `checkpoint_step`)."""
  if classifier_lib.is_classifier(config.checkpoint):
    found = classifier_lib.load(config.checkpoint, mesh)
    return Loaded(found.config, found.model, found.params["crema"],
                  {"classifier": str(found.path), "encoder": found.spec["encoder"]},
                  found)
  restored = restore.restore_encoder(ml_collections.ConfigDict({
      "checkpoint": config.checkpoint, "checkpoint_step": config.checkpoint_step,
      "allow_test_overlap": True, "seed": 0, "pool": "checkpoint",
      "data": {}}), mesh)
  return Loaded(restored.config, restored.model, restored.params,
                {"checkpoint": str(restored.path), "step": restored.step,
                 "leakage": restored.leakage})


def stream_outputs(fn, params, config: ml_collections.ConfigDict,
                   pre: preprocessing.Preprocessing, mesh, desc: str):
  """(a generator of the batches of every ECG in `config.input`, each with fn's
  outputs under "out"; the skipped files' reports, a list that fills as the generator
  runs; the number of files listed). Files are read in worker processes while the
  model runs, with a progress bar."""
  source = reading.build_source(config, pre)
  keys = list(source.keys())
  if not keys:
    raise FileNotFoundError(f"{config.input}: no file that {config.input_source} "
                            "reads")
  skipped = []
  batch_size = model_lib.global_batch_size(config.batch_size, mesh)
  # Two batches ahead: the workers read the next while the model runs on this one.
  items = reading.read_items(source, keys, pre, config.read_workers,
                             windowing=reading.Windowing.of(config),
                             ahead=2 * batch_size)

  def generate():
    with tqdm.tqdm(total=len(keys), unit="file", desc=desc,
                   disable=not config.progress_bar) as bar:
      for batch in stream.batches(items, pre, batch_size, skipped,
                                  reading.input_leads(config, pre)):
        batch["out"] = model_lib.apply_sharded(fn, params, batch, mesh, batch_size)
        bar.update(batch.pop("files_done"))
        yield batch
      bar.update(len(keys) - bar.n)
  return generate(), skipped, len(keys)


def concatenate(batches: list[dict], fields) -> dict:
  return {f: np.concatenate([b[f] for b in batches]) for f in fields}


FIELDS = ("key", "source_file", "ecg_id", "patient_id", "age", "sex", "start_seconds",
          "seconds")


def embed_folder(loaded: Loaded, config: ml_collections.ConfigDict, mesh
                 ) -> tuple[dict, list[dict], int]:
  """(arrays: features [n, emb] and the FIELDS, skipped files, keys listed) of every
  ECG in `config.input` under `loaded`'s encoder."""
  pre = preprocessing.Preprocessing.of(loaded.config)
  encode = jax.jit(model_lib.encode_fn(loaded.model, pre.normalize))
  generated, skipped, num_keys = stream_outputs(encode, loaded.params, config, pre,
                                                mesh, "embed")
  batches = list(generated)
  out = concatenate(batches, FIELDS) if batches else {f: np.array([]) for f in FIELDS}
  out["features"] = (np.concatenate([b["out"] for b in batches]) if batches else
                     np.zeros((0, loaded.model.emb_dim), np.float32))
  return out, skipped, num_keys


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Embeds every ECG of `config.input`; returns the embed.json summary."""
  check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  loaded = load_encoder(config, mesh)
  start = time.perf_counter()
  out, skipped, num_keys = embed_folder(loaded, config, mesh)
  seconds = time.perf_counter() - start
  workdir.mkdir(parents=True, exist_ok=True)
  np.savez(workdir / "embeddings.npz", **out)
  (workdir / "skipped.json").write_text(json.dumps(skipped, indent=1))
  summary = {"input": str(config.input), "input_source": config.input_source,
             "encoder": loaded.origin, "ecgs": int(len(out["features"])),
             "keys": num_keys, "skipped": len(skipped),
             "emb_dim": loaded.model.emb_dim, "seconds": round(seconds, 3),
             "ecgs_per_second": round(len(out["features"]) / seconds, 2),
             "preprocessing": preprocessing.Preprocessing.of(loaded.config).describe()}
  (workdir / "embed.json").write_text(json.dumps(summary, indent=1))
  print(f"embedded {summary['ecgs']} ECGs ({len(skipped)} skipped: see "
        f"{workdir / 'skipped.json'}) in {seconds:.1f} s -> "
        f"{workdir / 'embeddings.npz'}")
  return summary
