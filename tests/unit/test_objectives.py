"""The task kinds' heads and scores: ridge regression, the softmax probe, regression
metrics and their intervals, the classifier's activations."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model
from sklearn import metrics as skmetrics

from crema_jax.evaluation import objectives
from crema_jax.evaluation import probe
from crema_jax.evaluation import scores
from crema_jax.package import classifier


def _regression_data(n=300, d=20, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)
  y = x @ rng.normal(size=d) * 3 + 50 + rng.normal(size=n)
  return x, y[:, None]


def test_ridge_matches_sklearn_and_predicts_in_the_targets_units():
  x, y = _regression_data()
  head = probe.train_linear_regressor(x[:200], y[:200], x[200:250], y[200:250],
                                      l2_grid=(0.1,))
  # The same objective in sklearn's terms: standardised x and y, alpha = n * l2.
  mean, std = x[:200].mean(0), x[:200].std(0) + 1e-6
  y_mean, y_std = y[:200].mean(), y[:200].std()
  reference = linear_model.Ridge(alpha=200 * 0.1).fit((x[:200] - mean) / std,
                                                      (y[:200, 0] - y_mean) / y_std)
  expected = reference.predict((x[250:] - mean) / std) * y_std + y_mean
  np.testing.assert_allclose(head.logits(x[250:])[:, 0], expected, rtol=1e-4)
  w, b = head.raw_head()  # What a classifier folder stores: raw features in, value out.
  np.testing.assert_allclose(x[250:] @ w + b, head.logits(x[250:]), rtol=1e-5)
  assert head.kind == "regression" and head.val_r2 > 0.9


def test_ridge_chooses_the_penalty_on_validation_r2():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(60, 50))
  y = (x[:, :1] + rng.normal(size=(60, 1)) * 2)  # Few ECGs, many features: noise.
  head = probe.train_linear_regressor(x[:30], y[:30], x[30:], y[30:])
  assert head.val_r2 == max(head.grid.values()) > head.grid["0"]
  assert head.l2 > 0


def test_softmax_probe_gives_log_probabilities():
  rng = np.random.default_rng(0)
  classes = rng.integers(0, 3, 300)
  x = rng.normal(size=(300, 8)) + np.eye(3)[classes] @ rng.normal(size=(3, 8)) * 2
  onehot = np.eye(3)[classes]
  head = probe.train_linear_probe(x[:200], onehot[:200], x[200:250], onehot[200:250],
                                  steps=100, kind="multiclass")
  out = head.logits(x[250:])
  np.testing.assert_allclose(np.exp(out).sum(axis=1), 1, rtol=1e-6)
  assert (out.argmax(1) == classes[250:]).mean() > 0.8


def test_regression_scores_and_intervals():
  rng = np.random.default_rng(0)
  values = rng.normal(5, 2, 200)
  predicted = values + rng.normal(0, 1, 200)
  out = scores.score_task(values[:, None], predicted[:, None], np.array([np.nan]),
                          ("k",), bootstrap=200, kind="regression")
  assert out["mae"] == pytest.approx(skmetrics.mean_absolute_error(values, predicted))
  assert out["r2"] == pytest.approx(skmetrics.r2_score(values, predicted))
  assert out["pearson_r"] == pytest.approx(np.corrcoef(values, predicted)[0, 1])
  for name in ("mae", "r2", "pearson_r"):
    assert out[f"{name}_ci"][0] < out[name] < out[f"{name}_ci"][1]
  assert np.isnan(scores.r2(np.ones(5), np.arange(5.0)))


def test_multiclass_scores_by_the_argmax():
  labels = np.eye(3)[[0, 1, 2, 2]]
  logits = np.log(np.array([[.8, .1, .1], [.2, .7, .1], [.1, .6, .3], [.3, .3, .4]]))
  out = scores.score_task(labels, logits, np.zeros(3), ("a", "b", "c"),
                          kind="multiclass")
  assert out["accuracy"] == 0.75
  assert out["f1"] == pytest.approx(skmetrics.f1_score([0, 1, 2, 2], [0, 1, 1, 2],
                                                       average="macro"))


def test_paired_difference_of_r2():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(100, 1))
  good, bad = values + rng.normal(0, .3, (100, 1)), values + rng.normal(0, 1, (100, 1))
  out = scores.paired_macro_auroc(values, good, bad, num_samples=200,
                                  statistic=lambda y, p: scores.r2(y.ravel(), p.ravel()))
  assert out["difference"] > 0 and out["ci"][0] > 0


@pytest.mark.parametrize("kind", objectives.KINDS)
def test_losses_and_activations(kind):
  targets = jnp.asarray(np.eye(3)[[0, 2]] if kind != "regression" else [[1.0], [3.0]])
  perfect = targets * 40 - 20 if kind != "regression" else targets
  assert float(objectives.loss(kind, perfect, targets)) < 1e-6
  assert float(objectives.loss(kind, -perfect, targets)) > 1
  out = np.asarray(classifier.activate(kind, perfect))
  if kind == "multiclass":
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)
  elif kind == "regression":
    np.testing.assert_array_equal(out, np.asarray(targets))
  else:
    assert ((out > 0.5) == (np.asarray(targets) > 0)).all()
