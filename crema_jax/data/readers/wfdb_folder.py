"""Any folder of WFDB records: MIMIC-IV-ECG, the PhysioNet/CinC 2020-2021 sets, PTB, ...

Walks the `.hea` files under the root (signals in `.dat` or `.mat`), maps lead names onto
the standard 12 leads, and resamples to the target rate. Age and sex come from
PhysioNet-style header comments (`# Age: 54`, `# Sex: Male`); patient ids from a CSV
when given, else a `# Patient: ...` comment, else each record is its own patient.
"""

from __future__ import annotations

import hashlib
import math
import pathlib
import re


from crema_jax.data.readers import base
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records

_COMMENT = re.compile(r"^\s*([A-Za-z_ ]+?)\s*:\s*(.*?)\s*$")


def stable_id(text: str) -> int:
  """A 63-bit id of `text` that is the same in every process and run; of a file name
  that is not UTF-8, of its `records.printable` form."""
  data = records.printable(text).encode()
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def patient_id_from_text(text, source: str, key: str,
                         placeholders: frozenset[str] = frozenset()) -> int:
  """A file's patient id: a plain (ASCII) number below 2**63 as is, any other id
  hashed under the source's name; none, or one of `placeholders` (lowercase, e.g.
  "unknown"), makes the record (`key`) its own patient."""
  text = str(text or "").strip()
  if not text or text.lower() in placeholders:
    return stable_id(f"{source}:{key}")
  if text.isascii() and text.isdigit() and int(text) < 2**63:
    return int(text)
  return stable_id(f"{source}:patient:{text}")


def _strip_extension(record: str) -> str:
  """`"files/p10/s1/1.hea"` or `"files/p10/s1/1"` -> `"files/p10/s1/1"` (POSIX)."""
  record = record.strip().replace("\\", "/")
  for extension in (".hea", ".dat", ".mat"):
    if record.endswith(extension):
      return record[:-len(extension)]
  return record


def header_fields(comments: list[str]) -> dict[str, str]:
  """`['Age: 54', 'Sex: Male']` -> {'age': '54', 'sex': 'Male'} (keys lower-case)."""
  fields = {}
  for comment in comments:
    match = _COMMENT.match(comment)
    if match:
      fields[match.group(1).strip().lower()] = match.group(2)
  return fields


def age_from_text(text: str | None) -> float:
  try:
    age = float(text)
  except (TypeError, ValueError):
    return math.nan
  return age if 0 <= age < 150 else math.nan


def sex_from_text(text: str | None) -> int:
  text = (text or "").strip().lower()
  if text in ("male", "m"):
    return records.SEX_MALE
  if text in ("female", "f"):
    return records.SEX_FEMALE
  return records.SEX_UNKNOWN


def _is_header(path: str) -> bool:
  return path.endswith(".hea")


class WFDBFolder(base.FolderReader):
  """A folder of WFDB records as a `records.Source`.

  Args:
    root: the folder; `.hea` files are found recursively (links to folders
      followed, each folder once: `base.list_files`).
    sampling_rate: the target rate; records at other rates are resampled.
    name: the dataset name written into records (e.g. "mimic_iv_ecg").
    patient_csv: optional CSV mapping records to patients (e.g. MIMIC-IV-ECG's
      record_list.csv with record_column="path", patient_column="subject_id").
    record_column, patient_column: its columns; a record is matched by its path
      relative to root (with or without extension), else by its file stem when that
      stem names one patient only. Non-numeric patient ids are hashed.
    min_seconds: shorter records are refused.
    leads: the leads to read (default the standard 12); a reduced-lead config asks for
      fewer, e.g. ("II", "V5") for a 2-lead Holter.
    lead_aliases: header names to rename first, e.g. {"MLII": "II"} (MIT-BIH's
      modified lead II).

  Long recordings: `duration(key)` and `read_span(key, start, stop)` let
  `windows.Windowed` cut them into windows without reading them whole.
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "wfdb", patient_csv: str | pathlib.Path | None = None,
               record_column: str = "record", patient_column: str = "patient_id",
               min_seconds: float = 5.0, leads=records.LEADS,
               lead_aliases: dict[str, str] | None = None):
    super().__init__(root, name=name, sampling_rate=sampling_rate,
                     min_seconds=min_seconds, leads=leads)
    self.lead_aliases = dict(lead_aliases or {})
    headers = [path for path in self.list_folder(_is_header) if _is_header(path)]
    self._keys = sorted([path[:-len(".hea")] for path in headers] +
                        list(self.unlisted))
    if not self._keys:
      raise records.SourceError(f"{self.root}: no WFDB records (.hea files)")
    self._patients = (self._read_patient_csv(patient_csv, record_column, patient_column)
                      if patient_csv else {})
    self._patients_by_stem = self._by_stem(self._patients)

  def _read_patient_csv(self, path, record_column, patient_column) -> dict[str, int]:
    """{record key or stem: patient id} from the CSV; rows without a patient are left
    out (those records fall back to the header or their own id)."""
    table = base.read_table(path, (record_column, patient_column),
                            missing_hint="the patient CSV",
                            dtype={record_column: str, patient_column: str})
    table = table.dropna(subset=[record_column, patient_column])
    return {_strip_extension(r): self._patient_number(p)
            for r, p in zip(table[record_column], table[patient_column])}

  @staticmethod
  def _by_stem(patients: dict[str, int]) -> dict[str, int]:
    """{file stem: patient id} for the stems that name one patient only."""
    by_stem, ambiguous = {}, set()
    for record, patient in patients.items():
      stem = pathlib.PurePosixPath(record).name
      if by_stem.get(stem, patient) != patient:
        ambiguous.add(stem)
      by_stem[stem] = patient
    return {k: v for k, v in by_stem.items() if k not in ambiguous}

  def _patient_number(self, value: str) -> int:
    """`"10000032"` or `"10000032.0"` -> 10000032; other ids (`"p17"`) are hashed."""
    value = value.strip()
    try:
      number = float(value)
    except ValueError:
      number = math.nan
    if number.is_integer() and 0 <= number < 2**63:
      return int(number)
    return stable_id(f"{self.name}:patient:{value}")

  def keys(self) -> list[str]:
    return list(self._keys)

  def _patient_id(self, key: str, fields: dict[str, str]) -> int:
    if key in self._patients:
      return self._patients[key]
    stem = pathlib.PurePosixPath(key).name
    if stem in self._patients_by_stem:
      return self._patients_by_stem[stem]
    for field in ("patient", "patient_id", "subject_id"):
      if fields.get(field):
        return self._patient_number(fields[field])
    return stable_id(f"{self.name}:{key}")

  def duration(self, key: str) -> float:
    """Seconds of the record, from its header (or its signal file's size) alone."""
    self.refuse_unlisted(key)
    return wfdb_io.read_header(self.root / key).duration

  def read_span(self, key: str, start: float, stop: float) -> records.Record:
    """The record cut to [start, stop) seconds, reading only that part of the file."""
    return self.read(key, span=(start, stop))

  def read(self, key: str, span: tuple[float, float] | None = None) -> records.Record:
    self.refuse_unlisted(key)
    path = self.root / key
    wave = wfdb_io.read_record(path, self.sampling_rate, self.leads, self.lead_aliases,
                               span=span)
    ecg = records.check_signal(wave.ecg, str(path), self.sampling_rate, self.min_seconds,
                               leads=self.leads)
    fields = header_fields(wave.comments)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=stable_id(key),
        patient_id=self._patient_id(key, fields), source=self.name, record_name=key,
        age=age_from_text(fields.get("age")), sex=sex_from_text(fields.get("sex")))
