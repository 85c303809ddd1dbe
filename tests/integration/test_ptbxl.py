"""The PTB-XL reader on the real PTB-XL tables, with waveforms written by wfdb.wrsamp."""

import math
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import wfdb

from crema_jax.data.readers import ptbxl
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records

PTBXL_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF",
               "V1", "V2", "V3", "V4", "V5", "V6"]  # As in PTB-XL's headers.
WAVE_IDS = (1, 8, 39, 108, 162)

# Per-superclass counts over the 200 rows of ptbxl_database_head200.csv. Obtained once
# with a separate script that used only the csv and ast modules (no project code, no
# pandas): for each row, every code of scp_codes whose scp_statements.csv row has
# diagnostic == 1 contributes its diagnostic_class. Rows 1, 8, 39 and 162 were checked
# by hand against scp_statements.csv. 2 rows (17, 20: AFLT, ABQRS, AFIB) have no
# diagnostic code; 20 rows have more than one superclass. No diagnostic code in these
# rows has likelihood 0, so the counts do not depend on that choice.
HEAD200_COUNTS = {"NORM": 133, "MI": 25, "STTC": 26, "CD": 24, "HYP": 13}


def _tables(root: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  shutil.copy(shared_data / "ptbxl" / "ptbxl_database_head200.csv",
              root / ptbxl.DATABASE_CSV)
  shutil.copy(shared_data / "ptbxl" / "scp_statements.csv", root / ptbxl.STATEMENTS_CSV)
  return root


def _wave(ecg_id: int, rate: int, seconds: float = 10.0, leads: int = 12) -> np.ndarray:
  """[time, leads] mV: distinct sines per lead and record, quantized to 1 uV."""
  t = np.arange(int(seconds * rate))[:, None] / rate
  k = np.arange(leads)[None, :]
  x = (0.2 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.1 * ecg_id + 0.3 * k) * t + k)
  return np.round(x * 1000) / 1000


def _write(root: pathlib.Path, filename: str, x: np.ndarray, rate: int,
           names=None) -> pathlib.Path:
  """Writes x: [time, leads] mV as PTB-XL does: format 16, gain 1000/mV, baseline 0."""
  path = root / filename
  path.parent.mkdir(parents=True, exist_ok=True)
  leads = x.shape[1]
  digital = np.where(np.isnan(x), -32768, np.round(x * 1000)).astype(np.int16)
  wfdb.wrsamp(path.name, fs=rate, units=["mV"] * leads,
              sig_name=names or PTBXL_LEADS[:leads], d_signal=digital,
              fmt=["16"] * leads, adc_gain=[1000.0] * leads, baseline=[0] * leads,
              write_dir=str(path.parent))
  return path


def _hr(ecg_id: int) -> str:
  return f"records500/00000/{ecg_id:05d}_hr"


def _lr(ecg_id: int) -> str:
  return f"records100/00000/{ecg_id:05d}_lr"


@pytest.fixture(name="template", scope="module")
def _template(tmp_path_factory, shared_data):
  """A PTB-XL folder: the real tables, waveforms for WAVE_IDS at 500 and 100 Hz."""
  root = _tables(tmp_path_factory.mktemp("template") / "ptbxl", shared_data)
  for ecg_id in WAVE_IDS:
    _write(root, _hr(ecg_id), _wave(ecg_id, 500), 500)
    _write(root, _lr(ecg_id), _wave(ecg_id, 100), 100)
  return root


@pytest.fixture(name="root")
def _root(template, tmp_path):
  """A fresh copy of the template folder, for tests that damage it."""
  return pathlib.Path(shutil.copytree(template, tmp_path / "ptbxl"))


def _edit_csv(root: pathlib.Path, edit) -> None:
  path = root / ptbxl.DATABASE_CSV
  table = pd.read_csv(path, dtype=str, keep_default_na=False)
  edit(table).to_csv(path, index=False)


def label_table(root, min_likelihood: float = 0.0) -> pd.DataFrame:
  """The superclass labels of every CSV row (no waveform read), `valid` False (and
  all-zero labels) where a field does not parse."""
  reader = ptbxl.PTBXL(root, min_likelihood=min_likelihood)
  rows = []
  for key in reader.keys():
    try:
      meta, valid = reader.metadata(key), True
    except records.RecordError:
      meta, valid = {"classes": [], "patient_id": -1, "fold": 0}, False
    labels = records.labels_from_classes(meta["classes"])
    rows.append({"ecg_id": int(key), "patient_id": meta["patient_id"],
                 "fold": meta["fold"], "valid": valid,
                 **{c: int(v) for c, v in zip(records.SUPERCLASSES, labels)}})
  return pd.DataFrame(rows)


