"""The common record format every source reader yields, and the checks on it.

One `Record` is one ECG: `ecg` is `[time, 12]` in millivolts, leads in `LEADS` order, at
`sampling_rate` Hz. Readers raise `RecordError` for a problem with one record (it is
skipped and listed in the manifest) and `SourceError` for a problem with the whole folder
(the run stops before any work).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Protocol, Sequence

import numpy as np

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")

SEX_MALE, SEX_FEMALE, SEX_UNKNOWN = 0, 1, -1  # PTB-XL's coding: 0 male, 1 female.


class SourceError(Exception):
  """A folder-level problem (no metadata table, no records): nothing can be read."""


class RecordError(Exception):
  """A problem with one record: the record is skipped and reported, the run goes on."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason


class SignalError(RecordError):
  """Bad samples in a signal that was read (flat, NaN, too short): a problem of that
  stretch of signal, not of the file (another window of it may be fine)."""


@dataclasses.dataclass
class Record:
  """One 12-lead ECG in the common format.

  Attributes:
    ecg: [time, 12] float32 millivolts, leads in `LEADS` order.
    sampling_rate: Hz of `ecg`.
    ecg_id: the source's record id.
    patient_id: the source's patient id (several records may share one).
    source: dataset name, e.g. "ptbxl".
    record_name: the record's path relative to the source root (for error reports).
    age: years, NaN when unknown.
    sex: SEX_MALE, SEX_FEMALE or SEX_UNKNOWN.
    labels: [5] uint8 multi-hot over `SUPERCLASSES` (all zero when unlabelled).
    fold: PTB-XL strat_fold 1..10, 0 when the source has no folds.
    scp_codes: the source's full code list as a JSON object string ({} when none).
    subclasses: comma-separated diagnostic subclasses, e.g. "IMI,LVH".
    notes: things worth reporting that did not stop the record (e.g. unknown Dx
      codes); prepare counts them in the manifest. Not stored with the example.
  """

  ecg: np.ndarray
  sampling_rate: int
  ecg_id: int
  patient_id: int
  source: str
  record_name: str
  age: float = math.nan
  sex: int = SEX_UNKNOWN
  labels: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(len(SUPERCLASSES), np.uint8))
  fold: int = 0
  scp_codes: str = "{}"
  subclasses: str = ""
  notes: tuple[str, ...] = ()

  def to_example(self, ecg16: np.ndarray | None = None) -> dict:
    """The dict stored in the ArrayRecord shards (float16 signal, fixed dtypes);
    `ecg16`: the signal already cast (`stored_signal`)."""
    return {
        "ecg": self.ecg.astype(np.float16) if ecg16 is None else ecg16,
        "sampling_rate": np.int32(self.sampling_rate),
        "ecg_id": np.int64(self.ecg_id),
        "patient_id": np.int64(self.patient_id),
        "source": self.source,
        "record_name": self.record_name,
        "age": np.float32(self.age),
        "sex": np.int32(self.sex),
        "labels": np.asarray(self.labels, np.uint8),
        "fold": np.int32(self.fold),
        "scp_codes": self.scp_codes,
        "subclasses": self.subclasses,
    }


def labels_from_classes(classes) -> np.ndarray:
  """[5] uint8 multi-hot over SUPERCLASSES from an iterable of class names."""
  classes = set(classes)
  return np.array([c in classes for c in SUPERCLASSES], np.uint8)


def scp_codes_json(codes: dict) -> str:
  return json.dumps({str(k): float(v) for k, v in codes.items()}, sort_keys=True)


def check_signal(ecg: np.ndarray, path: str, sampling_rate: float,
                 min_seconds: float = 1.0, flat_mv: float = 1e-4,
                 leads: Sequence[str] = LEADS) -> np.ndarray:
  """Returns `ecg` as float32 [time, len(leads)] or raises RecordError saying what is
  wrong.

  Refuses (SignalError) a wrong shape or lead count, NaN/inf samples, any flat lead
  (peak-to-peak below `flat_mv` millivolts) and records shorter than `min_seconds`.
  `leads` names the columns (the 12 standard leads unless a reduced-lead config asks
  for fewer).
  """
  ecg = np.asarray(ecg)
  if ecg.ndim != 2:
    raise SignalError(path, f"signal has shape {ecg.shape}, expected [time, leads]")
  if ecg.shape[1] != len(leads):
    raise SignalError(path, f"has {ecg.shape[1]} leads, expected {len(leads)}")
  if ecg.shape[0] < min_seconds * sampling_rate:
    raise SignalError(path, f"too short: {ecg.shape[0] / sampling_rate:.2f} s < "
                      f"{min_seconds:g} s")
  if not np.all(np.isfinite(ecg)):
    bad = [leads[i] for i in np.flatnonzero(~np.all(np.isfinite(ecg), axis=0))]
    raise SignalError(path, f"NaN or inf samples in lead(s) {', '.join(bad)}")
  ptp = np.ptp(np.asfortranarray(ecg), axis=0)  # Per lead: ~6x faster column-major.
  if np.any(ptp < flat_mv):
    flat = [leads[i] for i in np.flatnonzero(ptp < flat_mv)]
    raise SignalError(path, f"flat lead(s) {', '.join(flat)}")
  return ecg.astype(np.float32)


