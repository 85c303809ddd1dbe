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


def _copy_100(shared_data, root, header=lambda text: text, samples=lambda data: data):
  """MIT-BIH record 100 written into `root`, its header text and signal bytes passed
  through `header` and `samples` (new, writable files)."""
  source = shared_data / "mitdb"
  (root / "100.hea").write_text(header((source / "100.hea").read_text()))
  (root / "100.dat").write_bytes(samples((source / "100.dat").read_bytes()))


def _skips(source) -> list[records.RecordError]:
  """The errors of reading every key, one per entry of prepare's `skipped` list."""
  errors = []
  for key in source.keys():
    try:
      source.read(key)
    except records.RecordError as e:
      errors.append(e)
  return errors


def test_refused_for_12_lead_use(mitdb):
  source = windows.Windowed(wfdb_folder.WFDBFolder(mitdb, name="mitdb"), 10)
  assert source.keys() == ["100"]  # Not 180 windows that all fail alike.
  with pytest.raises(records.RecordError, match="not a 12-lead ECG") as e:
    source.read("100")
  assert "MLII" in e.value.reason and "aVR" in e.value.reason
  with pytest.raises(records.RecordError, match="not a 12-lead ECG"):
    source.read("100#w3")  # A window asked for by name fails the same way.


def test_truncated_recording_is_one_skip(shared_data, tmp_path):
  _copy_100(shared_data, tmp_path, samples=lambda data: data[:len(data) // 2])
  source = windows.Windowed(wfdb_folder.WFDBFolder(tmp_path, **TWO_LEADS), 10)
  assert source.keys() == ["100"]
  (tmp_path / "100.dat").unlink()  # The error found when listing is the one reported.
  (error,) = _skips(source)
  assert error.path == str(tmp_path / "100.dat") and "truncated" in error.reason


def test_a_bad_window_is_only_that_window(shared_data, tmp_path):
  """The first 12 s flat (the first window, read when listing, fails on its samples):
  the recording is still cut: window 0 is skipped, window 1 is read."""
  # Format 212 packs a frame of 2 samples in 3 bytes; 1024 (the baseline) is 0 mV.
  flat = b"\x00\x44\x00" * (12 * 360)
  _copy_100(shared_data, tmp_path, samples=lambda data: flat + data[len(flat):])
  source = windows.Windowed(wfdb_folder.WFDBFolder(tmp_path, **TWO_LEADS), 10)
  assert len(source.keys()) == 180
  with pytest.raises(records.RecordError, match="flat lead"):
    source.read("100#w0")
  assert source.read("100#w1").ecg.shape == (5000, 2)


def test_rate_that_cannot_be_resampled_names_the_file(shared_data, tmp_path):
  _copy_100(shared_data, tmp_path)
  base = wfdb_folder.WFDBFolder(tmp_path, **TWO_LEADS)
  listed_healthy = windows.Windowed(base, 10)
  odd_rate = lambda text: text.replace("100 2 360 ", "100 2 359.9 ", 1)
  _copy_100(shared_data, tmp_path, header=odd_rate)  # 359.9 -> 500 Hz: 5000/3599.
  with pytest.raises(records.RecordError, match="cannot resample 359.9 Hz") as e:
    listed_healthy.read("100#w3")
  assert e.value.path == str(tmp_path / "100")
  source = windows.Windowed(base, 10)
  assert source.keys() == ["100"]
  (error,) = _skips(source)
  assert error.path == str(tmp_path / "100") and "359.9 Hz" in error.reason


def test_windows_shorter_than_min_seconds_are_refused(mitdb):
  with pytest.raises(ValueError, match="shorter than min_seconds"):
    windows.Windowed(wfdb_folder.WFDBFolder(mitdb, min_seconds=5, **TWO_LEADS), 4)


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