def test_label_table_counts(root):
  table = label_table(root)
  assert len(table) == 200
  assert table["ecg_id"].tolist()[:3] == [1, 2, 3]
  assert table["ecg_id"].iloc[-1] == 211
  assert {c: int(table[c].sum()) for c in records.SUPERCLASSES} == HEAD200_COUNTS
  assert table["valid"].all()
  labels = table[list(records.SUPERCLASSES)].to_numpy()
  assert int((labels.sum(axis=1) == 0).sum()) == 2
  assert int((labels.sum(axis=1) > 1).sum()) == 20
  row = table.set_index("ecg_id").loc[162]
  assert (row["patient_id"], row["fold"]) == (9780, 10)
  assert [c for c in records.SUPERCLASSES if row[c]] == ["MI", "STTC", "CD", "HYP"]
  assert table.set_index("ecg_id").loc[[17, 20], list(records.SUPERCLASSES)].sum().sum() == 0


def test_min_likelihood_drops_uncertain_codes(root):
  # ecg 8 is IMI at 35 %, ecg 39 IMI at 15 % (plus NST_, DIG, LNGQT at 100 %).
  table = label_table(root, min_likelihood=50).set_index("ecg_id")
  assert table.loc[8, "MI"] == 0 and table.loc[39, "MI"] == 0
  assert table.loc[39, "STTC"] == 1 and table.loc[1, "NORM"] == 1
  assert table["MI"].sum() < HEAD200_COUNTS["MI"]


def test_parse_helpers(shared_data):
  codes = ptbxl.parse_scp_codes("{'IMI': 15.0, 'LNGQT': 100.0, 'NST_': 100.0, "
                                "'DIG': 100.0, 'ABQRS': 0.0, 'SR': 0.0}")
  assert codes["IMI"] == 15.0 and len(codes) == 6
  statements = ptbxl.read_statements(shared_data / "ptbxl" / "scp_statements.csv")
  assert len(statements) == 44  # Diagnostic statements of PTB-XL 1.0.3.
  assert ptbxl.diagnostic_classes(codes, statements) == (
      ["MI", "STTC"], ["IMI", "NST_", "STTC"])
  assert ptbxl.diagnostic_classes(codes, statements, min_likelihood=20) == (
      ["STTC"], ["NST_", "STTC"])
  assert ptbxl.diagnostic_classes({"SR": 0.0, "AFIB": 100.0}, statements) == ([], [])
  for bad in ("{'NORM': 100.0", "['NORM']", "{'NORM': 'high'}", "", "nan",
              "__import__('os')"):
    with pytest.raises(ValueError, match="malformed scp_codes"):
      ptbxl.parse_scp_codes(bad)


def test_keys_in_csv_order(root):
  source = ptbxl.PTBXL(root)
  keys = source.keys()
  assert len(keys) == 200
  assert keys[:4] == ["1", "2", "3", "4"] and keys[-1] == "211"
  assert source.name == "ptbxl"


@pytest.mark.parametrize("rate,filename", [(500, _hr), (100, _lr)])
def test_read_waveforms(root, rate, filename):
  source = ptbxl.PTBXL(root, sampling_rate=rate)
  for ecg_id in WAVE_IDS:
    record = source.read(str(ecg_id))
    assert record.ecg.shape == (10 * rate, 12) and record.ecg.dtype == np.float32
    expected = _wave(ecg_id, rate)
    np.testing.assert_allclose(record.ecg, expected, atol=1e-6)
    np.testing.assert_allclose(record.to_example()["ecg"], expected, atol=1e-3,
                               rtol=1e-3)
    assert record.sampling_rate == rate
    assert record.record_name == filename(ecg_id)
    assert record.ecg_id == ecg_id and record.source == "ptbxl"


