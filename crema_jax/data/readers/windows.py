"""Long recordings (INCART's 30 minutes, Holter files) cut into fixed-length windows.

`Windowed` wraps a reader whose records can be long. Records of at most `long_seconds`
pass through whole (key unchanged); longer ones become windows of `window_seconds`
every `stride_seconds`, keyed `"{key}#w{i}"`. Every window of a recording keeps the
recording's patient id (so the patient-level contrastive loss pairs windows of one
person) and gets its own `ecg_id`. The wrapped reader must offer `duration(key)`
(seconds, from the header alone) and `read_span(key, start, stop)` (reading only that
part), so a 24-hour file is never held in memory.

A broken recording is one skip, not one per window: when the keys are listed, the
first window of each long recording is read once. If that read fails for a reason of
the recording (its header, leads, signal file, rate) rather than of the window's samples
(records.check_signal's flat, NaN or short signal, which other windows may not share),
the recording is listed as one key, its own, whose read raises that error again without
touching the files.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

from crema_jax.data.readers import wfdb_folder
from crema_jax.data import records

WINDOW_MARK = "#w"


class Windowed:
  """A `records.Source` of windows over `base`.

  Args:
    base: the reader; needs `duration(key)` and `read_span(key, start, stop)`.
    window_seconds: the window length (at least the base's `min_seconds`).
    stride_seconds: the step between window starts (default: window_seconds, no
      overlap).
    long_seconds: records longer than this are cut (default: 60 s); shorter ones are
      read whole.
  """

  def __init__(self, base, window_seconds: float, stride_seconds: float | None = None,
               long_seconds: float | None = None):
    for method in ("duration", "read_span"):
      if not callable(getattr(base, method, None)):
        raise TypeError(f"{type(base).__name__} has no {method}(): it cannot be cut "
                        "into windows")
    stride_seconds = stride_seconds or window_seconds
    long_seconds = 60.0 if long_seconds is None else long_seconds
    if window_seconds <= 0 or stride_seconds <= 0:
      raise ValueError(f"window {window_seconds} s, stride {stride_seconds} s: both must "
                       "be positive")
    min_seconds = getattr(base, "min_seconds", 0)
    if window_seconds < min_seconds:
      raise ValueError(f"window {window_seconds} s is shorter than min_seconds "
                       f"{min_seconds} s: every window would be refused")
    self.base = base
    self.name = base.name
    self.root = getattr(base, "root", "")
    self.sampling_rate = base.sampling_rate
    self.leads = getattr(base, "leads", records.LEADS)
    self.window_seconds = float(window_seconds)
    self.stride_seconds = float(stride_seconds)
    self.long_seconds = float(long_seconds)
    # {recording key: (path, reason)} of the recordings found unreadable when listing.
    self._broken: dict[str, tuple[str, str]] = {}
    self._keys = [k for key in base.keys() for k in self._expand(key)]

  def num_windows(self, seconds: float) -> int:
    """Windows in a recording of `seconds` (0 when it is shorter than one window)."""
    if seconds < self.window_seconds:
      return 0
    return int(math.floor((seconds - self.window_seconds) / self.stride_seconds
                          + 1e-9)) + 1

  def _expand(self, key: str) -> list[str]:
    try:
      seconds = self.base.duration(key)
    except records.RecordError as e:
      self._broken[key] = (e.path, e.reason)
      return [key]
    if seconds <= self.long_seconds:
      return [key]
    num_windows = self.num_windows(seconds)
    if num_windows:
      try:
        self._read_span(key, 0.0, self.window_seconds)
      except records.SignalError:
        pass  # Bad samples in this window only: the others may be fine.
      except records.RecordError as e:
        self._broken[key] = (e.path, e.reason)
        return [key]
      except Exception as e:  # pylint: disable=broad-except
        # As prepare reports a third-party reader's error: a skip, not a crash.
        self._broken[key] = (self._path(key), f"{type(e).__name__}: {e}")
        return [key]
    return [f"{key}{WINDOW_MARK}{i}" for i in range(num_windows)]

  def keys(self) -> list[str]:
    return list(self._keys)

  def _path(self, key: str) -> str:
    return str(pathlib.Path(self.root) / key)

  def _read_span(self, key: str, start: float, stop: float) -> records.Record:
    try:
      return self.base.read_span(key, start, stop)
    except ValueError as e:  # E.g. a rate that cannot be resampled to the target.
      raise records.RecordError(self._path(key), str(e)) from e

  def read(self, key: str) -> records.Record:
    base_key, index = (key.rsplit(WINDOW_MARK, 1) if WINDOW_MARK in key
                       else (key, None))
    if base_key in self._broken:
      raise records.RecordError(*self._broken[base_key])
    if index is None:
      return self.base.read(key)
    start = int(index) * self.stride_seconds
    record = self._read_span(base_key, start, start + self.window_seconds)
    return dataclasses.replace(record, ecg_id=wfdb_folder.stable_id(f"{self.name}:{key}"),
                               record_name=key)
