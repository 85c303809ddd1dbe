"""Writers of small hospital ECG files, laid out as their published schemas say.

`write_hl7_aecg`: an HL7 v3 Annotated ECG (ANSI/HL7 V3 ECG R1-2004, the FDA aECG
implementation guide): one RHYTHM series whose sequenceSet holds a TIME_ABSOLUTE
GLIST_TS time sequence (head, increment in s) and one SLIST_PQ sequence per lead
(MDC_ECG_LEAD_* codes of ISO/IEEE 11073-10101; value = origin + scale * digit, in uV).

`write_muse_xml`: a GE MUSE RestingECG export (restecg.dtd): a Median and a Rhythm
Waveform, each with one LeadData per lead: base64 little-endian int16 WaveFormData,
LeadAmplitudeUnitsPerBit in LeadAmplitudeUnits, the rate in SampleBase (times
10^SampleExponent), byte and sample counts and the payload's CRC32.

`write_edf`: an EDF+ file (EDF, Kemp et al. 1992; EDF+, Kemp & Olivan 2003): a 256-byte
header, 256 bytes per signal, then data records of little-endian int16 samples, scaled
by each signal's physical and digital ranges, with an "EDF Annotations" signal whose
time-keeping TALs give each data record's onset (EDF+D: records need not be
contiguous).

They take the signal in mV as [time, leads] and quantise it as the device would; the
values a correct reader must return are `quantised_mv(...)` (`edf_quantised_mv`).
"""

from __future__ import annotations

import base64
import datetime
import pathlib
import textwrap
import zlib
from typing import Sequence
from xml.sax import saxutils

import numpy as np

# MDC lead codes (ISO/IEEE 11073-10101) of the standard leads, as aECG writes them.
MDC_LEADS = {"I": "MDC_ECG_LEAD_I", "II": "MDC_ECG_LEAD_II", "III": "MDC_ECG_LEAD_III",
             "aVR": "MDC_ECG_LEAD_AVR", "aVL": "MDC_ECG_LEAD_AVL",
             "aVF": "MDC_ECG_LEAD_AVF", **{f"V{i}": f"MDC_ECG_LEAD_V{i}"
                                           for i in range(1, 7)}}
ACT_CODE = "2.16.840.1.113883.5.4"  # HL7 ActCode: RHYTHM, TIME_ABSOLUTE.
MDC = "2.16.840.1.113883.6.24"
# A MUSE rhythm holds 8 leads; III, aVR, aVL, aVF are computed from I and II.
MUSE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def digits(ecg_mv: np.ndarray, scale_uv: float, origin_uv: float = 0.0) -> np.ndarray:
  """[time, leads] integer digits of `ecg_mv`: (uV - origin) / scale, rounded."""
  return np.round((np.asarray(ecg_mv, np.float64) * 1000.0 - origin_uv) / scale_uv)


def quantised_mv(ecg_mv: np.ndarray, scale_uv: float, origin_uv: float = 0.0
                 ) -> np.ndarray:
  """[time, leads] mV as written: the digits times the scale, plus the origin."""
  return (digits(ecg_mv, scale_uv, origin_uv) * scale_uv + origin_uv) / 1000.0


def _check(ecg_mv: np.ndarray, leads: Sequence[str]) -> np.ndarray:
  ecg_mv = np.asarray(ecg_mv, np.float64)
  if ecg_mv.ndim != 2 or ecg_mv.shape[1] != len(leads):
    raise ValueError(f"ecg_mv has shape {ecg_mv.shape}; expected [time, {len(leads)}]")
  return ecg_mv


