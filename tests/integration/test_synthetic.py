"""The synthetic PTB-XL writer: layout, determinism, physiology, labels."""

import dataclasses
import filecmp
import json

import numpy as np
import pandas as pd
import pytest
from scipy import signal as scipy_signal
import wfdb

from configs import demo
from crema_jax.data.readers import ptbxl
from crema_jax.data import records
from crema_jax.data import synthetic
from crema_jax.evaluation import tasks


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return synthetic.write_synthetic_ptbxl(tmp_path_factory.mktemp("syn") / "ptbxl",
                                         num_patients=25, seed=0)


def test_layout_is_ptbxl(root, shared_data):
  real = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database_head200.csv", nrows=0)
  table = pd.read_csv(root / "ptbxl_database.csv")
  assert list(table.columns) == list(real.columns)
  assert filecmp.cmp(root / "scp_statements.csv",
                     shared_data / "ptbxl" / "scp_statements.csv", shallow=False)
  assert table["ecg_id"].tolist() == list(range(1, len(table) + 1))
  assert table["filename_hr"].iloc[0] == "records500/00000/00001_hr"
  assert table["filename_lr"].iloc[0] == "records100/00000/00001_lr"
  assert table["patient_id"].nunique() == 25 and len(table) > 25
  assert table.groupby("patient_id")["strat_fold"].nunique().max() == 1
  assert set(table["strat_fold"]) <= set(range(1, 11))


@pytest.mark.parametrize("column,rate,samples", [("filename_hr", 500, 5000),
                                                 ("filename_lr", 100, 1000)])
def test_records_read_with_wfdb(root, column, rate, samples):
  name = pd.read_csv(root / "ptbxl_database.csv")[column].iloc[3]
  signal, fields = wfdb.rdsamp(str(root / name))
  assert signal.shape == (samples, 12) and fields["fs"] == rate
  assert fields["units"] == ["mV"] * 12
  assert fields["sig_name"] == synthetic.WFDB_LEAD_NAMES
  assert 0.3 < np.abs(signal[:, 1]).max() < 5  # Lead II peaks at realistic millivolts.


def test_einthoven_holds_on_read_back(root):
  record = ptbxl.PTBXL(root).read("1")
  i, ii, iii, avr, avl, avf = record.ecg[:, :6].T
  tol = 2e-3  # Two ADC steps of 1 uV.
  np.testing.assert_allclose(iii, ii - i, atol=tol)
  np.testing.assert_allclose(avr, -(i + ii) / 2, atol=tol)
  np.testing.assert_allclose(avl, i - ii / 2, atol=tol)
  np.testing.assert_allclose(avf, ii - i / 2, atol=tol)


def test_same_seed_same_bytes_other_seed_differs(root, tmp_path):
  again = synthetic.write_synthetic_ptbxl(tmp_path / "again", num_patients=25, seed=0)
  other = synthetic.write_synthetic_ptbxl(tmp_path / "other", num_patients=25, seed=1)
  for name in ("ptbxl_database.csv", "records500/00000/00002_hr.dat",
               "records100/00000/00002_lr.dat"):
    assert filecmp.cmp(root / name, again / name, shallow=False)
  assert not filecmp.cmp(root / "records500/00000/00002_hr.dat",
                         other / "records500/00000/00002_hr.dat", shallow=False)


def test_reader_labels_equal_the_intended_classes(root):
  """The classes the writer built into each ECG (named in its report) are the ones the
  PTB-XL reader derives from its scp_codes."""
  reader = ptbxl.PTBXL(root)
  report = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")["report"]
  intended = report.str.extract(r"\((.*)\)")[0].str.upper().str.split(", ")
  read = {int(key): reader.metadata(key)["classes"] for key in reader.keys()}
  for ecg_id, classes in read.items():
    assert sorted(classes) == sorted(intended[ecg_id]), ecg_id
    assert ("NORM" in classes) == (classes == ["NORM"])  # Normal, or diagnoses.
  assert all(any(c in cs for cs in read.values()) for c in records.SUPERCLASSES)


def _patient(classes, seed=0, rhythm="SR", forms=(), **changes):
  base = synthetic._draw_patient(np.random.default_rng(seed), 1)  # pylint: disable=protected-access
  return dataclasses.replace(base, classes=classes, mi_territory="anterior",
                             severity=1.0,  # The full effect of each class.
                             rhythm=rhythm, forms=tuple(forms), **changes)


