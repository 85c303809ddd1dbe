"""Reference twins of the CREMA pretraining step, to time against train_step.py, and
of its encode, to time against efficiency.py.

  python benchmarks/twins.py --twin jax     # plain flax.linen model in one jax.jit
  python benchmarks/twins.py --twin torch   # the same model in PyTorch eager (needs torch)
  python benchmarks/twins.py --encode [--twin torch|jax] [--batch_size 256]

Both twins are the paper model (emb 1024, depth 2, patch 125, decoder 512 x 2, mask
0.75, 10 s at 500 Hz, 12 leads): both masked views stacked into one batch of 2B, the
encoder on visible patches, the decoder with mask tokens, masked MSE, NT-Xent between
the views, an in-batch patient InfoNCE, AdamW. Written as plainly as possible, with no
code shared with crema_jax, so they measure what the library's structure costs.
Prints one JSON object with step time and samples/s.

`--encode` times the paper encoder's features of whole ECGs instead (what evaluation
computes, `crema_jax.evaluation.features.embed`): the patch convolution (kernel =
stride = 125) over the whole 10 s 12-lead signal, sin-cos positions, both encoder
blocks over all 40 patches, the final LayerNorm and the mean over the patches; float32,
no gradient (torch.no_grad). Prints the batch-1 latency (p50, p95) and the throughput
(ECGs/s) at --batch_size.
"""

import argparse
import functools
import json
import time

import numpy as np

EMB, DEPTH, HEADS, PATCH, DEC, DEC_DEPTH, DEC_HEADS = 1024, 2, 16, 125, 512, 2, 16
T, LEADS, RATIO, PROJ = 5000, 12, 0.75, 256
N = T // PATCH
M = int(round(N * RATIO))
K = N - M


def sincos(length, dim):
  omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2.0))
  a = np.arange(length)[:, None] * omega[None]
  return np.concatenate([np.sin(a), np.cos(a)], 1).astype(np.float32)


