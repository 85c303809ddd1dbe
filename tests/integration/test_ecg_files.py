"""The ecgdatakit reader (`ecg_files`): real DICOM and MIT-BIH files, HL7 aECG and GE
MUSE files written by their schemas, refusals, and prepare over a mixed folder."""

import pickle
import re
import shutil

import ecgdatakit
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
import pytest
import wfdb

import ecg_fixtures  # In tests/integration/, the test's folder.

from configs import common
from crema_jax.data import prepare
from crema_jax.data.readers import dicom
from crema_jax.data.readers import ecg_files
from crema_jax.data.readers import registry
from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import windows
from crema_jax.data import records
from crema_jax.data import signal

DICOM = get_testdata_file("waveform_ecg.dcm")
AECG_ORDER = ["V1", "aVR", "I", "II", "V3", "aVL", "aVF", "V2", "III", "V4", "V6", "V5"]
AECG_SCALE, AECG_ORIGIN = 2.5, 40.0  # uV per digit; uV at digit 0.
MUSE_SCALE = 4.88


def _wave(rate: float, seconds: float = 10.0) -> np.ndarray:
  """[time, 12] mV in records.LEADS order; lead k: (0.3 + 0.1 k) sin(2 pi (1 + 0.5 k)
  t), so a lead read in another's place has the wrong amplitude."""
  t = np.arange(int(round(seconds * rate)))[:, None] / rate
  k = np.arange(12)[None, :]
  return (0.3 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.5 * k) * t)


def _columns(names):
  return [records.LEADS.index(name) for name in names]


def _aecg_expected() -> np.ndarray:
  """[10000, 12] mV, records.LEADS order: what the aECG fixture holds."""
  written = _wave(1000)[:, _columns(AECG_ORDER)]
  quantised = ecg_fixtures.quantised_mv(written, AECG_SCALE, AECG_ORIGIN)
  return quantised[:, np.argsort(_columns(AECG_ORDER))]


def _muse_expected() -> np.ndarray:
  """[5000, 8] mV in MUSE_LEADS order: what the MUSE fixture holds."""
  written = _wave(500)[:, _columns(ecg_fixtures.MUSE_LEADS)]
  return ecg_fixtures.quantised_mv(written, MUSE_SCALE)


def _write_muse(path, **kwargs):
  return ecg_fixtures.write_muse_xml(
      path, _wave(500)[:, _columns(ecg_fixtures.MUSE_LEADS)], 500,
      ecg_fixtures.MUSE_LEADS, "12345", units_per_bit=MUSE_SCALE, **kwargs)


@pytest.fixture(name="template", scope="module")
def _template(tmp_path_factory):
  """An aECG (12 leads shuffled, 1000 Hz), a MUSE file (8 leads, 500 Hz), the real
  DICOM file, and files that are not ECGs."""
  root = tmp_path_factory.mktemp("hospital")
  ecg_fixtures.write_hl7_aecg(root / "aecg.xml", _wave(1000)[:, _columns(AECG_ORDER)],
                              1000, AECG_ORDER, "P-17", scale_uv=AECG_SCALE,
                              origin_uv=AECG_ORIGIN, sex="F", birth_time="19700315")
  (root / "muse").mkdir()
  _write_muse(root / "muse" / "rest.xml")
  (root / "dicom").mkdir()
  shutil.copy(DICOM, root / "dicom" / "ecg.dcm")
  (root / "notes.txt").write_text("seen by Dr X\n")
  (root / "muse" / "orders.csv").write_text("id,ward\n1,A\n")
  return root


@pytest.fixture(name="root")
def _root(template, tmp_path):
  return shutil.copytree(template, tmp_path / "hospital")


