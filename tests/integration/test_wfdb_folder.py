"""The generic WFDB folder reader: lead mapping, resampling, header fields, bad records."""

import math
import pathlib
import shutil

import numpy as np
import pytest
import wfdb
from wfdb.io.convert import matlab

from crema_jax.data.readers import wfdb_folder
from crema_jax.data import records

SECONDS = 10


def _standard_wave(rate: float) -> np.ndarray:
  """[time, 12] mV in records.LEADS order; lead k: (0.3 + 0.1 k) sin(2 pi (1 + 0.5 k) t)."""
  t = np.arange(int(round(SECONDS * rate)))[:, None] / rate
  k = np.arange(12)[None, :]
  return (0.3 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.5 * k) * t)


def _write(directory: pathlib.Path, name: str, rate: float, names: list[str],
           comments=(), units: str = "mV", scale: float = 1.0) -> None:
  """Writes the standard wave with its columns in the order of `names`."""
  directory.mkdir(parents=True, exist_ok=True)
  x = _standard_wave(rate)
  columns = [records.LEADS.index(n) for n in _canonical(names)]
  wfdb.wrsamp(name, fs=rate, units=[units] * 12, sig_name=names,
              p_signal=x[:, columns] * scale, fmt=["16"] * 12, comments=list(comments),
              write_dir=str(directory))


def _canonical(names):
  table = {"avr": "aVR", "avl": "aVL", "avf": "aVF", "di": "I", "dii": "II",
           "diii": "III"}
  return [table.get(n.lower(), n.upper()) for n in names]


NAMES_257 = ["v1", "avr", "I", "ii", "V3", "AVL", "aVF", "V2", "III", "v4", "V6", "v5"]
NAMES_1000 = ["V6", "v5", "V4", "v3", "V2", "v1", "AVF", "avl", "aVR", "DIII", "DII",
              "DI"]


@pytest.fixture(name="template", scope="module")
def _template(tmp_path_factory):
  """g1/a257 (257 Hz, mV), g2/b1000 (1000 Hz, uV) and c500m (500 Hz, .mat)."""
  root = tmp_path_factory.mktemp("template") / "wfdb"
  _write(root / "g1", "a257", 257, NAMES_257, ["Age: 54", "Sex: Male"])
  _write(root / "g2", "b1000", 1000, NAMES_1000, ["Age: 71", "Sex: F", "Dx: 164889003"],
         units="uV", scale=1000.0)
  scratch = tmp_path_factory.mktemp("mat")
  _write(scratch, "c500", 500, list(records.LEADS), ["Age: NaN", "Sex: Unknown",
                                                      "Patient: 1234"])
  with pytest.MonkeyPatch.context() as patch:
    # wfdb_to_mat writes c500m.mat and c500m.hea (format 16, byte offset) into the cwd.
    patch.chdir(scratch)
    matlab.wfdb_to_mat("c500")
  for suffix in (".mat", ".hea"):
    shutil.move(scratch / f"c500m{suffix}", root / f"c500m{suffix}")
  return root


@pytest.fixture(name="root")
def _root(template, tmp_path):
  return pathlib.Path(shutil.copytree(template, tmp_path / "wfdb"))


def test_keys_sorted_relative_paths(template):
  source = wfdb_folder.WFDBFolder(template)
  assert source.keys() == ["c500m", "g1/a257", "g2/b1000"]
  assert (template / "c500m.hea").read_text().splitlines()[1].startswith("c500m.mat")


@pytest.mark.parametrize("key,rate", [("g1/a257", 257), ("g2/b1000", 1000),
                                      ("c500m", 500)])
def test_read_in_standard_order_at_500(template, key, rate):
  record = wfdb_folder.WFDBFolder(template, sampling_rate=500, name="cinc").read(key)
  assert record.ecg.shape == (5000, 12) and record.ecg.dtype == np.float32
  assert record.sampling_rate == 500 and record.source == "cinc"
  assert record.record_name == key
  expected = _standard_wave(500)
  middle = slice(250, -250)  # Resampling filters ring a little at the edges.
  np.testing.assert_allclose(record.ecg[middle], expected[middle],
                             atol=1e-3 if rate == 500 else 2e-2)
  # Lead k peaks at 0.3 + 0.1 k mV: a wrong lead order cannot pass.
  np.testing.assert_allclose(np.abs(record.ecg[middle]).max(axis=0),
                             0.3 + 0.1 * np.arange(12), atol=2e-2)
  assert record.labels.tolist() == [0, 0, 0, 0, 0] and record.fold == 0


