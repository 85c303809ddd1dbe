"""Any folder of hospital ECG files, read through ecgdatakit (Apache-2.0).

ecgdatakit's `FileParser` tells a file's format from its content: HL7 aECG, Philips
Sierra XML, GE MUSE XML, Mortara, ISHNE Holter, EDF/EDF+, SCP-ECG, DICOM waveform,
WFDB, MFER, ... The keys are every file under the root that it recognises, and every
file with an ECG format's extension (`ECG_EXTENSIONS`: .xml, .dcm, .edf, .hea, ...)
that it does not (an empty or damaged export: its read is a RecordError, so prepare
reports it skipped); sorted relative paths, a WFDB record once, by its `.hea`. Other
files (.txt, .csv, ...) are not records and are left out silently. Sub-folders that
are links are followed, each folder once: a link back into the tree (a loop) is listed
as a key whose read says so (`base.list_files`).

A WFDB header's claims are checked against its files' sizes before ecgdatakit reads
it (`wfdb_io.check_claimed_sizes`): ecgdatakit allocates the samples a header claims
first, so a header of a few hundred bytes claiming millions of samples of null
signals, or in a signal file that is missing or too short, would take gigabytes
before failing. The other formats it reads allocate in proportion to what their files
hold (Sierra XML's LZW-compressed waveforms can expand some hundred times: the
inference reading workers' memory cap bounds those); EDF and DICOM sizes are checked
against their headers below.

A file is parsed with `auto_scale=False` and scaled here, lead by lead, from what the
file states: counts * resolution + offset in the lead's unit (nV, uV, mV or V), to mV.
Nothing is assumed: a lead without a voltage unit (uncalibrated counts, a MUSE
LeadAmplitudeUnits or DICOM unit code that is not a voltage), a file whose sampling
rate or scale ecgdatakit filled in with a default (an aECG lead whose <scale> value is
missing or not a positive number, whose <origin> is not a number or not in a
voltage), a failed checksum, an EDF file whose size is not what its header declares
(cut short, or samples per record wrong), an EDF signal with a flat range, an EDF+D
file with gaps, a DICOM waveform whose data and header sizes disagree, a warning of
ecgdatakit that samples were dropped (`DATA_LOSS_WARNINGS`), wanted leads missing or
given twice, or leads of different rates or lengths are RecordErrors naming the
file. Rates are the file's own, not ecgdatakit's integer rounding of them. Only the
rhythm is read, never the median beats. Samples a format marks invalid become NaN, and
records.check_signal refuses them. Patient id, age and sex come from the file's patient
section when it has them.

Long recordings (Holter files) can be cut into windows (`windows.Windowed`): every
format is parsed whole, so the last file parsed is kept, in mV at its own rate, for the
windows that follow it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from typing import Sequence
import warnings

import ecgdatakit
from ecgdatakit.parsing.helpers import xml as ecgdatakit_xml
import numpy as np
import pydicom

from crema_jax.data.readers import base
from crema_jax.data.readers import dicom
from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records
from crema_jax.data import signal

# Voltage units, lower-case, in mV.
UNITS_TO_MV = {"nv": 1e-6, "nanovolt": 1e-6, "nanovolts": 1e-6, "uv": 1e-3,
               "\u00b5v": 1e-3, "\u03bcv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
               "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0, "v": 1e3, "volt": 1e3,
               "volts": 1e3}
# The digital value WFDB reserves for a missing sample, per storage format.
WFDB_INVALID_SAMPLE = {16: -2**15, 24: -2**23, 32: -2**31, 61: -2**15, 80: -2**7,
                       160: -2**15, 212: -2**11, 310: -2**9, 311: -2**9}
# The limb leads and their expression in I and II (Einthoven, Goldberger).
LIMB_LEADS = {"III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5),
              "aVF": (-0.5, 1.0)}
_REPEAT = re.compile(r"(.+)_\d+")  # ecgdatakit renames a second "II" to "II_2".
# Extensions of the formats ecgdatakit reads (lower-case): a file with one is listed
# even when ecgdatakit does not recognise its content, so that its read says why. Not
# .dat (a WFDB record is listed by its header) nor .json (AliveCor; any JSON file).
ECG_EXTENSIONS = frozenset({".xml", ".dcm", ".dicom", ".edf", ".hea", ".scp", ".ecg",
                            ".mwf", ".mfer", ".mfr", ".arc", ".xle"})
# ecgdatakit warnings (UserWarning) that it dropped part of the rhythm's samples and
# read the rest: refused. Its other warnings (a header field it corrected, median beats
# or extra series not loaded, experimental formats) are not.
DATA_LOSS_WARNINGS = tuple(re.compile(p) for p in (
    r"^EDF file truncated",
    r"^EDF file has \d+ byte\(s\) after the last data record",
    r"^WFDB signal file .* ends with an incomplete frame",
    r"^ISHNE: .*File may be truncated",
    r"^XLE file ends with a partial frame",
    r"^MFER: waveform data shorter than the frame definition",
    r"^MFER: frame declares .* with no waveform data",
))
EDF_FORMATS = ("edf", "edf_plus")
# Patient ids that say there is none (lower-case).
NO_PATIENT_ID = frozenset({"?", "-", "x", "na", "n/a", "none", "null", "unk", "unknown",
                           "anonymous"})


@dataclasses.dataclass
class Recording:
  """One file's leads in mV at its own rate, and its patient fields.

  Attributes:
    ecg: [time, len(leads)] float32 mV, the reader's leads in their order.
    rate: Hz, as the file states it.
    patient: the file's patient id ("" when none).
    age: years, NaN when unknown.
    sex: records.SEX_*.
    notes: what to count in the manifest (the format, derived leads).
  """

  ecg: np.ndarray
  rate: float
  patient: str
  age: float
  sex: int
  notes: tuple[str, ...]

  @property
  def seconds(self) -> float:
    return len(self.ecg) / self.rate


def _parse(path: pathlib.Path):
  """The ecgdatakit.ECGRecord of `path`, samples as stored (not scaled), or
  RecordError (also when ecgdatakit warns that it dropped samples). A WFDB header's
  claims are checked against its files' sizes first (`wfdb_io.check_claimed_sizes`):
  ecgdatakit allocates the samples a header claims before it reads any."""
  try:
    empty = path.stat().st_size == 0
    found = None if empty else ecgdatakit.FileParser.detect_format(path)
  except Exception:  # pylint: disable=broad-except
    empty, found = False, {"parser": "unknown"}  # Unreadable: parsing says why.
  if empty:
    raise records.RecordError(str(path), "empty file (0 bytes)")
  if found is None:
    raise records.RecordError(str(path), "not a format ecgdatakit recognises")
  if found["parser"] == "WFDBParser":  # The header ecgdatakit reads:
    wfdb_io.check_claimed_sizes(path if path.suffix.lower() == ".hea"
                                else path.with_suffix(".hea"))
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      parsed = ecgdatakit.FileParser.parse(path, auto_scale=False)
  except ImportError:
    raise  # A missing optional dependency (pydicom): the environment, not the file.
  except Exception as e:  # pylint: disable=broad-except
    # CorruptedFileError, UnsupportedFormatError, MissingElementError, OSError, ...
    raise records.RecordError(str(path), f"does not parse as an ECG file: "
                              f"{type(e).__name__}: {e}") from e
  checksums = [str(w.message) for w in caught
               if issubclass(w.category, ecgdatakit.ChecksumWarning)]
  if checksums or parsed.raw_metadata.get("checksum_valid") is False:
    raise records.RecordError(str(path), "checksum mismatch: the samples are not "
                              f"those written ({'; '.join(checksums) or 'per file'})")
  if parsed.source_format in EDF_FORMATS:
    _check_edf_size(path)
  lost = [str(w.message) for w in caught
          if any(p.search(str(w.message)) for p in DATA_LOSS_WARNINGS)]
  if lost:
    raise records.RecordError(str(path), "samples lost: ecgdatakit read only part of "
                              f"the recording ({'; '.join(lost)})")
  return parsed


def _check_edf_size(path: pathlib.Path) -> None:
  """RecordError unless the file is its header and the data records it declares,
  each of 2 bytes x the samples per record of every signal: ecgdatakit reads a file
  cut short as its complete records, and one whose samples per record were changed
  misframed (leads mixed with each other), only warning. A file not closed by its
  recorder (-1 records) must end on a record's end."""
  def number(field: bytes) -> int:
    return int(field.decode("ascii").replace("\x00", "").strip())

  try:
    size = path.stat().st_size
    with open(path, "rb") as f:
      head = f.read(256)
      declared, signals = number(head[236:244]), number(head[252:256])
      f.seek(256 + 216 * signals)  # Samples per record: after 216 bytes a signal.
      fields = f.read(8 * signals)
    per_record = 2 * sum(number(fields[8 * i:8 * (i + 1)]) for i in range(signals))
  except (OSError, ValueError, UnicodeDecodeError) as e:
    raise records.RecordError(str(path), f"EDF header does not read: {e}") from e
  header = 256 * (signals + 1)
  data = size - header
  if per_record <= 0:
    raise records.RecordError(str(path), "EDF header declares no samples per data "
                              "record")
  held = f"{data / per_record:.6g}"
  if declared == -1:
    if data > 0 and data % per_record == 0:
      return
    raise records.RecordError(str(path), f"EDF file of {size} bytes ends inside a "
                              "data record: its header gives no record count (-1), "
                              f"and the {data} bytes after its {header} header bytes "
                              f"are {held} records of {per_record} bytes: cut short, "
                              "or its samples per record are wrong")
  if data != declared * per_record:
    raise records.RecordError(str(path), f"EDF file size {size} bytes disagrees with "
                              f"its header: {header} header bytes + {declared} data "
                              f"records x {per_record} bytes = "
                              f"{header + declared * per_record} ({held} records "
                              "held): cut short, or its samples per record are wrong")