def inputs(batch, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((2 * batch, T, LEADS), dtype=np.float32)
  order = np.argsort(rng.random((2 * batch, N)), axis=1).astype(np.int32)
  keep, masked = np.sort(order[:, M:], 1), np.sort(order[:, :M], 1)
  patients = rng.integers(0, batch // 2, size=batch).astype(np.int32)
  return x, keep, masked, patients


@functools.cache
def flax_block():
  """The flax pre-LN transformer block class (imported on first use)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x):
      b, s, d = x.shape
      q, k, v = jnp.split(nn.Dense(3 * d)(nn.LayerNorm()(x)).reshape(
          b, s, 3, self.heads, d // self.heads), 3, axis=2)
      a = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
      x = x + nn.Dense(d)(a.reshape(b, s, d))
      return x + nn.Dense(d)(nn.gelu(nn.Dense(4 * d)(nn.LayerNorm()(x))))

  return Block


def run_jax(batch, steps):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  Block = flax_block()  # pylint: disable=invalid-name

  class Twin(nn.Module):
    @nn.compact
    def __call__(self, x, keep, masked):
      b = x.shape[0]
      patches = x.reshape(b, N, PATCH * LEADS)
      vis = jnp.take_along_axis(patches, keep[:, :, None], 1)
      h = nn.Dense(EMB)(vis) + jnp.asarray(sincos(N, EMB))[keep]
      for _ in range(DEPTH):
        h = Block(HEADS)(h)
      h = nn.LayerNorm()(h)
      z = nn.Dense(PROJ)(nn.gelu(nn.Dense(EMB)(h.mean(1))))
      d = nn.Dense(DEC)(h)
      mask_token = self.param("mask", nn.initializers.normal(0.02), (1, 1, DEC))
      full = jnp.broadcast_to(mask_token, (b, N, DEC))
      full = full.at[jnp.arange(b)[:, None], keep].set(d) + jnp.asarray(sincos(N, DEC))
      for _ in range(DEC_DEPTH):
        full = Block(DEC_HEADS)(full)
      full = nn.LayerNorm()(full)
      pred = nn.Dense(PATCH * LEADS)(jnp.take_along_axis(full, masked[:, :, None], 1))
      return pred, jnp.take_along_axis(patches, masked[:, :, None], 1), z

  def info_nce(z, ids, temperature=0.1):
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    n = z.shape[0]
    logits = jnp.where(jnp.eye(n, dtype=bool), -1e9, z @ z.T / temperature)
    pos = (ids[:, None] == ids[None]) & ~jnp.eye(n, dtype=bool)
    logp = jax.nn.log_softmax(logits, 1)
    per = -(logp * pos).sum(1) / jnp.maximum(pos.sum(1), 1)
    has = pos.sum(1) > 0
    return (per * has).sum() / jnp.maximum(has.sum(), 1)

  model = Twin()
  x, keep, masked, patients = (jnp.asarray(a) for a in inputs(batch))
  params = model.init(jax.random.key(0), x[:2], keep[:2], masked[:2])
  tx = optax.adamw(1e-4, weight_decay=0.05)
  opt_state = tx.init(params)

  def loss_fn(params):
    pred, target, z = model.apply(params, x, keep, masked)
    rec = jnp.mean((pred - target) ** 2)
    sample = info_nce(z, jnp.concatenate([jnp.arange(batch)] * 2))
    patient = info_nce(z[:batch], patients)
    return rec + sample + patient

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step.__wrapped__, donate_argnums=(0, 1))
  params, opt_state, loss = step(params, opt_state)
  loss.block_until_ready()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), float(loss)


@functools.cache
def torch_block():
  """The PyTorch pre-LN transformer block class (imported on first use); `gelu` is
  "none" (exact, the step twin) or "tanh" (flax's default, as CREMA computes it)."""
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):
    def __init__(self, d, heads, gelu="none"):
      super().__init__()
      self.heads, self.gelu = heads, gelu
      self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
      b, s, d = x.shape
      q, k, v = self.qkv(self.n1(x)).reshape(b, s, 3, self.heads, -1).permute(
          2, 0, 3, 1, 4)
      a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
      x = x + self.out(a)
      return x + self.fc2(F.gelu(self.fc1(self.n2(x)), approximate=self.gelu))

  return Block


def run_torch(batch, steps):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  Block = torch_block()  # pylint: disable=invalid-name

  class Twin(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Linear(PATCH * LEADS, EMB)
      self.enc = nn.ModuleList([Block(EMB, HEADS) for _ in range(DEPTH)])
      self.norm = nn.LayerNorm(EMB)
      self.proj = nn.Sequential(nn.Linear(EMB, EMB), nn.GELU(), nn.Linear(EMB, PROJ))
      self.dec_embed = nn.Linear(EMB, DEC)
      self.mask = nn.Parameter(torch.zeros(1, 1, DEC))
      self.dec = nn.ModuleList([Block(DEC, DEC_HEADS) for _ in range(DEC_DEPTH)])
      self.dec_norm = nn.LayerNorm(DEC)
      self.pred = nn.Linear(DEC, PATCH * LEADS)
      self.register_buffer("pos", torch.from_numpy(sincos(N, EMB)))
      self.register_buffer("dec_pos", torch.from_numpy(sincos(N, DEC)))

    def forward(self, x, keep, masked):
      b = x.shape[0]
      patches = x.reshape(b, N, PATCH * LEADS)
      vis = torch.gather(patches, 1, keep[:, :, None].expand(-1, -1, PATCH * LEADS))
      h = self.embed(vis) + self.pos[keep]
      for blk in self.enc:
        h = blk(h)
      h = self.norm(h)
      z = self.proj(h.mean(1))
      full = self.mask.expand(b, N, DEC).clone()
      full.scatter_(1, keep[:, :, None].expand(-1, -1, DEC), self.dec_embed(h))
      full = full + self.dec_pos
      for blk in self.dec:
        full = blk(full)
      full = self.dec_norm(full)
      pred = self.pred(torch.gather(full, 1, masked[:, :, None].expand(-1, -1, DEC)))
      target = torch.gather(patches, 1, masked[:, :, None].expand(-1, -1, PATCH * LEADS))
      return pred, target, z

  def info_nce(z, ids, temperature=0.1):
    z = F.normalize(z, dim=1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, -1e9)
    pos = (ids[:, None] == ids[None]) & ~eye
    logp = F.log_softmax(logits, 1)
    per = -(logp * pos).sum(1) / pos.sum(1).clamp(min=1)
    has = pos.sum(1) > 0
    return (per * has).sum() / has.sum().clamp(min=1)

  torch.manual_seed(0)
  model = Twin()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
  x, keep, masked, patients = (torch.from_numpy(a).long() if a.dtype == np.int32
                               else torch.from_numpy(a) for a in inputs(batch))

  def step():
    opt.zero_grad(set_to_none=True)
    pred, target, z = model(x, keep, masked)
    loss = (F.mse_loss(pred, target) +
            info_nce(z, torch.cat([torch.arange(batch)] * 2)) +
            info_nce(z[:batch], patients))
    loss.backward()
    opt.step()
    return float(loss)

  step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), loss


# The encode twins: features of whole ECGs, as evaluation computes them.


def encode_inputs(batch, seed=0):
  """Whole 10 s 12-lead ECGs [batch, T, LEADS] float32."""
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, T, LEADS), dtype=np.float32)