def test_read_metadata(root):
  source = ptbxl.PTBXL(root)
  rec1, rec8, rec39, rec108, rec162 = (source.read(str(i)) for i in WAVE_IDS)
  assert rec1.labels.tolist() == [1, 0, 0, 0, 0]  # NORM.
  assert (rec1.subclasses, rec1.fold, rec1.patient_id) == ("NORM", 3, 15709)
  assert (rec1.age, rec1.sex) == (56.0, records.SEX_FEMALE)
  assert rec1.scp_codes == '{"LVOLT": 0.0, "NORM": 100.0, "SR": 0.0}'
  assert rec8.labels.tolist() == [0, 1, 0, 0, 0] and rec8.subclasses == "IMI"
  assert (rec8.fold, rec8.patient_id, rec8.sex) == (9, 11275, records.SEX_MALE)
  assert rec39.labels.tolist() == [0, 1, 1, 0, 0]
  assert rec39.subclasses == "IMI,NST_,STTC"
  assert rec39.patient_id == 13619  # The same patient as ecgs 17, 20, 26 and 28.
  assert math.isnan(rec108.age) and rec108.fold == 8 and rec108.patient_id == 11810
  assert rec162.labels.tolist() == [0, 1, 1, 1, 1]
  assert rec162.subclasses == "AMI,ISC_,LAFB/LPFB,LVH"
  assert (rec162.fold, rec162.age) == (10, 85.0)


def test_read_resampled_from_500(root):
  record = ptbxl.PTBXL(root, sampling_rate=250).read("8")
  assert record.ecg.shape == (2500, 12) and record.record_name == _hr(8)
  middle = slice(250, -250)
  np.testing.assert_allclose(record.ecg[middle], _wave(8, 500)[::2][middle], atol=2e-3)


def test_bad_target_rate(root):
  with pytest.raises(ValueError, match="cannot resample"):
    ptbxl.PTBXL(root, sampling_rate=0)


def _read_error(root: pathlib.Path, ecg_id: int) -> records.RecordError:
  with pytest.raises(records.RecordError) as info:
    ptbxl.PTBXL(root).read(str(ecg_id))
  return info.value


def test_truncated_dat(root):
  dat = root / (_hr(8) + ".dat")
  dat.write_bytes(dat.read_bytes()[:50_000])
  error = _read_error(root, 8)
  assert error.path == str(dat)
  assert "truncated: 50000 bytes" in error.reason and "needs 120000" in error.reason


def test_missing_dat(root):
  (root / (_hr(8) + ".dat")).unlink()
  error = _read_error(root, 8)
  # The record's header names the file that is missing.
  assert error.path.endswith("00008_hr.hea")
  assert "00008_hr.dat is missing" in error.reason
  error = _read_error(root, 2)  # No waveform written at all.
  assert error.path.endswith("00002_hr.hea") and "missing" in error.reason


def test_header_does_not_parse(root):
  (root / (_hr(8) + ".hea")).write_text("this is not a WFDB header\n")
  error = _read_error(root, 8)
  assert error.path.endswith("00008_hr.hea") and "does not parse" in error.reason


def test_nan_lead(root):
  x = _wave(8, 500)
  x[1000:1200, 8] = np.nan
  _write(root, _hr(8), x, 500)
  error = _read_error(root, 8)
  assert error.reason == "NaN or inf samples in lead(s) V3"


def test_flat_lead(root):
  x = _wave(8, 500)
  x[:, 4] = 0.25
  _write(root, _hr(8), x, 500)
  assert _read_error(root, 8).reason == "flat lead(s) aVL"


def test_wrong_lead_count(root):
  _write(root, _hr(8), _wave(8, 500, leads=11), 500)
  error = _read_error(root, 8)
  assert "not a 12-lead ECG" in error.reason and "missing lead(s) V6" in error.reason


@pytest.mark.parametrize("rate,filename,header_rate,seconds,found", [
    # A 10 s, 500 Hz signal under a 250 Hz header would read as 20 s at half speed.
    (500, _hr, 250, 20.0, "250 Hz over 5000 samples"),
    (500, _hr, 500, 2.0, "500 Hz over 1000 samples"),
    (500, _hr, 500, 12.0, "500 Hz over 6000 samples"),
    (100, _lr, 500, 2.0, "500 Hz over 1000 samples"),
    (100, _lr, 100, 9.0, "100 Hz over 900 samples"),
], ids=["500-at-250", "500-short", "500-long", "100-at-500", "100-short"])
def test_rate_or_length_not_as_published(root, rate, filename, header_rate, seconds,
                                         found):
  _write(root, filename(8), _wave(8, header_rate, seconds), header_rate)
  with pytest.raises(records.RecordError) as info:
    ptbxl.PTBXL(root, sampling_rate=rate).read("8")
  assert info.value.path == str(root / filename(8)) + ".hea"
  published = {500: "PTB-XL records500/ is published at 500 Hz, 5000 samples (10 s)",
               100: "PTB-XL records100/ is published at 100 Hz, 1000 samples (10 s)"}
  assert info.value.reason == f"header says {found}; {published[rate]}"


