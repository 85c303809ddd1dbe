"""The parts of PTB-XL evaluation on hand-checked cases: metrics, label fractions by
patient, each robustness shift on a known signal, the linear probe, fine-tuning's
layer-wise learning rates."""

import numpy as np
import pytest

from crema_jax.evaluation import finetune
from crema_jax.evaluation import probe
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import splits

# ------------------------------------------------------------------------ scores
LABELS = np.array([[0], [0], [1], [1]])
SCORES = np.array([[0.1], [0.4], [0.35], [0.8]])


def test_auroc_and_auprc_on_a_hand_computed_case():
  # Positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4.
  np.testing.assert_allclose(scores.auroc_per_class(LABELS, SCORES), [0.75])
  # Ranked 0.8(+), 0.4(-), 0.35(+), 0.1(-): precision 1 at recall .5, 2/3 at recall 1.
  np.testing.assert_allclose(scores.auprc_per_class(LABELS, SCORES), [(1 + 2 / 3) / 2])
  assert np.isnan(scores.auroc_per_class(np.zeros((4, 1)), SCORES)[0])


def test_f1_threshold_is_chosen_to_maximise_f1():
  # Threshold 0.35: predicts 0.4, 0.35, 0.8 positive: TP 2, FP 1, FN 0 -> F1 = 0.8.
  # Threshold 0.8: TP 1, FN 1 -> F1 = 2/3. Threshold 0.4: TP 1, FP 1, FN 1 -> 0.5.
  thresholds = scores.best_f1_thresholds(LABELS, SCORES)
  np.testing.assert_allclose(thresholds, [0.35])
  np.testing.assert_allclose(scores.f1_per_class(LABELS, SCORES, thresholds), [0.8])
  np.testing.assert_allclose(scores.f1_per_class(LABELS, SCORES, np.array([0.8])),
                             [2 / 3])


def test_bootstrap_interval_brackets_the_value_and_narrows_with_more_data():
  rng = np.random.default_rng(0)

  def interval(n):
    labels = rng.integers(0, 2, (n, 1))
    noisy = labels + rng.normal(0, 1.0, (n, 1))
    result = scores.score_task(labels, noisy, np.array([0.5]), ("X",), bootstrap=200)
    low, high = result["auroc_ci"]
    assert low <= result["auroc"] <= high
    return high - low

  assert interval(2000) < interval(100) / 2
  # A perfect classifier: every resample with both classes has AUROC 1.
  perfect = scores.score_task(LABELS, SCORES * 0 + LABELS, np.array([0.5]), ("X",),
                              bootstrap=100)
  assert perfect["auroc_ci"] == [1.0, 1.0]


# ---------------------------------------------------------------- label fractions
def test_label_fraction_takes_whole_patients():
  patients = np.repeat(np.arange(100), np.arange(100) % 4 + 1)  # 1-4 ECGs each.
  for fraction in (0.01, 0.1, 0.5):
    rows = splits.fraction_by_patient(patients, fraction, seed=3)
    chosen = set(patients[rows])
    # Every ECG of a chosen patient is in; none of another patient.
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(np.isin(patients,
                                                                          list(chosen))))
    target = round(fraction * len(patients))
    assert target <= len(rows) < target + 4  # Stops at the first patient past it.
  assert len(splits.fraction_by_patient(patients, 1.0, 0)) == len(patients)
  a, b = (splits.fraction_by_patient(patients, 0.1, s) for s in (0, 1))
  assert set(patients[a]) != set(patients[b])  # Seeds draw different patients.
  with pytest.raises(ValueError, match="not in"):
    splits.fraction_by_patient(patients, 0.0, 0)


# ----------------------------------------------------------------------- shifts
RATE = 500


def _sine(hz=5.0, seconds=4.0, amplitude=1.0):
  t = np.arange(int(seconds * RATE)) / RATE
  return np.repeat((amplitude * np.sin(2 * np.pi * hz * t))[:, None], 12,
                   1).astype(np.float32)


def _rng():
  return np.random.default_rng(0)


