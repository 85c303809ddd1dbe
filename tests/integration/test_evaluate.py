"""PTB-XL evaluation of a pretrained checkpoint: restore, features, probing and
fine-tuning end to end, refusals, the leakage guard."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from crema_jax import checkpoint
from crema_jax.data import leakage
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune
from crema_jax.evaluation import restore
from crema_jax.evaluation import run
from crema_jax.input import pipeline
from crema_jax import models
from crema_jax import sharding
from crema_jax import step as step_lib

# ------------------------------------------------------- from a pretraining run
def _eval_config(config: ml_collections.ConfigDict, workdir, **overrides):
  evaluation = config.evaluation.copy_and_resolve_references()
  evaluation.checkpoint = str(workdir)
  for key, value in overrides.items():
    evaluation[key] = value
  return evaluation


def test_restored_encoder_is_the_trained_one(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  pretrain, model, step, params = restore.restore_encoder(
      _eval_config(config, workdir), mesh)
  assert step == 2 and pretrain.model.emb_dim == config.model.emb_dim
  built = step_lib.build_run(config, mesh)  # The whole train state, as a resume reads it.
  mngr = checkpoint.manager(workdir, read_only=True)
  _, state = checkpoint.restore(mngr, built.restore_target())
  mngr.close()
  state_params = state.params
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state_params)):
    np.testing.assert_array_equal(a, b)
  fresh = models.init_params(model, jax.random.key(config.seed), config.mask_ratio)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(fresh)))


def test_features_cover_each_record_of_the_folds_once(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  pretrain, model, _, params = restore.restore_encoder(_eval_config(config, workdir),
                                                        mesh)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  out = features_lib.extract_features(model, params, pretrain, prepared, (9, 10), mesh,
                                      batch_size=12)
  positions = storage.fold_positions(prepared, (9, 10))
  np.testing.assert_array_equal(out["position"], positions)
  np.testing.assert_array_equal(out["ecg_id"], prepared.index["ecg_id"][positions])
  assert out["features"].shape == (len(positions), config.model.emb_dim)
  # The same ECGs through the normalising eval pipeline and model.embed, unbatched.
  first = next(iter(pipeline.eval_dataset(pretrain, prepared, (9, 10), 3)))
  direct = model.apply({"params": params},
                       features_lib.standardize_batch(first["view"], first["valid"]),
                       method=model.embed)
  np.testing.assert_allclose(out["features"][:3], direct, rtol=1e-4, atol=1e-5)


def test_bad_evaluation_configs_are_refused(pretrained, tmp_path):
  config, workdir = pretrained
  cases = {"tasks": (("MI", "AFIB"), "tasks="),
           "label_fractions": ((0.0,), "label_fractions="),
           "robustness": (("snow",), "unknown robustness shift"),
           "mode": ("zero_shot", "mode="),
           "checkpoint": (str(tmp_path), "no checkpoints/ folder")}
  for key, (value, message) in cases.items():
    with pytest.raises(ValueError, match=message):
      run.evaluate(_eval_config(config, workdir, **{key: value}), tmp_path / "out")
  with pytest.raises(ValueError, match="no CLS token"):
    run.evaluate(_eval_config(config, workdir, pool="cls"), tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_probe_writes_results_tables_and_figures(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir)
  results = run.evaluate(evaluation, tmp_path)
  assert set(results["encoders"]) == {"crema_step2", "random_init"}
  for name, encoder in results["encoders"].items():
    assert set(encoder["summary"]) == {"1", "0.5"}
    for task in evaluation.tasks:
      task_run = encoder["runs"][f"fraction_1/seed_0/{task}"]
      assert 0 <= task_run["auroc"] <= 1 or np.isnan(task_run["auroc"])
      assert "auroc_ci" in task_run and "f1" in task_run
    assert set(encoder["robustness"]) == set(evaluation.robustness)
    # Half the training ECGs, by patient.
    half = encoder["runs"]["fraction_0.5/seed_0/MI"]["train_ecgs"]
    full = encoder["runs"]["fraction_1/seed_0/MI"]["train_ecgs"]
    assert full / 2 <= half < full
  for name in ("results.json", "results.md", "roc_curves.png", "reconstructions.png",
               "embeddings_pca.png", "embeddings.npz", "pretraining_loss.png"):
    assert (tmp_path / name).is_file(), name
  assert json.loads((tmp_path / "results.json").read_text())["step"] == 2
  table = (tmp_path / "results.md").read_text()
  assert "| crema_step2 | 100% |" in table and "| random_init | lead_I_only |" in table
  with np.load(tmp_path / "embeddings.npz") as emb:
    assert emb["test_features"].shape[1] == config.model.emb_dim
    assert len(emb["test_ecg_id"]) == len(emb["test_labels"])


def test_finetuning_changes_the_encoder_and_reports_the_tasks(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir, mode="finetune", tasks=("MI",),
                            label_fractions=(1.0,), seeds=(0,), random_init_baseline=False,
                            robustness=("lead_I_only",), plots=False, bootstrap=0)
  evaluation.finetune.update(steps=4, batch_size=8, eval_every=2, warmup_steps=1, lr=1e-2)
  results = run.evaluate(evaluation, tmp_path)
  task_run = results["encoders"]["crema_step2"]["runs"]["fraction_1/seed_0/MI"]
  assert task_run["n"] > 0 and "lead_I_only" in results["encoders"]["crema_step2"][
      "robustness"]
  # The fine-tuning loop itself: the encoder moves, the decoder does not.
  mesh = sharding.make_mesh()
  pretrain, model, _, params = restore.restore_encoder(evaluation, mesh)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  result = finetune.finetune(model, params, pretrain, evaluation.finetune, prepared,
                             storage.fold_positions(prepared, (1, 2, 3, 4, 5, 6, 7, 8)),
                             [records.SUPERCLASSES.index("MI")], mesh)
  assert [h["step"] for h in result.history] == [2, 4]
  tuned = result.params["crema"]
  assert not np.allclose(tuned["encoder"]["block0"]["mlp"]["fc1"]["kernel"],
                         params["encoder"]["block0"]["mlp"]["fc1"]["kernel"])
  np.testing.assert_array_equal(tuned["decoder_pred"]["kernel"],
                                params["decoder_pred"]["kernel"])


def test_probe_refuses_a_checkpoint_pretrained_on_the_test_fold(pretrained, tmp_path):
  config, workdir = pretrained
  leaky = tmp_path / "leaky_run"
  shutil.copytree(workdir, leaky)
  # The same run as if it had pretrained on every fold (10, the test fold, included).
  saved = leaky / "checkpoints" / "2" / "config" / "metadata"
  saved_config = json.loads(saved.read_text())
  saved_config["data"]["pretrain_folds"] = []
  saved.write_text(json.dumps(saved_config))
  with pytest.raises(leakage.LeakageError, match="test-fold"):
    run.evaluate(_eval_config(config, leaky), tmp_path / "out")
  assert not (tmp_path / "out").exists()
  _, _, step, _ = restore.restore_encoder(
      _eval_config(config, leaky, allow_test_overlap=True), sharding.make_mesh())
  assert step == 2
