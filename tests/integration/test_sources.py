"""The reader registry: every `data.source` builds from a data config."""

import shutil

import pytest
from pydicom.data import get_testdata_file

from configs import common
from crema_jax.data.readers import dicom
from crema_jax.data.readers import registry
from crema_jax.data.readers import windows
from crema_jax.data import records


def _config(**fields):
  config = common.data_config()
  config.update(fields)
  return config


def test_every_reader_is_registered():
  assert set(registry.READERS) == {"ptbxl", "wfdb", "cinc", "mimic_iv_ecg", "code15",
                                  "samitrop", "dicom"}


def test_reduced_lead_windows_from_config(shared_data, tmp_path):
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", tmp_path)
  config = _config(source="wfdb", name="mitdb", raw_dir=str(tmp_path),
                   leads=("V5", "II"), lead_aliases="MLII=II", window_seconds=10.0,
                   window_stride_seconds=20.0)
  source = registry.build_source(config)
  assert isinstance(source, windows.Windowed) and len(source.keys()) == 90
  record = source.read("100#w2")  # Starts at 40 s.
  assert record.ecg.shape == (5000, 2) and source.leads == ("II", "V5")
  twelve = registry.build_source(_config(source="wfdb", name="mitdb",
                                        raw_dir=str(tmp_path), window_seconds=10.0))
  with pytest.raises(records.RecordError, match="not a 12-lead ECG"):
    twelve.read("100#w2")


def test_dicom_from_config(tmp_path):
  shutil.copy(get_testdata_file("waveform_ecg.dcm"), tmp_path / "a.dcm")
  source = registry.build_source(_config(source="dicom", name="hospital",
                                        raw_dir=str(tmp_path)))
  assert isinstance(source, dicom.DicomECG) and source.read("a.dcm").source == "hospital"


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match="not one of"):
    registry.build_source(_config(source="edf", raw_dir=str(tmp_path)))
  with pytest.raises(ValueError, match="raw_dir is empty"):
    registry.build_source(_config(source="wfdb"))
  with pytest.raises(ValueError, match="subset of"):
    registry.build_source(_config(source="dicom", raw_dir=str(tmp_path), leads=("X",)))
  with pytest.raises(ValueError, match="NAME=LEAD"):
    registry.lead_aliases("MLII")
