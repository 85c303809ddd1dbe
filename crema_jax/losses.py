"""CREMA's hybrid objective: masked reconstruction plus sample- and patient-level
contrastive losses. Pure jnp functions of global-batch arrays (under jit on a mesh they
see every device's examples, so negatives come from the whole batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_reconstruction_loss(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """MSE over the masked patches. pred, target: [batch, M, patch_dim]; 0 when M == 0."""
  if pred.shape[1] == 0:
    return jnp.zeros((), jnp.float32)
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def _normalize(z: jnp.ndarray) -> jnp.ndarray:
  z = z.astype(jnp.float32)
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def sample_contrastive_loss(z1: jnp.ndarray, z2: jnp.ndarray,
                            temperature: float) -> jnp.ndarray:
  """NT-Xent (SimCLR): each view's positive is the other view of the same ECG; the
  other 2B - 2 embeddings are negatives. z1, z2: [batch, dim] -> mean over 2B anchors."""
  b = z1.shape[0]
  z = _normalize(jnp.concatenate([z1, z2]))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(log_prob[jnp.arange(2 * b), positive])


def patient_contrastive_loss(z: jnp.ndarray, patient_ids: jnp.ndarray,
                             valid: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """Multi-positive InfoNCE over patients (as in CLOCS / SupCon).

  For every valid anchor with at least one other valid sample of the same patient:
  -mean over those positives of log softmax over all other valid samples. Averaged over
  such anchors; 0 (with zero, finite gradients) when no anchor has a positive.

  Args:
    z: [n, dim] embeddings.
    patient_ids: [n] int, equal for ECGs of one patient.
    valid: [n] bool, False rows take no part (e.g. absent same-patient partners).
    temperature: softmax temperature.
  """
  n = z.shape[0]
  zn = _normalize(z)
  logits = zn @ zn.T / temperature
  not_self = ~jnp.eye(n, dtype=bool)
  pair_ok = valid[:, None] & valid[None, :] & not_self
  positive = pair_ok & (patient_ids[:, None] == patient_ids[None, :])
  log_prob = jax.nn.log_softmax(jnp.where(pair_ok, logits, -jnp.inf), axis=-1)
  num_pos = positive.sum(axis=1)
  per_anchor = -jnp.where(positive, log_prob, 0.0).sum(axis=1) / jnp.maximum(num_pos, 1)
  has_pos = num_pos > 0
  return jnp.sum(jnp.where(has_pos, per_anchor, 0.0)) / jnp.maximum(has_pos.sum(), 1)


def hybrid_loss(parts: dict[str, jnp.ndarray],
                weights: dict[str, float]) -> jnp.ndarray:
  """L = sum_k weights[k] * parts[k], e.g. L_rec + l_sample L_sample + l_patient
  L_patient; GL and CL are the same sum with some weights 0 (those parts need not be
  computed at all)."""
  return sum(weights[name] * value for name, value in parts.items())
