"""One attention layer of the paper model, forward and backward, compiled for a TPU
on any CPU: the project's head-major layer against `jax.nn.dot_product_attention` on
the usual [batch, seq, heads, head_dim] split, by XLA's TPU cycle estimates.

  python benchmarks/tpu_attention.py [--topology v5e:2x2] [--batch_per_chip 64]

Shapes of the paper step per chip: the encoder's 10 visible tokens of 3 views
(emb 1024, 16 heads of 64), the decoder's 40 tokens of 2 views (512, 16 heads of 32),
bfloat16. Prints one JSON object; every time in it is the compiler's estimate.
"""

from __future__ import annotations

import argparse
import json
import sys

import tpu_aot  # Makes libtpu importable before jax is imported.

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from crema_jax.models import transformer  # noqa: E402
import tpu_hlo  # noqa: E402


class SplitHeadsAttention(nn.Module):
  """The layer as it was: qkv [batch, seq, 3 * dim] split to [batch, seq, heads,
  head_dim] and `jax.nn.dot_product_attention`; the same parameters."""
  num_heads: int
  dtype: jnp.dtype = jnp.bfloat16

  @nn.compact
  def __call__(self, x):
    b, s, d = x.shape
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(b, s, 3, self.num_heads, d // self.num_heads)
    out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    return nn.Dense(d, dtype=self.dtype, name="proj")(out.reshape(b, s, d))


def estimate(layer: nn.Module, shape: tuple[int, int, int], tgt) -> dict:
  mesh = jax.make_mesh((1,), ("x",), devices=tgt.devices[:1])
  replicated = NamedSharding(mesh, P())
  x = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=replicated)
  params = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
      jax.eval_shape(layer.init, jax.random.key(0), x))

  def loss(p, x):
    return jnp.square(layer.apply(p, x).astype(jnp.float32)).sum()

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(params, x).lower().compile()
  report = tpu_hlo.cycle_report(compiled.as_text())
  return {"estimated_us": round(report["total_cycles"] / tgt.chip.clock_hz * 1e6, 1),
          "uncosted": {k: v["count"] for k, v in report["uncosted"].items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--topology", default="v5e:2x2")
  parser.add_argument("--batch_per_chip", type=int, default=64)
  args = parser.parse_args()
  tgt = tpu_aot.target(args.topology)
  b = args.batch_per_chip
  layers = {"head_major (crema_jax)": lambda h: transformer.Attention(h, jnp.bfloat16),
            "split_heads + jax.nn.dot_product_attention": SplitHeadsAttention}
  result = {"what": "XLA TPU compiler estimates, forward + backward of one layer",
            "topology": args.topology, "batch_per_chip": b, "layers": {}}
  for name, shape, heads in (("encoder", (3 * b, 10, 1024), 16),
                             ("decoder", (2 * b, 40, 512), 16)):
    result["layers"][name] = {"shape": list(shape), "heads": heads}
    for impl, make in layers.items():
      result["layers"][name][impl] = estimate(make(heads), shape, tgt)
      print(json.dumps({name: {impl: result["layers"][name][impl]}}), file=sys.stderr,
            flush=True)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
