"""DICOM 12-lead ECG Waveform Storage (SOP class 1.2.840.10008.5.1.4.1.1.9.1.1), as
hospital systems export them.

A file holds a `WaveformSequence` of multiplex groups (typically "RHYTHM", 10 s, and
"MEDIAN BEAT", ~1 s); each group has one channel per lead, named by its
`ChannelSourceSequence` code ("Lead I (Einthoven)", SCP-ECG code 5.6.3-9-1, ...), with
a sensitivity and units. Only rhythm groups are read: a group is a beat, never the
rhythm, when its Multiplex Group Label names one ("MEDIAN BEAT", "AVERAGE BEAT",
"REPRESENTATIVE", ...: the label is free text, the standard does not fix it) or when its
Waveform Originality is DERIVED (the standard's mark of waveforms computed from others,
as median beats are) unless its label says RHYTHM. The reader takes the longest rhythm
group that holds every wanted lead, lets pydicom apply sensitivity, correction and
baseline, converts the units to mV and resamples. Patient id, age and sex come from the
DICOM patient module.
"""

from __future__ import annotations

import math
import pathlib
import re
from typing import Sequence

import numpy as np
import pydicom

from crema_jax.data.readers import base
from crema_jax.data.readers import wfdb_folder
from crema_jax.data import records
from crema_jax.data import signal

# SCP-ECG lead codes (5.6.3-9-n) of the standard leads.
SCPECG_LEADS = {"1": "I", "2": "II", "61": "III", "62": "aVR", "63": "aVL", "64": "aVF",
                "3": "V1", "4": "V2", "5": "V3", "6": "V4", "7": "V5", "8": "V6"}
UNITS_TO_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3}
# Words of Multiplex Group Labels that name a (median, average, ...) beat.
BEAT_LABEL = re.compile(r"\b(BEATS?|MEDIANS?|AVERAGED?|REPRESENTATIVE|TEMPLATE)\b",
                        re.IGNORECASE)


def is_beat_group(group) -> bool:
  """Whether a WaveformSequence item holds a representative beat rather than a rhythm:
  its label names a beat, or it is DERIVED and its label does not say RHYTHM."""
  label = str(group.get("MultiplexGroupLabel") or "")
  if BEAT_LABEL.search(label):
    return True
  derived = str(group.get("WaveformOriginality", "")).strip().upper() == "DERIVED"
  return derived and "RHYTHM" not in label.upper()


def channel_lead(channel) -> str | None:
  """The standard lead name of a ChannelDefinitionSequence item, None if not a lead."""
  source = channel.get("ChannelSourceSequence")
  if not source:
    return None
  code = source[0]
  meaning = str(code.get("CodeMeaning", ""))
  name = re.sub(r"\(.*?\)", "", meaning).strip()
  name = re.sub(r"^lead\s+", "", name, flags=re.IGNORECASE)
  lead = signal.canonical_lead_name(name)
  if lead is None:
    value = str(code.get("CodeValue", ""))
    if value.startswith("5.6.3-9-"):
      lead = SCPECG_LEADS.get(value.rsplit("-", 1)[1])
  return lead


def _units_to_mv(channel, path: str) -> float:
  units = channel.get("ChannelSensitivityUnitsSequence")
  unit = str(units[0].get("CodeValue", "")).strip().lower() if units else "uv"
  if unit not in UNITS_TO_MV:
    raise records.RecordError(path, f"unknown channel unit {unit!r}")
  return UNITS_TO_MV[unit]


def _check_size(group, index: int, path: str) -> None:
  """RecordError unless the group's WaveformData holds the samples its header declares
  (pydicom would read the first ones of a longer buffer as the whole waveform)."""
  samples = int(group.NumberOfWaveformSamples)
  channels = int(group.NumberOfWaveformChannels)
  bits = int(group.WaveformBitsAllocated)
  expected = samples * channels * bits // 8
  size = len(group.WaveformData)
  if size != expected + expected % 2:  # Values are padded to an even length.
    raise records.RecordError(
        path, f"waveform group {index} holds {size} bytes of samples; its {samples} "
        f"samples x {channels} channels of {bits} bits need {expected}")


def _age(text) -> float:
  """DICOM age strings: "042Y" -> 42.0; months, weeks, days in years."""
  match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(text or ""))
  if not match:
    return math.nan
  per_year = {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}[match.group(2)]
  return float(match.group(1)) / per_year


def _is_dicom(path: str) -> bool:
  return path.lower().endswith(".dcm")


