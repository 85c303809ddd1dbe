"""Reading one WFDB record into the standard 12-lead layout, with clear errors.

Shared by every WFDB-based reader (PTB-XL, MIMIC-IV-ECG, PhysioNet/CinC sets). Problems
become `RecordError`s naming the file: a missing or truncated signal file, a header
that does not parse, leads that do not map onto the 12 standard leads.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import wfdb

from crema_jax.data import records
from crema_jax.data import signal

# Bytes per sample of the WFDB storage formats whose file size we can check up front.
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                     "212": 1.5, "310": 4 / 3, "311": 4 / 3}


@dataclasses.dataclass
class WFDBRecord:
  ecg: np.ndarray          # [time, 12] float32 mV in records.LEADS order.
  sampling_rate: float
  comments: list[str]


def _check_signal_files(header: wfdb.Record, directory: pathlib.Path, path: str) -> None:
  files = {}
  for name, fmt in zip(header.file_name or [], header.fmt or []):
    files.setdefault(name, []).append(fmt)
  for name, fmts in files.items():
    file = directory / name
    if not file.is_file():
      raise records.RecordError(str(file), "signal file is missing")
    if all(f in _BYTES_PER_SAMPLE for f in fmts) and header.sig_len:
      needed = int(np.ceil(header.sig_len * sum(_BYTES_PER_SAMPLE[f] for f in fmts)))
      size = file.stat().st_size
      if size < needed:
        raise records.RecordError(
            str(file), f"truncated: {size} bytes, the header of {path} needs {needed}")


def read_record(path: str | pathlib.Path, sampling_rate: float) -> WFDBRecord:
  """Reads the WFDB record `path` (without extension) as 12 standard leads in mV,
  resampled to `sampling_rate` Hz."""
  path = pathlib.Path(path)
  header_file = path.with_name(path.name + ".hea")
  if not header_file.is_file():
    raise records.RecordError(str(header_file), "header file is missing")
  try:
    header = wfdb.rdheader(str(path))
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(header_file), f"header does not parse: {e}") from e
  if header.n_sig is None or not header.fs:
    raise records.RecordError(str(header_file), "header has no signals or no rate")
  try:
    order = signal.standard_lead_order(header.sig_name or [])
  except ValueError as e:
    raise records.RecordError(str(header_file), f"not a 12-lead ECG: {e}") from e
  _check_signal_files(header, path.parent, str(header_file))
  try:
    record = wfdb.rdrecord(str(path), physical=True)
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(path), f"signal does not read: {e}") from e
  ecg = record.p_signal[:, order] * _to_millivolts(record.units, order, str(header_file))
  try:
    ecg = signal.resample(ecg, record.fs, sampling_rate)
  except ValueError as e:
    raise records.RecordError(str(header_file), str(e)) from e
  return WFDBRecord(ecg=ecg.astype(np.float32), sampling_rate=sampling_rate,
                    comments=list(record.comments or []))


def _to_millivolts(units, order: np.ndarray, path: str) -> np.ndarray:
  """[12] factors turning each lead's physical unit into millivolts."""
  factors = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
  units = [str((units or [""] * (max(order) + 1))[i]).strip().lower() for i in order]
  unknown = sorted({u for u in units if u not in factors})
  if unknown:
    raise records.RecordError(path, f"unknown signal unit(s) {unknown}")
  return np.array([factors[u] for u in units], np.float32)