def test_read_at_native_rate_is_exact(template):
  record = wfdb_folder.WFDBFolder(template, sampling_rate=257).read("g1/a257")
  assert record.ecg.shape == (2570, 12)
  np.testing.assert_allclose(record.ecg, _standard_wave(257), atol=1e-4)


def test_age_sex_and_ids_from_header(template):
  source = wfdb_folder.WFDBFolder(template)
  a, b, c = (source.read(k) for k in ("g1/a257", "g2/b1000", "c500m"))
  assert (a.age, a.sex) == (54.0, records.SEX_MALE)
  assert (b.age, b.sex) == (71.0, records.SEX_FEMALE)
  assert math.isnan(c.age) and c.sex == records.SEX_UNKNOWN
  assert c.patient_id == 1234  # From the `# Patient: 1234` comment.
  # No patient information: each record is its own patient, with a stable id.
  assert a.patient_id == wfdb_folder.stable_id("wfdb:g1/a257") == 7989117983310358532
  assert b.patient_id not in (a.patient_id, c.patient_id)
  # ecg_id is a 63-bit hash of the relative path (hashlib, so the same in every run).
  assert a.ecg_id == 8781133694412540161
  assert len({a.ecg_id, b.ecg_id, c.ecg_id}) == 3
  assert all(0 <= r.ecg_id < 2**63 for r in (a, b, c))


def test_patient_ids_from_csv(root, tmp_path):
  csv = tmp_path / "patients.csv"
  csv.write_text("file,subject\n"
                 "g1/a257,17\n"
                 "b1000,p42\n"          # File stem only, non-numeric id.
                 "c500m.hea,p42\n"      # Path with extension.
                 "unused/x,99.0\n")
  source = wfdb_folder.WFDBFolder(root, patient_csv=csv, record_column="file",
                                  patient_column="subject")
  a, b, c = (source.read(k) for k in ("g1/a257", "g2/b1000", "c500m"))
  assert a.patient_id == 17
  assert b.patient_id == c.patient_id  # The CSV wins over c500m's header comment.
  assert b.patient_id != 1234 and 0 <= b.patient_id < 2**63


def test_patient_csv_problems(root, tmp_path):
  csv = tmp_path / "patients.csv"
  csv.write_text("record,subject_id\ng1/a257,17\n")
  with pytest.raises(records.SourceError, match="'patient_id'"):
    wfdb_folder.WFDBFolder(root, patient_csv=csv)
  with pytest.raises(records.SourceError, match="absent.csv not found: the patient CSV"):
    wfdb_folder.WFDBFolder(root, patient_csv=tmp_path / "absent.csv")


def test_mitdb_record_100_refused(shared_data):
  source = wfdb_folder.WFDBFolder(shared_data / "mitdb")
  assert source.keys() == ["100"]
  with pytest.raises(records.RecordError) as info:
    source.read("100")
  assert info.value.path.endswith("mitdb/100.hea")
  assert "not a 12-lead ECG" in info.value.reason
  assert "record has MLII, V5" in info.value.reason
  assert "missing lead(s) I, II, III" in info.value.reason


def test_header_does_not_parse(root):
  (root / "g1" / "a257.hea").write_text("a257 twelve leads\n")
  with pytest.raises(records.RecordError, match="header does not parse") as info:
    wfdb_folder.WFDBFolder(root).read("g1/a257")
  assert info.value.path == str(root / "g1" / "a257.hea")


def test_truncated_dat(root):
  dat = root / "g2" / "b1000.dat"
  dat.write_bytes(dat.read_bytes()[:1000])
  with pytest.raises(records.RecordError, match="truncated: 1000 bytes") as info:
    wfdb_folder.WFDBFolder(root).read("g2/b1000")
  assert info.value.path == str(dat)


def test_missing_dat(root):
  (root / "g1" / "a257.dat").unlink()
  with pytest.raises(records.RecordError, match="signal file is missing"):
    wfdb_folder.WFDBFolder(root).read("g1/a257")


def test_rate_that_cannot_be_resampled(root):
  _write(root, "odd", 499.9, list(records.LEADS))
  with pytest.raises(records.RecordError, match="cannot resample 499.9 Hz to 500 Hz"):
    wfdb_folder.WFDBFolder(root).read("odd")


def test_folder_problems(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "notes.txt").write_text("no records here")
  with pytest.raises(records.SourceError, match="no WFDB records"):
    wfdb_folder.WFDBFolder(tmp_path)
  with pytest.raises(records.SourceError, match="folder not found"):
    wfdb_folder.WFDBFolder(tmp_path / "absent")
