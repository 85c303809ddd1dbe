"""A checkpoint as portable StableHLO (`jax.export`): run it with only `jax` installed.

  python -m crema_jax.main --config configs/export.py --workdir OUT \
      --config.checkpoint=CKPT_OR_CLASSIFIER

Writes OUT/encoder.jax (x, valid -> features) and, for a classifier folder,
OUT/classifier.jax (x, valid -> features, probabilities) with its model card; plus
OUT/export.json saying the inputs, outputs and preprocessing. The parameters are
constants inside the serialised function; the batch dimension is symbolic; lowered
for `config.platforms` (CPU and CUDA by default). Loading, without this package:

  import jax, numpy as np
  fn = jax.export.deserialize(bytearray(open("OUT/classifier.jax", "rb").read()))
  features, probabilities = fn.call(x, valid)  # x [b, leads, seq_len] float32 mV,
                                               # valid [b] int32 samples of signal
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from crema_jax import atomic
from crema_jax.inference import embed
from crema_jax.inference import model as model_lib
from crema_jax.inference import outputs
from crema_jax.package import classifier as classifier_lib
from crema_jax.package import preprocessing
from crema_jax import sharding


def serialize(fn: Callable, params: Any, pre: preprocessing.Preprocessing,
              platforms: Sequence[str]) -> bytes:
  """fn(params, x, valid) with `params` folded in as constants, exported for a
  symbolic batch b: x [b, leads, seq_len] float32, valid [b] int32."""
  params = jax.tree.map(np.asarray, jax.device_get(params))
  (b,) = jax_export.symbolic_shape("b")
  x = jax.ShapeDtypeStruct((b, len(pre.leads), pre.seq_len), jnp.float32)
  valid = jax.ShapeDtypeStruct((b,), jnp.int32)
  exported = jax_export.export(jax.jit(lambda x, v: fn(params, x, v)),
                               platforms=tuple(platforms))(x, valid)
  return exported.serialize()


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Exports `config.checkpoint`'s encoder (and head, for a classifier folder)."""
  embed.check_config(config)
  workdir = pathlib.Path(workdir)
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  found = (classifier_lib.load(config.checkpoint, mesh)
           if classifier_lib.is_classifier(config.checkpoint) else None)
  encoder = found.encoder if found is not None else embed.load_encoder(config, mesh)
  origin = encoder.origin()
  run_id = outputs.identity("export", config, origin)
  outputs.check_workdir(workdir, run_id, config.overwrite)
  pre = encoder.preprocessing
  files = {"encoder.jax": serialize(model_lib.encode_fn(encoder.model, pre.normalize),
                                    encoder.params, pre, config.platforms)}
  described = {"encoder.jax": {"features": f"[b, {encoder.model.emb_dim}] float32"}}
  if found is not None:
    files["classifier.jax"] = serialize(
        model_lib.classify_fn(found.model, pre.normalize, found.kind), found.params,
        pre, config.platforms)
    described["classifier.jax"] = {
        "features": f"[b, {found.model.emb_dim}] float32",
        "outputs": f"[b, {len(found.classes)}] float32, "
                   f"{classifier_lib.ACTIVATIONS[found.kind]}, columns "
                   f"{list(found.classes)}",
        "thresholds": found.spec["thresholds"]}
    # The package's own cards (regular files: packages hold no links).
    files["MODEL_CARD.md"] = (found.path / "MODEL_CARD.md").read_bytes()
    files["model_card.json"] = (found.path / "model_card.json").read_bytes()
  summary = {
      "run": run_id,
      "files": {name: len(blob) for name, blob in files.items()},
      "platforms": list(config.platforms), "encoder": origin,
      "inputs": {"x": f"[b, {len(pre.leads)}, {pre.seq_len}] float32 mV, leads "
                      f"{list(pre.leads)} at {pre.sampling_rate} Hz",
                 "valid": "[b] int32: samples of signal at the start of each x (the "
                          "rest zero padding)"},
      "outputs": described, "preprocessing": pre.describe(),
      "load": "jax.export.deserialize(bytearray(open(path, 'rb').read()))"
              ".call(x, valid)"}
  staged = atomic.Outputs(workdir)
  for name, blob in files.items():
    atomic.write_bytes(staged.path(name), blob)
  staged.commit("export.json", summary)
  print("\n".join(f"{workdir / n}: {len(b) / 1e6:.1f} MB" for n, b in files.items()
                  if n.endswith(".jax")))
  return summary