def write_hl7_aecg(path: str | pathlib.Path, ecg_mv: np.ndarray, rate: float,
                   leads: Sequence[str], patient_id: str, *, scale_uv: float = 2.5,
                   origin_uv: float = 0.0, sex: str = "F",
                   birth_time: str = "19700315",
                   start: str = "20240102101500") -> pathlib.Path:
  """Writes an HL7 aECG file of `ecg_mv` [time, len(leads)] mV at `rate` Hz.

  Args:
    leads: standard lead names, one per column (written as MDC_ECG_LEAD_* codes).
    patient_id: the trialSubject id extension.
    scale_uv, origin_uv: the SLIST_PQ scale and origin (uV).
    sex: administrativeGenderCode ("M", "F", "UN").
    birth_time, start: HL7 TS values; the age is the years between them.
  """
  ecg_mv = _check(ecg_mv, leads)
  values = digits(ecg_mv, scale_uv, origin_uv).astype(np.int64)
  seconds = len(ecg_mv) / rate
  sequences = [f"""
          <component>
            <sequence>
              <code code="TIME_ABSOLUTE" codeSystem="{ACT_CODE}"/>
              <value xsi:type="GLIST_TS">
                <head value="{start}.000"/>
                <increment value="{1.0 / rate:.10g}" unit="s"/>
              </value>
            </sequence>
          </component>"""]
  for column, lead in enumerate(leads):
    text = " ".join(map(str, values[:, column].tolist()))
    sequences.append(f"""
          <component>
            <sequence>
              <code code="{MDC_LEADS[lead]}" codeSystem="{MDC}" codeSystemName="MDC"/>
              <value xsi:type="SLIST_PQ">
                <origin value="{origin_uv:g}" unit="uV"/>
                <scale value="{scale_uv:g}" unit="uV"/>
                <digits>{text}</digits>
              </value>
            </sequence>
          </component>""")
  end = _ts_plus(start, seconds)
  body = "".join(sequences)
  xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:voc="urn:hl7-org:v3/voc"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="urn:hl7-org:v3 /HL7/aECG/2003-12/schema/PORT_MT020001.xsd"
    classCode="OBS" moodCode="EVN">
  <id root="61d1a24f-b47e-41aa-ae95-f8ac302f4eeb"/>
  <code code="93000" codeSystem="2.16.840.1.113883.6.12" codeSystemName="CPT-4"/>
  <effectiveTime>
    <low value="{start}" inclusive="true"/>
    <high value="{end}" inclusive="false"/>
  </effectiveTime>
  <componentOf>
    <timepointEvent>
      <code code="VISIT_1" codeSystem=""/>
      <componentOf>
        <subjectAssignment>
          <subject>
            <trialSubject>
              <id root="2.16.840.1.113883.3.1" extension="{_escape(patient_id)}"/>
              <code code="SCREENING" codeSystem=""/>
              <subjectDemographicPerson>
                <administrativeGenderCode code="{sex}"
                    codeSystem="2.16.840.1.113883.5.1"/>
                <birthTime value="{birth_time}"/>
              </subjectDemographicPerson>
            </trialSubject>
          </subject>
          <componentOf>
            <clinicalTrial>
              <id root="2.16.840.1.113883.3.2" extension="TRIAL-1"/>
            </clinicalTrial>
          </componentOf>
        </subjectAssignment>
      </componentOf>
    </timepointEvent>
  </componentOf>
  <component>
    <series>
      <id root="a2b5c1d0-7e1f-4f6e-9a39-1c1bd8b2f7c4"/>
      <code code="RHYTHM" codeSystem="{ACT_CODE}"/>
      <effectiveTime>
        <low value="{start}" inclusive="true"/>
        <high value="{end}" inclusive="false"/>
      </effectiveTime>
      <component>
        <sequenceSet>{body}
        </sequenceSet>
      </component>
    </series>
  </component>
