"""CREMA's hybrid objective: masked reconstruction plus sample- and patient-level
contrastive losses.

    L = L_rec + lambda_sample * L_sample + lambda_patient * L_patient

Pure jnp functions of global-batch arrays: under jit on a mesh they see every device's
examples, so the contrastive negatives come from the whole batch. Similarities and
softmaxes are computed in float32 whatever the model's compute dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

LOSS_NAMES = ("reconstruction", "sample", "patient")

# Logit of excluded pairs: finite, so that rows with no candidate at all stay finite
# (their value is masked out later) and gradients never meet inf - inf.
_EXCLUDED = -1e9


def masked_reconstruction_loss(pred: jnp.ndarray, target: jnp.ndarray,
                               valid: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean squared error over the masked patches that hold signal.

  Args:
    pred: [batch, M, patch_dim] reconstructions of the masked patches.
    target: [batch, M, patch_dim] their true values.
    valid: optional [batch, M] bool, False for a patch of zero padding (a short
      record's): it is no target.

  Returns:
    Scalar mean over every element of the valid patches; 0 when there are none.
  """
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
  if pred.size == 0:
    return jnp.zeros((), jnp.float32)
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)),
                       axis=-1)
  if valid is None:
    return jnp.mean(per_patch)
  weight = valid.astype(jnp.float32)
  return jnp.sum(per_patch * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def l2_normalize(z: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """z: [n, dim] -> rows of unit L2 norm, float32."""
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(z), axis=-1, keepdims=True),
                                       eps * eps))


def sample_contrastive_loss(z1: jnp.ndarray, z2: jnp.ndarray,
                            temperature: float) -> jnp.ndarray:
  """NT-Xent (SimCLR): the two views of one ECG attract, every other embedding repels.

  Args:
    z1: [batch, dim] projections of the first views.
    z2: [batch, dim] projections of the second views (row i: the same ECG as z1[i]).
    temperature: cosine similarities are divided by it.

  Returns:
    Scalar: over the 2 * batch anchors, the mean of -log softmax(positive) where the
    softmax runs over the other 2 * batch - 1 embeddings (self excluded).
  """
  b = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * b, dtype=bool), _EXCLUDED, logits)
  positive = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_prob, positive[:, None], axis=1))


def patient_contrastive_loss(z: jnp.ndarray, patient_ids: jnp.ndarray,
                             valid: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """Multi-positive InfoNCE over patients (as in CLOCS; SupCon's L_out).

  For every valid anchor with at least one other valid sample of the same patient:
  -mean over those positives of the log softmax over all other valid samples. The loss
  averages this over such anchors; it is 0, with zero (finite) gradients, when no
  anchor has a positive.

  Args:
    z: [n, dim] projections.
    patient_ids: [n] int, equal for ECGs of one patient.
    valid: [n] bool; False rows take no part (e.g. missing same-patient partners).
    temperature: cosine similarities are divided by it.

  Returns:
    Scalar loss.
  """
  n = z.shape[0]
  zn = l2_normalize(z)
  logits = zn @ zn.T / temperature
  valid = valid.astype(bool)
  candidate = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
  positive = candidate & (patient_ids[:, None] == patient_ids[None, :])
  log_prob = jax.nn.log_softmax(jnp.where(candidate, logits, _EXCLUDED), axis=-1)
  num_pos = positive.sum(axis=1)
  per_anchor = (-jnp.where(positive, log_prob, 0.0).sum(axis=1) /
                jnp.maximum(num_pos, 1))
  has_pos = num_pos > 0
  return jnp.where(has_pos, per_anchor, 0.0).sum() / jnp.maximum(has_pos.sum(), 1)


def hybrid_loss(parts: Mapping[str, jnp.ndarray],
                weights: Mapping[str, float]) -> jnp.ndarray:
  """The weighted sum of computed loss terms: sum_k weights[k] * parts[k].

  Args:
    parts: scalar losses by name (a subset of LOSS_NAMES).
    weights: a weight for each name in `parts` (extra keys are ignored).
  """
  return sum(weights[name] * value for name, value in parts.items())


def hybrid_objective(weights: Mapping[str, float], temperature: float, *,
                     pred: jnp.ndarray | None = None,
                     target: jnp.ndarray | None = None,
                     target_valid: jnp.ndarray | None = None,
                     z1: jnp.ndarray | None = None,
                     z2: jnp.ndarray | None = None,
                     z_patient: jnp.ndarray | None = None,
                     patient_ids: jnp.ndarray | None = None,
                     patient_valid: jnp.ndarray | None = None
                     ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """L = L_rec + lambda_sample L_sample + lambda_patient L_patient, and its parts.

  A term whose weight is a Python 0 is neither computed nor needs its inputs, so GL
  (reconstruction only) and CL (contrastive only) are this function with weights 0.

  Args:
    weights: "reconstruction", "sample" and "patient" weights.
    temperature: of both contrastive losses.
    pred, target: [batch, M, patch_dim] for the reconstruction term; target_valid
      [batch, M] (optional) leaves padding patches out of it.
    z1, z2: [batch, dim] projections of two views, for the sample term.
    z_patient, patient_ids, patient_valid: [n, dim], [n], [n] for the patient term.

  Returns:
    (total, {name: unweighted term}) for the terms with non-zero weight.
  """
  terms = {
      "reconstruction": ((pred, target), lambda: masked_reconstruction_loss(
          pred, target, target_valid)),
      "sample": ((z1, z2), lambda: sample_contrastive_loss(z1, z2, temperature)),
      "patient": ((z_patient, patient_ids, patient_valid),
                  lambda: patient_contrastive_loss(z_patient, patient_ids,
                                                   patient_valid, temperature)),
  }
  parts = {}
  for name, (inputs, term) in terms.items():
    weight = weights[name]
    if isinstance(weight, (int, float)) and weight == 0:
      continue
    if any(a is None for a in inputs):
      raise ValueError(f"loss term {name!r} has weight {weight} but not all of its "
                       "inputs were given")
    parts[name] = term()
  if not parts:
    raise ValueError("every loss weight is 0: "
                     f"{ {name: weights[name] for name in LOSS_NAMES} }")
  return hybrid_loss(parts, weights), parts
