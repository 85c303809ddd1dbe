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

import json
import pathlib
import shutil
from typing import Any, Callable, Sequence

import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from crema_jax.inference import embed
from crema_jax.inference import model as model_lib
from crema_jax.inference import preprocessing
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
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  loaded = embed.load_encoder(config, mesh)
  pre = preprocessing.Preprocessing.of(loaded.config)
  files = {"encoder.jax": serialize(model_lib.encode_fn(loaded.model, pre.normalize),
                                    loaded.params, pre, config.platforms)}
  outputs = {"encoder.jax": {"features": f"[b, {loaded.model.emb_dim}] float32"}}
  card = None
  if loaded.classifier is not None:
    found = loaded.classifier
    files["classifier.jax"] = serialize(
        model_lib.classify_fn(found.model, pre.normalize), found.params, pre,
        config.platforms)
    outputs["classifier.jax"] = {
        "features": f"[b, {found.model.emb_dim}] float32",
        "probabilities": f"[b, {len(found.classes)}] float32 sigmoid, columns "
                         f"{list(found.classes)}",
        "thresholds": found.spec["thresholds"]}
    card = found.path / "MODEL_CARD.md"
  for name, blob in files.items():
    (workdir / name).write_bytes(blob)
  if card is not None:
    shutil.copy(card, workdir / "MODEL_CARD.md")
    shutil.copy(card.with_name("model_card.json"), workdir / "model_card.json")
  summary = {
      "files": {name: len(blob) for name, blob in files.items()},
      "platforms": list(config.platforms), "encoder": loaded.origin,
      "inputs": {"x": f"[b, {len(pre.leads)}, {pre.seq_len}] float32 mV, leads "
                      f"{list(pre.leads)} at {pre.sampling_rate} Hz",
                 "valid": "[b] int32: samples of signal at the start of each x (the "
                          "rest zero padding)"},
      "outputs": outputs, "preprocessing": pre.describe(),
      "load": "jax.export.deserialize(bytearray(open(path, 'rb').read()))"
              ".call(x, valid)"}
  (workdir / "export.json").write_text(json.dumps(summary, indent=1))
  print("\n".join(f"{workdir / n}: {len(b) / 1e6:.1f} MB" for n, b in files.items()))
  return summary
