"""Embed over a folder of hospital ECG files, against prepare reading the same files.

  python benchmarks/embed_files.py [--files 1000] [--workers 2] [--variant paper]

Writes `--files` 10 s, 12-lead HL7 aECG and GE MUSE XML files (half each, 500 Hz;
tests/integration/ecg_fixtures.py's writers, the published schemas) into a temporary
folder, not timed. Then, in the same run:
- prepare (`data.source="ecg_files"`, `--workers` processes) reads, checks and writes
  them: ECGs/s;
- embed (`crema_jax.inference.embed.embed_folder`, the job's own path: files read in
  `--workers` processes while the model encodes) gives features of every one with a
  randomly initialised `--variant` encoder: ECGs/s;
- the encoder alone on the same batches already in memory: ECGs/s.
The target: embed at least as fast as prepare (the model is not the bottleneck).
Prints one JSON object.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np

from configs import common
from configs import embed as embed_configs
from crema_jax.data import prepare
from crema_jax.inference import embed
from crema_jax.inference import model as model_lib
from crema_jax import models
from crema_jax.package import encoder as package
from crema_jax.package import preprocessing
from crema_jax import sharding

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" /
                       "integration"))
import ecg_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def write_files(root: pathlib.Path, n: int) -> None:
  rng = np.random.default_rng(0)
  t = np.arange(5000)[:, None] / 500
  for i in range(n):
    freq = rng.uniform(0.8, 8, 12)
    ecg = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if i % 2:
      columns = [LEADS.index(lead) for lead in ecg_fixtures.MUSE_LEADS]
      ecg_fixtures.write_muse_xml(root / f"m{i:05d}.xml", ecg[:, columns], 500,
                                  ecg_fixtures.MUSE_LEADS, f"P{i}")
    else:
      ecg_fixtures.write_hl7_aecg(root / f"a{i:05d}.xml", ecg, 500, LEADS, f"P{i}")


def encoder(variant: str) -> package.Encoder:
  """A randomly initialised `variant` encoder, as a package would hold it."""
  config = ml_collections.ConfigDict({
      "model": common.model_config(variant), "data": common.data_config(),
      "compute_dtype": "float32", "mask_ratio": 0.75})
  model = models.build(config)
  params = models.init_params(model, jax.random.key(0), config.mask_ratio)
  return package.Encoder(config, model, params, pathlib.Path(f"random_init_{variant}"),
                         0, None, {"status": "unsealed", "checksum": None})


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--files", type=int, default=1000)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--batch_size", type=int, default=64)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp) / "files"
    root.mkdir()
    write_files(root, args.files)

    data = common.data_config()
    data.update(source="ecg_files", name="files", raw_dir=str(root),
                data_dir=str(pathlib.Path(tmp) / "prepared"),
                prepare_workers=args.workers, records_per_shard=100,
                derive_limb_leads=True)
    start = time.perf_counter()
    manifest = prepare.prepare_from_config(data, show_progress=False)
    prepare_seconds = time.perf_counter() - start

    loaded = encoder(args.variant)
    mesh = sharding.make_mesh()
    config = embed_configs.get_config()
    config.update(input=str(root), read_workers=args.workers,
                  batch_size=args.batch_size, progress_bar=False)
    embed.embed_folder(loaded, config, mesh)  # Compiles (and warms the page cache).
    start = time.perf_counter()
    out, skipped, _ = embed.embed_folder(loaded, config, mesh)
    embed_seconds = time.perf_counter() - start

    pre = preprocessing.Preprocessing.of(loaded.config)
    encode = jax.jit(model_lib.encode_fn(loaded.model, pre.normalize))
    batch = {"view": np.zeros((args.batch_size, 12, pre.seq_len), np.float32) + 0.1,
             "valid": np.full(args.batch_size, pre.seq_len, np.int32)}
    model_lib.apply_sharded(encode, loaded.params, batch, mesh, args.batch_size)
    start = time.perf_counter()
    rounds = max(1, args.files // args.batch_size // 4)
    for _ in range(rounds):
      model_lib.apply_sharded(encode, loaded.params, batch, mesh, args.batch_size)
    model_seconds = (time.perf_counter() - start) / (rounds * args.batch_size)

  n = len(out["features"])
  result = {
      "files": args.files, "workers": args.workers, "variant": args.variant,
      "cpus": len(jax.devices()), "prepared_records": manifest["num_records"],
      "embedded": n, "skipped": len(skipped),
      "prepare_ecgs_per_second": round(manifest["num_records"] / prepare_seconds, 1),
      "embed_ecgs_per_second": round(n / embed_seconds, 1),
      "encoder_alone_ecgs_per_second": round(1 / model_seconds, 1),
      "embed_vs_prepare": round((n / embed_seconds) /
                                (manifest["num_records"] / prepare_seconds), 3),
  }
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
