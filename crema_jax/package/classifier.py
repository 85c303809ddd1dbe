"""A classifier folder: a package holding a task's encoder, its linear head, its
thresholds and the model card that says what it is. Written by every evaluation run,
read by `predict`, `embed` and `export`; it needs nothing outside itself.

  classifiers/TASK/
    classifier.json   task, classes (in output order), thresholds, the encoder's config,
                      where the encoder came from, the pretraining provenance
    head.npz          w [emb, classes], b [classes], on the encoder's raw features
    encoder/          the encoder's parameters (Orbax): the pretraining checkpoint's
                      for a probe, the fine-tuned ones for LP-FT
    model_card.json, MODEL_CARD.md
    package.json      sha256 of every file (`manifest`)

The head acts on unstandardised pooled features (a probe's `raw_head()`), so
output = activation(encode(x) @ w + b) for probe and fine-tuned classifiers alike, the
activation of the task's kind (`ACTIVATIONS`): a sigmoid per label (binary,
multi-label), a softmax over the classes (multi-class) or none (regression: the value,
in the labels table's units).
A folder is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import tempfile
import zipfile
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from crema_jax import atomic
from crema_jax import models
from crema_jax.models import sizing
from crema_jax import sharding
from crema_jax.package import encoder as encoder_lib
from crema_jax.package import manifest
from crema_jax.package import preprocessing

KIND = "classifier"
FORMAT = 2  # 1: a probe's folder named its checkpoint's path instead of holding it.
SPEC_FILE = "classifier.json"
HEAD_FILE = "head.npz"
ENCODER_DIR = "encoder"
KINDS = ("binary", "multilabel", "multiclass", "regression")
ACTIVATIONS = {"binary": "sigmoid per label", "multilabel": "sigmoid per label",
               "multiclass": "softmax over the classes (one class per ECG)",
               "regression": "none: the predicted value, in the labels' units"}
INTENDED_USE = (
    "Research use: embedding ECGs and screening label predictions on data like the "
    "evaluation data. Not a medical device; not validated for clinical decisions. "
    "Predictions on other hospitals' ECGs (other devices, filters, populations) can be "
    "miscalibrated: check on a labelled sample of your own data first.")


@dataclasses.dataclass
class Classifier:
  """A loaded classifier: its encoder package, and the head on its features."""
  path: pathlib.Path
  encoder: encoder_lib.Encoder
  head: dict  # {"w": [emb, classes], "b": [classes]}, replicated.
  classes: tuple[str, ...]
  thresholds: np.ndarray
  spec: dict

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.encoder.config

  @property
  def model(self) -> models.CREMA:
    return self.encoder.model

  @property
  def params(self) -> dict:
    """{"crema": the encoder's parameters, "head": {"w", "b"}}: `model.classify_fn`'s."""
    return {"crema": self.encoder.params, "head": self.head}

  @property
  def preprocessing(self) -> preprocessing.Preprocessing:
    return self.encoder.preprocessing

  @property
  def kind(self) -> str:
    """The task's kind (KINDS); a folder written before kinds were recorded: the
    PTB-XL multi-label heads it could hold."""
    return self.spec.get("kind", "multilabel")


def activate(kind: str, logits: jax.Array) -> jax.Array:
  """The head's outputs [b, classes] from its logits, as the kind defines them."""
  if kind == "multiclass":
    return jax.nn.softmax(logits, axis=-1)
  if kind == "regression":
    return logits
  return jax.nn.sigmoid(logits)


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


def encoder_only(params: Any) -> Any:
  """The parameters the encoder's features use (the decoder and projector left out)."""
  return {k: v for k, v in params.items() if k not in encoder_lib.PRETRAINING_ONLY}


def save(directory: pathlib.Path, *, task: str, classes, thresholds: np.ndarray,
         head: tuple[np.ndarray, np.ndarray], config: ml_collections.ConfigDict,
         encoder_params: Any, encoder: encoder_lib.Encoder, fine_tuned: bool,
         card: dict, kind: str = "multilabel") -> pathlib.Path:
  """Writes a classifier folder (module docstring): the head on the features of
  `config`'s model (the encoder's config, with the pooling the head was fitted on) with
  `encoder_params` (the package `encoder`'s own for a probe, the fine-tuned ones for
  LP-FT). The folder appears complete or not at all, replacing an earlier one."""
  directory = pathlib.Path(directory).absolute()
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.",
                                          suffix=atomic.PARTIAL, dir=directory.parent))
  try:
    w, b = (np.asarray(a, np.float32) for a in head)
    atomic.savez(staging / HEAD_FILE, w=w, b=b)
    with ocp.StandardCheckpointer() as saver:
      saver.save(staging / ENCODER_DIR, encoder_only(jax.device_get(encoder_params)))
    if kind not in KINDS:
      raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    spec = {"format": FORMAT, "task": task, "kind": kind, "classes": list(classes),
            "thresholds": _thresholds_json(thresholds),  # None: never predicted.
            "encoder": {"dir": ENCODER_DIR, "fine_tuned": bool(fine_tuned),
                        "from": encoder.origin()},
            "provenance": encoder.provenance,
            "config": config.to_dict()}
    atomic.write_json(staging / SPEC_FILE, spec)
    write_card(staging, card)
    manifest.write(staging, KIND, task=task)
    _replace_folder(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return directory


def _replace_folder(new: pathlib.Path, directory: pathlib.Path) -> None:
  """Renames `new` to `directory`, moving an existing one aside first (two renames:
  a kill between them leaves the old folder under `.NAME.old`, not a mixture)."""
  old = directory.with_name(f".{directory.name}.old")
  shutil.rmtree(old, ignore_errors=True)
  if directory.exists():
    directory.rename(old)
  new.rename(directory)
  shutil.rmtree(old, ignore_errors=True)


def load(directory: str | pathlib.Path, mesh) -> Classifier:
  """A classifier folder's encoder and head (replicated over `mesh`), after its files
  are checked against its manifest; PackageError naming the folder and file when
  something is missing or damaged."""
  directory = pathlib.Path(directory).absolute()
  if not is_classifier(directory):
    raise FileNotFoundError(f"{directory}: no {SPEC_FILE} (not a classifier folder: "
                            "evaluation runs write them under classifiers/TASK)")
  verified = manifest.verify(directory)
  if verified["status"] != "ok":  # Every classifier folder is written sealed.
    raise manifest.PackageError(f"{directory}: no {manifest.MANIFEST} (not written by "
                                "this version, or its checksums were removed)")
  spec = manifest.read_json(directory / SPEC_FILE)
  if not isinstance(spec, dict) or spec.get("format") != FORMAT:
    found = spec.get("format") if isinstance(spec, dict) else None
    raise manifest.PackageError(
        f"{directory / SPEC_FILE}: format {found}, this code reads {FORMAT}"
        + (" (a format-1 probe folder named its checkpoint instead of holding its "
           "encoder: run the evaluation again to write a self-contained one)"
           if found == 1 else ""))
  try:
    config = ml_collections.ConfigDict(spec["config"])
    model = models.build(config)
  except Exception as e:  # pylint: disable=broad-except
    raise manifest.PackageError(f"{directory / SPEC_FILE}: its config does not build "
                                f"a model ({e})") from e
  target = encoder_lib.replicated(encoder_lib.encoder_shapes(model, config), mesh)
  try:
    with ocp.StandardCheckpointer() as reader:
      params = reader.restore(directory / spec["encoder"]["dir"], target)
  except Exception as e:  # pylint: disable=broad-except
    raise manifest.PackageError(f"{directory / ENCODER_DIR}: unreadable ({e})") from e
  head = _read_head(directory / HEAD_FILE, model.emb_dim, len(spec["classes"]))
  encoder_lib.check_finite({"encoder": params, "head": head}, directory)
  source = spec["encoder"]["from"]
  encoder = encoder_lib.Encoder(config, model, params, directory,
                                int(source.get("step") or 0), spec.get("provenance"),
                                verified)
  thresholds = np.array([np.inf if t is None else t for t in spec["thresholds"]],
                        np.float64)
  return Classifier(directory, encoder,
                    jax.device_put(head, sharding.replicated(mesh)),
                    tuple(spec["classes"]), thresholds, spec)


def _read_head(path: pathlib.Path, emb_dim: int, num_classes: int) -> dict:
  try:
    with np.load(path, allow_pickle=False) as saved:
      head = {"w": saved["w"], "b": saved["b"]}
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
    raise manifest.PackageError(f"{path}: unreadable ({e})") from e
  if head["w"].shape != (emb_dim, num_classes) or head["b"].shape != (num_classes,):
    raise manifest.PackageError(f"{path}: w {head['w'].shape}, b {head['b'].shape}; "
                                f"expected {(emb_dim, num_classes)}, {(num_classes,)}")
  return head


# --------------------------------------------------------------------- model card
def card(*, task: str, definition: str, classes, thresholds, encoder_config,
         mode: str, checkpoint_ref: dict, pretraining: dict, leakage: dict,
         test: dict, protocol: dict, training: dict, kind: str = "multilabel",
         labels: dict | None = None) -> dict:
  """The model card's fields: what it predicts (labels, order, thresholds), what it
  expects (preprocessing), what it was trained on (`labels`: the labels table and the
  split, for a hospital's own labels), how well it did on the test split."""
  head = ("linear probe on the frozen encoder" if mode == "probe" else
          "fine-tuned end to end (LP-FT: head started from the probe)")
  decisions = {
      "regression": "none: the value is the prediction",
      "multiclass": "the class of the highest probability",
  }.get(kind, "the probability at which each label's F1 is highest on the validation "
              "split (none: no validation positive, never predicted)")
  return {
      "task": task, "definition": definition, "kind": kind,
      "outputs": {
          "columns": ([f"predicted_{classes[0]}"] if kind == "regression" else
                      [f"p_{c}" for c in classes]),
          "labels": [{"name": c, "column": i, "threshold": t} for i, (c, t) in
                     enumerate(zip(classes, _thresholds_json(thresholds)))],
          "activation": ACTIVATIONS[kind],
          "thresholds": decisions},
      **({"labels": labels} if labels else {}),
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
              encoder_only(shapes))}