def _features(classes, feature, n=12, **patient):
  """[n] `feature` of one record of each of n patients."""
  values = []
  for seed in range(n):
    rng = np.random.default_rng(100 + seed)
    ecg = synthetic.synthesize_ecg(_patient(classes, seed, **patient), rng)
    values.append(feature(ecg))
  return np.asarray(values, float)


def _mean_over_patients(classes, feature, n=12, **patient):
  return float(np.mean(_features(classes, feature, n, **patient)))


def _lead(name):
  return records.LEADS.index(name)


def test_hyp_has_taller_r_in_v5_and_deeper_s_in_v1():
  r_v5 = lambda ecg: np.percentile(ecg[:, _lead("V5")], 99.5)
  s_v1 = lambda ecg: -np.percentile(ecg[:, _lead("V1")], 0.5)
  assert _mean_over_patients(("HYP",), r_v5) > 1.4 * _mean_over_patients(("NORM",), r_v5)
  assert _mean_over_patients(("HYP",), s_v1) > 1.3 * _mean_over_patients(("NORM",), s_v1)


def _qrs_extent(classes):
  """Seconds from the start of the first to the end of the last QRS wave (+-2 sd)."""
  p = _patient(classes)
  waves = synthetic._waves(p, 0.8, np.random.default_rng(0))[1:]  # pylint: disable=protected-access
  qrs = [w for w in waves if w[0] < 0.1]
  return max(o + 2 * w for o, w, _ in qrs) - min(o - 2 * w for o, w, _ in qrs)


def test_cd_widens_the_qrs():
  assert _qrs_extent(("NORM",)) < 0.11
  assert _qrs_extent(("CD",)) > 0.12


def _st_level(ecg, lead):
  """Median level 80-120 ms after each R peak of lead II, minus the PR baseline."""
  ii = ecg[:, _lead("II")]
  peaks = [i for i in range(60, len(ii) - 100)
           if ii[i] == ii[i - 60:i + 60].max() and ii[i] > 0.5 * ii.max()]
  st = [ecg[p + 40:p + 60, lead].mean() - ecg[p - 40:p - 30, lead].mean() for p in peaks]
  return float(np.median(st))


def test_mi_raises_st_and_sttc_lowers_it_in_v2():
  st = lambda ecg: _st_level(ecg, _lead("V2"))
  norm = _mean_over_patients(("NORM",), st)
  assert _mean_over_patients(("MI",), st) > norm + 0.1
  lateral = lambda ecg: _st_level(ecg, _lead("V5"))
  assert _mean_over_patients(("STTC",), lateral) < _mean_over_patients(("NORM",),
                                                                       lateral) - 0.05


def _records(num_patients, seed=0):
  """([records] scp_codes JSON, [records] strat_fold) of draw_rows."""
  rows = [row for _, row in synthetic.draw_rows(num_patients, seed)]
  codes = [json.dumps(ptbxl.parse_scp_codes(r["scp_codes"])) for r in rows]
  return codes, np.array([r["strat_fold"] for r in rows])


def test_drawn_rows_are_the_written_rows(root):
  rows = [row for _, row in synthetic.draw_rows(25, seed=0)]
  drawn = pd.DataFrame(rows, columns=synthetic.COLUMNS).to_csv(index=False)
  assert drawn == (root / "ptbxl_database.csv").read_text()


def _classes_with_both_values(codes, folds, label_set, fold_group):
  """The classes of `label_set` with positives and negatives among the task's kept
  records in `fold_group`."""
  classes, labels = tasks.label_set_matrix(codes, label_set)
  kept = labels[labels.any(axis=1) & np.isin(folds, fold_group)]
  return [c for c, column in zip(classes, kept.T) if 0 < column.sum() < len(column)]


FOLD_GROUPS = {"train": range(1, 9), "fold 9": [9], "fold 10": [10]}


@pytest.mark.parametrize("label_set", tasks.LABEL_SETS)
def test_the_demo_has_two_classes_of_each_label_set_in_every_fold_group(label_set):
  codes, folds = _records(300, seed=0)
  for group, fold_group in FOLD_GROUPS.items():
    both = _classes_with_both_values(codes, folds, label_set, fold_group)
    assert len(both) >= 2, (group, both)
    if label_set == "form":  # Not only the STTC statements that are also form ones.
      shown = set(both) & set(synthetic._FORMS)  # pylint: disable=protected-access
      assert len(shown) >= 2, (group, both)


