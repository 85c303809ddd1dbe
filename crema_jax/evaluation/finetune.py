"""Fine-tuning: the whole pretrained encoder plus a linear head, trained end to end on
labelled PTB-XL views.

AdamW on binary cross-entropy with warmup + cosine, optional layer-wise learning-rate
decay (the patch embedding gets `layer_decay ** (depth + 1)` of the head's rate, block i
`layer_decay ** (depth - i)`), evaluated on the validation fold every `eval_every`
steps and stopped after `patience` evaluations without a better validation macro AUROC;
the best step's parameters are kept. The decoder and projection head are not used and
not updated.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import scores
from crema_jax.input import device
from crema_jax.input import pipeline
from crema_jax import models
from crema_jax import optim
from crema_jax import sharding

# The parameters `CREMA.embed` uses; the rest (decoder, projector) stay as restored.
ENCODER_KEYS = frozenset({"patch_embed", "lead_embed", "cls_token", "encoder"})


def layer_id(path: tuple[str, ...], depth: int) -> int:
  """0 for the embeddings, i + 1 for encoder block i, depth + 1 for the final norm and
  the head."""
  if path[0] == "head":
    return depth + 1
  if path[0] == "encoder":
    return int(path[1][len("block"):]) + 1 if path[1].startswith("block") else depth + 1
  return 0


def _path_keys(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def lr_multipliers(params: Any, depth: int, layer_decay: float) -> Any:
  """A tree like `params`: the learning-rate factor of each leaf (0 for the parts
  fine-tuning does not update)."""
  def factor(path, _):
    keys = _path_keys(path)
    if keys[0] == "crema":
      keys = keys[1:]
      if keys[0] not in ENCODER_KEYS:
        return 0.0
    return float(layer_decay ** (depth + 1 - layer_id(keys, depth)))
  return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_tree(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its leaf of `multipliers`."""
  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


@dataclasses.dataclass
class FinetuneResult:
  """params: {"crema": ..., "head": {"w", "b"}} at the best validation step."""
  params: Any
  best_step: int
  val_auroc: float
  history: list[dict]


@functools.partial(jax.jit, static_argnums=0)
def logits(model: models.CREMA, params: Any, x: jax.Array, valid: jax.Array) -> jax.Array:
  """The fine-tuned model (eval mode): x [b, time, leads] whose first valid [b]
  samples are signal -> logits [b, classes]."""
  feats = model.apply({"params": params["crema"]}, x, valid=valid, method=model.embed)
  return feats @ params["head"]["w"] + params["head"]["b"]


def finetune(model: models.CREMA, crema_params: Any, config: ml_collections.ConfigDict,
             ft: ml_collections.ConfigDict, prepared: storage.PreparedSource,
             train_positions: np.ndarray, class_columns: list[int], mesh, *,
             seed: int = 0, show_progress: bool = False) -> FinetuneResult:
  """Fine-tunes encoder + head on `train_positions` for the label columns
  `class_columns`, early-stopped on the validation folds.

  Args:
    model, crema_params: the pretrained model and its parameters.
    config: the pretraining config (data, model) with the probe's data fields.
    ft: steps, batch_size, lr, warmup_steps, weight_decay, layer_decay, eval_every,
      patience.
    train_positions: indices in the prepared source of the training ECGs.
  """
  columns = np.asarray(class_columns)
  head = {"w": jnp.zeros((model.emb_dim, len(columns)), jnp.float32),
          "b": jnp.zeros((len(columns),), jnp.float32)}
  params = {"crema": crema_params, "head": head}
  multipliers = lr_multipliers(params, model.depth, ft.layer_decay)
  optimizer = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(optim.make_schedule(ft.lr, ft.warmup_steps, ft.steps),
                  weight_decay=ft.weight_decay, mask=optim.decay_mask),
      scale_by_tree(multipliers))
  replicated = sharding.replicated(mesh)
  params = jax.device_put(params, replicated)
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)
  # The pretraining views' standardisation and augmentation, on the device.
  transform = device.ViewTransform.from_config(config)
  view_seed, dropout_rng = seed, jax.random.fold_in(jax.random.key(seed), 1)

  def loss_fn(p, crops, valid, y, i):
    keys = device.example_keys(view_seed, i, crops.shape[0])
    x = jax.vmap(transform.view)(keys, crops, valid)
    feats = model.apply({"params": p["crema"]}, x, train=True, valid=valid,
                        method=model.embed,
                        rngs={"dropout": jax.random.fold_in(dropout_rng, i)})
    return optax.sigmoid_binary_cross_entropy(
        feats @ p["head"]["w"] + p["head"]["b"], y).mean()

  @jax.jit
  def step(p, s, x, valid, y, i):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, valid, y, i)
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  batch_size = -(-ft.batch_size // mesh.size) * mesh.size
  stream = iter(pipeline.finetune_dataset(config, prepared, train_positions, batch_size,
                                          seed=seed))
  logits_fn = functools.partial(logits, model)
  best = (jax.device_get(params), 0, -np.inf)
  history, stale, losses = [], 0, []
  bar = tqdm.tqdm(total=ft.steps, unit="step", disable=not show_progress,
                  desc="fine-tune")
  for i in range(1, ft.steps + 1):
    batch = next(stream)
    data = sharding.global_batch(mesh, {"view": batch["view"], "valid": batch["valid"],
                                        "labels": batch["labels"][:, columns]})
    params, opt_state, loss = step(params, opt_state, data["view"], data["valid"],
                                   data["labels"], i)
    losses.append(loss)
    bar.update(1)
    if i % ft.eval_every and i != ft.steps:
      continue
    val = features_lib.extract_features(model, params, config, prepared,
                                        config.data.val_folds, mesh,
                                        embed_fn=logits_fn)
    auroc = scores.macro(scores.auroc_per_class(val["labels"][:, columns],
                                                val["features"]))
    history.append({"step": i, "train_loss": float(np.mean(jax.device_get(losses))),
                    "val_auroc": auroc})
    losses = []
    bar.set_postfix(val_auroc=f"{auroc:.3f}")
    if auroc > best[2] or not np.isfinite(best[2]):
      best, stale = (jax.device_get(params), i, auroc), 0
    else:
      stale += 1
      if stale >= ft.patience:
        break
  bar.close()
  return FinetuneResult(best[0], best[1], float(best[2]), history)