def write_card(directory: pathlib.Path, fields: dict) -> None:
  """model_card.json and its markdown rendering MODEL_CARD.md."""
  atomic.write_json(directory / "model_card.json", fields)
  atomic.write_text(directory / "MODEL_CARD.md", card_markdown(fields))


def card_markdown(fields: dict) -> str:
  lines = [f"# CREMA classifier: {fields['task']}", "", fields.get("definition", ""),
           "", "## Outputs", "",
           f"{fields['outputs']['activation']}; decisions at "
           f"{fields['outputs']['thresholds']}.", ""]
  test = fields["evaluation"]["test"]
  if fields.get("kind") == "regression":
    interval = lambda k: (f" (95% CI {test[k + '_ci'][0]:.4g}-{test[k + '_ci'][1]:.4g})"
                          if test.get(k + "_ci") else "")
    lines += ["## Test metrics", "",
              f"MAE {test['mae']:.4g}{interval('mae')}, R^2 {test['r2']:.4f}"
              f"{interval('r2')}, Pearson r {test['pearson_r']:.4f}"
              f"{interval('pearson_r')}, on {test.get('n', 0)} test ECGs. Protocol:", ""]
  else:
    lines += ["| column | label | threshold | test AUROC |", "|---|---|---|---|"]
    per_class = test.get("per_class", {})
    for label in fields["outputs"]["labels"]:
      auroc = per_class.get(label["name"], {}).get("auroc", float("nan"))
      threshold = ("never" if label["threshold"] is None else
                   f"{label['threshold']:.4f}")
      lines.append(f"| {label['column']} | {label['name']} | {threshold} | "
                   f"{auroc:.3f} |")
    ci = test.get("auroc_ci")
    lines += ["", "## Test metrics", "",
              f"Macro AUROC {test.get('auroc', float('nan')):.4f}"
              + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
              + f", macro AUPRC {test.get('auprc', float('nan')):.4f}, "
              f"on {test.get('n', 0)} test ECGs. Protocol:", ""]
  lines += [f"- {k}: {v}" for k, v in fields["evaluation"]["protocol"].items()]
  if fields.get("labels"):
    lines += ["", "## Labels", ""] + [f"- {k}: {v}" for k, v in fields["labels"].items()]
  lines += ["", "## Preprocessing", ""]
  lines += [f"- {k}: {v}" for k, v in fields["preprocessing"].items()]
  lines += ["", "## Model", ""] + [f"- {k}: {v}" for k, v in fields["model"].items()]
  lines += ["", "## Pretraining", ""]
  lines += [f"- {k}: {v}" for k, v in fields["pretraining"].items()]
  lines += ["", "## Leakage check", "", f"```\n{json.dumps(fields['leakage'], indent=1)}"
            "\n```", "", "## Intended use", "", fields["intended_use"], ""]
  return "\n".join(lines)