@pytest.mark.parametrize("label_set", ["superdiagnostic", "rhythm"])
def test_the_tests_demo_has_two_classes_in_training(label_set):
  codes, folds = _records(demo.get_config("test").demo_patients, seed=0)
  assert len(_classes_with_both_values(codes, folds, label_set, range(1, 9))) >= 2


def test_rhythm_and_form_statements_are_written_and_add_no_superclass(root):
  table = pd.read_csv(root / "ptbxl_database.csv")
  statements = tasks.statements()
  for text in table["scp_codes"]:
    codes = ptbxl.parse_scp_codes(text)
    rhythm = [c for c in codes if statements.loc[c, "rhythm"] == 1]
    assert len(rhythm) == 1 and codes[rhythm[0]] == 0.0, text
    added = [c for c in codes
             if c in synthetic._FORMS]  # pylint: disable=protected-access
    assert not statements.loc[added, "diagnostic"].eq(1).any(), text


def test_amplitudes_stay_physiological():
  biggest = lambda ecg: np.abs(ecg).max()
  assert _features(("MI", "CD", "HYP"), biggest, forms=("HVOLT", "PVC"),
                   amplitude=np.full(6, 1.25)).max() < 10  # mV; prepare refuses 30.


def _filtered(ecg, low, high=None):
  """`ecg` high-passed at `low` Hz, or band-passed to low-high Hz, zero phase."""
  band = ("highpass", low) if high is None else ("bandpass", [low, high])
  sos = scipy_signal.butter(2, band[1], band[0], fs=500, output="sos")
  return scipy_signal.sosfiltfilt(sos, ecg, axis=0)


def _r_peaks(ecg):
  """Sample index of each QRS: the peaks of the 5-30 Hz energy of all leads."""
  energy = (_filtered(ecg, 5, 30) ** 2).sum(axis=1)
  energy = np.convolve(energy, np.ones(25) / 25, mode="same")  # 50 ms.
  peaks, _ = scipy_signal.find_peaks(energy, height=0.1 * energy.max(), distance=125)
  return peaks


def _rr(ecg):
  return np.diff(_r_peaks(ecg)) / 500


def _median_beat(ecg, before=0.4, after=0.5):
  """[time, leads] median of the 0.7 Hz high-passed beats, R at sample 500 * before."""
  x, b, a = _filtered(ecg, 0.7), int(500 * before), int(500 * after)
  return np.median([x[p - b:p + a] for p in _r_peaks(ecg)
                    if p >= b and p + a <= len(x)], axis=0)


def _window(beat, start, stop, before=0.4):
  """The rows of a _median_beat from `start` to `stop` s after R."""
  return beat[int(500 * (before + start)):int(500 * (before + stop))]


@pytest.mark.parametrize("rhythm,low,high", [("SR", 60, 100), ("SARRH", 60, 100),
                                             ("STACH", 100, 200), ("SBRAD", 30, 60),
                                             ("AFIB", 50, 160)])
def test_mean_heart_rate_fits_the_rhythm(rhythm, low, high):
  rate = _features(("NORM",), lambda ecg: 60 / _rr(ecg).mean(), rhythm=rhythm)
  assert low < rate.min() and rate.max() < high, rate


def _p_wave(ecg):
  """Peak-to-peak (mV) of lead II's mean beat 80-260 ms before R, over the beats that
  follow an RR of 0.6 s or more (apart from the previous T wave), at 0.7-12 Hz."""
  ii, peaks = _filtered(ecg, 0.7, 12)[:, _lead("II")], _r_peaks(ecg)
  return np.ptp(np.mean([ii[p - 130:p - 40] for p, rr in zip(peaks[1:], np.diff(peaks))
                         if rr >= 300], axis=0))


def test_afib_has_irregular_rr_no_p_waves_and_fibrillatory_waves():
  # Irregularly irregular: successive RR intervals differ by a large fraction.
  irregularity = lambda ecg: np.abs(np.diff(_rr(ecg))).mean() / _rr(ecg).mean()
  assert (_features(("NORM",), irregularity, rhythm="AFIB").min()
          > 2 * _features(("NORM",), irregularity).max())
  # No P waves: only the fibrillatory waves' remainder before the mean QRS.
  afib = _features(("NORM",), _p_wave, rhythm="AFIB")
  sinus = _features(("NORM",), _p_wave)
  assert afib.max() < sinus.min() and afib.mean() < 0.4 * sinus.mean()

  def fibrillation(ecg):
    """Beat-to-beat sd of V1's 4-9 Hz activity 80-260 ms before R, after RRs of 0.7 s
    or more (where the previous T wave has ended): f waves are not time-locked."""
    v1, peaks = _filtered(ecg, 4, 9)[:, _lead("V1")], _r_peaks(ecg)
    return np.std([v1[p - 130:p - 40] for p, rr in zip(peaks[1:], np.diff(peaks))
                   if rr >= 350], axis=0).mean()
  slow = {"rate_position": 0.1}  # Long RR intervals in both rhythms.
  assert (_features(("NORM",), fibrillation, rhythm="AFIB", **slow).min()
          > 5 * _features(("NORM",), fibrillation, **slow).max())