def test_keys_are_the_recognised_files(template, shared_data, tmp_path):
  assert ecg_files.ECGFiles(template).keys() == ["aecg.xml", "dicom/ecg.dcm",
                                                 "muse/rest.xml"]
  for suffix in (".hea", ".dat", ".atr"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", tmp_path)
  assert ecg_files.ECGFiles(tmp_path).keys() == ["100.hea"]  # Once, by its header.
  (tmp_path / "empty").mkdir()
  with pytest.raises(records.SourceError, match="no ECG files"):
    ecg_files.ECGFiles(tmp_path / "empty")


def test_fixtures_parse_with_ecgdatakit_to_the_values_written(template):
  aecg = ecgdatakit.FileParser.parse(template / "aecg.xml")  # Scaled to mV.
  assert aecg.file_format.name == "HL7 aECG"
  assert [lead.label for lead in aecg.leads] == AECG_ORDER
  got = np.stack([lead.samples for lead in aecg.leads], 1)
  np.testing.assert_allclose(got, _aecg_expected()[:, _columns(AECG_ORDER)], atol=1e-9)
  assert aecg.patient.patient_id == "P-17" and aecg.leads[0].sampling_rate == 1000
  muse = ecgdatakit.FileParser.parse(template / "muse" / "rest.xml")
  assert muse.file_format.name == "GE MUSE XML"
  assert [lead.label for lead in muse.leads] == list(ecg_fixtures.MUSE_LEADS)
  got = np.stack([lead.samples for lead in muse.leads], 1)
  np.testing.assert_allclose(got, _muse_expected(), atol=1e-9)
  assert muse.raw_metadata["checksum_valid"] and len(muse.median_beats) == 8


def test_dicom_agrees_with_the_dicom_reader(template):
  """(a) pydicom's real 12-lead file: the same values as dicom.DicomECG."""
  record = ecg_files.ECGFiles(template, name="hospital").read("dicom/ecg.dcm")
  reference = dicom.DicomECG(template / "dicom", name="hospital").read("ecg.dcm")
  assert record.ecg.shape == (5000, 12) and record.ecg.dtype == np.float32
  np.testing.assert_allclose(record.ecg, reference.ecg, atol=1e-5)
  assert 0.5 < np.abs(record.ecg).max() < 3.0  # mV.
  assert (record.patient_id, record.age, record.sex) == (
      reference.patient_id, reference.age, reference.sex) == (642341, 42.0,
                                                              records.SEX_FEMALE)
  assert record.source == "hospital" and record.record_name == "dicom/ecg.dcm"
  assert record.labels.tolist() == [0] * 5 and record.notes == (
      "hospital: DICOM Waveform",)


def test_dicom_damage_that_ecgdatakit_reads_is_refused(tmp_path):
  """ecgdatakit reads the first NumberOfWaveformSamples of a longer WaveformData, and
  takes a unit from the code's meaning when its value is not one."""
  ds = pydicom.dcmread(DICOM)
  ds.WaveformSequence[0].NumberOfWaveformSamples = 5000  # The data hold 10000.
  ds.save_as(tmp_path / "short.dcm")
  ds = pydicom.dcmread(DICOM)
  channel = ds.WaveformSequence[0].ChannelDefinitionSequence[4]
  channel.ChannelSensitivityUnitsSequence[0].CodeValue = "zz"  # Meaning: microvolt.
  ds.save_as(tmp_path / "unit.dcm")
  source = ecg_files.ECGFiles(tmp_path)
  with pytest.raises(records.RecordError, match="holds 240000 bytes of samples; its "
                     "5000 samples x 12 channels of 16 bits need 120000") as info:
    source.read("short.dcm")
  assert info.value.path == str(tmp_path / "short.dcm")
  with pytest.raises(records.RecordError, match="lead aVL has unit 'zz', not a "
                     "voltage"):
    source.read("unit.dcm")


def test_mitdb_record_100_windowed_equals_the_wfdb_reader(shared_data, tmp_path):
  """(b) the real MIT-BIH record 100 (format 212, 360 Hz, MLII and V5, 30 min)."""
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", tmp_path)
  source = ecg_files.ECGFiles(tmp_path, leads=("V5", "II"), lead_aliases={"MLII": "II"})
  assert source.duration("100.hea") == pytest.approx(650000 / 360)
  windowed = windows.Windowed(source, window_seconds=10)
  assert len(windowed.keys()) == 180 and windowed.keys()[90] == "100.hea#w90"
  record = windowed.read("100.hea#w90")
  wfdb_reader = wfdb_folder.WFDBFolder(tmp_path, leads=("II", "V5"),
                                       lead_aliases={"MLII": "II"})
  reference = windows.Windowed(wfdb_reader, window_seconds=10).read("100#w90")
  assert record.ecg.shape == (5000, 2) and source.leads == ("II", "V5")
  np.testing.assert_allclose(record.ecg, reference.ecg, atol=1e-5)
  whole = ecg_files.ECGFiles(tmp_path, leads=("II", "V5"), sampling_rate=360,
                             lead_aliases={"mlii": "II"}).read("100.hea")
  np.testing.assert_allclose(whole.ecg[:3], [[-0.145, -0.065]] * 3, atol=1e-6)
  assert (record.age, record.sex) == (69.0, records.SEX_MALE)  # "# 69 M ...".
  assert record.patient_id == whole.patient_id != record.ecg_id
  with pytest.raises(records.RecordError, match=r"missing lead\(s\) II \(record has "
                     r"MLII, V5\)") as info:
    ecg_files.ECGFiles(tmp_path, leads=("II",)).read("100.hea")
  assert info.value.path == str(tmp_path / "100.hea")


def test_registry_builds_windows(shared_data, tmp_path):
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", tmp_path)
  config = common.data_config()
  config.update(dict(source="ecg_files", name="holter", raw_dir=str(tmp_path),
                     leads=("V5", "II"), lead_aliases="MLII=II", window_seconds=10.0,
                     window_stride_seconds=20.0))
  source = registry.build_source(config)
  assert isinstance(source, windows.Windowed) and len(source.keys()) == 90
  assert source.read("100.hea#w2").ecg.shape == (5000, 2)
  assert isinstance(source.base, ecg_files.ECGFiles) and source.base.name == "holter"


def test_hl7_aecg_in_mv_resampled_in_lead_order(template):
  """(c) digits * scale + origin (uV) -> mV, 1000 Hz -> 500 Hz, leads by name."""
  record = ecg_files.ECGFiles(template, sampling_rate=500).read("aecg.xml")
  assert record.ecg.shape == (5000, 12) and record.sampling_rate == 500
  expected = signal.resample(_aecg_expected(), 1000, 500)
  np.testing.assert_allclose(record.ecg, expected, atol=1e-5)
  # Lead k peaks at 0.3 + 0.1 k mV: a wrong lead order or gain cannot pass.
  np.testing.assert_allclose(np.abs(record.ecg[250:-250]).max(axis=0),
                             0.3 + 0.1 * np.arange(12) + AECG_ORIGIN / 1000, atol=0.05)
  native = ecg_files.ECGFiles(template, sampling_rate=1000,
                              leads=("V6", "I")).read("aecg.xml")
  np.testing.assert_allclose(native.ecg, _aecg_expected()[:, [0, 11]], atol=1e-6)
  assert native.patient_id == wfdb_folder.stable_id("ecg_files:patient:P-17")
  assert (native.age, native.sex) == (53.0, records.SEX_FEMALE)


def test_muse_in_mv_and_limb_leads(template):
  """(c) int16 counts * 4.88 uV -> mV; the median beat is never read."""
  source = ecg_files.ECGFiles(template, leads=ecg_fixtures.MUSE_LEADS)
  record = source.read("muse/rest.xml")
  assert record.ecg.shape == (5000, 8)
  np.testing.assert_allclose(record.ecg, _muse_expected(), atol=1e-6)
  assert (record.patient_id, record.age, record.sex) == (12345, 54.0,
                                                         records.SEX_MALE)
  at_250 = ecg_files.ECGFiles(template, sampling_rate=250,
                              leads=("V2", "II")).read("muse/rest.xml")
  np.testing.assert_allclose(at_250.ecg, signal.resample(_muse_expected()[:, [1, 3]],
                                                         500, 250), atol=1e-5)
  twelve = ecg_files.ECGFiles(template, derive_limb_leads=True).read("muse/rest.xml")
  i, ii = _muse_expected()[:, 0], _muse_expected()[:, 1]
  np.testing.assert_allclose(twelve.ecg[:, 2:6], np.stack(
      [ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], 1), atol=1e-6)
  np.testing.assert_allclose(twelve.ecg[:, [0, 1, 6, 7, 8, 9, 10, 11]],
                             _muse_expected(), atol=1e-6)
  assert "ecg_files: III, aVR, aVL, aVF computed from I and II" in twelve.notes


def test_refusals_name_the_file(root):
  """(d) unknown or no units, a missing lead, corrupt XML, a failed checksum."""
  _write_muse(root / "volts.xml", units="ARBITRARY UNITS")
  source = ecg_files.ECGFiles(root, leads=("I", "II"))
  with pytest.raises(records.RecordError, match="lead I has unit 'ARBITRARY UNITS', "
                     "not a voltage") as info:
    source.read("volts.xml")
  assert info.value.path == str(root / "volts.xml")
  with pytest.raises(records.RecordError, match=r"missing lead\(s\) III, aVR, aVL, "
                     "aVF") as info:
    ecg_files.ECGFiles(root).read("muse/rest.xml")  # 8 leads, 12 asked for.
  assert info.value.path == str(root / "muse" / "rest.xml")
  xml = (root / "muse" / "rest.xml").read_bytes()
  (root / "cut.xml").write_bytes(xml[:len(xml) // 2])  # An interrupted export.
  with pytest.raises(records.RecordError, match="does not parse") as info:
    source.read("cut.xml")
  assert info.value.path == str(root / "cut.xml")
  # The rhythm's lead I stored with another CRC32 than its samples have.
  crc = re.compile(rb"<LeadDataCRC32>(\d+)<").search(xml, xml.index(b"Rhythm<"))
  (root / "crc.xml").write_bytes(xml[:crc.start(1)] + b"%d" % (int(crc[1]) ^ 1)
                                 + xml[crc.end(1):])
  with pytest.raises(records.RecordError, match="checksum mismatch"):
    source.read("crc.xml")
  text = (root / "aecg.xml").read_text().replace('<scale value="2.5" unit="uV"/>',
                                                 '<scale value="2.5"/>')
  (root / "no_unit.xml").write_text(text)
  with pytest.raises(records.RecordError, match="lead I has no unit"):
    source.read("no_unit.xml")


def test_edf_at_its_stated_rate_and_gaps_refused(tmp_path):
  """EDF+: 1282 samples per 2.5 s record is 512.8 Hz (ecgdatakit says 513); an EDF+D
  file with a gap is not one recording."""
  x = _wave(512.8, seconds=20.0)[:, :2]
  ecg_fixtures.write_edf(tmp_path / "a.edf", x, 512.8, ["I", "II"], "P-9",
                         record_seconds=2.5, dimension="uV")
  record = ecg_files.ECGFiles(tmp_path, leads=("I", "II")).read("a.edf")
  assert record.ecg.shape == (10000, 2)
  expected = signal.resample(ecg_fixtures.edf_quantised_mv(x), 512.8, 500)
  np.testing.assert_allclose(record.ecg, expected, atol=1e-5)
  assert record.patient_id == wfdb_folder.stable_id("ecg_files:patient:P-9")
  parsed = ecgdatakit.FileParser.parse(tmp_path / "a.edf")  # The writer is right.
  np.testing.assert_allclose(np.stack([lead.samples for lead in parsed.leads], 1),
                             ecg_fixtures.edf_quantised_mv(x), atol=1e-9)
  gap = [0, 2.5, 5, 7.5, 20, 22.5, 25, 27.5]  # 10 s missing after the 4th record.
  ecg_fixtures.write_edf(tmp_path / "d.edf", x, 512.8, ["I", "II"], "P-9",
                         record_seconds=2.5, onsets=gap)
  with pytest.raises(records.RecordError, match="EDF\\+D with gaps"):
    ecg_files.ECGFiles(tmp_path, leads=("I", "II")).read("d.edf")


def test_wfdb_defaults_and_invalid_samples_are_refused(tmp_path):
  """A header without a rate (ecgdatakit would take WFDB's 250 Hz), and samples
  WFDB marks missing (-32768 in format 16): never read as numbers."""
  d = np.round(_wave(500)[:, :2] * 200).astype(np.int32)
  d[100, 1] = -32768
  wfdb.wrsamp("r", fs=500, units=["mV", "mV"], sig_name=["I", "II"], d_signal=d,
              fmt=["16", "16"], adc_gain=[200.0, 200.0], baseline=[0, 0],
              write_dir=str(tmp_path))
  source = ecg_files.ECGFiles(tmp_path, leads=("I", "II"))
  with pytest.raises(records.SignalError, match=r"NaN or inf samples in lead\(s\) II"):
    source.read("r.hea")
  np.testing.assert_allclose(ecg_files.ECGFiles(tmp_path, leads=("I",)).read(
      "r.hea").ecg[:, 0], d[:, 0] / 200, atol=1e-6)
  header = tmp_path / "r.hea"
  header.write_text(header.read_text().replace("r 2 500 5000", "r 2", 1))
  with pytest.raises(records.RecordError, match="states no sampling rate"):
    ecg_files.ECGFiles(tmp_path, leads=("I",)).read("r.hea")


def test_prepare_skips_and_reports_the_corrupt_file(root, tmp_path):
  xml = (root / "muse" / "rest.xml").read_bytes()
  (root / "muse" / "broken.xml").write_bytes(xml[:len(xml) // 2])
  source = ecg_files.ECGFiles(root, name="hospital", derive_limb_leads=True)
  assert source.keys() == ["aecg.xml", "dicom/ecg.dcm", "muse/broken.xml",
                           "muse/rest.xml"]
  source.read("aecg.xml")
  assert len(pickle.dumps(source)) < 10_000  # Workers get no recording kept.
  manifest = prepare.prepare(source, tmp_path / "prepared", records_per_shard=2,
                             num_workers=1, show_progress=False)
  assert manifest["num_records"] == 3 and manifest["num_skipped"] == 1
  [skipped] = manifest["skipped"]
  assert skipped["key"] == "muse/broken.xml"
  assert skipped["path"] == str(root / "muse" / "broken.xml")
  assert "does not parse" in skipped["reason"]
  assert manifest["notes"]["hospital: GE MUSE XML"] == 1
  assert manifest["notes"]["hospital: HL7 aECG"] == 1


def test_aecg_scale_or_origin_ecgdatakit_falls_back_on_is_refused(root):
  """ecgdatakit reads a <scale> value that is not a number, or none, as 1 uV per
  digit, and an <origin> unit that is not a voltage as the scale's: refused, for
  the leads read."""
  text = (root / "aecg.xml").read_text()
  scale, origin = '<scale value="2.5" unit="uV"/>', '<origin value="40" unit="uV"/>'
  assert text.count(scale) == text.count(origin) == 12  # V1's is the first.
  damaged = {
      "abc": (scale, '<scale value="abc" unit="uV"/>',
              "lead V1 has <scale> value 'abc', not a finite positive number"),
      "nan": (scale, '<scale value="NaN" unit="uV"/>',
              "lead V1 has <scale> value 'NaN', not a finite positive number"),
      "missing": (scale, '<scale unit="uV"/>', "lead V1 has no <scale> value"),
      "origin_abc": (origin, '<origin value="abc" unit="uV"/>',
                     "lead V1 has <origin> value 'abc', not a finite number"),
      "origin_unit": (origin, '<origin value="40" unit="furlong"/>',
                      "lead V1 has <origin> unit 'furlong', not a voltage"),
  }
  for name, (old, new, _) in damaged.items():
    (root / f"{name}.xml").write_text(text.replace(old, new, 1))
  source = ecg_files.ECGFiles(root)
  for name, (_, _, reason) in damaged.items():
    with pytest.raises(records.RecordError, match=re.escape(reason)) as info:
      source.read(f"{name}.xml")
    assert info.value.path == str(root / f"{name}.xml")
  # A lead not read is not looked at.
  np.testing.assert_allclose(
      ecg_files.ECGFiles(root, sampling_rate=1000, leads=("I",)).read(
          "missing.xml").ecg[:, 0], _aecg_expected()[:, 0], atol=1e-6)


def _edf_field(data: bytes, offset: int, value) -> bytes:
  return data[:offset] + str(value).ljust(8).encode("ascii") + data[offset + 8:]


def test_edf_whose_size_disagrees_with_its_header_is_refused(tmp_path):
  """ecgdatakit reads an EDF file cut short as its complete data records, and one
  whose samples per record were changed misframed, only warning: both are refused;
  so is a signal with a flat range (its samples uncalibrated)."""
  x = _wave(250)[:, :2]
  ecg_fixtures.write_edf(tmp_path / "a.edf", x, 250, ["I", "II"], "P-9")
  data = (tmp_path / "a.edf").read_bytes()  # 3 signals, 10 records of 1 s.
  samples = 256 + 216 * 3  # Samples per record of each signal, 8 bytes each.
  physical_max, digital_max = 256 + 112 * 3, 256 + 128 * 3
  files = {
      "cut.edf": data[:-700],
      "more_records.edf": _edf_field(data, 236, 13),
      "fewer_samples.edf": _edf_field(_edf_field(data, samples, 200), samples + 8,
                                      200),
      "open.edf": _edf_field(data, 236, -1),  # Not closed by the recorder: whole.
      "open_cut.edf": _edf_field(data, 236, -1)[:-700],
      "flat.edf": _edf_field(data, physical_max, -10),
      "flat_digital.edf": _edf_field(data, digital_max, -32768),
  }
  for name, content in files.items():
    (tmp_path / name).write_bytes(content)
  source = ecg_files.ECGFiles(tmp_path, leads=("I", "II"))
  expected = signal.resample(ecg_fixtures.edf_quantised_mv(x), 250, 500)
  for name in ("a.edf", "open.edf"):
    np.testing.assert_allclose(source.read(name).ecg, expected, atol=1e-5)
  for name in ("cut.edf", "more_records.edf", "fewer_samples.edf"):
    with pytest.raises(records.RecordError, match="EDF file size .* disagrees with "
                       "its header") as info:
      source.read(name)
    assert info.value.path == str(tmp_path / name)
  with pytest.raises(records.RecordError, match="ends inside a data record"):
    source.read("open_cut.edf")
  with pytest.raises(records.RecordError, match=re.escape(
      "lead I has a flat range (digital -32768..32767, physical -10..-10 mV)")):
    source.read("flat.edf")
  with pytest.raises(records.RecordError, match=re.escape(
      "lead I has a flat range (digital -32768..-32768, physical -10..10 mV)")):
    source.read("flat_digital.edf")


def test_empty_and_unrecognised_ecg_files_are_listed_and_skipped(root, tmp_path):
  """A file with an ECG format's extension that ecgdatakit does not recognise (empty,
  damaged) is a key whose read says why, and prepare reports it; other files are
  not keys."""
  (root / "empty.xml").write_bytes(b"")
  (root / "dicom" / "empty.dcm").write_bytes(b"")
  (root / "dicom" / "noise.dcm").write_bytes(bytes(range(256)) * 8)
  (root / "muse" / "report.xml").write_text("<report>no ECG</report>\n")
  (root / "empty.txt").write_bytes(b"")
  source = ecg_files.ECGFiles(root, name="hospital", derive_limb_leads=True)
  assert source.keys() == ["aecg.xml", "dicom/ecg.dcm", "dicom/empty.dcm",
                           "dicom/noise.dcm", "empty.xml", "muse/report.xml",
                           "muse/rest.xml"]
  reasons = {"empty.xml": "empty file (0 bytes)",
             "dicom/empty.dcm": "empty file (0 bytes)",
             "dicom/noise.dcm": "not a format ecgdatakit recognises",
             "muse/report.xml": "not a format ecgdatakit recognises"}
  for key, reason in reasons.items():
    with pytest.raises(records.RecordError, match=re.escape(reason)) as info:
      source.read(key)
    assert info.value.path == str(root / key)
  manifest = prepare.prepare(source, tmp_path / "prepared", records_per_shard=2,
                             num_workers=1, show_progress=False)
  assert manifest["num_records"] == 3 and manifest["num_skipped"] == 4
  skipped = {s["key"]: s for s in manifest["skipped"]}
  assert sorted(skipped) == sorted(reasons)
  for key, reason in reasons.items():
    assert reason in skipped[key]["reason"]
    assert skipped[key]["path"] == str(root / key)


def test_samples_ecgdatakit_drops_with_a_warning_are_refused(tmp_path):
  """A WFDB header without a length reads to the signal file's end; a file that ends
  inside a frame (cut short) is read without it, ecgdatakit only warning: refused."""
  d = np.round(_wave(500)[:, :2] * 200).astype(np.int32)
  wfdb.wrsamp("r", fs=500, units=["mV", "mV"], sig_name=["I", "II"], d_signal=d,
              fmt=["16", "16"], adc_gain=[200.0, 200.0], baseline=[0, 0],
              write_dir=str(tmp_path))
  header = tmp_path / "r.hea"
  header.write_text(header.read_text().replace("r 2 500 5000", "r 2 500", 1))
  source = ecg_files.ECGFiles(tmp_path, leads=("I", "II"))
  np.testing.assert_allclose(source.read("r.hea").ecg, d / 200, atol=1e-6)
  dat = tmp_path / "r.dat"
  dat.write_bytes(dat.read_bytes()[:-2])  # Lead II's last sample.
  with pytest.raises(records.RecordError, match="samples lost: ecgdatakit read only "
                     "part of the recording .*incomplete frame") as info:
    ecg_files.ECGFiles(tmp_path, leads=("I", "II")).read("r.hea")
  assert info.value.path == str(tmp_path / "r.hea")