def _aecg_stated(path: pathlib.Path) -> list[tuple[str | None, str | None,
                                                     str | None]]:
  """(<scale> value, <origin> value, <origin> unit) as the file writes them (None:
  absent) of each lead sequence of the rhythm, in ecgdatakit's lead order (its rhythm
  series and sequence set: the first). ecgdatakit reads a scale value that is not a
  number, or none, as 1 per digit, an origin that is not one as 0, and takes an origin
  unit that is not a voltage for the scale's."""
  def get(element, attribute: str) -> str | None:
    text = None if element is None else element.get(attribute)
    return None if text is None else text.strip()

  def code(element) -> str:
    return (get(element, "code") or "").upper()

  # defusedxml, namespaces removed, as ecgdatakit parses the file.
  root = ecgdatakit_xml.parse_xml_root(path.read_bytes())
  series = [s for s in root.findall("component/series")
            if code(s.find("code")) != "REPRESENTATIVE_BEAT"]
  sets = series[0].findall("component/sequenceSet") if series else []
  stated = []
  for sequence in sets[0].findall("component/sequence") if sets else []:
    name = code(sequence.find("code"))
    if name.startswith("TIME_") or "_ECG_LEAD_" not in name or name.endswith(
        "_ECG_LEAD_"):
      continue  # Not a lead (the time, an unrecognised sequence): as ecgdatakit.
    value = sequence.find("value")
    scale = None if value is None else value.find("scale")
    origin = None if value is None else value.find("origin")
    stated.append((get(scale, "value"), get(origin, "value"), get(origin, "unit")))
  return stated


