"""The parts of PTB-XL evaluation on hand-checked cases: metrics and the benchmark's
bootstrap, label fractions and stratified splits by patient, each robustness shift on a
known signal, the linear probe's L2 grid, fine-tuning's layer-wise learning rates."""

import numpy as np
import pytest

from crema_jax.evaluation import finetune
from crema_jax.evaluation import probe
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import splits
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.input import device
from sklearn import metrics as skmetrics

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


def test_rank_auroc_and_auprc_equal_sklearns_with_ties():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (300, 4))
  values = np.round(rng.normal(size=(300, 4)) + labels, 1)  # Many ties.
  for k in range(4):
    assert scores.auroc_per_class(labels, values)[k] == pytest.approx(
        skmetrics.roc_auc_score(labels[:, k], values[:, k]), abs=1e-12)
    assert scores.auprc_per_class(labels, values)[k] == pytest.approx(
        skmetrics.average_precision_score(labels[:, k], values[:, k]), abs=1e-12)


def test_bootstrap_redraws_resamples_that_lack_a_class():
  labels = np.zeros((200, 2), int)
  labels[:100, 0] = 1
  labels[[3, 150], 1] = 1  # A rare class: ~13% of plain resamples lack it.
  samples, redrawn = scores.bootstrap_samples(labels, 300, seed=0)
  assert len(samples) == 300 and redrawn > 10
  assert all(0 < labels[i, 1].sum() < len(i) for i in samples)
  plain = np.random.default_rng(0).integers(0, 200, (300, 200))
  assert (labels[plain, 1].sum(axis=1) == 0).sum() > 10  # What the redraw prevents.
  # 30 classes of one positive each among 40 ECGs: hardly a resample holds them all.
  with pytest.raises(ValueError, match=r"class \d+ \(1 positives of 40\)"):
    scores.bootstrap_samples(np.eye(40, 30, dtype=int), 5, seed=0)


def test_cluster_bootstrap_moves_a_patients_ecgs_together():
  rng = np.random.default_rng(1)
  patient_labels = rng.integers(0, 2, 60)
  patient_scores = patient_labels + rng.normal(0, 1.0, 60)
  # Ten identical ECGs per patient: per ECG, the bootstrap believes in 600 samples.
  labels, values = (np.repeat(v, 10)[:, None] for v in (patient_labels, patient_scores))
  groups = np.repeat(np.arange(60), 10)
  samples, _ = scores.bootstrap_samples(labels, 50, 0, groups)
  for idx in samples:
    assert len(idx) % 10 == 0
    counts = np.bincount(groups[idx], minlength=60)
    assert set(np.unique(counts)) <= set(range(0, 200, 10))
  per_ecg = scores.score_task(labels, values, np.array([0.5]), ("X",), bootstrap=300)
  cluster = scores.score_task(labels, values, np.array([0.5]), ("X",), bootstrap=300,
                              groups=groups)
  width = lambda r: r["auroc_ci"][1] - r["auroc_ci"][0]
  assert width(cluster) > 2 * width(per_ecg)
  assert cluster["bootstrap"]["unit"] == "patient"


def test_paired_interval_is_narrower_than_the_two_separate_ones():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, (400, 1))
  shared = labels + rng.normal(0, 1.0, (400, 1))  # Both scorers share most errors.
  a, b = shared + rng.normal(0, 0.1, (400, 1)), shared + rng.normal(0, 0.1, (400, 1))
  paired = scores.paired_macro_auroc(labels, a, b, num_samples=300, seed=0)
  assert paired["difference"] == pytest.approx(paired["a"] - paired["b"])
  assert paired["ci"][0] <= paired["difference"] <= paired["ci"][1]
  separate = [scores.score_task(labels, v, np.array([0.0]), ("X",), bootstrap=300)
              for v in (a, b)]
  unpaired_width = sum(r["auroc_ci"][1] - r["auroc_ci"][0] for r in separate) / 2
  assert paired["ci"][1] - paired["ci"][0] < unpaired_width / 3
  better = scores.paired_macro_auroc(labels, labels + rng.normal(0, 0.3, (400, 1)), a,
                                     num_samples=300, seed=0)
  assert better["ci"][0] > 0 and better["p_value"] < 0.01


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