</AnnotatedECG>
"""
  path = pathlib.Path(path)
  path.write_text(xml, encoding="utf-8")
  return path


def _ts_plus(start: str, seconds: float) -> str:
  """The HL7 TS `seconds` after `start` (YYYYMMDDHHMMSS), to the millisecond."""
  t = datetime.datetime.strptime(start, "%Y%m%d%H%M%S")
  t += datetime.timedelta(seconds=seconds)
  return t.strftime("%Y%m%d%H%M%S") + f".{t.microsecond // 1000:03d}"


def _escape(text: str) -> str:
  return saxutils.escape(str(text), {'"': "&quot;"})


def _muse_lead(lead: str, counts: np.ndarray, units_per_bit: float, units: str) -> str:
  """One <LeadData> of int16 `counts` [time]."""
  payload = counts.astype("<i2").tobytes()
  data = "\n".join(textwrap.wrap(base64.b64encode(payload).decode("ascii"), 76))
  return f"""
    <LeadData>
      <LeadByteCountTotal>{len(payload)}</LeadByteCountTotal>
      <LeadTimeOffset>0</LeadTimeOffset>
      <LeadSampleCountTotal>{len(counts)}</LeadSampleCountTotal>
      <LeadAmplitudeUnitsPerBit>{units_per_bit:g}</LeadAmplitudeUnitsPerBit>
      <LeadAmplitudeUnits>{units}</LeadAmplitudeUnits>
      <LeadHighLimit>32767</LeadHighLimit>
      <LeadLowLimit>-32768</LeadLowLimit>
      <LeadID>{lead}</LeadID>
      <LeadOffsetFirstSample>0</LeadOffsetFirstSample>
      <FirstSampleBaseline>0</FirstSampleBaseline>
      <LeadSampleSize>2</LeadSampleSize>
      <LeadOff>FALSE</LeadOff>
      <BaselineSway>FALSE</BaselineSway>
      <LeadDataCRC32>{zlib.crc32(payload) & 0xFFFFFFFF}</LeadDataCRC32>
      <WaveFormData>{data}</WaveFormData>
    </LeadData>"""


def _muse_waveform(kind: str, counts: np.ndarray, rate: float, leads: Sequence[str],
                   units_per_bit: float, units: str) -> str:
  lead_data = "".join(_muse_lead(lead, counts[:, c], units_per_bit, units)
                      for c, lead in enumerate(leads))
  sample_type = "CONTINUOUS_SAMPLES" if kind == "Rhythm" else "MEDIAN_SAMPLES"
  return f"""
  <Waveform>
    <WaveformType>{kind}</WaveformType>
    <WaveformStartTime>0</WaveformStartTime>
    <NumberofLeads>{len(leads)}</NumberofLeads>
    <SampleType>{sample_type}</SampleType>
    <SampleBase>{rate:g}</SampleBase>
    <SampleExponent>0</SampleExponent>
    <HighPassFilter>16</HighPassFilter>
    <LowPassFilter>150</LowPassFilter>
    <ACFilter>60</ACFilter>{lead_data}
  </Waveform>"""


def write_muse_xml(path: str | pathlib.Path, ecg_mv: np.ndarray, rate: float,
                   leads: Sequence[str], patient_id: str, *,
                   units_per_bit: float = 4.88, units: str = "MICROVOLTS",
                   age: int = 54, sex: str = "MALE") -> pathlib.Path:
  """Writes a GE MUSE RestingECG XML file of `ecg_mv` [time, len(leads)] mV.

  Args:
    rate: SampleBase, Hz.
    leads: LeadIDs, one per column (MUSE stores `MUSE_LEADS`).
    patient_id: PatientID.
    units_per_bit, units: LeadAmplitudeUnitsPerBit and LeadAmplitudeUnits (MUSE
      writes 4.88 MICROVOLTS); the counts are uV / units_per_bit whatever `units`
      says, so a reader that ignores the units field reads uV.
    age, sex: PatientAge (AgeUnits YEARS) and Gender (MALE, FEMALE).
  """
  ecg_mv = _check(ecg_mv, leads)
  counts = digits(ecg_mv, units_per_bit)
  if np.abs(counts).max() > 32767:
    raise ValueError("ecg_mv does not fit int16 at this units_per_bit")
  median = counts[:int(0.6 * rate)]  # A stand-in for the median beat: 600 ms.
  waveforms = (_muse_waveform("Median", median, rate, leads, units_per_bit, units)
               + _muse_waveform("Rhythm", counts, rate, leads, units_per_bit, units))
  xml = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE RestingECG SYSTEM "restecg.dtd">
<RestingECG>
  <MuseInfo>
    <MuseVersion>9.0.9.18167</MuseVersion>
  </MuseInfo>
  <PatientDemographics>
    <PatientID>{_escape(patient_id)}</PatientID>
    <PatientAge>{age}</PatientAge>
    <AgeUnits>YEARS</AgeUnits>
    <Gender>{sex}</Gender>
  </PatientDemographics>
  <TestDemographics>
    <DataType>RESTING</DataType>
    <Site>1</Site>
    <AcquisitionDevice>MAC55</AcquisitionDevice>
    <AcquisitionDate>01-02-2024</AcquisitionDate>
    <AcquisitionTime>10:15:00</AcquisitionTime>
  </TestDemographics>{waveforms}
</RestingECG>
"""
  path = pathlib.Path(path)
  path.write_bytes(xml.encode("iso-8859-1"))
  return path


EDF_DIGITAL = (-32768, 32767)
EDF_ANNOTATION_SAMPLES = 30  # int16 samples (60 bytes) of TALs per data record.


def edf_quantised_mv(ecg_mv: np.ndarray, physical_mv: tuple[float, float] = (-10, 10)
                     ) -> np.ndarray:
  """[time, leads] mV as `write_edf` stores `ecg_mv` with that physical range."""
  gain, offset = _edf_scale(physical_mv)
  return np.round((np.asarray(ecg_mv, np.float64) - offset) / gain) * gain + offset


