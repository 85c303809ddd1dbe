"""What every folder reader shares: its checked constructor fields and CSV tables that
fail with the file's name."""

from __future__ import annotations

import pathlib
from typing import Sequence

import pandas as pd

from crema_jax.data import records
from crema_jax.data import signal


class FolderReader:
  """The fields every reader of a downloaded folder holds, checked once.

  Attributes:
    root: the folder (SourceError when it is not one).
    name: the dataset name written into records.
    sampling_rate: the target rate (ValueError when `native_rate` cannot be resampled
      to it).
    min_seconds: shorter records are refused.
    leads: for formats that name their leads, the ones to read (standard names;
      ValueError otherwise); None for the 12-lead-only formats.
  """

  def __init__(self, root: str | pathlib.Path, *, name: str, sampling_rate: int,
               min_seconds: float, kind: str = "folder", native_rate: int | None = None,
               leads: Sequence[str] | None = None):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise records.SourceError(f"{self.root}: {kind} not found")
    signal.resample_factors(native_rate or sampling_rate, sampling_rate)
    self.name = name
    self.sampling_rate = sampling_rate
    self.min_seconds = min_seconds
    if leads is not None:
      self.leads = records.check_leads(leads)


def read_table(path: str | pathlib.Path, required: Sequence[str] = (), *,
               missing_hint: str = "", **read_csv_kwargs) -> pd.DataFrame:
  """pandas.read_csv of a source's table; a missing file, one that does not parse or
  lacks a `required` column is a SourceError naming `path`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise records.SourceError(f"{path} not found" +
                              (f": {missing_hint}" if missing_hint else ""))
  try:
    table = pd.read_csv(path, **read_csv_kwargs)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise records.SourceError(f"{path} does not parse as CSV: {e}") from e
  missing = [c for c in required if c not in table.columns]
  if missing:
    raise records.SourceError(f"{path}: column(s) {', '.join(map(repr, missing))} "
                              "missing")
  return table
