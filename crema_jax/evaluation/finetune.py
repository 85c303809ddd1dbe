"""Fine-tuning: the whole pretrained encoder plus a linear head, trained end to end on
labelled views (LP-FT: the head starts from the fitted linear probe).

AdamW on binary cross-entropy with warmup + cosine. The head learns at
`head_lr_scale` x `lr`; the encoder at `lr` with layer-wise decay (the patch embedding
gets `layer_decay ** (depth + 1)` of it, block i `layer_decay ** (depth - i)`, the final
norm all of it). Starting the head from the linear probe (Kumar et al. 2022, LP-FT)
keeps the first steps from distorting the pretrained features with a random head's
gradients. The model is evaluated on the validation ECGs before the first step and
every `eval_every` steps, stopped after `patience` evaluations without a better
validation macro AUROC, and the best evaluation's parameters are kept (so fine-tuning
never ends below its linear-probe start on validation). Training views get their own
augmentation (`ft.augment`), not pretraining's. The decoder and projection head are
not used and not updated.
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
from crema_jax.evaluation import objectives
from crema_jax.input import device
from crema_jax.input import pipeline
from crema_jax.input import views
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


def lr_multipliers(params: Any, depth: int, layer_decay: float,
                   head_lr_scale: float = 1.0) -> Any:
  """A tree like `params`: the learning-rate factor of each leaf (`head_lr_scale` for
  the head, 0 for the parts fine-tuning does not update)."""
  def factor(path, _):
    keys = _path_keys(path)
    if keys[0] == "head":
      return float(head_lr_scale)
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
  """params: {"crema": ..., "head": {"w", "b"}} at the best validation evaluation
  (best_step 0: the linear-probe start); val_score: that evaluation's validation
  `val_metric` (auroc; r2 for regression); history: one entry per evaluation (step,
  train_loss, val_METRIC, encoder_change: the encoder's relative distance from its
  pretrained parameters)."""
  params: Any
  best_step: int
  val_score: float
  history: list[dict]
  val_metric: str = "auroc"

  @property
  def val_auroc(self) -> float:
    return self.val_score if self.val_metric == "auroc" else float("nan")


@functools.partial(jax.jit, static_argnums=0)
def logits(model: models.CREMA, params: Any, x: jax.Array, valid: jax.Array) -> jax.Array:
  """The fine-tuned model (eval mode): x [b, leads, time] whose first valid [b]
  samples are signal -> logits [b, classes]."""
  feats = model.apply({"params": params["crema"]}, x, valid=valid, method=model.embed)
  return feats @ params["head"]["w"] + params["head"]["b"]


@functools.partial(jax.jit, static_argnums=0)
def features_and_logits(model: models.CREMA, params: Any, x: jax.Array,
                        valid: jax.Array) -> jax.Array:
  """[b, emb + classes]: the fine-tuned encoder's pooled features, then its logits."""
  feats = model.apply({"params": params["crema"]}, x, valid=valid, method=model.embed)
  return jnp.concatenate([feats, feats @ params["head"]["w"] + params["head"]["b"]], -1)


def augmented_config(config: ml_collections.ConfigDict,
                     augment: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with `data.augment` replaced by fine-tuning's own augmentation."""
  config = config.copy_and_resolve_references()
  config.data.augment = augment.copy_and_resolve_references()
  return config


def make_optimizer(model: models.CREMA, ft: ml_collections.ConfigDict, classes: int):
  """(optimizer, initial_params): fine-tuning's AdamW (clipping, warmup + cosine, the
  per-leaf rates of `lr_multipliers`) and fn(crema_params, head (w, b)) -> the
  parameters it updates, {"crema": ..., "head": {"w" [emb, classes], "b"}}."""
  def initial_params(crema_params: Any, head: tuple) -> dict:
    return {"crema": crema_params,
            "head": {"w": jnp.asarray(head[0], jnp.float32).reshape(model.emb_dim, classes),
                     "b": jnp.asarray(head[1], jnp.float32).reshape(classes)}}

  shapes = jax.eval_shape(lambda r: initial_params(
      models.init_params(model, r), (jnp.zeros((model.emb_dim, classes)),
                                     jnp.zeros((classes,)))), jax.random.key(0))
  multipliers = lr_multipliers(shapes, model.depth, ft.layer_decay, ft.head_lr_scale)
  optimizer = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(optim.make_schedule(ft.lr, ft.warmup_steps, ft.steps),
                  weight_decay=ft.weight_decay, mask=optim.decay_mask),
      scale_by_tree(multipliers))
  return optimizer, initial_params