@functools.cache
def torch_encoder(seed=0):
  """The paper encoder in PyTorch, float32, in eval mode: Conv1d patch embedding over
  the whole signal, sin-cos positions, DEPTH blocks, LayerNorm, mean over patches."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  Block = torch_block()  # pylint: disable=invalid-name

  class Encoder(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Conv1d(LEADS, EMB, kernel_size=PATCH, stride=PATCH)
      self.blocks = nn.ModuleList([Block(EMB, HEADS, "tanh") for _ in range(DEPTH)])
      self.norm = nn.LayerNorm(EMB)
      self.register_buffer("pos", torch.from_numpy(sincos(N, EMB)))

    def forward(self, x):  # [b, T, LEADS] -> [b, EMB]
      h = self.embed(x.transpose(1, 2)).transpose(1, 2) + self.pos
      for blk in self.blocks:
        h = blk(h)
      return self.norm(h).mean(1)

  torch.manual_seed(seed)
  return Encoder().eval()


def make_torch_encode(batch, seed=0):
  """A call that encodes one fixed batch of `batch` ECGs in torch eager, no_grad."""
  import torch  # pylint: disable=g-import-not-at-top

  model = torch_encoder(seed)
  x = torch.from_numpy(encode_inputs(batch, seed))

  def encode():
    with torch.no_grad():
      return model(x)

  return encode


def torch_encode_flops(batch=1):
  """FLOPs per ECG of the torch encode, by torch's own counter (matmuls, conv,
  attention): to check that the twin does the work XLA counts for CREMA."""
  from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top

  encode = make_torch_encode(batch)
  with flop_counter.FlopCounterMode(display=False) as counter:
    encode()
  return counter.get_total_flops() / batch


def make_jax_encode(batch, seed=0):
  """The same encode as one plain flax program in one jax.jit, float32 (the call
  blocks on the result)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  Block = flax_block()  # pylint: disable=invalid-name

  class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):  # [b, T, LEADS] -> [b, EMB]
      h = nn.Conv(EMB, (PATCH,), strides=(PATCH,), padding="VALID")(x)
      h = h + jnp.asarray(sincos(N, EMB))
      for _ in range(DEPTH):
        h = Block(HEADS)(h)
      return nn.LayerNorm()(h).mean(1)

  model = Encoder()
  x = jnp.asarray(encode_inputs(batch, seed))
  params = model.init(jax.random.key(seed), x[:1])
  fn = jax.jit(model.apply)
  return lambda: fn(params, x).block_until_ready()


def time_calls(fn, calls, warmup=1):
  """Seconds of each of `calls` calls of `fn`, after `warmup` untimed ones."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def run_encode(twin, batch, repeats, latency_calls=20):
  """Batch-1 latency (ms, p50 and p95) and throughput at `batch` (ECGs/s, median)."""
  make = make_torch_encode if twin == "torch" else make_jax_encode
  latency = np.asarray(time_calls(make(1), latency_calls, warmup=2)) * 1e3
  seconds = float(np.median(time_calls(make(batch), repeats)))
  return {"latency_ms_p50": round(float(np.percentile(latency, 50)), 3),
          "latency_ms_p95": round(float(np.percentile(latency, 95)), 3),
          "batch_seconds": round(seconds, 4),
          "ecgs_per_second": round(batch / seconds, 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--twin", choices=["jax", "torch"], default="jax")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=4,
                      help="Timed steps (with --encode: timed batches).")
  parser.add_argument("--encode", action="store_true",
                      help="Time the encoder's features of whole ECGs instead.")
  parser.add_argument("--latency_calls", type=int, default=20,
                      help="With --encode: timed batch-1 calls.")
  args = parser.parse_args()
  if args.encode:
    result = run_encode(args.twin, args.batch_size, args.steps, args.latency_calls)
    print(json.dumps({"twin": args.twin, "encode": True,
                      "batch_size": args.batch_size, **result}, indent=1))
    return
  run = run_jax if args.twin == "jax" else run_torch
  seconds, loss = run(args.batch_size, args.steps)
  print(json.dumps({"twin": args.twin, "batch_size": args.batch_size,
                    "step_seconds": round(seconds, 4),
                    "samples_per_second": round(args.batch_size / seconds, 2),
                    "loss": loss}, indent=1))


if __name__ == "__main__":
  main()