def _check_aecg_lead(label: str, stated, path: str) -> None:
  """RecordError for an aECG lead whose scale value is absent or not a finite positive
  number, or whose origin is not a finite number or not in a voltage unit."""
  scale, origin, origin_unit = stated
  if not scale:
    raise records.RecordError(path, f"lead {label} has no <scale> value: its counts "
                              "cannot be made mV (ecgdatakit would take 1 per digit)")
  try:
    number = float(scale)
  except ValueError:
    number = math.nan
  if not (math.isfinite(number) and number > 0):
    raise records.RecordError(path, f"lead {label} has <scale> value {scale!r}, not a "
                              "finite positive number: its counts cannot be made mV")
  if origin:
    try:
      number = float(origin)
    except ValueError:
      number = math.nan
    if not math.isfinite(number):
      raise records.RecordError(path, f"lead {label} has <origin> value {origin!r}, "
                                "not a finite number")
  if origin_unit and UNITS_TO_MV.get(origin_unit.lower()) is None:
    raise records.RecordError(path, f"lead {label} has <origin> unit {origin_unit!r}, "
                              "not a voltage (nV, uV, mV, V)")


def _check_edf_range(lead, path: str) -> None:
  """RecordError for an EDF signal whose digital or physical range is flat or
  inverted (digital): it gives no scale (ecgdatakit drops the unit and leaves it
  uncalibrated)."""
  stated = lead.annotations or {}
  try:
    dmin, dmax = int(stated["digital_minimum"]), int(stated["digital_maximum"])
    pmin, pmax = float(stated["physical_minimum"]), float(stated["physical_maximum"])
  except (KeyError, ValueError):
    return
  if dmax <= dmin or pmax == pmin:
    flat = "flat" if dmax == dmin or pmax == pmin else "inverted"
    unit = f" {lead.adc_resolution_unit}" if lead.adc_resolution_unit else ""
    raise records.RecordError(path, f"lead {lead.label} has a {flat} range (digital "
                              f"{dmin}..{dmax}, physical {pmin:g}..{pmax:g}{unit}): "
                              "its counts cannot be scaled to mV")