def test_sarrh_varies_rr_with_respiration():
  spread = lambda ecg: np.ptp(_rr(ecg)) / _rr(ecg).mean()
  sarrh = _features(("NORM",), spread, rhythm="SARRH")
  assert sarrh.min() > 0.15 and sarrh.mean() > 2 * _features(("NORM",), spread).mean()


def _limb_qrs_peak_to_peak(ecg):
  qrs = _window(_median_beat(ecg), -0.08, 0.12)[:, :6]
  return float(np.ptp(qrs, axis=0).max())


def test_lvolt_keeps_every_limb_lead_below_half_a_millivolt():
  for classes in [("NORM",), ("MI",), ("CD",), ("STTC",)]:
    assert _features(classes, _limb_qrs_peak_to_peak, forms=("LVOLT",)).max() < 0.5
  assert _features(("NORM",), _limb_qrs_peak_to_peak).min() > 0.6


def test_hvolt_raises_the_qrs_voltage():
  assert (_mean_over_patients(("NORM",), _limb_qrs_peak_to_peak, forms=("HVOLT",))
          > 1.6 * _mean_over_patients(("NORM",), _limb_qrs_peak_to_peak))


def _pr_seconds(ecg):
  """Seconds from the P peak to the R peak of lead II's median beat."""
  ii = _median_beat(ecg)[:, _lead("II")]
  r = 200 - 20 + np.abs(ii[180:220]).argmax()
  p = 200 - 160 + ii[40:160].argmax()  # P wave 80-320 ms before R.
  return (r - p) / 500


def test_lpr_prolongs_the_pr_interval_beyond_200_ms():
  assert _features(("NORM",), _pr_seconds, forms=("LPR",)).min() > 0.2
  assert _features(("NORM",), _pr_seconds).max() < 0.2


def test_pvc_is_premature_wide_and_followed_by_a_compensatory_pause():
  def premature_beat(ecg):
    """(coupling RR / median RR, (RR before + after) / 2 median RR, QRS width of the
    premature beat / the median beat's), width at half the spatial magnitude."""
    peaks, rr = _r_peaks(ecg), _rr(ecg)
    k = int(np.argmin(rr[:-1]))
    magnitude = np.linalg.norm(_filtered(ecg, 0.7), axis=1)
    def width(p):
      around = magnitude[p - 60:p + 60]
      return (around > around.max() / 2).sum()
    widths = [width(p) for p in peaks if 60 <= p < len(ecg) - 60]
    return (rr[k] / np.median(rr), (rr[k] + rr[k + 1]) / (2 * np.median(rr)),
            width(peaks[k + 1]) / np.median(widths))
  pvc = _features(("NORM",), premature_beat, forms=("PVC",), rate_position=0.3)
  sinus = _features(("NORM",), premature_beat, rate_position=0.3)
  assert pvc[:, 0].max() < 0.8 and sinus[:, 0].min() > 0.85
  np.testing.assert_allclose(pvc[:, 1], 1.0, atol=0.12)
  assert pvc[:, 2].min() > 1.5 and sinus[:, 2].max() < 1.5


def _t_wave(ecg, lead):
  """The signed T-wave peak (mV) of a lead's median beat, 120-450 ms after R."""
  beat = _median_beat(ecg)[:, [lead]]
  t = _window(beat, 0.12, 0.45)[:, 0] - _window(beat, -0.07, -0.05).mean()
  return float(t[np.abs(t).argmax()])


def test_lowt_flattens_and_invt_inverts_the_t_wave():
  for lead in ("II", "V5"):
    t_wave = lambda ecg, lead=lead: _t_wave(ecg, _lead(lead))
    norm = _features(("NORM",), t_wave)
    assert norm.min() > 0.05
    low = _features(("NORM",), t_wave, forms=("LOWT",))
    assert np.abs(low).mean() < 0.35 * norm.mean()
    assert _features(("NORM",), t_wave, forms=("INVT",)).max() < -0.03
