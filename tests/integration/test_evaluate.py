"""PTB-XL evaluation of a pretrained checkpoint: restore, features, probing and
fine-tuning end to end with every analysis, what results.json says, the refusals."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from configs import probe as probe_configs
from crema_jax import checkpoint
from crema_jax.data import leakage
from crema_jax.data import prepare
from crema_jax.data import storage
from crema_jax.evaluation import classifiers as classifier_folders
from crema_jax.evaluation import domains
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune
from crema_jax.evaluation import fitting
from crema_jax.evaluation import restore
from crema_jax.package import classifier
from crema_jax.package import encoder as package
from crema_jax.package import manifest
from crema_jax.evaluation import run
from crema_jax.evaluation import tasks as tasks_lib
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
  restored = restore.restore_encoder(_eval_config(config, workdir), mesh)
  assert restored.step == 2 and restored.config.model.emb_dim == config.model.emb_dim
  assert restored.leakage["status"] == "clean"
  built = step_lib.build_run(config, mesh)  # The whole train state, as a resume reads it.
  mngr = checkpoint.manager(workdir, read_only=True)
  _, state = checkpoint.restore(mngr, built.restore_target())
  mngr.close()
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  fresh = models.init_params(restored.model, jax.random.key(config.seed),
                             config.mask_ratio)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(restored.params), jax.tree.leaves(fresh)))


def test_features_cover_each_record_of_the_folds_once(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  restored = restore.restore_encoder(_eval_config(config, workdir), mesh)
  model, params = restored.model, restored.params
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  out = features_lib.extract_features(model, params, restored.config, prepared, (9, 10),
                                      mesh, batch_size=12)
  positions = storage.fold_positions(prepared, (9, 10))
  np.testing.assert_array_equal(out["position"], positions)
  np.testing.assert_array_equal(out["ecg_id"], prepared.index["ecg_id"][positions])
  assert out["features"].shape == (len(positions), config.model.emb_dim)
  # The same ECGs through the normalising eval pipeline and model.embed, unbatched.
  first = next(iter(pipeline.eval_dataset(restored.config, prepared, (9, 10), 3)))
  direct = model.apply({"params": params},
                       features_lib.standardize_batch(first["view"], first["valid"]),
                       method=model.embed)
  np.testing.assert_allclose(out["features"][:3], direct, rtol=1e-4, atol=1e-5)


def test_eval_leads_is_a_probe_config_field(pretrained):
  """`--config.data.eval_leads=...` on configs/probe.py reaches the views."""
  config, workdir = pretrained
  evaluation = probe_configs.get_config()
  evaluation.checkpoint = str(workdir)
  evaluation.data.eval_leads = ("I", "II")
  mesh = sharding.make_mesh()
  restored = restore.restore_encoder(evaluation, mesh)
  assert tuple(restored.config.data.eval_leads) == ("I", "II")
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  view = next(iter(pipeline.eval_dataset(restored.config, prepared, (10,), 2)))["view"]
  assert np.abs(view[:, :2]).sum() > 0 and not view[:, 2:].any()  # [b, leads, time]


def test_bad_evaluation_configs_are_refused(pretrained, tmp_path):
  config, workdir = pretrained
  cases = {"tasks": (("MI", "AFIB"), "tasks="),
           "label_fractions": ((0.0,), "label_fractions="),
           "robustness": (("snow",), "unknown robustness shift"),
           "mode": ("zero_shot", "mode="),
           "bootstrap_unit": ("hospital", "bootstrap_unit="),
           "reduced_leads": (("I,V7",), "'V7'"),
           "domains": (("/data/cpsc2018",), "DATA_DIR:NAME"),
           "checkpoint": (str(tmp_path), "no checkpoints/ folder"),
           "data_from_checkpoint": (False, "no evaluation data: set")}
  for key, (value, message) in cases.items():
    with pytest.raises(ValueError, match=message):
      run.evaluate(_eval_config(config, workdir, **{key: value}), tmp_path / "out")
  with pytest.raises(ValueError, match="linear-probe analyses"):
    run.evaluate(_eval_config(config, workdir, mode="finetune"), tmp_path / "out")
  with pytest.raises(ValueError, match="no CLS token"):
    run.evaluate(_eval_config(config, workdir, pool="cls"), tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_probe_data_at_another_rate_is_refused(pretrained, tmp_path):
  config, workdir = pretrained
  data = config.data.copy_and_resolve_references()
  data.sampling_rate, data.data_dir, data.prepare_workers = 100, str(tmp_path), 1
  prepare.prepare_from_config(data, show_progress=False)  # records100/, 1000 samples.
  evaluation = _eval_config(config, workdir)
  evaluation.data.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r"prepared at \[100\] Hz but the checkpoint was "
                     "trained at 500 Hz"):
    run.evaluate(evaluation, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_probe_evaluates_every_task_and_says_what_it_did(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir, reduced_leads=("I",),
                            domains=(f"{config.data.data_dir}:{config.data.name}",),
                            domain_label_fractions=(1.0,), num_reconstructions=1)
  results = run.evaluate(evaluation, tmp_path)
  assert set(results["encoders"]) == {"crema_step2", "random_init"}
  assert list(results["tasks"]) == list(tasks_lib.TASKS)
  for name, encoder in results["encoders"].items():
    assert set(encoder["summary"]) == {"1", "0.5"}
    for task in tasks_lib.TASKS:
      task_run = encoder["runs"][f"fraction_1/seed_0/{task}"]
      assert 0 <= task_run["auroc"] <= 1 or np.isnan(task_run["auroc"])
      assert "auroc_ci" in task_run and task_run["l2"] in evaluation.probe.l2_grid
    assert set(encoder["robustness"]) == set(evaluation.robustness)
    half = encoder["runs"]["fraction_0.5/seed_0/MI"]["train_ecgs"]
    full = encoder["runs"]["fraction_1/seed_0/MI"]["train_ecgs"]
    assert full / 2 <= half < full  # Half the training ECGs, by patient.
    assert set(encoder["subgroups"]["MI"]) == {"<40", "40-60", "60-80", "80+",
                                               "sex=male", "sex=female"}
    lead_i = encoder["reduced_leads"]["I"]["superdiagnostic"]
    assert lead_i["leads"] == ["I"] and "auroc" in lead_i["retrained"]
    source = encoder["domains"][config.data.name]
    assert sum(source["ecgs"].values()) == len(storage.PreparedSource(
        config.data.data_dir, config.data.name))
    assert "transferred" in source["tasks"]["superdiagnostic"]
  comparison = results["comparisons"]["crema_step2 - random_init"]
  assert set(comparison) == set(tasks_lib.TASKS)
  scored = [c for c in comparison.values() if np.isfinite(c["a"] + c["b"])]
  assert scored  # The tests' test fold is small: some tasks lack a class there.
  for c in scored:
    assert c["difference"] == pytest.approx(c["a"] - c["b"])
    assert not np.isfinite(c["ci"][0]) or c["ci"][0] <= c["difference"] <= c["ci"][1]
  # Self-describing: the config, the checkpoint's own, leakage, tasks, protocol.
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["config"]["tasks"] == list(tasks_lib.TASKS)
  assert saved["checkpoint"]["step"] == 2
  assert saved["checkpoint"]["training_config"]["total_steps"] == 2
  assert saved["leakage"]["status"] == "clean"
  assert "assumption" in saved["protocol"]["overall"] or "our reading" in saved[
      "protocol"]["overall"]
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  test_ecgs = len(storage.fold_positions(prepared, (10,)))
  sup = saved["tasks"]["superdiagnostic"]
  assert sup["classes"][0] == "NORM" and 0 < sup["ecgs"]["test"] <= test_ecgs
  assert "vs. the rest" in saved["tasks"]["MI"]["definition"]
  for name in ("results.md", "roc_curves.png", "reconstructions.png",
               "embeddings_pca.png", "embeddings.npz", "pretraining_loss.png",
               "paired_differences.png", f"domain_splits/{config.data.name}.json"):
    assert (tmp_path / name).is_file(), name
  table = (tmp_path / "results.md").read_text()
  for heading in ("| crema_step2 | 100% |", "## Paired differences", "## Subgroups",
                  "## Reduced leads", "## Robustness", "## Other sources",
                  "| random_init | lead_I_only |"):
    assert heading in table, heading
  with np.load(tmp_path / "embeddings.npz") as emb:
    assert emb["test_features"].shape == (test_ecgs, config.model.emb_dim)


def test_domain_split_is_drawn_once_and_read_back(pretrained, tmp_path):
  config, _ = pretrained
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  labels = prepared.index["labels"]
  path = tmp_path / "split.json"
  first = domains.domain_split(prepared, labels, 0, path)
  assert sorted(np.concatenate(list(first.values()))) == list(range(len(prepared)))
  patients = [set(prepared.index["patient_id"][p]) for p in first.values()]
  assert not (patients[0] & patients[1] or patients[0] & patients[2])
  again = domains.domain_split(prepared, labels, 1, path)  # Read back: seed unused.
  assert all(np.array_equal(first[s], again[s]) for s in first)
  saved = json.loads(path.read_text())
  saved["num_records"] += 1
  path.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="delete it to draw a new split"):
    domains.domain_split(prepared, labels, 0, path)


def test_finetuning_starts_from_the_probe_and_moves_the_encoder(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir, mode="finetune", tasks=("superdiagnostic",),
                            label_fractions=(1.0,), seeds=(0,), random_init_baseline=False,
                            robustness=("lead_I_only",), reduced_leads=(), plots=False,
                            bootstrap=0)
  evaluation.finetune.update(steps=4, batch_size=8, eval_every=2, warmup_steps=1, lr=1e-2)
  results = run.evaluate(evaluation, tmp_path)
  task_run = results["encoders"]["crema_step2"]["runs"]["fraction_1/seed_0/superdiagnostic"]
  assert task_run["n"] > 0 and task_run["history"][0]["step"] == 0
  assert np.isfinite(task_run["probe_val_auroc"])
  assert task_run["val_auroc"] >= task_run["probe_val_auroc"]  # The probe is step 0.
  with np.load(tmp_path / "embeddings.npz") as emb:  # The fine-tuned encoder's.
    tuned_test = emb["test_features_finetuned_superdiagnostic"]
    assert tuned_test.shape[1] == config.model.emb_dim
    assert "train_features" not in emb  # No frozen features are computed for it.
  # Its classifier folder holds the fine-tuned encoder: the same test features.
  folder = tmp_path / "classifiers" / "superdiagnostic"
  found = classifier.load(folder, sharding.make_mesh())
  assert found.spec["encoder"]["fine_tuned"] is True
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  tuned = features_lib.extract_features(
      found.model, found.params["crema"], found.config, prepared,
      config.data.test_folds, sharding.make_mesh())["features"]
  np.testing.assert_allclose(tuned, tuned_test, rtol=2e-4, atol=2e-4)
  # The loop itself: step 0 is the fitted probe exactly; the encoder moves, the
  # decoder does not.
  mesh = sharding.make_mesh()
  restored = restore.restore_encoder(evaluation, mesh)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  task = tasks_lib.build(("superdiagnostic",), prepared)["superdiagnostic"]
  train, val = (storage.fold_positions(prepared, f) for f in ((1, 2, 3, 4, 5, 6, 7, 8),
                                                                (9,)))
  train, val = train[task.keep[train]], val[task.keep[val]]
  feats = {s: features_lib.extract_features(restored.model, restored.params,
                                            restored.config, prepared, (), mesh,
                                            positions=p) for s, p in
           (("train", train), ("val", val))}
  lp = fitting.fit_probe(task, feats, np.arange(len(train)), evaluation, seed=0)
  result = finetune.finetune(restored.model, restored.params, restored.config,
                             evaluation.finetune, prepared, train, val, task.labels,
                             mesh, head=lp.raw_head())
  assert [h["step"] for h in result.history] == [0, 2, 4]
  assert result.history[0]["val_auroc"] == pytest.approx(lp.val_auroc, abs=1e-6)
  # The encoder moves (the history says how far); the decoder does not.
  changes = [h["encoder_change"] for h in result.history]
  assert changes[0] == 0 and 0 < changes[1] < changes[2] < 0.5
  tuned, params = result.params["crema"], restored.params
  np.testing.assert_array_equal(tuned["decoder_pred"]["kernel"],
                                params["decoder_pred"]["kernel"])
  if result.best_step:
    assert not np.allclose(tuned["encoder"]["block0"]["mlp"]["fc1"]["kernel"],
                           params["encoder"]["block0"]["mlp"]["fc1"]["kernel"])


def test_probe_refuses_a_checkpoint_pretrained_on_the_test_fold(pretrained, tmp_path):
  config, workdir = pretrained
  leaky = tmp_path / "leaky_run"
  shutil.copytree(workdir, leaky)
  # The same run as if it had pretrained on every fold (10, the test fold, included):
  # its package sealed with the report such a run records. The evaluation reads the
  # report from the package, not from the data.
  step = leaky / "checkpoints" / "2"
  sealed = manifest.read(step)
  data = config.data.copy_and_resolve_references()
  data.pretrain_folds = ()
  sealed["provenance"]["leakage"] = leakage.pretraining_overlap(data, data.test_folds)
  manifest.write(step, package.KIND, step=2, provenance=sealed["provenance"])
  with pytest.raises(leakage.LeakageError, match="test-fold"):
    run.evaluate(_eval_config(config, leaky), tmp_path / "out")
  assert not (tmp_path / "out").exists()
  restored = restore.restore_encoder(
      _eval_config(config, leaky, allow_test_overlap=True), sharding.make_mesh())
  assert restored.step == 2 and restored.leakage["status"] == "overlap"


def test_results_json_is_written_last(pretrained, tmp_path, monkeypatch):
  """A study takes results.json as "this cell is done": an evaluation that dies after
  writing its other outputs (here in the classifier folders) leaves none."""
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir, tasks=("superdiagnostic",),
                            label_fractions=(1.0,), seeds=(0,), bootstrap=0,
                            robustness=(), reduced_leads=(), plots=False,
                            random_init_baseline=False, num_reconstructions=0)

  def killed(*args, **kwargs):
    raise KeyboardInterrupt("killed while writing classifiers")
  monkeypatch.setattr(classifier_folders, "write", killed)
  with pytest.raises(KeyboardInterrupt):
    run.evaluate(evaluation, tmp_path)
  assert (tmp_path / "test_scores.npz").is_file()
  assert not (tmp_path / "results.json").exists()
  monkeypatch.undo()
  run.evaluate(evaluation, tmp_path)
  assert (tmp_path / "results.json").is_file()
