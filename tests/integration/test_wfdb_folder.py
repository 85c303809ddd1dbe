"""The generic WFDB folder reader: lead mapping, resampling, header fields, bad records."""

import math
import pathlib
import shutil

import numpy as np
import pytest
import wfdb
from wfdb.io.convert import matlab

from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import wfdb_io
from crema_jax.data.readers import windows
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
  with pytest.raises(records.RecordError, match=r"a257.hea: signal file \S+a257.dat is missing"):
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


# Header damage. Each case edits one field of g1/a257.hea; wfdb.rdheader would read all
# of them without complaint (a rate of "257Hz" as 250 Hz, gain 0 as 200/mV, ...).


def _edit_header(root: pathlib.Path, key: str, edit) -> pathlib.Path:
  """Rewrites the header of `key`: `edit(lines) -> lines` (comments included)."""
  path = root / f"{key}.hea"
  path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
  return path


def _edit_field(lines, signal: str | None, field: int, value: str | None):
  """`lines` with whitespace field `field` of the record line (signal None) or of the
  line of `signal` set to `value` (None: the line cut before that field)."""
  line = 0 if signal is None else next(
      i for i, text in enumerate(lines) if i and text.split()[-1] == signal)
  fields = lines[line].split()
  fields = fields[:field] if value is None else (
      fields[:field] + [value] + fields[field + 1:])
  return lines[:line] + [" ".join(fields)] + lines[line + 1:]


@pytest.mark.parametrize("signal,field,value,reason", [
    (None, 2, "257Hz", "header does not parse: sampling rate '257Hz' is not a"),
    (None, 2, "0", "sampling rate '0' is not a positive number"),
    (None, 2, None, "gives no sampling rate"),
    (None, 3, "2570.0", "sample count '2570.0' is not a non-negative integer"),
    ("V3", 2, "0/mV", "signal V3 has gain 0: uncalibrated"),
    ("V3", 2, "-200/mV", "signal V3 has gain -200: not a positive number"),
    ("V3", 2, "abc/mV", "header does not parse: gain 'abc/mV' is not GAIN"),
    ("V3", 2, "200(x)/mV", "gain '200(x)/mV' is not GAIN"),
    ("V3", 2, "200/mmHg", "signal V3 is in 'mmHg', not V, mV or uV"),
    ("V3", 4, "zero", "ADC zero 'zero' is not an integer"),
    ("V3", 1, "17", "format '17' is not a WFDB format"),
    ("V3", 8, "V5", "not a 12-lead ECG: lead V5 appears twice"),
    ("V3", 8, "V7", "missing lead(s) V3"),
], ids=["rate", "rate0", "no-rate", "count", "gain0", "gain-", "gain-text",
        "baseline", "units", "adc-zero", "format", "duplicate", "unknown"])
def test_damaged_header_field_is_refused(root, signal, field, value, reason):
  path = _edit_header(root, "g1/a257", lambda lines: _edit_field(lines, signal, field,
                                                                 value))
  with pytest.raises(records.RecordError) as info:
    wfdb_folder.WFDBFolder(root).read("g1/a257")
  assert info.value.path == str(path)
  assert reason in info.value.reason


@pytest.mark.parametrize("edit,found", [
    (lambda lines: lines[:12] + lines[13:], 11),  # v5's line dropped.
    (lambda lines: lines[:13] + ["a257.dat 16 200/mV 16 0 0 0 0 Resp"] + lines[13:],
     13)], ids=["fewer", "more"])
def test_signal_lines_must_match_the_declared_count(root, edit, found):
  _edit_header(root, "g1/a257", edit)
  with pytest.raises(records.RecordError,
                     match=f"declares 12 signals, {found} signal lines follow"):
    wfdb_folder.WFDBFolder(root).read("g1/a257")


@pytest.mark.parametrize("units,scale", [("V", 1e-3), ("uV", 1e3), ("mV", 1.0)])
def test_units_become_millivolts(tmp_path, units, scale):
  _write(tmp_path, "r", 500, list(records.LEADS), units=units, scale=scale)
  record = wfdb_folder.WFDBFolder(tmp_path, sampling_rate=500).read("r")
  np.testing.assert_allclose(record.ecg, _standard_wave(500), atol=2e-3)


def test_other_channels_do_not_block_the_leads(tmp_path):
  """A 13th channel with an unknown name, an unknown unit and gain 0 is left out."""
  digital = np.round(np.concatenate([_standard_wave(500), np.zeros((5000, 1))], axis=1)
                     * 1000).astype(np.int16)
  wfdb.wrsamp("r", fs=500, units=["mV"] * 13,
              sig_name=list(records.LEADS) + ["Resp belt"], d_signal=digital, fmt=["16"] * 13, adc_gain=[1000.0] * 13,
              baseline=[0] * 13, write_dir=str(tmp_path))
  _edit_header(tmp_path, "r", lambda lines: _edit_field(lines, "belt", 2, "0/mmHg"))
  record = wfdb_folder.WFDBFolder(tmp_path, sampling_rate=500).read("r")
  np.testing.assert_allclose(record.ecg, _standard_wave(500), atol=1e-3)
  header = wfdb_io.read_header(tmp_path / "r")
  assert (header.sig_name[12], header.units[12]) == ("Resp belt", "mmHg")
  with pytest.raises(records.RecordError, match="Resp belt has gain 0"):
    wfdb_io.to_millivolts(header, [12])