def _edf_scale(physical: tuple[float, float]) -> tuple[float, float]:
  """(physical units per digit, physical value at digit 0)."""
  (pmin, pmax), (dmin, dmax) = physical, EDF_DIGITAL
  gain = (pmax - pmin) / (dmax - dmin)
  return gain, pmin - gain * dmin


def _ascii(value, width: int) -> bytes:
  text = f"{value:g}" if isinstance(value, float) else str(value)
  if len(text) > width:
    raise ValueError(f"{text!r} does not fit an EDF field of {width} characters")
  return text.ljust(width).encode("ascii")


def write_edf(path: str | pathlib.Path, ecg_mv: np.ndarray, rate: float,
              leads: Sequence[str], patient_id: str, *, record_seconds: float = 1.0,
              onsets: Sequence[float] | None = None, dimension: str = "mV",
              physical_mv: tuple[float, float] = (-10, 10)) -> pathlib.Path:
  """Writes an EDF+ file of `ecg_mv` [time, len(leads)] mV at `rate` Hz.

  Args:
    leads: standard lead names, written as the EDF+ labels "ECG <lead>".
    patient_id: the patient code (first subfield of the EDF+ patient field).
    record_seconds: data record duration; rate * record_seconds samples per record
      (an integer; a rate need not be one).
    onsets: seconds of each data record's start (default: contiguous); the file is
      EDF+D when they leave gaps, else EDF+C.
    dimension: the physical dimension written ("mV", "uV"; anything else is written
      as given, with values in mV).
    physical_mv: the physical minimum and maximum, mV.
  """
  ecg_mv = _check(ecg_mv, leads)
  per_record = rate * record_seconds
  if abs(per_record - round(per_record)) > 1e-9:
    raise ValueError(f"{rate} Hz x {record_seconds} s is not a whole sample count")
  per_record = int(round(per_record))
  num_records = len(ecg_mv) // per_record
  onsets = list(onsets) if onsets is not None else [
      i * record_seconds for i in range(num_records)]
  to_unit = {"mV": 1.0, "uV": 1000.0}.get(dimension, 1.0)
  gain, offset = _edf_scale(physical_mv)
  counts = np.round((ecg_mv - offset) / gain).astype("<i2")
  labels = [f"ECG {lead}" for lead in leads] + ["EDF Annotations"]
  ns = len(labels)
  header = (_ascii(0, 8) + _ascii(f"{patient_id} M 15-MAR-1970 X", 80)
            + _ascii("Startdate 02-JAN-2024 X X X", 80) + _ascii("02.01.24", 8)
            + _ascii("10.15.00", 8) + _ascii(256 * (ns + 1), 8)
            + _ascii("EDF+D" if len(set(np.diff(onsets).round(9))) > 1 else "EDF+C",
                     44)
            + _ascii(num_records, 8) + _ascii(float(record_seconds), 8)
            + _ascii(ns, 4))
  signals = [(dimension, physical_mv[0] * to_unit, physical_mv[1] * to_unit,
              per_record)] * len(leads) + [("", -1, 1, EDF_ANNOTATION_SAMPLES)]
  columns = [[_ascii(label, 16) for label in labels], [_ascii("AgAgCl", 80)] * ns,
             [_ascii(dim, 8) for dim, _, _, _ in signals],
             [_ascii(float(low), 8) for _, low, _, _ in signals],
             [_ascii(float(high), 8) for _, _, high, _ in signals],
             [_ascii(EDF_DIGITAL[0], 8)] * ns, [_ascii(EDF_DIGITAL[1], 8)] * ns,
             [_ascii("HP:0.05Hz LP:150Hz", 80)] * ns,
             [_ascii(n, 8) for _, _, _, n in signals], [_ascii("", 32)] * ns]
  header += b"".join(b"".join(column) for column in columns)
  body = []
  for r in range(num_records):
    block = counts[r * per_record:(r + 1) * per_record]
    body += [block[:, c].tobytes() for c in range(len(leads))]
    tal = f"+{onsets[r]:g}\x14\x14\x00".encode("ascii")
    body.append(tal.ljust(2 * EDF_ANNOTATION_SAMPLES, b"\x00"))
  path = pathlib.Path(path)
  path.write_bytes(header + b"".join(body))
  return path
