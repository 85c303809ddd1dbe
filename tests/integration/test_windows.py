"""Long recordings cut into windows: MIT-BIH record 100 (30 min, 2 leads, 360 Hz)."""

import shutil

import numpy as np
import pytest
import wfdb

from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import windows
from crema_jax.data import records
from crema_jax.data import signal

TWO_LEADS = dict(leads=("II", "V5"), lead_aliases={"MLII": "II"})


@pytest.fixture(name="mitdb", scope="module")
def _mitdb(shared_data, tmp_path_factory):
  root = tmp_path_factory.mktemp("mitdb")
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", root)
  return root


def test_refused_for_12_lead_use(mitdb):
  source = windows.Windowed(wfdb_folder.WFDBFolder(mitdb, name="mitdb"), 10)
  with pytest.raises(records.RecordError, match="not a 12-lead ECG") as e:
    source.read("100#w0")
  assert "MLII" in e.value.reason and "aVR" in e.value.reason


def test_reduced_lead_windows(mitdb):
  base = wfdb_folder.WFDBFolder(mitdb, name="mitdb", **TWO_LEADS)
  source = windows.Windowed(base, window_seconds=10, stride_seconds=10)
  assert base.duration("100") == pytest.approx(650000 / 360)
  keys = source.keys()
  assert len(keys) == 180 and keys[0] == "100#w0" and keys[-1] == "100#w179"
  w3 = source.read("100#w3")
  assert w3.ecg.shape == (5000, 2) and w3.record_name == "100#w3"
  # The same window read straight from the whole file with wfdb and resampled.
  whole = wfdb.rdrecord(str(mitdb / "100")).p_signal
  expected = signal.resample(whole, 360, 500)[15000:20000]
  np.testing.assert_allclose(w3.ecg, expected, atol=2e-3)
  w4 = source.read("100#w4")
  assert w3.patient_id == w4.patient_id == base.read("100").patient_id
  assert w3.ecg_id != w4.ecg_id


def test_overlapping_stride_and_short_records_pass_whole(mitdb):
  base = wfdb_folder.WFDBFolder(mitdb, name="mitdb", **TWO_LEADS)
  overlap = windows.Windowed(base, window_seconds=10, stride_seconds=5)
  assert len(overlap.keys()) == 360  # floor((1805.6 - 10) / 5) + 1.
  np.testing.assert_allclose(overlap.read("100#w1").ecg[:2500],
                             overlap.read("100#w0").ecg[2500:], atol=1e-3)
  whole = windows.Windowed(base, window_seconds=10, long_seconds=3600)
  assert whole.keys() == ["100"]


def test_windows_need_spans(tmp_path):
  class NoSpans:
    name = "x"
  with pytest.raises(TypeError, match="duration"):
    windows.Windowed(NoSpans(), 10)
