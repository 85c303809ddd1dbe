"""A classifier folder: a task's encoder and linear head, its thresholds, and the model
card that says what it is. Written by every evaluation run, read by `predict`.

  classifiers/TASK/
    classifier.json   classes (in output order), thresholds, the encoder's config
    head.npz          w [emb, classes], b [classes], on the encoder's raw features
    encoder/          the fine-tuned encoder (fine-tuning); a probe's classifier names
                      its pretraining checkpoint instead (the encoder is not copied)
    model_card.json, MODEL_CARD.md

The head acts on unstandardised pooled features (a probe's `raw_head()`), so
probability = sigmoid(encode(x) @ w + b) for probe and fine-tuned classifiers alike.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from crema_jax import checkpoint
from crema_jax.evaluation import restore
from crema_jax.inference import preprocessing
from crema_jax import models
from crema_jax.models import sizing
from crema_jax import sharding

FORMAT = 1
SPEC_FILE = "classifier.json"
HEAD_FILE = "head.npz"
ENCODER_DIR = "encoder"
# Parameters the encoder's features do not use (the decoder and contrastive projector).
PRETRAINING_ONLY = ("decoder", "decoder_embed", "decoder_pred", "mask_token", "projector")
INTENDED_USE = (
    "Research use: embedding ECGs and screening label predictions on data like the "
    "evaluation data. Not a medical device; not validated for clinical decisions. "
    "Predictions on other hospitals' ECGs (other devices, filters, populations) can be "
    "miscalibrated: check on a labelled sample of your own data first.")


@dataclasses.dataclass
class Classifier:
  """A loaded classifier: `params` = {"crema": encoder, "head": {"w", "b"}}."""
  path: pathlib.Path
  config: ml_collections.ConfigDict  # The encoder's config (model, data).
  model: models.CREMA
  params: Any
  classes: tuple[str, ...]
  thresholds: np.ndarray
  spec: dict

  @property
  def preprocessing(self) -> preprocessing.Preprocessing:
    return preprocessing.Preprocessing.of(self.config)


def probability(logit_thresholds: np.ndarray) -> np.ndarray:
  """The evaluation's F1 thresholds (on logits) as thresholds on the probabilities
  the classifier outputs; +inf (a class without validation positives: never
  predicted) stays +inf."""
  t = np.asarray(logit_thresholds, np.float64)
  with np.errstate(over="ignore"):
    return np.where(np.isfinite(t), 1 / (1 + np.exp(-t)), np.inf)


def _thresholds_json(thresholds) -> list:
  return [float(t) if np.isfinite(t) else None for t in thresholds]


def is_classifier(path: str | pathlib.Path) -> bool:
  return (pathlib.Path(path) / SPEC_FILE).is_file()


def save(directory: pathlib.Path, *, task: str, classes, thresholds: np.ndarray,
         head: tuple[np.ndarray, np.ndarray], encoder_config: ml_collections.ConfigDict,
         encoder_params: Any | None, checkpoint_ref: dict, card: dict) -> pathlib.Path:
  """Writes a classifier folder (see the module docstring); `encoder_params` None
  means the encoder is the pretraining checkpoint `checkpoint_ref` ({"path",
  "step"}) unchanged."""
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  w, b = (np.asarray(a, np.float32) for a in head)
  np.savez(directory / HEAD_FILE, w=w, b=b)
  if encoder_params is not None:
    with ocp.StandardCheckpointer() as saver:
      saver.save(directory / ENCODER_DIR, encoder_params, force=True)
  spec = {"format": FORMAT, "task": task, "classes": list(classes),
          "thresholds": _thresholds_json(thresholds),  # None: never predicted.
          "encoder": ({"fine_tuned": ENCODER_DIR, "from": checkpoint_ref}
                      if encoder_params is not None else
                      {"checkpoint": checkpoint_ref}),
          "config": encoder_config.to_dict()}
  (directory / SPEC_FILE).write_text(json.dumps(spec, indent=1))
  write_card(directory, card)
  return directory


def load(directory: str | pathlib.Path, mesh) -> Classifier:
  """A classifier folder's model and parameters (replicated over `mesh`)."""
  directory = pathlib.Path(directory).absolute()
  if not is_classifier(directory):
    raise FileNotFoundError(f"{directory}: no {SPEC_FILE} (not a classifier folder: "
                            "evaluation runs write them under classifiers/TASK)")
  spec = json.loads((directory / SPEC_FILE).read_text())
  if spec.get("format") != FORMAT:
    raise ValueError(f"{directory / SPEC_FILE}: format {spec.get('format')}, this "
                     f"code reads {FORMAT}")
  config = ml_collections.ConfigDict(spec["config"])
  model = models.build(config)
  target = restore.replicated_target(model, config, mesh)
  if "fine_tuned" in spec["encoder"]:
    with ocp.StandardCheckpointer() as reader:
      crema = reader.restore(directory / spec["encoder"]["fine_tuned"], target)
  else:
    ref = spec["encoder"]["checkpoint"]
    mngr = checkpoint.manager(pathlib.Path(ref["path"]).parent, read_only=True)
    if ref["step"] not in mngr.all_steps():
      raise FileNotFoundError(f"{directory}: its encoder is step {ref['step']} of "
                              f"{ref['path']}, which holds {sorted(mngr.all_steps())}")
    crema = checkpoint.restore_params(mngr, ref["step"], target)
    mngr.close()
  head = dict(np.load(directory / HEAD_FILE))
  if head["w"].shape != (model.emb_dim, len(spec["classes"])):
    raise ValueError(f"{directory / HEAD_FILE}: w is {head['w'].shape}, expected "
                     f"{(model.emb_dim, len(spec['classes']))}")
  params = {"crema": crema,
            "head": jax.device_put(head, sharding.replicated(mesh))}
  thresholds = np.array([np.inf if t is None else t for t in spec["thresholds"]],
                        np.float64)
  return Classifier(directory, config, model, params, tuple(spec["classes"]),
                    thresholds, spec)