def _refuse_unstated(parsed, path: str) -> None:
  """RecordError when ecgdatakit filled in a rate or a scale the file does not state
  (its format's default, or a device's usual value), or joined an EDF+D file's
  discontinuous data records end to end."""
  meta = parsed.raw_metadata
  if (meta.get("sampling_rate_stated") is False
      or meta.get("sampling_frequency_stated") is False):
    raise records.RecordError(path, "the file states no sampling rate (ecgdatakit "
                              "would use its format's default)")
  if meta.get("scale_warning"):
    raise records.RecordError(path, "the file states no amplitude scale: "
                              f"{meta['scale_warning']}")
  onsets, seconds = meta.get("record_onsets"), meta.get("record_duration")
  if onsets and seconds and parsed.source_format in ("edf", "edf_plus"):
    expected = onsets[0] + seconds * np.arange(len(onsets))
    if not np.allclose(onsets, expected, atol=1e-6):
      raise records.RecordError(path, "EDF+D with gaps between its data records: "
                                "joined end to end they are not one recording")


def _check_dicom(path: pathlib.Path) -> None:
  """RecordError unless every waveform group's WaveformData holds the samples its
  header declares, as dicom.DicomECG checks: ecgdatakit reads the first
  NumberOfWaveformSamples x channels of a longer buffer as the whole waveform."""
  try:
    ds = pydicom.dcmread(path)
    for index, group in enumerate(ds.get("WaveformSequence") or []):
      dicom._check_size(group, index, str(path))  # pylint: disable=protected-access
  except records.RecordError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(path), f"does not decode as a DICOM ECG: "
                              f"{type(e).__name__}: {e}") from e


def _stated_unit(parsed, lead) -> str:
  """The unit as the file writes it, where ecgdatakit may have taken another: for
  DICOM it falls back on the unit code's meaning when the code value is not a unit
  ("zz", "microvolt" -> uV); the code value is the unit (UCUM)."""
  if parsed.source_format == "dicom_waveform" and lead.adc_resolution_unit:
    return lead.adc_resolution_unit
  return lead.resolution_unit if lead.is_raw else lead.units


def to_millivolts(lead, path: str, unit: str | None = None) -> tuple[float, float]:
  """(scale, offset) with mV = samples * scale + offset for an ecgdatakit Lead whose
  samples are as parsed, in `unit` (default: ecgdatakit's); RecordError for a lead
  without a voltage unit or with a resolution that is not a positive number."""
  if unit is None:
    unit = lead.resolution_unit if lead.is_raw else lead.units
  factor = UNITS_TO_MV.get(str(unit or "").strip().lower())
  if factor is None:
    # ecgdatakit leaves the unit empty when it is not a voltage; the file's own
    # text is in adc_resolution_unit.
    stated = unit or lead.adc_resolution_unit
    what = f"unit {stated!r}" if stated else "no unit"
    raise records.RecordError(path, f"lead {lead.label} has {what}, not a voltage "
                              "(nV, uV, mV, V): its counts cannot be made mV")
  if not lead.is_raw:
    return factor, 0.0
  resolution, offset = float(lead.resolution), float(lead.offset)
  if not (math.isfinite(resolution) and resolution > 0 and math.isfinite(offset)):
    raise records.RecordError(path, f"lead {lead.label} has resolution "
                              f"{resolution:g} {unit} per count, offset {offset:g}: "
                              "not a positive scale")
  return resolution * factor, offset * factor