MAX_AMPLITUDE_MV = 30.0  # Beyond any lead of a real ECG: a wrong gain or unit.


def stored_signal(ecg: np.ndarray, path: str, max_amplitude_mv: float = MAX_AMPLITUDE_MV,
                  leads: Sequence[str] = LEADS) -> np.ndarray:
  """`ecg` [time, leads] mV as it is stored (float16), or RecordError.

  The checks run on the stored values, after the cast: float16 turns 65,520 and more
  into inf (a signal in uV read as mV). A lead reaching beyond `max_amplitude_mv` (a
  gain of 1 instead of 1000 spans ~780 mV; units of V read as mV) is refused, naming
  the lead and the value: physiological ECGs stay within a few mV.
  """
  with np.errstate(over="ignore"):  # An overflow becomes inf, refused just below.
    stored = np.asarray(ecg).astype(np.float16)
  finite = np.isfinite(stored).all(axis=0)
  if not finite.all():
    bad = [leads[i] for i in np.flatnonzero(~finite)]
    raise RecordError(path, f"lead(s) {', '.join(bad)} not finite as stored float16 "
                      "(values beyond 65,504 mV: a unit or gain error?)")
  peak = np.abs(np.asfortranarray(stored).astype(np.float32)).max(axis=0)
  if max_amplitude_mv > 0 and (peak > max_amplitude_mv).any():
    bad = [f"{leads[i]} {peak[i]:.4g} mV"
           for i in np.flatnonzero(peak > max_amplitude_mv)]
    raise RecordError(path, f"amplitude beyond {max_amplitude_mv:g} mV in lead(s) "
                      f"{', '.join(bad)}: not physiological (a gain or unit error?); "
                      "data.max_amplitude_mv sets the limit")
  return stored


def checked_record(source: Source, key: str, max_amplitude_mv: float = MAX_AMPLITUDE_MV,
                   leads: Sequence[str] = LEADS) -> tuple[Record, np.ndarray]:
  """(record, its signal as stored: float16 [time, leads] mV) of `key`, or
  RecordError: checked as stored, and stored (or embedded) as checked. The one read
  path of prepare and of `crema_jax.inference`."""
  record = source.read(key)
  root = getattr(source, "root", None)
  path = str(pathlib.Path(root) / record.record_name) if (
      root and record.record_name) else key
  return record, stored_signal(record.ecg, path, max_amplitude_mv, leads)


def printable(text: str) -> str:
  """`text` with the bytes of a file name that are not UTF-8 (os.fsdecode's surrogate
  escapes) written as backslash escapes: b"caf\\xe9.xml" -> "caf\\\\xe9.xml". Such
  names can be opened but not written to a UTF-8 file (JSON, CSV) or terminal."""
  try:
    data = text.encode("utf-8", "surrogateescape")
  except UnicodeEncodeError:  # Another lone surrogate (from a JSON "\\ud800").
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
  return data.decode("utf-8", "backslashreplace")


def skip_report(key: str, error: Exception) -> dict:
  """{"key", "path", "reason"} of a record that could not be read (`printable`).
  Readers of third-party formats raise all sorts on corrupt files; one bad record must
  not stop a million-record run, so any error is reported like a RecordError."""
  if isinstance(error, RecordError):
    path, reason = error.path, error.reason
  else:
    path, reason = key, f"{type(error).__name__}: {error}"
  return {"key": printable(key), "path": printable(path), "reason": printable(reason)}


def check_leads(leads: Sequence[str]) -> tuple[str, ...]:
  """`leads` as a tuple of standard names in `LEADS` order; ValueError for unknown or
  repeated names or an empty selection."""
  leads = tuple(leads)
  unknown = [lead for lead in leads if lead not in LEADS]
  if unknown or not leads or len(set(leads)) != len(leads):
    raise ValueError(f"leads {list(leads)}: expected a non-empty subset of {list(LEADS)} "
                     "without repeats")
  return tuple(lead for lead in LEADS if lead in leads)


class Source(Protocol):
  """A dataset folder as its owners publish it.

  The constructor checks the folder (raising SourceError); `keys()` lists the records in
  a stable order, so that prepare can split them into shards and resume; `read(key)`
  returns one Record at the configured sampling rate or raises RecordError.
  """

  name: str

  def keys(self) -> Sequence[str]:
    ...

  def read(self, key: str) -> Record:
    ...