def test_resampled_rates_check_the_500_hz_records(root):
  _write(root, _hr(8), _wave(8, 250, 20.0), 250)
  with pytest.raises(records.RecordError, match="records500/ is published at 500 Hz"):
    ptbxl.PTBXL(root, sampling_rate=250).read("8")


def test_header_rate_that_does_not_parse(root):
  hea = root / (_hr(8) + ".hea")
  hea.write_text(hea.read_text().replace("12 500 5000", "12 5OO 5000", 1))
  error = _read_error(root, 8)
  assert error.path == str(hea) and "sampling rate '5OO'" in error.reason


def test_signal_equals_wfdb_rdrecord(root, monkeypatch):
  """The header is parsed once (here, not by wfdb) and the signal read with numpy; the
  values are wfdb's physical signal exactly."""
  path = root / _hr(8)
  header = wfdb_io.read_header(path)
  expected = wfdb.rdrecord(str(path)).p_signal
  np.testing.assert_array_equal(wfdb_io.read_physical(header, range(12)), expected)
  parsed = []
  read_header = wfdb_io.read_header
  monkeypatch.setattr(wfdb_io, "read_header",
                      lambda p: (parsed.append(p), read_header(p))[1])
  for name in ("rdheader", "rdrecord", "rdsamp"):
    monkeypatch.setattr(wfdb, name, lambda *a, **k: pytest.fail("wfdb read the record"))
  record = ptbxl.PTBXL(root).read("8")
  assert parsed == [path]
  np.testing.assert_array_equal(record.ecg, expected.astype(np.float32))


def test_malformed_scp_codes(root):
  def edit(table):
    table.loc[table["ecg_id"] == "8", "scp_codes"] = "{'IMI': 35.0, 'SR'"
    return table
  _edit_csv(root, edit)
  error = _read_error(root, 8)
  assert "ecg_id 8" in error.path and "malformed scp_codes" in error.reason
  table = label_table(root).set_index("ecg_id")
  assert not table.loc[8, "valid"] and table.loc[8, "MI"] == 0
  assert table["valid"].sum() == 199


def test_missing_patient_id(root):
  def edit(table):
    table.loc[table["ecg_id"] == "8", "patient_id"] = ""
    return table
  _edit_csv(root, edit)
  error = _read_error(root, 8)
  assert "patient_id" in error.reason


@pytest.mark.parametrize("column", ["strat_fold", "scp_codes", "filename_hr", "ecg_id"])
def test_missing_column(root, column):
  _edit_csv(root, lambda table: table.drop(columns=[column]))
  with pytest.raises(records.SourceError, match=f"'{column}'"):
    ptbxl.PTBXL(root)


def test_missing_statements_column(root):
  path = root / ptbxl.STATEMENTS_CSV
  pd.read_csv(path).drop(columns=["diagnostic_class"]).to_csv(path, index=False)
  with pytest.raises(records.SourceError, match="'diagnostic_class'"):
    ptbxl.PTBXL(root)


def test_no_rows(root):
  _edit_csv(root, lambda table: table.iloc[:0])
  with pytest.raises(records.SourceError, match="has no rows"):
    ptbxl.PTBXL(root)


@pytest.mark.parametrize("filename", [ptbxl.DATABASE_CSV, ptbxl.STATEMENTS_CSV])
def test_no_csv(root, filename):
  (root / filename).unlink()
  with pytest.raises(records.SourceError, match=f"{filename} not found"):
    ptbxl.PTBXL(root)


def test_empty_and_missing_folder(tmp_path):
  with pytest.raises(records.SourceError, match="ptbxl_database.csv not found"):
    ptbxl.PTBXL(tmp_path)
  with pytest.raises(records.SourceError, match="folder not found"):
    ptbxl.PTBXL(tmp_path / "absent")
