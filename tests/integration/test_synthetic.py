"""The synthetic PTB-XL writer: layout, determinism, physiology, labels."""

import dataclasses
import filecmp

import numpy as np
import pandas as pd
import pytest
import wfdb

from crema_jax.data.readers import ptbxl
from crema_jax.data import records
from crema_jax.data import synthetic


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


def _patient(classes, seed=0):
  base = synthetic._draw_patient(np.random.default_rng(seed), 1)  # pylint: disable=protected-access
  return dataclasses.replace(base, classes=classes, mi_territory="anterior",
                             severity=1.0)  # The full effect of each class.


def _mean_over_patients(classes, feature, n=12):
  values = []
  for seed in range(n):
    rng = np.random.default_rng(100 + seed)
    values.append(feature(synthetic.synthesize_ecg(_patient(classes, seed), rng)))
  return float(np.mean(values))


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
