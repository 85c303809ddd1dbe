"""Reference twins of the CREMA pretraining step, to time against train_step.py.

  python benchmarks/twins.py --twin jax     # plain flax.linen model in one jax.jit
  python benchmarks/twins.py --twin torch   # the same model in PyTorch eager (needs torch)

Both twins are the paper model (emb 1024, depth 2, patch 125, decoder 512 x 2, mask
0.75, 10 s at 500 Hz, 12 leads): both masked views stacked into one batch of 2B, the
encoder on visible patches, the decoder with mask tokens, masked MSE, NT-Xent between
the views, an in-batch patient InfoNCE, AdamW. Written as plainly as possible, with no
code shared with crema_jax, so they measure what the library's structure costs.
Prints one JSON object with step time and samples/s.
"""

import argparse
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


def run_jax(batch, steps):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

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


def run_torch(batch, steps):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):
    def __init__(self, d, heads):
      super().__init__()
      self.heads = heads
      self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
      b, s, d = x.shape
      q, k, v = self.qkv(self.n1(x)).reshape(b, s, 3, self.heads, -1).permute(
          2, 0, 3, 1, 4)
      a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
      x = x + self.out(a)
      return x + self.fc2(F.gelu(self.fc1(self.n2(x))))

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--twin", choices=["jax", "torch"], default="jax")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=4)
  args = parser.parse_args()
  run = run_jax if args.twin == "jax" else run_torch
  seconds, loss = run(args.batch_size, args.steps)
  print(json.dumps({"twin": args.twin, "batch_size": args.batch_size,
                    "step_seconds": round(seconds, 4),
                    "samples_per_second": round(args.batch_size / seconds, 2),
                    "loss": loss}, indent=1))


if __name__ == "__main__":
  main()