def _mitdb(shared_data, directory: pathlib.Path) -> pathlib.Path:
  directory.mkdir(parents=True, exist_ok=True)
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", directory)
  return directory


def test_format_212_equals_wfdb_rdrecord(shared_data):
  """MIT-BIH 100 (format 212, 2 signals, baseline 1024) read here with numpy."""
  header = wfdb_io.read_header(shared_data / "mitdb" / "100")
  assert (header.fs, header.sig_len, header.sig_name) == (360.0, 650000, ["MLII", "V5"])
  whole = wfdb.rdrecord(str(shared_data / "mitdb" / "100")).p_signal
  np.testing.assert_array_equal(wfdb_io.read_physical(header, [0, 1]), whole)
  # Spans that start and end inside a 3-byte sample pair, one signal or both.
  for start, stop, order in ((1, 2, [1]), (12345, 12346, [0]), (3, 3600, [1, 0])):
    np.testing.assert_array_equal(wfdb_io.read_physical(header, order, start, stop),
                                  whole[start:stop][:, order])


def test_format_212_with_an_odd_signal_count_equals_wfdb(tmp_path):
  """3 signals: frames start in the middle of a sample pair every other frame."""
  d = np.random.default_rng(0).integers(-2047, 2048, (1001, 3))
  d[5, 1] = -2048  # Format 212's missing-sample value: NaN.
  wfdb.wrsamp("r", fs=250, units=["mV", "uV", "V"], sig_name=["I", "II", "III"],
              d_signal=d, fmt=["212"] * 3, adc_gain=[200.0, 100.0, 50.0],
              baseline=[10, -5, 0], write_dir=str(tmp_path))
  header = wfdb_io.read_header(tmp_path / "r")
  for start, stop in ((0, 1001), (1, 2), (3, 998), (1000, 1001)):
    expected = wfdb.rdrecord(str(tmp_path / "r"), sampfrom=start, sampto=stop).p_signal
    np.testing.assert_array_equal(wfdb_io.read_physical(header, [2, 0, 1], start, stop),
                                  expected[:, [2, 0, 1]])


def test_no_sample_count_is_taken_from_the_file_size(shared_data, tmp_path,
                                                     monkeypatch):
  """A 30-minute record whose header gives no length is still cut into windows, each
  read alone: never read whole."""
  root = _mitdb(shared_data, tmp_path)
  (root / "100.hea").write_text((root / "100.hea").read_text().replace(
      "100 2 360 650000", "100 2 360"))
  source = wfdb_folder.WFDBFolder(root, leads=("II", "V5"),
                                  lead_aliases={"MLII": "II"})
  assert source.duration("100") == pytest.approx(650000 / 360)  # 1950000 bytes / 3.
  frames = []
  read_digital = wfdb_io._read_digital  # pylint: disable=protected-access
  monkeypatch.setattr(wfdb_io, "_read_digital", lambda file, specs, start, stop: (
      frames.append(stop - start), read_digital(file, specs, start, stop))[1])
  windowed = windows.Windowed(source, window_seconds=10)
  assert len(windowed.keys()) == 180
  assert windowed.read("100#w90").ecg.shape == (5000, 2)
  # Every read is one window and a second each side (MIT-BIH's 650000 frames never).
  assert frames[-1] == 12 * 360 and max(frames) <= 12 * 360


def test_no_sample_count_and_a_matlab5_file_is_refused(template, tmp_path):
  root = pathlib.Path(shutil.copytree(template, tmp_path / "wfdb"))
  header = root / "c500m.hea"
  first, *rest = header.read_text().splitlines()
  header.write_text("\n".join([" ".join(first.split()[:3])] + rest) + "\n")
  with pytest.raises(records.RecordError, match="no sample count") as info:
    wfdb_folder.WFDBFolder(root).read("c500m")
  assert info.value.path == str(header)


def test_other_formats_are_read_by_wfdb(tmp_path):
  """Format 80 (8-bit offset binary) and 32: not read here with numpy, still right."""
  x = np.round(_standard_wave(500) * 60)  # Within 8 bits at 60/mV.
  for fmt in ("80", "32"):
    wfdb.wrsamp(f"r{fmt}", fs=500, units=["mV"] * 12, sig_name=list(records.LEADS),
                d_signal=x.astype(np.int32), fmt=[fmt] * 12, adc_gain=[60.0] * 12,
                baseline=[0] * 12, write_dir=str(tmp_path))
    record = wfdb_folder.WFDBFolder(tmp_path).read(f"r{fmt}")
    np.testing.assert_allclose(record.ecg, x / 60, atol=1e-6)
