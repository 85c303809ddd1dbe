"""MIMIC-IV-ECG: record_list.csv + WFDB files under files/; patient = subject_id."""

import numpy as np
import pytest
import wfdb

from crema_jax.data.readers import mimic_ecg
from crema_jax.data import records

# MIMIC-IV-ECG's headers list aVF before aVL.
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def _wave(rate: float, seconds: float = 10) -> np.ndarray:
  """[time, 12] mV in records.LEADS order; lead k peaks at 0.3 + 0.1 k."""
  t = np.arange(int(seconds * rate))[:, None] / rate
  k = np.arange(12)[None, :]
  return (0.3 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.5 * k) * t)


def _write(root, path, leads=MIMIC_LEADS, seconds=10):
  directory = root / path.rsplit("/", 1)[0]
  directory.mkdir(parents=True, exist_ok=True)
  x = _wave(500, seconds)[:, [records.LEADS.index(n) for n in leads]]
  wfdb.wrsamp(path.rsplit("/", 1)[1], fs=500, units=["mV"] * len(leads),
              sig_name=list(leads), p_signal=x, fmt=["16"] * len(leads),
              adc_gain=[200.0] * len(leads), baseline=[0] * len(leads),
              write_dir=str(directory))


A = "files/p1000/p10000032/s40689238/40689238"
B = "files/p1000/p10000032/s44458630/44458630"
C = "files/p1001/p10010058/s43852530/43852530"
MISSING = "files/p1002/p10020306/s41256771/41256771"
SIX = "files/p1003/p10030487/s45000001/45000001"


@pytest.fixture(name="root", scope="module")
def _root(tmp_path_factory):
  root = tmp_path_factory.mktemp("mimic")
  for path in (A, B, C):
    _write(root, path)
  _write(root, SIX, leads=MIMIC_LEADS[:6])
  (root / "record_list.csv").write_text(
      "subject_id,study_id,file_name,ecg_time,path\n"
      f"10000032,40689238,40689238,2180-07-23 08:44:00,{A}\n"
      f"10000032,44458630,44458630,2180-07-23 09:54:00,{B}\n"
      f"10010058,43852530,43852530,2147-05-03 09:42:00,{C}\n"
      f"10020306,41256771,41256771,2135-05-15 08:36:00,{MISSING}\n"
      f"10030487,45000001,45000001,2135-05-15 08:36:00,{SIX}\n")
  return root


def test_keys_come_from_the_record_list(root):
  assert mimic_ecg.MimicIVECG(root).keys() == sorted([A, B, C, MISSING, SIX])


def test_read_ids_and_signal(root):
  source = mimic_ecg.MimicIVECG(root, sampling_rate=500)
  a, b, c = (source.read(k) for k in (A, B, C))
  assert (a.ecg_id, a.patient_id) == (40689238, 10000032)
  assert b.patient_id == a.patient_id and c.patient_id == 10010058
  assert a.ecg.shape == (5000, 12) and a.source == "mimic_iv_ecg"
  assert a.record_name == A
  # aVF and aVL come back in the standard order (their peaks differ).
  np.testing.assert_allclose(a.ecg, _wave(500), atol=1e-2)
  half = mimic_ecg.MimicIVECG(root, sampling_rate=250).read(A)
  assert half.ecg.shape == (2500, 12)


def test_bad_records(root):
  source = mimic_ecg.MimicIVECG(root)
  with pytest.raises(records.RecordError, match="header file is missing"):
    source.read(MISSING)
  with pytest.raises(records.RecordError, match="not a 12-lead ECG") as e:
    source.read(SIX)
  assert "V1" in e.value.reason


def test_bad_folders(tmp_path):
  with pytest.raises(records.SourceError, match="record_list.csv not found"):
    mimic_ecg.MimicIVECG(tmp_path)
  (tmp_path / "record_list.csv").write_text("subject_id,file_name\n1,2\n")
  with pytest.raises(records.SourceError, match="'study_id', 'path'"):
    mimic_ecg.MimicIVECG(tmp_path)
  (tmp_path / "record_list.csv").write_text(
      f"subject_id,study_id,path\n1,2,{A}\n1,3,{A}\n")
  with pytest.raises(records.SourceError, match="more than once"):
    mimic_ecg.MimicIVECG(tmp_path)


@pytest.mark.parametrize("subject_id, study_id, column, bad", [
    ("p10000032", "40689238", "subject_id", "p10000032"),
    ("10000032", "4068923.5", "study_id", "4068923.5"),
    ("-10000032", "40689238", "subject_id", "-10000032"),
], ids=["subject_id", "study_id", "negative"])
def test_non_integer_ids_are_source_errors(tmp_path, subject_id, study_id, column,
                                           bad):
  (tmp_path / "record_list.csv").write_text(
      f"subject_id,study_id,path\n10010058,43852530,{C}\n{subject_id},{study_id},{A}\n")
  with pytest.raises(records.SourceError) as e:
    mimic_ecg.MimicIVECG(tmp_path)
  assert str(e.value).startswith(str(tmp_path / "record_list.csv"))
  assert f"{column!r}" in str(e.value) and f"e.g. {bad!r}" in str(e.value)