def exact_rate(parsed, index: int) -> float:
  """Hz of `parsed.leads[index]` as the file states it: ecgdatakit rounds rates to
  integers (499.7 Hz -> 500) and keeps the stated one in raw_metadata."""
  lead, meta = parsed.leads[index], parsed.raw_metadata
  exact = None
  if parsed.source_format == "hl7_aecg":
    exact = (meta.get("rhythm_time") or {}).get("sampling_rate_exact")
  elif parsed.source_format == "wfdb":
    specs = meta.get("signal_specs") or []
    if "sampling_frequency" in meta and index < len(specs):
      exact = meta["sampling_frequency"] * specs[index].get("samples_per_frame", 1)
  elif parsed.source_format in ("edf", "edf_plus"):
    exact = (meta.get("exact_sampling_rates") or {}).get(lead.label)
  elif parsed.source_format == "dicom_waveform":
    rates = {g.get("sampling_frequency") for g in meta.get("multiplex_groups") or []
             if round(g.get("sampling_frequency") or 0) == lead.sampling_rate}
    exact = rates.pop() if len(rates) == 1 else None
  if exact is None or abs(exact - lead.sampling_rate) > 0.5:
    return float(lead.sampling_rate)
  return float(exact)


def _invalid_samples(parsed, index: int, samples: np.ndarray) -> np.ndarray:
  """`samples` of lead `index` with the values its format marks missing as NaN
  (WFDB; DICOM padding is NaN already)."""
  if parsed.source_format != "wfdb":
    return samples
  specs = parsed.raw_metadata.get("signal_specs") or []
  if not parsed.raw_metadata.get("invalid_sample_counts") or index >= len(specs):
    return samples
  invalid = WFDB_INVALID_SAMPLE.get(specs[index].get("fmt"))
  if invalid is None:
    return samples
  return np.where(samples == invalid, np.nan, samples)


def _has_ecg_extension(path: str) -> bool:
  return pathlib.PurePosixPath(path).suffix.lower() in ECG_EXTENSIONS