def make_step(model: models.CREMA, optimizer: optax.GradientTransformation,
              config: ml_collections.ConfigDict, ft: ml_collections.ConfigDict,
              seed: int, kind: str = "multilabel", target_scale: float = 1.0):
  """The jitted fine-tuning step: (params, opt_state, crops [b, leads, time] raw
  float16 mV, valid [b], labels [b, classes], step i) -> (params, opt_state, loss),
  the loss of the task's kind (`objectives.loss`).
  Crops are standardised and augmented (`ft.augment`; the time shift is the host's)
  on the device with keys of (seed, i, example)."""
  transform = device.ViewTransform.from_config(augmented_config(config, ft.augment))
  view_seed, dropout_rng = seed, jax.random.fold_in(jax.random.key(seed), 1)

  def loss_fn(p, crops, valid, y, i):
    keys = device.example_keys(view_seed, i, crops.shape[0])
    with jax.named_scope("views"):
      x = jax.vmap(transform.view)(keys, crops, valid)
    feats = model.apply({"params": p["crema"]}, x, train=True, valid=valid,
                        method=model.embed,
                        rngs={"dropout": jax.random.fold_in(dropout_rng, i)})
    with jax.named_scope("loss"):
      return objectives.loss(kind, feats @ p["head"]["w"] + p["head"]["b"], y,
                             target_scale)

  @jax.jit
  def step(p, s, x, valid, y, i):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, valid, y, i)
    with jax.named_scope("optimizer"):
      updates, s = optimizer.update(grads, s, p)
      return optax.apply_updates(p, updates), s, loss

  return step


def finetune(model: models.CREMA, crema_params: Any, config: ml_collections.ConfigDict,
             ft: ml_collections.ConfigDict, prepared: storage.PreparedSource,
             train_positions: np.ndarray, val_positions: np.ndarray,
             labels: np.ndarray, mesh, *, head: tuple | None = None, seed: int = 0,
             show_progress: bool = False, kind: str = "multilabel") -> FinetuneResult:
  """Fine-tunes encoder + head on `train_positions`, early-stopped on `val_positions`.

  Args:
    model, crema_params: the pretrained model and its parameters.
    config: the pretraining config (data, model) with the evaluation's data fields.
    ft: steps, batch_size, lr, head_lr_scale, warmup_steps, weight_decay, layer_decay,
      eval_every, patience, augment.
    train_positions, val_positions: indices in the prepared source.
    labels: [len(prepared), classes] 0/1, the task's labels of every prepared record
      (regression: [len(prepared), 1] values).
    kind: the task's kind (`objectives.KINDS`): its loss and validation score.
    head: (w [emb, classes], b [classes]) to start the head from (the fitted linear
      probe's `raw_head()`); None: zeros.
  """
  classes = labels.shape[1]
  if head is None:
    head = (np.zeros((model.emb_dim, classes)), np.zeros((classes,)))
  optimizer, initial_params = make_optimizer(model, ft, classes)
  params = initial_params(crema_params, head)
  replicated = sharding.replicated(mesh)
  params = jax.device_put(params, replicated)
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)
  target_scale = (float(np.std(labels[train_positions])) or 1.0
                  if kind == "regression" else 1.0)
  step = make_step(model, optimizer, config, ft, seed, kind, target_scale)
  metric = f"val_{objectives.validation_metric(kind)}"
  batch_size = -(-ft.batch_size // mesh.size) * mesh.size
  stream = iter(pipeline.finetune_dataset(
      config, prepared, train_positions, batch_size, seed=seed,
      max_shift=views.max_shift_samples(ft.augment, config.data.sampling_rate)))
  logits_fn = functools.partial(logits, model)
  val_labels = labels[val_positions]

  def validate(p) -> float:
    val = features_lib.extract_features(model, p, config, prepared, (), mesh,
                                        positions=val_positions, embed_fn=logits_fn)
    return objectives.validation_score(kind, val_labels,
                                       objectives.scores_of(kind, val["features"]))

  encoder = lambda p: {k: v for k, v in p["crema"].items() if k in ENCODER_KEYS}
  start_encoder = jax.device_get(encoder(params))
  start_norm = float(optax.global_norm(start_encoder))

  def encoder_change(p) -> float:
    """How far the encoder moved: ||theta - theta_0|| / ||theta_0||."""
    delta = jax.tree.map(lambda a, b: a - b, jax.device_get(encoder(p)), start_encoder)
    return float(optax.global_norm(delta)) / start_norm

  start = validate(params)
  best = (jax.device_get(params), 0, start)
  history, stale, losses = [{"step": 0, "train_loss": None, metric: start,
                             "encoder_change": 0.0}], 0, []
  bar = tqdm.tqdm(total=ft.steps, unit="step", disable=not show_progress,
                  desc="fine-tune")
  for i in range(1, ft.steps + 1):
    batch = next(stream)
    data = sharding.global_batch(mesh, {"view": batch["view"], "valid": batch["valid"],
                                        "labels": labels[batch["position"]].astype(np.float32)})
    params, opt_state, loss = step(params, opt_state, data["view"], data["valid"],
                                   data["labels"], i)
    losses.append(loss)
    bar.update(1)
    if i % ft.eval_every and i != ft.steps:
      continue
    score = validate(params)
    history.append({"step": i, "train_loss": float(np.mean(jax.device_get(losses))),
                    metric: score, "encoder_change": encoder_change(params)})
    losses = []
    bar.set_postfix({metric: f"{score:.3f}"})
    if score > best[2] or not np.isfinite(best[2]):
      best, stale = (jax.device_get(params), i, score), 0
    else:
      stale += 1
      if stale >= ft.patience:
        break
  bar.close()
  return FinetuneResult(best[0], best[1], float(best[2]), history,
                        objectives.validation_metric(kind))
