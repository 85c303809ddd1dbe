"""What every folder reader shares: its checked constructor fields, the listing of a
folder's files, the fixed format a dataset publishes its records in, and CSV tables
that fail with the file's name."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from typing import Callable, Sequence

import pandas as pd

from crema_jax.data import records
from crema_jax.data import signal


@dataclasses.dataclass(frozen=True)
class PublishedFormat:
  """The one sampling rate and length at which a dataset publishes its records (e.g.
  PTB-XL's records500/: 500 Hz, 5000 samples). A header that says otherwise describes
  another recording, or a damaged one: read as it says, a 500 Hz signal labelled
  250 Hz would become an ECG twice as long at half speed.

  Attributes:
    rate: Hz.
    samples: per lead.
    where: the records it applies to, for messages (e.g. "PTB-XL records500/").
  """

  rate: float
  samples: int
  where: str

  def check(self, path: str, rate: float, samples: int) -> None:
    """RecordError naming `path` unless `rate` (Hz) and `samples` are the published
    ones."""
    if rate != self.rate or samples != self.samples:
      raise records.RecordError(
          path, f"header says {rate:g} Hz over {samples} samples; {self.where} "
          f"is published at {self.rate:g} Hz, {self.samples} samples "
          f"({self.samples / self.rate:g} s)")


@dataclasses.dataclass
class Listing:
  """What `list_files` found under a folder.

  Attributes:
    files: the regular files (or links to them), paths relative to the root (POSIX),
      sorted as pathlib sorts paths (part by part).
    folders_not_entered: {relative path: reason} of the sub-folders not listed: a
      link to a folder listed already (a loop, or a second path to the same files),
      or one that cannot be read.
    not_files: {relative path: reason} of the other entries that are not folders:
      links to nothing, FIFOs, sockets, devices.
  """

  files: list[str]
  folders_not_entered: dict[str, str]
  not_files: dict[str, str]


def list_files(root: str | pathlib.Path) -> Listing:
  """Every file under `root`, following links to folders (an export's sub-folders are
  often links), each real folder entered once: the folders reached without a link
  first, then the linked ones, so that a link to a folder of the tree, or to one of
  its parents (a loop), is reported, not entered, and its files are listed once,
  under their own path."""
  files, not_entered, not_files = [], {}, {}
  seen = set()  # (device, inode) of the folders entered.
  walk = [(pathlib.Path(root), "")]  # Folders reached without a link (a stack).
  links = collections.deque()  # Linked folders, entered after those.
  while walk or links:
    folder, relative = walk.pop() if walk else links.popleft()
    try:
      status = os.stat(folder)
      identity = (status.st_dev, status.st_ino)
      if identity in seen:
        not_entered[relative] = (f"the folder {os.path.realpath(folder)} is listed "
                                 "already (a link making a loop, or a second path to "
                                 "the same files): not entered again")
        continue
      seen.add(identity)
      with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as e:
      not_entered[relative or "."] = f"the folder does not read: {e.strerror or e}"
      continue
    for entry in entries:
      path = f"{relative}{entry.name}"
      kind = _entry_kind(entry)
      if kind == "folder":
        (links if entry.is_symlink() else walk).append(
            (pathlib.Path(entry.path), f"{path}/"))
      elif kind == "file":
        files.append(path)
      else:
        not_files[path] = kind
  return Listing(sorted(files, key=lambda path: path.split("/")),
                 {k.rstrip("/"): v for k, v in not_entered.items()}, not_files)


def _entry_kind(entry: os.DirEntry) -> str:
  """"folder", "file" (links followed), or why the entry is neither."""
  try:
    if entry.is_dir():
      return "folder"
    if entry.is_file():
      return "file"
    if entry.is_symlink() and not os.path.exists(entry.path):
      return "a link to nothing (its target is missing)"
  except OSError as e:
    return f"does not read: {e.strerror or e}"
  return "not a regular file (a FIFO, socket or device): not read"


class FolderReader:
  """The fields every reader of a downloaded folder holds, checked once.

  Attributes:
    root: the folder (SourceError when it is not one).
    name: the dataset name written into records.
    sampling_rate: the target rate (ValueError when `native_rate`, default the
      published rate, cannot be resampled to it).
    min_seconds: shorter records are refused.
    leads: for formats that name their leads, the ones to read (standard names;
      ValueError otherwise); None for the 12-lead-only formats.
    published: the fixed rate and length of the records read, for datasets that
      publish one (`check_published`); None where rates and lengths vary.
    unlisted: {key: reason} of what `list_folder` could not list (keys of their
      own, so that they are reported skipped: `refuse_unlisted`).
  """

  def __init__(self, root: str | pathlib.Path, *, name: str, sampling_rate: int,
               min_seconds: float, kind: str = "folder", native_rate: int | None = None,
               leads: Sequence[str] | None = None,
               published: PublishedFormat | None = None):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise records.SourceError(f"{self.root}: {kind} not found")
    signal.resample_factors(native_rate or (published.rate if published else None)
                            or sampling_rate, sampling_rate)
    self.name = name
    self.sampling_rate = sampling_rate
    self.min_seconds = min_seconds
    if leads is not None:
      self.leads = records.check_leads(leads)
    self.published = published
    self.unlisted: dict[str, str] = {}

  def list_folder(self, wanted_name: Callable[[str], bool]) -> list[str]:
    """The files under `root` (`list_files`: links to folders followed), relative
    paths, sorted. Sets `unlisted`: the sub-folders that were not entered, and the
    entries that are not files whose name `wanted_name` keeps (a link to nothing
    named like a record): the reader lists them as keys, so that they are reported
    skipped, with the reason, never left out silently."""
    listing = list_files(self.root)
    self.unlisted = {**{k: v for k, v in listing.not_files.items() if wanted_name(k)},
                     **listing.folders_not_entered}
    return listing.files

  def refuse_unlisted(self, key: str) -> None:
    """RecordError with the reason when `key` is one of `unlisted`."""
    if key in self.unlisted:
      raise records.RecordError(str(self.root / key), self.unlisted[key])

  def check_published(self, path: str, rate: float, samples: int) -> None:
    """RecordError naming `path` when a record's header `rate` (Hz) or `samples`
    differ from `published` (no check without one)."""
    if self.published is not None:
      self.published.check(path, rate, samples)


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
  if "index_col" not in read_csv_kwargs and not table.index.equals(
      pd.RangeIndex(len(table))):
    # pandas took the first column as the index: every column would shift.
    raise records.SourceError(
        f"{path}: the first row has more fields than the header's "
        f"{len(table.columns)} column names: the columns do not line up")
  missing = [c for c in required if c not in table.columns]
  if missing:
    raise records.SourceError(f"{path}: column(s) {', '.join(map(repr, missing))} "
                              "missing")
  return table


def integer_ids(table: pd.DataFrame, column: str, path) -> pd.Series:
  """`table[column]` as nullable Int64 ids, blank cells <NA>.

  Raises:
    SourceError: naming `path`, the column and an example when a non-blank cell is not
      a non-negative integer that int64 holds.
  """
  values = table[column]
  numbers = pd.to_numeric(values, errors="coerce")
  blank = values.isna() | (values.astype(str).str.strip() == "")
  valid = numbers.notna() & (numbers % 1 == 0) & (numbers >= 0) & (numbers < 2**63)
  bad = values[~blank & ~valid]
  if len(bad):
    raise records.SourceError(
        f"{path}: column {column!r} has {len(bad)} value(s) that are not non-negative "
        f"integers, e.g. {str(bad.iloc[0])!r}")
  return numbers.astype("Int64")
