"""The classifier folders an evaluation leaves for `predict`: one per task, of the
checkpoint's primary fit (full label fraction, first seed)."""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from crema_jax.evaluation import fitting
from crema_jax.evaluation import restore
from crema_jax.package import classifier as classifier_lib


def write(results: dict, result: dict, encoder: fitting.Encoder,
          restored: restore.Restored, tasks: dict, config: ml_collections.ConfigDict,
          workdir: pathlib.Path) -> pathlib.Path:
  """classifiers/TASK/ of the pretrained encoder's primary fit of every task (full
  label fraction, first seed): self-contained packages (`package.classifier`), each
  with its model card."""
  root = workdir / "classifiers"
  key = f"fraction_{max(config.label_fractions):g}/seed_{config.seeds[0]}"
  origin = restored.package.origin()
  trained = restored.trained
  for name, fit in result["primary"].items():
    test = results["encoders"][encoder.name]["runs"][f"{key}/{name}"]
    if config.mode == "probe":
      head, params = fit.head.raw_head(), restored.params
    else:
      head = (fit.params["head"]["w"], fit.params["head"]["b"])
      params = fit.params["crema"]
    kind = tasks[name].kind
    # Multi-class decides by the arg-max, regression needs no decision: no thresholds.
    thresholds = (classifier_lib.probability(fit.thresholds) if kind in
                  ("binary", "multilabel") else np.full(len(tasks[name].classes), np.inf))
    card = classifier_lib.card(
        task=name, definition=tasks[name].definition, classes=tasks[name].classes,
        thresholds=thresholds, encoder_config=encoder.config, mode=config.mode,
        checkpoint_ref=origin,
        pretraining={"data": {k: trained.data.get(k) for k in
                              ("source", "name", "data_dir", "pretrain_folds")},
                     "steps": restored.step, "loss": trained.loss.to_dict()},
        leakage=restored.leakage, test={k: v for k, v in test.items()
                                        if k != "history"},
        protocol=results["protocol"],
        training={k: v for k, v in fit.info.items() if k != "history"},
        kind=kind, labels=results["dataset"].get("labels_table"))
    classifier_lib.save(root / name, task=name, classes=tasks[name].classes,
                        thresholds=thresholds, head=head, config=encoder.config,
                        encoder_params=params, encoder=restored.package,
                        fine_tuned=config.mode != "probe", card=card, kind=kind)
  return root