def test_stratified_patient_split_is_disjoint_and_keeps_rare_labels_everywhere():
  rng = np.random.default_rng(0)
  patients = np.repeat(np.arange(400), rng.integers(1, 4, 400))
  per_patient = rng.random((400, 3)) < [0.4, 0.1, 0.03]  # ~12 patients with class 2.
  labels = per_patient[patients].astype(int)
  parts = splits.stratified_patient_split(patients, labels, (0.7, 0.1, 0.2), seed=0)
  assert sorted(np.concatenate(parts)) == list(range(len(patients)))
  owners = [set(patients[p]) for p in parts]
  assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
  for part, share in zip(parts, (0.7, 0.1, 0.2)):
    assert len(part) / len(patients) == pytest.approx(share, abs=0.02)
    np.testing.assert_allclose(labels[part].sum(0) / labels.sum(0), share, atol=0.06)
  again = splits.stratified_patient_split(patients, labels, (0.7, 0.1, 0.2), seed=0)
  other = splits.stratified_patient_split(patients, labels, (0.7, 0.1, 0.2), seed=1)
  assert all(np.array_equal(x, y) for x, y in zip(parts, again))
  assert not np.array_equal(parts[2], other[2])


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


def test_rate_shift_and_the_refusals():
  x = _sine(hz=5.0)
  # A 5 Hz wave survives a 100 Hz device; a 70 Hz one (above 50 Hz Nyquist) does not.
  slow = shifts.SHIFTS["rate_100hz"](x, RATE, _rng())
  assert slow.shape == x.shape
  np.testing.assert_allclose(slow[RATE:-RATE], x[RATE:-RATE], atol=0.05)
  fast = shifts.SHIFTS["rate_100hz"](_sine(hz=70.0), RATE, _rng())
  assert np.abs(fast[RATE:-RATE]).max() < 0.05
  with pytest.raises(ValueError, match="unknown robustness shift"):
    shifts.check_names(["noise_snr10", "snow"])
  # At 100 Hz: 50 Hz mains sits at Nyquist, 60 Hz above it, and rate_100hz changes
  # nothing; at 500 Hz all are fine.
  shifts.check_names(["powerline_50hz_0.2mv", "rate_100hz"], 500)
  with pytest.raises(ValueError, match="powerline_50hz_0.2mv: 50 Hz is at or above "
                     "half the 100 Hz") as raised:
    shifts.check_names(["powerline_50hz_0.2mv", "powerline_60hz_0.2mv", "rate_100hz",
                        "noise_snr10"], 100)
  assert "powerline_60hz" in str(raised.value) and "rate_100hz" in str(raised.value)
  with pytest.raises(ValueError, match="Nyquist|half the 100 Hz"):
    shifts.SHIFTS["powerline_50hz_0.2mv"](x[:1000], 100, _rng())


def _einthoven_ecg(seconds=4.0):
  """[time, 12] limb leads from three electrode potentials (Einthoven/Goldberger)."""
  t = np.arange(int(seconds * RATE)) / RATE
  beat = lambda c, w: np.exp(-0.5 * ((t % 0.8 - c) / w) ** 2)
  ra, la, ll = 0.2 * beat(0.3, 0.01), -0.5 * beat(0.3, 0.008), 1.0 * beat(0.31, 0.005)
  ra, la, ll = ra + 0.1 * beat(0.55, 0.05), la + 0.05 * beat(0.5, 0.04), ll
  limb = [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2,
          ll - (ra + la) / 2]
  chest = [r * beat(0.3 + 0.004 * k, 0.005) + t_wave * beat(0.55, 0.05)
           for k, (r, t_wave) in enumerate(zip((-0.8, 0.6, 1.0, 1.2, 1.0, 0.8),
                                               (-0.1, 0.2, 0.3, 0.3, 0.2, 0.15)))]
  return np.stack(limb + chest, axis=1).astype(np.float32), (ra, la, ll)


def test_electrode_swaps_are_the_ecg_recorded_with_the_electrodes_swapped():
  x, (ra, la, ll) = _einthoven_ecg()
  swapped = lambda ra, la, ll: np.stack(
      [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2,
       ll - (ra + la) / 2], axis=1)
  np.testing.assert_allclose(shifts.SHIFTS["electrodes_la_ra"](x, RATE, _rng())[:, :6],
                             swapped(la, ra, ll), atol=1e-6)
  np.testing.assert_allclose(shifts.SHIFTS["electrodes_la_ll"](x, RATE, _rng())[:, :6],
                             swapped(ra, ll, la), atol=1e-6)
  v = shifts.SHIFTS["electrodes_v1_v2"](x, RATE, _rng())
  np.testing.assert_array_equal(v[:, [6, 7]], x[:, [7, 6]])
  np.testing.assert_array_equal(v[:, 8:], x[:, 8:])


def test_every_shift_changes_what_the_encoder_sees():
  """After the model's per-lead standardisation: a gain error (x2 on every lead) would
  leave the input unchanged, and its robustness row would repeat the clean score."""
  x, _ = _einthoven_ecg(seconds=10.0)
  seen = lambda v: np.asarray(device.standardize(v, np.int32(len(v))))
  clean = seen(x)
  for name, shift in shifts.SHIFTS.items():
    change = np.abs(seen(shift(x, RATE, _rng())) - clean).mean()
    assert change > 0.01, name