class DicomECG(base.FolderReader):
  """A folder of DICOM ECG files (`*.dcm`, searched recursively, links to folders
  followed, each folder once: `base.list_files`) as a `records.Source`.

  Args:
    root: the folder.
    sampling_rate: the target rate.
    name: the dataset name written into records.
    leads: the leads to read (default the standard 12).
    min_seconds: shorter waveforms are refused.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "dicom", leads: Sequence[str] = records.LEADS,
               min_seconds: float = 5.0):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, leads=leads)
    self._keys = sorted([path for path in self.list_folder(_is_dicom)
                         if _is_dicom(path)] + list(self.unlisted))
    if not self._keys:
      raise records.SourceError(f"{self.root}: no DICOM files (.dcm)")

  def keys(self) -> list[str]:
    return list(self._keys)

  def _group(self, ds, path: str) -> tuple[int, list[int]]:
    """(index of the longest rhythm group holding every wanted lead, channel of each
    wanted lead in it); RecordError saying which leads the rhythm groups lack, or that
    there is no rhythm group."""
    best, beats, lacking = None, [], []
    groups = ds.get("WaveformSequence") or []
    for index, group in enumerate(groups):
      label = str(group.get("MultiplexGroupLabel") or f"group {index}")
      if is_beat_group(group):
        beats.append(label)
        continue
      channels = {}
      for c, channel in enumerate(group.get("ChannelDefinitionSequence") or []):
        lead = channel_lead(channel)
        if lead is not None:
          channels.setdefault(lead, c)
      missing = [lead for lead in self.leads if lead not in channels]
      if missing:
        lacking.append(f"rhythm group {label} lacks lead(s) {', '.join(missing)} (has "
                       f"{', '.join(channels) or 'no leads'})")
        continue
      length = int(group.get("NumberOfWaveformSamples", 0))
      if best is None or length > best[0]:
        best = (length, index, [channels[lead] for lead in self.leads])
    if best is None:
      if lacking:
        raise records.RecordError(path, "; ".join(lacking))
      if not groups:
        raise records.RecordError(path, "no rhythm waveform (no waveform groups)")
      raise records.RecordError(path, "no rhythm waveform, only the beat group(s) "
                                f"{', '.join(beats)}")
    return best[1], best[2]

  def read(self, key: str) -> records.Record:
    self.refuse_unlisted(key)
    path = str(self.root / key)
    try:
      ds = pydicom.dcmread(path)
    except Exception as e:  # pylint: disable=broad-except
      # InvalidDicomError, EOFError, OSError, struct.error, ... on damaged files.
      raise records.RecordError(path, f"not a readable DICOM file: {e}") from e
    try:
      return self._read(ds, path, key)
    except records.RecordError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # pydicom converts an element's value when it is first used: a damaged one
      # fails there, with whatever its conversion raises.
      raise records.RecordError(path, f"does not decode as a DICOM ECG: "
                                f"{type(e).__name__}: {e}") from e

  def _read(self, ds, path: str, key: str) -> records.Record:
    index, channels = self._group(ds, path)
    group = ds.WaveformSequence[index]
    frequency = group.get("SamplingFrequency")
    try:
      rate = float(frequency or 0)
    except (TypeError, ValueError):
      raise records.RecordError(path, f"waveform group {index} has sampling frequency "
                                f"{frequency!r}, not a number") from None
    _check_size(group, index, path)
    try:
      wave = ds.waveform_array(index)  # Sensitivity, correction and baseline applied.
    except Exception as e:  # pylint: disable=broad-except
      raise records.RecordError(path, f"waveform group {index} does not decode: "
                                f"{e}") from e
    definitions = group.ChannelDefinitionSequence
    to_mv = np.array([_units_to_mv(definitions[c], path) for c in channels], np.float32)
    try:
      ecg = signal.resample(wave[:, channels] * to_mv, rate, self.sampling_rate)
    except ValueError as e:
      raise records.RecordError(path, str(e)) from e
    ecg = records.check_signal(ecg, path, self.sampling_rate, self.min_seconds,
                               leads=self.leads)
    uid = str(ds.get("SOPInstanceUID", "") or key)
    patient = wfdb_folder.patient_id_from_text(ds.get("PatientID"), self.name, key)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate,
        ecg_id=wfdb_folder.stable_id(f"{self.name}:{uid}"),
        patient_id=patient, source=self.name,
        record_name=key, age=_age(ds.get("PatientAge")),
        sex=wfdb_folder.sex_from_text(str(ds.get("PatientSex", ""))))
