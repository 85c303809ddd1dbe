"""The hybrid objective's losses against explicit-loop numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crema_jax import losses


# ----------------------------------------------------------- numpy references
# Jitted once per shape and temperature: op-by-op dispatch compiles every primitive.
sample_loss = jax.jit(losses.sample_contrastive_loss, static_argnums=2)
patient_loss = jax.jit(losses.patient_contrastive_loss, static_argnums=3)


def np_unit(z):
  return [np.asarray(v, np.float64) / math.sqrt(sum(float(c) ** 2 for c in v))
          for v in z]


def np_reconstruction(pred, target):
  total, count = 0.0, 0
  for b in range(pred.shape[0]):
    for m in range(pred.shape[1]):
      for p in range(pred.shape[2]):
        total += (float(pred[b, m, p]) - float(target[b, m, p])) ** 2
        count += 1
  return total / count


def np_nt_xent(z1, z2, temperature):
  b = len(z1)
  z = np_unit(list(z1) + list(z2))
  total = 0.0
  for i in range(2 * b):
    positive = (i + b) % (2 * b)
    denominator = sum(math.exp(float(z[i] @ z[k]) / temperature)
                      for k in range(2 * b) if k != i)
    total += -math.log(math.exp(float(z[i] @ z[positive]) / temperature) / denominator)
  return total / (2 * b)


def np_patient(z, ids, valid, temperature):
  z = np_unit(z)
  anchors = []
  for i in range(len(z)):
    if not valid[i]:
      continue
    others = [k for k in range(len(z)) if k != i and valid[k]]
    positives = [k for k in others if ids[k] == ids[i]]
    if not positives:
      continue
    log_denominator = math.log(sum(math.exp(float(z[i] @ z[k]) / temperature)
                                   for k in others))
    anchors.append(-sum(float(z[i] @ z[p]) / temperature - log_denominator
                        for p in positives) / len(positives))
  return sum(anchors) / len(anchors) if anchors else 0.0


def normal(*shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------------------------------------- reconstruction
def test_reconstruction_loss_matches_numpy():
  pred, target = normal(2, 3, 4, seed=0), normal(2, 3, 4, seed=1)
  np.testing.assert_allclose(losses.masked_reconstruction_loss(pred, target),
                             np_reconstruction(pred, target), rtol=1e-6)


def test_reconstruction_loss_small_case_by_hand():
  pred = np.array([[[1.0, 2.0], [0.0, 0.0]]], np.float32)
  target = np.array([[[0.0, 0.0], [0.0, 3.0]]], np.float32)
  np.testing.assert_allclose(losses.masked_reconstruction_loss(pred, target),
                             (1 + 4 + 0 + 9) / 4)


def test_reconstruction_loss_leaves_padding_patches_out():
  pred, target = normal(2, 3, 4, seed=0), normal(2, 3, 4, seed=1)
  valid = np.array([[True, False, True], [False, False, True]])
  weighted = losses.masked_reconstruction_loss(pred, target, valid)
  np.testing.assert_allclose(
      weighted, np_reconstruction(pred[valid][None], target[valid][None]), rtol=1e-6)
  none = losses.masked_reconstruction_loss(pred, target, np.zeros((2, 3), bool))
  assert float(none) == 0.0


def test_reconstruction_loss_without_masked_patches_is_zero():
  empty = np.zeros((4, 0, 6), np.float32)
  loss = losses.masked_reconstruction_loss(empty, empty)
  assert loss.shape == () and float(loss) == 0.0
  with pytest.raises(ValueError, match="shape"):
    losses.masked_reconstruction_loss(np.zeros((1, 2, 3)), np.zeros((1, 3, 3)))


# ----------------------------------------------------------------- sample level
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_sample_loss_matches_numpy(temperature):
  z1, z2 = normal(5, 8, seed=0), normal(5, 8, seed=1)
  np.testing.assert_allclose(sample_loss(z1, z2, temperature),
                             np_nt_xent(z1, z2, temperature), rtol=1e-5)


def test_sample_loss_small_case_by_hand():
  # Unit vectors: the views of ECG 0 agree, those of ECG 1 are orthogonal.
  z1 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  z2 = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
  t = 0.5
  # Per anchor (z1[0], z1[1], z2[0], z2[1]): the cosine to its positive, and to all
  # three other embeddings.
  anchors = [(1, [0, 1, 1]), (0, [0, 0, 0]), (1, [1, 0, 1]), (0, [1, 0, 1])]
  expected = np.mean([
      -math.log(math.exp(pos / t) / sum(math.exp(s / t) for s in others))
      for pos, others in anchors])
  np.testing.assert_allclose(sample_loss(z1, z2, t), expected,
                             rtol=1e-6)


def test_sample_loss_of_one_pair_is_zero():
  z = normal(1, 4)
  np.testing.assert_allclose(sample_loss(z, -z, 0.1), 0.0, atol=1e-6)


def test_sample_loss_is_scale_invariant():
  z1, z2 = normal(4, 6, seed=0), normal(4, 6, seed=1)
  scale = np.array([[0.01], [3.0], [100.0], [1.0]], np.float32)
  np.testing.assert_allclose(sample_loss(z1 * scale, z2 * 7.0, 0.2),
                             sample_loss(z1, z2, 0.2), rtol=1e-5)


def test_temperature_sharpens_the_contrast():
  """Views that agree better than the negatives: a lower temperature, a lower loss;
  views that agree worse: a higher one."""
  z1 = normal(6, 16, seed=0)
  z2 = z1 + 0.3 * normal(6, 16, seed=1)
  temperatures = [0.05, 0.1, 0.5, 1.0]
  aligned = [float(sample_loss(z1, z2, t)) for t in temperatures]
  assert aligned == sorted(aligned)
  opposed = [float(sample_loss(z1, -z1, t)) for t in temperatures]
  assert opposed == sorted(opposed, reverse=True)


def test_sample_loss_is_the_patient_loss_with_one_positive_each():
  z1, z2 = normal(4, 5, seed=0), normal(4, 5, seed=1)
  ids = np.concatenate([np.arange(4), np.arange(4)])
  np.testing.assert_allclose(
      patient_loss(np.concatenate([z1, z2]), ids,
                                      np.ones(8, bool), 0.3),
      sample_loss(z1, z2, 0.3), rtol=1e-5)


# ---------------------------------------------------------------- patient level
def test_patient_loss_matches_numpy():
  z = normal(9, 6)
  ids = np.array([3, 1, 3, 7, 1, 3, 9, 1, 7])
  valid = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1], bool)  # Patient 7 keeps one sample.
  for t in (0.1, 0.7):
    np.testing.assert_allclose(patient_loss(z, ids, valid, t),
                               np_patient(z, ids, valid, t), rtol=1e-5)


def test_patient_loss_small_case_by_hand():
  # Two ECGs of patient 0 pointing the same way, one of patient 1 orthogonal to them.
  z = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], np.float32)
  ids = np.array([0, 0, 1])
  t = 1.0
  anchor = -math.log(math.e / (math.e + 1.0))  # Each of the two anchors of patient 0.
  np.testing.assert_allclose(
      patient_loss(z, ids, np.ones(3, bool), t), anchor, rtol=1e-6)


def test_invalid_samples_take_no_part():
  z, ids = normal(6, 4), np.array([0, 0, 1, 1, 2, 2])
  valid = np.array([1, 1, 1, 1, 0, 1], bool)
  moved = z.copy()
  moved[4] = 50.0 * normal(4, seed=3)
  np.testing.assert_allclose(patient_loss(moved, ids, valid, 0.2),
                             patient_loss(z, ids, valid, 0.2),
                             rtol=1e-6)


@pytest.mark.parametrize("ids,valid", [
    (np.arange(6), np.ones(6, bool)),                 # No patient repeats.
    (np.zeros(6, int), np.zeros(6, bool)),            # Nothing valid.
    (np.array([0, 0, 1, 2, 3, 4]), np.array([1, 0, 1, 1, 1, 1], bool)),
    (np.zeros(1, int), np.ones(1, bool)),             # A single sample.
])
def test_patient_loss_without_positives_is_zero_with_finite_gradients(ids, valid):
  z = normal(len(ids), 4)
  loss, grad = jax.jit(jax.value_and_grad(losses.patient_contrastive_loss),
                       static_argnums=3)(z, ids, valid, 0.1)
  assert float(loss) == 0.0
  assert np.isfinite(grad).all()
  np.testing.assert_array_equal(grad, 0.0)


def test_contrastive_gradients_are_finite_for_zero_vectors():
  z = normal(4, 3)
  z[2] = 0.0
  ids = np.array([0, 0, 1, 1])
  grad = jax.jit(jax.grad(losses.patient_contrastive_loss), static_argnums=3)(
      z, ids, np.ones(4, bool), 0.1)
  assert np.isfinite(grad).all()
  grad = jax.jit(jax.grad(losses.sample_contrastive_loss), static_argnums=2)(
      z, z[::-1], 0.1)
  assert np.isfinite(grad).all()


def test_patient_loss_is_scale_invariant():
  z, ids = normal(6, 4), np.array([0, 1, 0, 1, 2, 2])
  scale = np.linspace(0.1, 20.0, 6, dtype=np.float32)[:, None]
  np.testing.assert_allclose(
      patient_loss(z * scale, ids, np.ones(6, bool), 0.1),
      patient_loss(z, ids, np.ones(6, bool), 0.1), rtol=1e-5)


def test_contrastive_losses_accept_bfloat16():
  z1, z2 = normal(4, 8, seed=0), normal(4, 8, seed=1)
  loss16 = sample_loss(jnp.asarray(z1, jnp.bfloat16),
                                          jnp.asarray(z2, jnp.bfloat16), 0.1)
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(loss16, sample_loss(z1, z2, 0.1),
                             rtol=0.05)


# ----------------------------------------------------------------------- hybrid
def hybrid_inputs():
  return dict(pred=normal(2, 3, 4, seed=0), target=normal(2, 3, 4, seed=1),
              z1=normal(2, 5, seed=2), z2=normal(2, 5, seed=3),
              z_patient=normal(4, 5, seed=4), patient_ids=np.array([0, 1, 0, 1]),
              patient_valid=np.array([1, 1, 1, 0], bool))


def test_hybrid_objective_is_the_weighted_sum():
  inputs = hybrid_inputs()
  weights = {"reconstruction": 1.0, "sample": 0.5, "patient": 2.0}
  total, parts = jax.jit(lambda i: losses.hybrid_objective(weights, 0.1, **i))(inputs)
  assert set(parts) == {"reconstruction", "sample", "patient"}
  np.testing.assert_allclose(parts["reconstruction"], np_reconstruction(
      inputs["pred"], inputs["target"]), rtol=1e-5)
  np.testing.assert_allclose(parts["sample"], np_nt_xent(inputs["z1"], inputs["z2"],
                                                         0.1), rtol=1e-5)
  np.testing.assert_allclose(parts["patient"], np_patient(
      inputs["z_patient"], inputs["patient_ids"], inputs["patient_valid"], 0.1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      total, parts["reconstruction"] + 0.5 * parts["sample"] + 2.0 * parts["patient"],
      rtol=1e-6)
  np.testing.assert_allclose(losses.hybrid_loss(parts, weights), total, rtol=1e-6)


def test_generative_and_contrastive_presets_skip_zero_terms():
  inputs = hybrid_inputs()
  gl = {"reconstruction": 1.0, "sample": 0.0, "patient": 0.0}
  total, parts = losses.hybrid_objective(gl, 0.1, pred=inputs["pred"],
                                         target=inputs["target"])
  assert set(parts) == {"reconstruction"}
  np.testing.assert_allclose(total, parts["reconstruction"])
  cl = {"reconstruction": 0.0, "sample": 1.0, "patient": 1.0}
  del inputs["pred"], inputs["target"]
  total, parts = losses.hybrid_objective(cl, 0.1, **inputs)
  assert set(parts) == {"sample", "patient"}
  np.testing.assert_allclose(total, parts["sample"] + parts["patient"], rtol=1e-6)


def test_hybrid_objective_refuses_missing_inputs_and_all_zero_weights():
  with pytest.raises(ValueError, match="'sample'"):
    losses.hybrid_objective({"reconstruction": 0.0, "sample": 1.0, "patient": 0.0},
                            0.1, z1=normal(2, 3))
  with pytest.raises(ValueError, match="every loss weight is 0"):
    losses.hybrid_objective({"reconstruction": 0, "sample": 0.0, "patient": 0.0}, 0.1)