# ------------------------------------------------------------------ linear probe# ------------------------------------------------------------------ linear probe
def test_linear_probe_learns_a_separable_task():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(400, 5)).astype(np.float32)
  feats = rng.standard_normal((400, 16)) + 2.0 * labels @ rng.standard_normal((5, 16))
  fitted = probe.train_linear_probe(feats[:300], labels[:300], feats[300:350],
                                    labels[300:350], steps=200)
  auroc = scores.auroc_per_class(labels[350:], fitted.logits(feats[350:]))
  assert auroc.min() > 0.9 and fitted.val_auroc > 0.9
  assert fitted.thresholds.shape == (5,)
  w, b = fitted.raw_head()  # Fine-tuning's start: the same logits from raw features.
  np.testing.assert_allclose(feats @ w + b, fitted.logits(feats), rtol=1e-4, atol=1e-4)


def test_probe_penalty_is_chosen_on_validation():
  """Few training ECGs, many noise features and one informative direction: the
  unpenalised head overfits; validation picks a penalty, which generalises better."""
  rng = np.random.default_rng(0)

  def data(n):
    x = rng.normal(size=(n, 200))
    return x, (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)[:, None]

  (xt, yt), (xv, yv), (xs, ys) = data(60), data(300), data(2000)
  fitted = probe.train_linear_probe(xt, yt, xv, yv, l2_grid=(0.0, 0.1, 1.0, 10.0))
  plain = probe.train_linear_probe(xt, yt, xv, yv, l2_grid=(0.0,))
  assert fitted.l2 > 0 and set(fitted.grid) == {"0", "0.1", "1", "10"}
  assert fitted.val_auroc == max(fitted.grid.values()) > fitted.grid["0"]
  test = lambda p: scores.auroc_per_class(ys, p.logits(xs))[0]
  assert test(fitted) > test(plain) + 0.05


def test_layer_wise_lr_decay_multipliers():
  params = {"crema": {"patch_embed": {"k": 0}, "encoder": {"block0": {"k": 0},
                                                           "block1": {"k": 0},
                                                           "norm": {"k": 0}},
                      "decoder": {"k": 0}, "projector": {"k": 0}},
            "head": {"w": 0}}
  m = finetune.lr_multipliers(params, depth=2, layer_decay=0.5, head_lr_scale=10.0)
  assert m["head"]["w"] == 10.0 and m["crema"]["encoder"]["norm"]["k"] == 1.0
  assert m["crema"]["encoder"]["block1"]["k"] == 0.5
  assert m["crema"]["encoder"]["block0"]["k"] == 0.25
  assert m["crema"]["patch_embed"]["k"] == 0.125
  assert m["crema"]["decoder"]["k"] == 0.0 and m["crema"]["projector"]["k"] == 0.0




def test_fits_that_cannot_be_made_are_refused_before_any_compute():
  """A one-class task whose drawn training set has no positive, and a label set with
  no labelled ECG in the draw, are refused naming task, fraction and seed (and the
  fraction that would do); a label set lacking only some classes is planned, and says
  which."""
  from crema_jax.evaluation import fits  # pylint: disable=g-import-not-at-top
  n = 200
  patients = np.arange(n) // 2
  rare = np.zeros((n, 1), np.uint8)
  rare[-2:] = 1  # One patient has the condition.
  labelset = np.zeros((n, 2), np.uint8)
  labelset[:, 0] = 1
  labelset[-2:, 1] = 1
  tasks = {
      "RARE": tasks_lib.Task("RARE", ("RARE",), rare, np.ones(n, bool), ""),
      "set": tasks_lib.Task("set", ("A", "B"), labelset, np.ones(n, bool), ""),
  }
  positions = np.arange(n)
  with pytest.raises(ValueError) as refused:
    fits.plan(tasks, (1.0, 0.1), (0, 1), positions, patients)
  message = str(refused.value)
  assert "task RARE, label fraction 0.1, seed 0: the training ECGs are all negative " \
         "for RARE" in message and "smallest fraction that can be fitted" in message
  assert "label fraction 1" not in message and "task set" not in message
  planned = fits.plan({"set": tasks["set"]}, (1.0, 0.1), (0,), positions, patients)
  assert [(p.fraction, p.missing_classes) for p in planned] == [(1.0, ()),
                                                               (0.1, ("B",))]
  empty = tasks_lib.Task("set", ("A", "B"), labelset, np.arange(n) >= 190, "")
  with pytest.raises(ValueError, match="no training ECG has a label of the task"):
    fits.plan({"set": empty}, (0.1,), (0,), positions, patients)
