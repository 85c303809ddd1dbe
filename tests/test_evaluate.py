"""Linear probing: metrics on hand-checked cases, features, restore from pretraining."""

import jax
import numpy as np
import pytest

from crema_jax import evaluate
from crema_jax import models
from crema_jax import sharding
from crema_jax import train
from crema_jax.data import pipeline
from crema_jax.data import storage


def test_auroc_and_auprc_on_a_hand_computed_case():
  labels = np.array([[0], [0], [1], [1]])
  scores = np.array([[0.1], [0.4], [0.35], [0.8]])
  # Positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4.
  np.testing.assert_allclose(evaluate.auroc_per_class(labels, scores), [0.75])
  # Ranked 0.8(+), 0.4(-), 0.35(+), 0.1(-): precision 1 at recall .5, 2/3 at recall 1.
  np.testing.assert_allclose(evaluate.auprc_per_class(labels, scores), [(1 + 2 / 3) / 2])
  assert np.isnan(evaluate.auroc_per_class(np.zeros((4, 1)), scores)[0])


def test_linear_probe_learns_a_separable_task():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(400, 5)).astype(np.float32)
  features = rng.standard_normal((400, 16)) + 2.0 * labels @ rng.standard_normal((5, 16))
  split = lambda s: {"features": features[s], "labels": labels[s]}
  probe = evaluate.train_linear_probe(split(slice(0, 300)), split(slice(300, 350)),
                                      steps=200)
  result = evaluate.score(probe, split(slice(350, 400)))
  assert result["superdiagnostic_macro_auroc"] > 0.95
  assert result["n"] == 50 and set(evaluate.BINARY_TASKS) <= set(result)
  assert 0 < result["overall"] <= 8


@pytest.fixture(scope="module")
def pretrained(demo_config, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("probe_run")
  config = demo_config.copy_and_resolve_references()
  config.total_steps = 2
  train.train_and_evaluate(config, workdir)
  return config, workdir


def test_features_cover_each_record_of_the_folds_once(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  step, params = train.restore_params(config, workdir, mesh)
  assert step == 2
  model = train.build_model(config)
  out = evaluate.extract_features(model, params, config, prepared, (9, 10), mesh,
                                  batch_size=12)
  positions = pipeline.select(prepared, (9, 10))
  np.testing.assert_array_equal(out["ecg_id"], prepared.index["ecg_id"][positions])
  assert out["features"].shape == (len(positions), config.model.emb_dim)
  # The same ECGs embedded directly, unbatched, give the same features.
  first = next(iter(pipeline.eval_dataset(config, prepared, (9, 10), 3)))
  direct = model.apply({"params": params}, first["view"], method=model.embed)
  np.testing.assert_allclose(out["features"][:3], direct, rtol=1e-4, atol=1e-5)


def test_restored_parameters_are_the_trained_ones(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  _, params = train.restore_params(config, workdir, mesh)
  fresh = models.init_params(train.build_model(config), jax.random.key(config.seed),
                             config.mask_ratio)
  differs = [not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(fresh))]
  assert any(differs)  # Two AdamW steps moved the parameters away from the init.


def test_probe_of_a_run_writes_results(pretrained):
  config, workdir = pretrained
  results = evaluate.probe_pretrained_and_random(config, workdir)
  assert set(results) == {"crema_step2", "random_init"}
  assert (workdir / "probe_results.json").is_file()
  for result in results.values():
    assert 0.0 <= result["test"]["MI"]["auroc"] <= 1.0
  assert "| crema_step2 |" in evaluate.results_table(results)