# --------------------------------------------------------------------- model card
def card(*, task: str, definition: str, classes, thresholds, encoder_config,
         mode: str, checkpoint_ref: dict, pretraining: dict, leakage: dict,
         test: dict, protocol: dict, training: dict) -> dict:
  """The model card's fields: what it predicts (labels, order, thresholds), what it
  expects (preprocessing), what it was trained on, how well it did on the test fold."""
  head = ("linear probe on the frozen encoder" if mode == "probe" else
          "fine-tuned end to end (LP-FT: head started from the probe)")
  return {
      "task": task, "definition": definition,
      "outputs": {
          "probabilities": [f"p_{c}" for c in classes],
          "labels": [{"name": c, "column": i, "threshold": t} for i, (c, t) in
                     enumerate(zip(classes, _thresholds_json(thresholds)))],
          "activation": "sigmoid per label (multi-label)",
          "thresholds": ("the probability at which each label's F1 is highest on the "
                         "validation fold (none: no validation positive, never "
                         "predicted)")},
      "preprocessing": preprocessing.Preprocessing.of(encoder_config).describe(),
      "model": {**_model_entry(encoder_config), "head": head},
      "pretraining": {"checkpoint": checkpoint_ref, **pretraining},
      "leakage": leakage,
      "evaluation": {"protocol": protocol, "test": test},
      "training": training,
      "intended_use": INTENDED_USE,
  }


def _model_entry(config: ml_collections.ConfigDict) -> dict:
  model = models.build(config)
  shapes = jax.eval_shape(lambda r: models.init_params(model, r, config.mask_ratio),
                          jax.random.key(0))
  fields = config.model
  return {"architecture": "CREMA encoder (arXiv 2407.07110) + linear head",
          "emb_dim": fields.emb_dim, "depth": fields.depth,
          "patch_size": fields.patch_size, "token_layout": fields.token_layout,
          "pool": fields.pool, "compute_dtype": config.compute_dtype,
          "parameters": sizing.param_count(shapes),
          "encoder_parameters": sizing.param_count(
              {k: v for k, v in shapes.items() if k not in PRETRAINING_ONLY})}


def write_card(directory: pathlib.Path, fields: dict) -> None:
  """model_card.json and its markdown rendering MODEL_CARD.md."""
  (directory / "model_card.json").write_text(json.dumps(fields, indent=1))
  (directory / "MODEL_CARD.md").write_text(card_markdown(fields))


def card_markdown(fields: dict) -> str:
  lines = [f"# CREMA classifier: {fields['task']}", "", fields.get("definition", ""),
           "", "## Outputs", "",
           f"{fields['outputs']['activation']}; decisions at "
           f"{fields['outputs']['thresholds']}.", "",
           "| column | label | threshold | test AUROC |", "|---|---|---|---|"]
  per_class = fields["evaluation"]["test"].get("per_class", {})
  for label in fields["outputs"]["labels"]:
    auroc = per_class.get(label["name"], {}).get("auroc", float("nan"))
    threshold = ("never" if label["threshold"] is None else
                 f"{label['threshold']:.4f}")
    lines.append(f"| {label['column']} | {label['name']} | {threshold} | {auroc:.3f} |")
  test = fields["evaluation"]["test"]
  ci = test.get("auroc_ci")
  lines += ["", "## Test metrics", "",
            f"Macro AUROC {test.get('auroc', float('nan')):.4f}"
            + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
            + f", macro AUPRC {test.get('auprc', float('nan')):.4f}, "
            f"on {test.get('n', 0)} test ECGs. Protocol:", ""]
  lines += [f"- {k}: {v}" for k, v in fields["evaluation"]["protocol"].items()]
  lines += ["", "## Preprocessing", ""]
  lines += [f"- {k}: {v}" for k, v in fields["preprocessing"].items()]
  lines += ["", "## Model", ""] + [f"- {k}: {v}" for k, v in fields["model"].items()]
  lines += ["", "## Pretraining", ""]
  lines += [f"- {k}: {v}" for k, v in fields["pretraining"].items()]
  lines += ["", "## Leakage check", "", f"```\n{json.dumps(fields['leakage'], indent=1)}"
            "\n```", "", "## Intended use", "", fields["intended_use"], ""]
  return "\n".join(lines)
