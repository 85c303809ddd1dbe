"""Reading one WFDB record into the standard 12-lead layout, with clear errors.

Shared by every WFDB-based reader (PTB-XL, MIMIC-IV-ECG, PhysioNet/CinC sets). Problems
become `RecordError`s naming the file: a missing or truncated signal file, a header
that does not parse, leads that do not map onto the 12 standard leads.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

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


def read_header(path: str | pathlib.Path) -> wfdb.Record:
  """The parsed header of WFDB record `path` (without extension); RecordError naming
  the `.hea` file when it is missing, does not parse, or has no signals or rate."""
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
  return header


def lead_order(header: wfdb.Record, path: str, leads: Sequence[str] = records.LEADS,
               lead_aliases: dict[str, str] | None = None) -> np.ndarray:
  """[len(leads)] column indices of `leads` in the record; RecordError when one is
  missing. `lead_aliases` renames header names first (e.g. {"MLII": "II"})."""
  aliases = {k.strip().lower(): v for k, v in (lead_aliases or {}).items()}
  names = [aliases.get(str(n).strip().lower(), n) for n in header.sig_name or []]
  try:
    return signal.standard_lead_order(names, leads)
  except ValueError as e:
    kind = "a 12-lead ECG" if tuple(leads) == records.LEADS else f"an ECG with {leads}"
    raise records.RecordError(path, f"not {kind}: {e}") from e


def standardize(p_signal: np.ndarray, header: wfdb.Record, order: np.ndarray,
                path: str, sampling_rate: float) -> np.ndarray:
  """Physical [time, channels] -> float32 [time', len(order)] mV at `sampling_rate`."""
  ecg = p_signal[:, order] * _to_millivolts(header.units, order, path)
  try:
    return signal.resample(ecg, header.fs, sampling_rate).astype(np.float32)
  except ValueError as e:
    raise records.RecordError(path, str(e)) from e


def read_record(path: str | pathlib.Path, sampling_rate: float,
                leads: Sequence[str] = records.LEADS,
                lead_aliases: dict[str, str] | None = None,
                span: tuple[float, float] | None = None) -> WFDBRecord:
  """Reads the WFDB record `path` (without extension) as `leads` (default the standard
  12) in mV, resampled to `sampling_rate` Hz.

  span: (start, stop) seconds to read only part of a long record: the samples around
  it are read at the native rate (with a margin for the resampling filter) and cut at
  the target rate, so memory stays bounded whatever the record's length.
  """
  path = pathlib.Path(path)
  header_file = str(path.with_name(path.name + ".hea"))
  header = read_header(path)
  order = lead_order(header, header_file, leads, lead_aliases)
  _check_signal_files(header, path.parent, header_file)
  if span is None:
    read_from, read_to, cut = 0, None, None
  else:
    read_from, read_to, cut = span_samples(header, span, sampling_rate, header_file)
  try:
    record = wfdb.rdrecord(str(path), physical=True, sampfrom=read_from, sampto=read_to)
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(path), f"signal does not read: {e}") from e
  ecg = standardize(record.p_signal, record, order, header_file, sampling_rate)
  if cut is not None:
    ecg = ecg[cut[0]:cut[1]]
    if len(ecg) != cut[1] - cut[0]:
      raise records.RecordError(header_file, f"span {span} s runs past the record's end")
  return WFDBRecord(ecg=ecg, sampling_rate=sampling_rate,
                    comments=list(record.comments or []))


def span_samples(header: wfdb.Record, span: tuple[float, float], sampling_rate: float,
                  path: str) -> tuple[int, int, tuple[int, int]]:
  """(native first sample, native end sample, (first, end) at the target rate relative
  to the resampled read) for the span (start, stop) seconds."""
  start, stop = span
  duration = (header.sig_len or 0) / header.fs
  if not 0 <= start < stop <= duration + 1e-9:
    raise records.RecordError(path, f"span {span} s is outside the record "
                              f"(0 to {duration:g} s)")
  up, down = signal.resample_factors(header.fs, sampling_rate)
  margin = int(header.fs)  # One second each side for the resampling filter.
  # Start on a multiple of `down`, so the read's first sample is a target-rate sample.
  read_from = max(0, int(start * header.fs) - margin) // down * down
  read_to = min(header.sig_len, int(np.ceil(stop * header.fs)) + margin)
  first = int(round(start * sampling_rate)) - read_from * up // down
  count = int(round((stop - start) * sampling_rate))
  return read_from, read_to, (first, first + count)


def _to_millivolts(units, order: np.ndarray, path: str) -> np.ndarray:
  """[12] factors turning each lead's physical unit into millivolts."""
  factors = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
  units = [str((units or [""] * (max(order) + 1))[i]).strip().lower() for i in order]
  unknown = sorted({u for u in units if u not in factors})
  if unknown:
    raise records.RecordError(path, f"unknown signal unit(s) {unknown}")
  return np.array([factors[u] for u in units], np.float32)