def test_noise_shift_has_the_requested_snr():
  x = _sine()
  for name, snr in (("noise_snr20", 20), ("noise_snr10", 10), ("noise_snr0", 0)):
    noise = shifts.SHIFTS[name](x, RATE, _rng()) - x
    measured = 10 * np.log10(x.var(0) / noise.var(0))
    np.testing.assert_allclose(measured, snr, atol=0.3)


def test_wander_and_powerline_add_a_sinusoid_of_the_stated_frequency_and_amplitude():
  x = np.zeros((RATE * 10, 12), np.float32)
  for name, hz, amplitude in (("baseline_wander_0.5mv", 0.3, 0.5),
                              ("powerline_50hz_0.2mv", 50, 0.2),
                              ("powerline_60hz_0.2mv", 60, 0.2)):
    added = shifts.SHIFTS[name](x, RATE, _rng())
    spectrum = np.abs(np.fft.rfft(added[:, 0]))
    freqs = np.fft.rfftfreq(len(added), 1 / RATE)
    assert abs(freqs[np.argmax(spectrum)] - hz) < 0.11
    # Whole cycles: a sinusoid's RMS is its amplitude / sqrt(2).
    np.testing.assert_allclose(added.std(0) * np.sqrt(2), amplitude, rtol=0.01)


def test_lead_shifts_keep_only_their_leads():
  x = _sine() + np.arange(12, dtype=np.float32)
  limb = shifts.SHIFTS["limb_leads_only"](x, RATE, _rng())
  np.testing.assert_array_equal(limb[:, :6], x[:, :6])
  assert not limb[:, 6:].any()
  lead_i = shifts.SHIFTS["lead_I_only"](x, RATE, _rng())
  np.testing.assert_array_equal(lead_i[:, 0], x[:, 0])
  assert not lead_i[:, 1:].any()


def test_amplitude_and_rate_shifts():
  x = _sine(hz=5.0)
  np.testing.assert_allclose(shifts.SHIFTS["amplitude_x2"](x, RATE, _rng()), 2 * x)
  np.testing.assert_allclose(shifts.SHIFTS["amplitude_x0.5"](x, RATE, _rng()), x / 2)
  # A 5 Hz wave survives a 100 Hz device; a 70 Hz one (above 50 Hz Nyquist) does not.
  slow = shifts.SHIFTS["rate_100hz"](x, RATE, _rng())
  assert slow.shape == x.shape
  np.testing.assert_allclose(slow[RATE:-RATE], x[RATE:-RATE], atol=0.05)
  fast = shifts.SHIFTS["rate_100hz"](_sine(hz=70.0), RATE, _rng())
  assert np.abs(fast[RATE:-RATE]).max() < 0.05
  with pytest.raises(ValueError, match="unknown robustness shift"):
    shifts.check_names(["noise_snr10", "snow"])


# ------------------------------------------------------------------ linear probe
def test_linear_probe_learns_a_separable_task():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(400, 5)).astype(np.float32)
  feats = rng.standard_normal((400, 16)) + 2.0 * labels @ rng.standard_normal((5, 16))
  fitted = probe.train_linear_probe(feats[:300], labels[:300], feats[300:350],
                                    labels[300:350], steps=200)
  auroc = scores.auroc_per_class(labels[350:], fitted.logits(feats[350:]))
  assert auroc.min() > 0.9 and fitted.val_auroc > 0.9
  assert fitted.thresholds.shape == (5,)


def test_layer_wise_lr_decay_multipliers():
  params = {"crema": {"patch_embed": {"k": 0}, "encoder": {"block0": {"k": 0},
                                                           "block1": {"k": 0},
                                                           "norm": {"k": 0}},
                      "decoder": {"k": 0}, "projector": {"k": 0}},
            "head": {"w": 0}}
  m = finetune.lr_multipliers(params, depth=2, layer_decay=0.5)
  assert m["head"]["w"] == 1.0 and m["crema"]["encoder"]["norm"]["k"] == 1.0
  assert m["crema"]["encoder"]["block1"]["k"] == 0.5
  assert m["crema"]["encoder"]["block0"]["k"] == 0.25
  assert m["crema"]["patch_embed"]["k"] == 0.125
  assert m["crema"]["decoder"]["k"] == 0.0 and m["crema"]["projector"]["k"] == 0.0