class ECGFiles(base.FolderReader):
  """A folder of ECG files in any format ecgdatakit reads, as a `records.Source`.

  Args:
    root: the folder, searched recursively (links to folders followed, each folder
      once: `base.list_files`).
    sampling_rate: the target rate; files at other rates are resampled.
    name: the dataset name written into records.
    leads: the leads to read (standard names; default the standard 12).
    min_seconds: shorter recordings (and windows) are refused.
    lead_aliases: file lead names to rename first (case-insensitive), e.g.
      {"MLII": "II"}.
    derive_limb_leads: compute III, aVR, aVL and aVF from I and II when a file does
      not store them (GE MUSE stores 8 leads); each record read so is noted in the
      manifest. Off by default: a wanted lead missing is refused.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "ecg_files", leads: Sequence[str] = records.LEADS,
               min_seconds: float = 5.0, lead_aliases: dict[str, str] | None = None,
               derive_limb_leads: bool = False):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, leads=leads)
    self.lead_aliases = {k.strip().lower(): v for k, v in (lead_aliases or {}).items()}
    self.derive_limb_leads = derive_limb_leads
    self._keys = self._find_keys()
    if not self._keys:
      raise records.SourceError(f"{self.root}: no ECG files that ecgdatakit "
                                "recognises")
    self._last: tuple[str, Recording] | None = None

  def __getstate__(self):
    # Sent to each prepare worker: without the recording kept for windows.
    return {**self.__dict__, "_last": None}

  def _find_keys(self) -> list[str]:
    """Relative paths of the files ecgdatakit recognises; a WFDB record by its .hea
    only. A file it does not recognise that has an ECG format's extension (empty,
    damaged), or whose sniffing fails (unreadable), is listed, so that its read
    reports why; so are the sub-folders not entered and the entries with an ECG
    format's extension that are not files (`base.FolderReader.list_folder`)."""
    keys = []
    for key in self.list_folder(_has_ecg_extension):
      path = self.root / key
      try:
        found = ecgdatakit.FileParser.detect_format(path)
      except Exception:  # pylint: disable=broad-except
        found = {"parser": "unknown"}
      if found is None:
        if not _has_ecg_extension(key):
          continue
        found = {"parser": "unknown"}
      if found["parser"] == "WFDBParser" and path.suffix.lower() != ".hea":
        continue  # A signal file: its record is listed by its header.
      keys.append(key)
    return sorted(keys + list(self.unlisted), key=lambda key: key.split("/"))

  def keys(self) -> list[str]:
    return list(self._keys)

  def recording(self, key: str) -> Recording:
    """The file `key` in mV at its own rate (the last one asked for is kept)."""
    self.refuse_unlisted(key)
    if self._last is None or self._last[0] != key:
      self._last = None  # Frees the previous one before parsing the next.
      self._last = (key, self._read_file(key))
    return self._last[1]

  def _read_file(self, key: str) -> Recording:
    path = str(self.root / key)
    parsed = _parse(self.root / key)
    _refuse_unstated(parsed, path)
    if parsed.source_format == "dicom_waveform":
      _check_dicom(self.root / key)
    index, computed = self._lead_index(parsed, path)
    used = sorted(set(index.values()))
    self._check_scales(parsed, used, self.root / key)
    rates = [exact_rate(parsed, i) for i in used]
    lengths = [len(parsed.leads[i].samples) for i in used]
    if len(set(rates)) != 1 or len(set(lengths)) != 1:
      detail = ", ".join(f"{parsed.leads[i].label} {n} samples at {r:g} Hz"
                         for i, n, r in zip(used, lengths, rates))
      raise records.RecordError(path, f"the leads read differ in rate or length: "
                                f"{detail}")
    if not rates[0] > 0:
      raise records.RecordError(path, f"sampling rate {rates[0]:g} Hz")
    mv = {i: self._lead_mv(parsed, i, path) for i in used}
    ecg = np.empty((lengths[0], len(self.leads)), np.float32, order="F")
    for j, lead in enumerate(self.leads):
      if lead in computed:
        a, b = LIMB_LEADS[lead]
        ecg[:, j] = a * mv[index["I"]] + b * mv[index["II"]]
      else:
        ecg[:, j] = mv[index[lead]]
    notes = [f"{self.name}: {parsed.file_format.name or parsed.source_format}"]
    if computed:
      notes.append(f"{self.name}: {', '.join(computed)} computed from I and II")
    patient = parsed.patient
    return Recording(ecg=ecg, rate=rates[0],
                     patient=str(patient.patient_id or "").strip(),
                     age=wfdb_folder.age_from_text(patient.age),
                     sex=wfdb_folder.sex_from_text(patient.sex), notes=tuple(notes))

  def _lead_name(self, label: str) -> str:
    """A file's lead label as the name looked up: a repeat ("II_2", ecgdatakit's
    name for a second II) as the lead it repeats, then renamed by lead_aliases."""
    label = str(label).strip()
    repeat = _REPEAT.fullmatch(label)
    if repeat and signal.canonical_lead_name(repeat.group(1)):
      label = repeat.group(1)  # standard_lead_order refuses the lead given twice.
    return self.lead_aliases.get(label.lower(), label)

  def _lead_index(self, parsed, path: str) -> tuple[dict[str, int], list[str]]:
    """({lead: index into parsed.leads} of the leads read, the wanted limb leads
    computed from I and II (derive_limb_leads only)); RecordError when a wanted lead
    is missing or a lead is given twice."""
    names = [self._lead_name(lead.label) for lead in parsed.leads]
    present = {signal.canonical_lead_name(name) for name in names}
    computed = []
    if self.derive_limb_leads and {"I", "II"} <= present:
      computed = [lead for lead in self.leads
                  if lead in LIMB_LEADS and lead not in present]
    wanted = [lead for lead in self.leads if lead not in computed]
    wanted += [lead for lead in ("I", "II") if computed and lead not in wanted]
    try:
      order = signal.standard_lead_order(names, wanted)
    except ValueError as e:
      kind = ("a 12-lead ECG" if tuple(self.leads) == records.LEADS
              else f"an ECG with {self.leads}")
      raise records.RecordError(path, f"not {kind}: {e}") from e
    return dict(zip(wanted, order.tolist())), computed

  @staticmethod
  def _check_scales(parsed, used: list[int], path: pathlib.Path) -> None:
    """RecordError for a lead read whose scale the file does not state as ecgdatakit
    took it: an aECG scale or origin it fell back on, an EDF range it could not use."""
    if parsed.source_format == "hl7_aecg":
      try:
        stated = _aecg_stated(path)
      except Exception as e:  # pylint: disable=broad-except
        raise records.RecordError(str(path), f"its <scale> and <origin> do not read: "
                                  f"{type(e).__name__}: {e}") from e
      if len(stated) != len(parsed.leads):
        raise records.RecordError(str(path), f"{len(stated)} lead sequences in its "
                                  f"rhythm, ecgdatakit read {len(parsed.leads)}")
      for i in used:
        _check_aecg_lead(parsed.leads[i].label, stated[i], str(path))
    elif parsed.source_format in EDF_FORMATS:
      for i in used:
        _check_edf_range(parsed.leads[i], str(path))

  @staticmethod
  def _lead_mv(parsed, index: int, path: str) -> np.ndarray:
    lead = parsed.leads[index]
    scale, offset = to_millivolts(lead, path, _stated_unit(parsed, lead))
    samples = _invalid_samples(parsed, index, np.asarray(lead.samples, np.float64))
    return samples * scale + offset

  def duration(self, key: str) -> float:
    """Seconds of the recording (parsing the file: no format has a cheaper way)."""
    return self.recording(key).seconds

  def read_span(self, key: str, start: float, stop: float) -> records.Record:
    """The recording cut to [start, stop) seconds."""
    return self.read(key, span=(start, stop))

  def read(self, key: str, span: tuple[float, float] | None = None) -> records.Record:
    path = str(self.root / key)
    wave = self.recording(key)
    try:
      ecg = (signal.resample(wave.ecg, wave.rate, self.sampling_rate) if span is None
             else self._span(wave, span, path))
    except ValueError as e:
      raise records.RecordError(path, str(e)) from e
    ecg = records.check_signal(ecg, path, self.sampling_rate, self.min_seconds,
                               leads=self.leads)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate,
        ecg_id=wfdb_folder.stable_id(f"{self.name}:{key}"),
        patient_id=wfdb_folder.patient_id_from_text(wave.patient, self.name, key,
                                                    NO_PATIENT_ID),
        source=self.name,
        record_name=key, age=wave.age, sex=wave.sex, notes=wave.notes)

  def _span(self, wave: Recording, span: tuple[float, float], path: str) -> np.ndarray:
    """[round((stop - start) * target rate), leads] of `wave` from `start` seconds:
    the native samples around the span (a second's margin for the filter) are
    resampled, then cut."""
    start, stop = span
    if not 0 <= start < stop <= wave.seconds + 1e-9:
      raise records.RecordError(path, f"span {span} s is outside the recording (0 to "
                                f"{wave.seconds:g} s)")
    up, down = signal.resample_factors(wave.rate, self.sampling_rate)
    margin = int(math.ceil(wave.rate))
    # Start on a multiple of `down`: the first sample read is one at the target rate.
    read_from = max(0, int(start * wave.rate) - margin) // down * down
    read_to = min(len(wave.ecg), int(math.ceil(stop * wave.rate)) + margin)
    ecg = signal.resample(wave.ecg[read_from:read_to], wave.rate, self.sampling_rate)
    first = int(round(start * self.sampling_rate)) - read_from * up // down
    count = int(round((stop - start) * self.sampling_rate))
    if first + count > len(ecg):
      raise records.RecordError(path, f"span {span} s runs past the recording's end")
    return ecg[first:first + count]
