"""PhysioNet/CinC 2020-2021: WFDB headers with `# Dx:` SNOMED codes and `.mat` signals."""

import json
import math

import numpy as np
import pytest
import scipy.io

from crema_jax.data.readers import cinc
from crema_jax.data import records

# PTB-XL's copy in the Challenge data names its leads like this; others use AVR etc.
NAMES = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SHUFFLED = ["V6", "V5", "V4", "V3", "V2", "V1", "AVF", "AVL", "AVR", "III", "II", "I"]


def _wave(rate: float, seconds: float) -> np.ndarray:
  """[time, 12] mV in records.LEADS order; lead k peaks at 0.3 + 0.1 k."""
  t = np.arange(int(round(seconds * rate)))[:, None] / rate
  k = np.arange(12)[None, :]
  return (0.3 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.5 * k) * t)


def write_challenge_record(directory, name, rate, seconds, comments, names=NAMES,
                           gain=1000, write_mat=True):
  """A record exactly as the Challenge publishes it: `.hea` text + savemat({'val'})."""
  directory.mkdir(parents=True, exist_ok=True)
  x = _wave(rate, seconds)[:, [records.LEADS.index(cinc_name(n)) for n in names]]
  val = np.round(x * gain).astype(np.int16).T  # [leads, time]
  lines = [f"{name} {len(names)} {rate} {val.shape[1]} 05-Feb-2020 11:39:16"]
  for lead, row in zip(names, val):
    checksum = int(np.sum(row.astype(np.int64))) % 65536
    checksum = checksum - 65536 if checksum >= 32768 else checksum
    lines.append(f"{name}.mat 16+24 {gain}/mV 16 0 {row[0]} {checksum} 0 {lead}")
  lines += [f"# {c}" for c in comments]
  (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
  if write_mat:
    scipy.io.savemat(directory / f"{name}.mat", {"val": val})
  return x


def cinc_name(name):
  return {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(name, name)


@pytest.fixture(name="root", scope="module")
def _root(tmp_path_factory):
  root = tmp_path_factory.mktemp("cinc")
  write_challenge_record(root / "cpsc_2018" / "g1", "A0001", 500, 10,
                         ["Age: 74", "Sex: Male", "Dx: 59118001,164889003", "Rx: Unknown"])
  write_challenge_record(root / "st_petersburg" / "g1", "I0001", 257, 12,
                         ["Age: 65", "Sex: Female", "Dx: 426783006"], names=SHUFFLED)
  write_challenge_record(root / "ptb-xl" / "g1", "HR00001", 1000, 10,
                         ["Age: NaN", "Sex: Unknown", "Dx: 164865005,999999999"])
  write_challenge_record(root / "georgia" / "g1", "E00001", 500, 10,
                         ["Age: 50", "Sex: F", "Dx: 426783006,164934002"])
  write_challenge_record(root / "georgia" / "g1", "E00002", 500, 10,
                         ["Age: 50", "Sex: F", "Dx: 426783006"], write_mat=False)
  write_challenge_record(root / "ningbo" / "g1", "JS00001", 500, 60,
                         ["Age: 40", "Sex: Male", "Dx: 164873001"])
  return root


def test_keys(root):
  assert cinc.CinC(root).keys() == [
      "cpsc_2018/g1/A0001", "georgia/g1/E00001", "georgia/g1/E00002",
      "ningbo/g1/JS00001", "ptb-xl/g1/HR00001", "st_petersburg/g1/I0001"]


@pytest.mark.parametrize("key,rate,seconds", [("cpsc_2018/g1/A0001", 500, 10),
                                              ("st_petersburg/g1/I0001", 257, 12),
                                              ("ptb-xl/g1/HR00001", 1000, 10)])
def test_signal_in_mv_standard_order_at_500(root, key, rate, seconds):
  record = cinc.CinC(root, sampling_rate=500).read(key)
  assert record.ecg.shape == (500 * seconds, 12) and record.ecg.dtype == np.float32
  middle = slice(250, -250)
  expected = _wave(500, seconds)
  np.testing.assert_allclose(record.ecg[middle], expected[middle],
                             atol=2e-3 if rate == 500 else 2e-2)
  np.testing.assert_allclose(np.abs(record.ecg[middle]).max(axis=0),
                             0.3 + 0.1 * np.arange(12), atol=2e-2)


def test_dx_codes_labels_and_demographics(root):
  source = cinc.CinC(root)
  a = source.read("cpsc_2018/g1/A0001")
  assert json.loads(a.scp_codes) == {"59118001": 1.0, "164889003": 1.0}
  assert a.subclasses == "RBBB,AF"
  assert a.labels.tolist() == records.labels_from_classes(["CD"]).tolist()
  assert (a.age, a.sex) == (74.0, records.SEX_MALE) and a.notes == ()
  norm = source.read("st_petersburg/g1/I0001")
  assert norm.labels.tolist() == records.labels_from_classes(["NORM"]).tolist()
  assert norm.sex == records.SEX_FEMALE
  # Sinus rhythm with a T-wave abnormality is not NORM (and TAb has no superclass).
  e = source.read("georgia/g1/E00001")
  assert e.labels.sum() == 0 and e.subclasses == "SNR,TAb"
  lvh = source.read("ningbo/g1/JS00001")
  assert lvh.labels.tolist() == records.labels_from_classes(["HYP"]).tolist()


def test_unknown_codes_are_kept_and_reported(root):
  record = cinc.CinC(root).read("ptb-xl/g1/HR00001")
  assert json.loads(record.scp_codes) == {"164865005": 1.0, "999999999": 1.0}
  assert record.labels.tolist() == records.labels_from_classes(["MI"]).tolist()
  assert record.notes == ("unknown Dx code 999999999",)
  assert math.isnan(record.age) and record.sex == records.SEX_UNKNOWN


def test_missing_mat_is_a_record_error(root):
  with pytest.raises(records.RecordError,
                     match=r"signal file \S+E00002.mat is missing") as e:
    cinc.CinC(root).read("georgia/g1/E00002")
  assert e.value.path.endswith("E00002.hea")  # The header naming the missing file.


def test_mat_that_disagrees_with_header(root, tmp_path):
  write_challenge_record(tmp_path / "x", "A1", 500, 10, ["Dx: 426783006"])
  scipy.io.savemat(tmp_path / "x" / "A1.mat", {"val": np.zeros((12, 10), np.int16)})
  with pytest.raises(records.RecordError, match="declares 5000"):
    cinc.CinC(tmp_path).read("x/A1")
  scipy.io.savemat(tmp_path / "x" / "A1.mat", {"other": np.zeros((12, 10), np.int16)})
  with pytest.raises(records.RecordError, match="no 2-D array 'val'"):
    cinc.CinC(tmp_path).read("x/A1")


def test_span_matches_the_whole_record(root):
  source = cinc.CinC(root, sampling_rate=500)
  whole = source.read("ningbo/g1/JS00001").ecg
  part = source.read_span("ningbo/g1/JS00001", 20.0, 30.0).ecg
  assert part.shape == (5000, 12)
  np.testing.assert_allclose(part, whole[10000:15000], atol=1e-3)
  assert source.duration("ningbo/g1/JS00001") == 60.0


def test_reduced_leads(root):
  record = cinc.CinC(root, leads=("I", "II")).read("st_petersburg/g1/I0001")
  assert record.ecg.shape == (6000, 2)
  np.testing.assert_allclose(np.abs(record.ecg[250:-250]).max(axis=0), [0.3, 0.4],
                             atol=2e-2)


def test_parse_dx():
  assert cinc.parse_dx(" 59118001, 164889003,59118001") == ["59118001", "164889003"]
  assert cinc.parse_dx("Unknown") == [] and cinc.parse_dx(None) == []


def test_long_records_cut_into_windows(root):
  from crema_jax.data.readers import windows  # pylint: disable=g-import-not-at-top
  source = windows.Windowed(cinc.CinC(root), window_seconds=10, long_seconds=30)
  keys = source.keys()
  assert [k for k in keys if "#w" in k] == [f"ningbo/g1/JS00001#w{i}" for i in range(6)]
  assert "cpsc_2018/g1/A0001" in keys  # 10 s records pass whole.
  whole = cinc.CinC(root).read("ningbo/g1/JS00001")
  w2 = source.read("ningbo/g1/JS00001#w2")
  np.testing.assert_allclose(w2.ecg, whole.ecg[10000:15000], atol=1e-3)
  assert w2.patient_id == whole.patient_id and w2.ecg_id != whole.ecg_id
  assert w2.scp_codes == whole.scp_codes  # Every window keeps the record's labels.


def test_matlab4_files_as_the_challenge_ships_them(tmp_path):
  """The Challenge's `.mat` files are MATLAB 4 ('16+24': int16 samples after a 24-byte
  matrix header), read here like a format-16 file; the same as scipy reads them."""
  x = write_challenge_record(tmp_path / "v4", "A1", 500, 10, ["Dx: 426783006"])
  write_challenge_record(tmp_path / "v5", "A1", 500, 10, ["Dx: 426783006"])
  val = scipy.io.loadmat(tmp_path / "v4" / "A1.mat")["val"]
  scipy.io.savemat(tmp_path / "v4" / "A1.mat", {"val": val}, format="4")
  assert (tmp_path / "v4" / "A1.mat").stat().st_size == 24 + val.size * 2
  source = cinc.CinC(tmp_path)
  v4, v5 = source.read("v4/A1"), source.read("v5/A1")
  np.testing.assert_array_equal(v4.ecg, v5.ecg)
  np.testing.assert_allclose(v4.ecg, x, atol=1e-3)
  # The span of a MATLAB 4 file reads only its frames.
  np.testing.assert_array_equal(source.read_span("v4/A1", 2.0, 8.0).ecg,
                                v4.ecg[1000:4000])


def test_matlab4_file_that_is_not_what_the_header_says(tmp_path):
  write_challenge_record(tmp_path / "x", "A1", 500, 10, ["Dx: 426783006"])
  val = scipy.io.loadmat(tmp_path / "x" / "A1.mat")["val"]
  scipy.io.savemat(tmp_path / "x" / "A1.mat", {"val": val[:11].astype(np.float64)},
                   format="4")
  with pytest.raises(records.RecordError,
                     match=r"not the MATLAB 4 int16 \[12 x 5000\]"):
    cinc.CinC(tmp_path).read("x/A1")


@pytest.mark.parametrize("old,new,reason", [
    (" 12 500 5000 ", " 12 500Hz 5000 ", "sampling rate '500Hz' is not a positive"),
    ("16+24 1000/mV", "16+24 0/mV", "gain 0: uncalibrated"),
    ("16+24 1000/mV", "16+24 1000/mmHg", "is in 'mmHg', not V, mV or uV"),
], ids=["rate", "gain", "units"])
def test_damaged_challenge_header(tmp_path, old, new, reason):
  write_challenge_record(tmp_path / "x", "A1", 500, 10, ["Dx: 426783006"])
  hea = tmp_path / "x" / "A1.hea"
  hea.write_text(hea.read_text().replace(old, new))
  with pytest.raises(records.RecordError) as info:
    cinc.CinC(tmp_path).read("x/A1")
  assert info.value.path == str(hea) and reason in info.value.reason


def test_header_without_sample_count(tmp_path):
  """MATLAB 4: the length follows from the file size; MATLAB 5: refused, as its size
  does not tell (and reading it to find out could hold a long recording whole)."""
  write_challenge_record(tmp_path / "x", "A1", 500, 10, ["Dx: 426783006"])
  hea = tmp_path / "x" / "A1.hea"
  first, *rest = hea.read_text().splitlines()
  assert first == "A1 12 500 5000 05-Feb-2020 11:39:16"
  hea.write_text("\n".join(["A1 12 500"] + rest) + "\n")
  with pytest.raises(records.RecordError, match="no sample count") as info:
    cinc.CinC(tmp_path).read("x/A1")
  assert info.value.path == str(hea)
  val = scipy.io.loadmat(tmp_path / "x" / "A1.mat")["val"]
  scipy.io.savemat(tmp_path / "x" / "A1.mat", {"val": val}, format="4")
  assert cinc.CinC(tmp_path).duration("x/A1") == 10.0
  assert cinc.CinC(tmp_path).read("x/A1").ecg.shape == (5000, 12)
