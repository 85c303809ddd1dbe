"""Long recordings (INCART's 30 minutes, Holter files) cut into fixed-length windows.

`Windowed` wraps a reader whose records can be long. Records of at most `long_seconds`
pass through whole (key unchanged); longer ones become windows of `window_seconds`
every `stride_seconds`, keyed `"{key}#w{i}"`. Every window of a recording keeps the
recording's patient id (so the patient-level contrastive loss pairs windows of one
person) and gets its own `ecg_id`. The wrapped reader must offer `duration(key)`
(seconds, from the header alone) and `read_span(key, start, stop)` (reading only that
part), so a 24-hour file is never held in memory.
"""

from __future__ import annotations

import dataclasses
import math

from crema_jax.data.readers import wfdb_folder
from crema_jax.data import records

WINDOW_MARK = "#w"


class Windowed:
  """A `records.Source` of windows over `base`.

  Args:
    base: the reader; needs `duration(key)` and `read_span(key, start, stop)`.
    window_seconds: the window length.
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
    self.base = base
    self.name = base.name
    self.root = getattr(base, "root", "")
    self.sampling_rate = base.sampling_rate
    self.leads = getattr(base, "leads", records.LEADS)
    self.window_seconds = float(window_seconds)
    self.stride_seconds = float(stride_seconds)
    self.long_seconds = float(long_seconds)
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
    except records.RecordError:
      return [key]  # Read whole: the read reports the problem in the manifest.
    if seconds <= self.long_seconds:
      return [key]
    return [f"{key}{WINDOW_MARK}{i}" for i in range(self.num_windows(seconds))]

  def keys(self) -> list[str]:
    return list(self._keys)

  def read(self, key: str) -> records.Record:
    if WINDOW_MARK not in key:
      return self.base.read(key)
    base_key, index = key.rsplit(WINDOW_MARK, 1)
    start = int(index) * self.stride_seconds
    record = self.base.read_span(base_key, start, start + self.window_seconds)
    return dataclasses.replace(record, ecg_id=wfdb_folder.stable_id(f"{self.name}:{key}"),
                               record_name=key)
