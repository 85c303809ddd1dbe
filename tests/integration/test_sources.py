"""The reader registry: every `data.source` builds from a data config."""

import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file
import wfdb

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
                                  "samitrop", "dicom", "ecg_files"}


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


# One record of each WFDB-based reader's published layout: (key, record path).
_WFDB_LAYOUTS = {
    "ptbxl": ("1", "records500/00000/00001_hr"),
    "wfdb": ("g1/A1", "g1/A1"),
    "cinc": ("g1/A1", "g1/A1"),
    "mimic_iv_ecg": ("files/p1000/p10000032/s40689238/40689238",
                     "files/p1000/p10000032/s40689238/40689238"),
}


@pytest.mark.parametrize("reader", sorted(_WFDB_LAYOUTS))
def test_wfdb_readers_refuse_a_rate_that_does_not_parse(reader, shared_data, tmp_path):
  """Every reader built on wfdb_io gets its header checks: wfdb would read '5OO' Hz as
  its default of 250 Hz."""
  key, record = _WFDB_LAYOUTS[reader]
  if reader == "ptbxl":
    shutil.copy(shared_data / "ptbxl" / "ptbxl_database_head200.csv",
                tmp_path / "ptbxl_database.csv")
    shutil.copy(shared_data / "ptbxl" / "scp_statements.csv", tmp_path)
  if reader == "mimic_iv_ecg":
    (tmp_path / "record_list.csv").write_text(
        f"subject_id,study_id,file_name,ecg_time,path\n10000032,40689238,40689238,"
        f"2180-07-23 08:44:00,{record}\n")
  path = tmp_path / record
  path.parent.mkdir(parents=True)
  t = np.arange(5000)[:, None] / 500
  wfdb.wrsamp(path.name, fs=500, units=["mV"] * 12, sig_name=list(records.LEADS),
              p_signal=np.sin(2 * np.pi * (1 + np.arange(12)) * t), fmt=["16"] * 12,
              write_dir=str(path.parent))
  source = registry.build_source(_config(source=reader, name=reader,
                                        raw_dir=str(tmp_path)))
  assert source.read(key).ecg.shape == (5000, 12)
  hea = path.with_name(path.name + ".hea")
  hea.write_text(hea.read_text().replace(" 12 500 5000", " 12 5OO 5000", 1))
  with pytest.raises(records.RecordError) as info:
    source.read(key)
  assert info.value.path == str(hea)
  assert "sampling rate '5OO' is not a positive number" in info.value.reason
