"""DICOM 12-lead ECG Waveform Storage, on the real file that ships with pydicom."""

import shutil

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
import pytest

from crema_jax.data.readers import dicom
from crema_jax.data import records
from crema_jax.data import signal

REAL = get_testdata_file("waveform_ecg.dcm")


@pytest.fixture(name="root")
def _root(tmp_path):
  (tmp_path / "site" / "2013").mkdir(parents=True)
  shutil.copy(REAL, tmp_path / "site" / "2013" / "ecg1.dcm")
  return tmp_path


def test_real_file_reads_as_12_leads_at_500(root):
  source = dicom.DicomECG(root, sampling_rate=500, name="hospital")
  assert source.keys() == ["site/2013/ecg1.dcm"]
  record = source.read("site/2013/ecg1.dcm")
  # The RHYTHM group (10 s at 1000 Hz), not the 1.2 s MEDIAN BEAT group.
  assert record.ecg.shape == (5000, 12) and record.ecg.dtype == np.float32
  ds = pydicom.dcmread(REAL)
  expected = signal.resample(ds.waveform_array(0) / 1000.0, 1000, 500)  # uV -> mV.
  np.testing.assert_allclose(record.ecg, expected, atol=1e-5)
  assert 0.5 < np.abs(record.ecg).max() < 3.0  # Millivolts, not microvolts.
  # Einthoven's law holds on the real recording: III = II - I.
  i, ii, iii = (records.LEADS.index(n) for n in ("I", "II", "III"))
  np.testing.assert_allclose(record.ecg[:, iii], record.ecg[:, ii] - record.ecg[:, i],
                             atol=1e-3)
  assert record.patient_id == 642341 and record.age == 42.0
  assert record.sex == records.SEX_FEMALE and record.source == "hospital"


def test_reduced_leads(root):
  record = dicom.DicomECG(root, leads=("V1", "I")).read("site/2013/ecg1.dcm")
  full = dicom.DicomECG(root).read("site/2013/ecg1.dcm")
  assert record.ecg.shape == (5000, 2)  # In standard order: I, then V1.
  np.testing.assert_array_equal(record.ecg, full.ecg[:, [0, 6]])


def _drop_channels(group, drop):
  """Removes channels (definitions and samples) from a WaveformSequence item."""
  data = np.frombuffer(group.WaveformData, np.int16).reshape(
      group.NumberOfWaveformSamples, group.NumberOfWaveformChannels)
  keep = [c for c in range(data.shape[1]) if c not in drop]
  group.WaveformData = np.ascontiguousarray(data[:, keep]).tobytes()
  group.ChannelDefinitionSequence = [group.ChannelDefinitionSequence[c] for c in keep]
  group.NumberOfWaveformChannels = len(keep)


def test_rhythm_without_a_lead_says_which(root):
  """The MEDIAN BEAT group still has every lead, but is never taken instead."""
  ds = pydicom.dcmread(REAL)
  _drop_channels(ds.WaveformSequence[0], [11])  # RHYTHM without V6.
  ds.save_as(root / "no_v6.dcm")
  _drop_channels(ds.WaveformSequence[0], [0, 9])  # ... nor I and V4.
  ds.save_as(root / "no_i_v4_v6.dcm")
  source = dicom.DicomECG(root, min_seconds=1.0)
  with pytest.raises(records.RecordError) as e:
    source.read("no_v6.dcm")
  assert e.value.path == str(root / "no_v6.dcm")
  assert e.value.reason.startswith("rhythm group RHYTHM lacks lead(s) V6 (has I, II,")
  with pytest.raises(records.RecordError, match=r"lacks lead\(s\) I, V4, V6 "):
    source.read("no_i_v4_v6.dcm")
  # The leads the rhythm has are enough for a reduced-lead config.
  two = dicom.DicomECG(root, leads=("I", "II")).read("no_v6.dcm")
  full = dicom.DicomECG(root).read("site/2013/ecg1.dcm")
  np.testing.assert_array_equal(two.ecg, full.ecg[:, :2])


@pytest.mark.parametrize("label, originality", [
    ("MEDIAN BEAT", "DERIVED"), ("MEDIAN BEAT", "ORIGINAL"),
    ("AVERAGE BEAT", "ORIGINAL"), ("", "DERIVED")])
def test_a_beat_is_never_the_rhythm(root, label, originality):
  """Only the 1.2 s beat group is left; with min_seconds 1 it would pass as an ECG."""
  ds = pydicom.dcmread(REAL)
  del ds.WaveformSequence[0]
  beat = ds.WaveformSequence[0]
  beat.WaveformOriginality = originality
  if label:
    beat.MultiplexGroupLabel = label
  else:
    del beat.MultiplexGroupLabel
  ds.save_as(root / "beat.dcm")
  with pytest.raises(records.RecordError, match="no rhythm waveform") as e:
    dicom.DicomECG(root, min_seconds=1.0).read("beat.dcm")
  assert e.value.path == str(root / "beat.dcm")
  assert e.value.reason.endswith(f"only the beat group(s) {label or 'group 0'}")


def test_a_derived_rhythm_is_read(root):
  ds = pydicom.dcmread(REAL)
  ds.WaveformSequence[0].WaveformOriginality = "DERIVED"  # E.g. a filtered rhythm.
  ds.save_as(root / "derived.dcm")
  source = dicom.DicomECG(root)
  np.testing.assert_array_equal(source.read("derived.dcm").ecg,
                                source.read("site/2013/ecg1.dcm").ecg)


def test_unreadable_files(root):
  ds = pydicom.dcmread(REAL)
  for group in ds.WaveformSequence:  # V6 relabelled: no group holds all 12 leads.
    group.ChannelDefinitionSequence[11].ChannelSourceSequence[0].CodeMeaning = "Lead V7"
    group.ChannelDefinitionSequence[11].ChannelSourceSequence[0].CodeValue = "5.6.3-9-9"
  ds.save_as(root / "eleven.dcm")
  del ds.WaveformSequence
  ds.save_as(root / "none.dcm")
  (root / "garbage.dcm").write_bytes(b"not a dicom file" * 20)
  source = dicom.DicomECG(root)
  with pytest.raises(records.RecordError, match="RHYTHM lacks lead.s. V6"):
    source.read("eleven.dcm")
  with pytest.raises(records.RecordError, match=r"rhythm waveform \(no waveform groups"):
    source.read("none.dcm")
  with pytest.raises(records.RecordError, match="not a readable DICOM"):
    source.read("garbage.dcm")


def test_lead_names_and_ages():
  ds = pydicom.dcmread(REAL)
  channels = ds.WaveformSequence[0].ChannelDefinitionSequence
  assert [dicom.channel_lead(c) for c in channels] == list(records.LEADS)
  channels[0].ChannelSourceSequence[0].CodeMeaning = "unnamed"
  assert dicom.channel_lead(channels[0]) == "I"  # From the SCP-ECG code 5.6.3-9-1.
  assert dicom._age("042Y") == 42.0 and dicom._age("006M") == 0.5
  assert np.isnan(dicom._age("")) and np.isnan(dicom._age(None))


def test_empty_folder(tmp_path):
  with pytest.raises(records.SourceError, match="no DICOM files"):
    dicom.DicomECG(tmp_path)
