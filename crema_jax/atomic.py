"""Output files that are either the old complete file or the new complete one.

Every writer here writes to a temporary name in the destination's folder, flushes it to
disk, and renames it over the destination (`os.replace`, atomic on POSIX within one
file system): a run killed at any point leaves the previous file or the new one, never
a truncated mixture. A job writes its summary JSON last, so a summary never describes
outputs that are not there.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import tempfile
from typing import Any, Iterator

import numpy as np

PARTIAL = ".partial"  # Temporary names: `.NAME.<random>.partial`, next to NAME.


@contextlib.contextmanager
def writing(path: str | pathlib.Path, mode: str = "wb", **kwargs) -> Iterator[Any]:
  """`with writing(path) as f:` a file object on a temporary name, renamed to `path`
  when the block ends without an exception (and removed when it raises)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
  try:
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_bytes(path: str | pathlib.Path, data: bytes) -> None:
  with writing(path) as f:
    f.write(data)


def write_text(path: str | pathlib.Path, text: str) -> None:
  with writing(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_json(path: str | pathlib.Path, value: Any) -> None:
  write_text(path, json.dumps(value, indent=1, allow_nan=True))


def savez(path: str | pathlib.Path, **arrays: np.ndarray) -> None:
  """np.savez, atomically (numpy writes to the open file, not to a name)."""
  with writing(path) as f:
    np.savez(f, **arrays)


def write_csv(path: str | pathlib.Path, header: list[str], rows) -> None:
  """A CSV of `header` and `rows`, every text cell made safe for spreadsheets
  (`spreadsheet_safe`)."""
  with writing(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow([spreadsheet_safe(c) for c in header])
    for row in rows:
      writer.writerow([spreadsheet_safe(c) for c in row])


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
  """A text cell that a spreadsheet would run as a formula (starting with = + - @,
  tab or carriage return: OWASP's CSV injection list) prefixed with a quote, as
  spreadsheets expect; numbers and other text unchanged."""
  if isinstance(cell, str) and cell.startswith(FORMULA_START):
    return "'" + cell
  return cell


def remove_partials(directory: str | pathlib.Path) -> None:
  """Removes the temporary files a killed writer left in `directory`."""
  for path in pathlib.Path(directory).glob(f".*{PARTIAL}"):
    with contextlib.suppress(FileNotFoundError):
      path.unlink()



JOURNAL = ".commit.json"


class Outputs:
  """A job's output files, replaced together: each is written complete under a
  temporary name (`path(name)`), then `commit` renames them all, the summary last.

  The renames follow a journal (`.commit.json`, the list of renames, written first):
  a run killed among them leaves the journal, and `recover` (run by the next job in
  the folder) finishes them, so the folder ends with the old outputs or the new ones.
  """

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self._staged: dict[str, pathlib.Path] = {}

  def path(self, name: str) -> pathlib.Path:
    """The temporary path to write output `name` to (complete before `commit`)."""
    if name not in self._staged:
      fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=PARTIAL, dir=self.directory)
      os.close(fd)
      self._staged[name] = pathlib.Path(tmp)
    return self._staged[name]

  def commit(self, summary_name: str, summary: dict) -> None:
    """Writes `summary` (JSON) and renames every staged output into place, it last."""
    write_json(self.path(summary_name), summary)
    renames = [(str(tmp), str(self.directory / name))
               for name, tmp in self._staged.items() if name != summary_name]
    renames.append((str(self._staged[summary_name]), str(self.directory / summary_name)))
    for tmp, _ in renames:
      with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    write_json(self.directory / JOURNAL, renames)
    _finish(self.directory, renames)
    self._staged.clear()

  def discard(self) -> None:
    for tmp in self._staged.values():
      with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    self._staged.clear()


def _finish(directory: pathlib.Path, renames: list) -> None:
  for tmp, final in renames:
    if os.path.exists(tmp):
      os.replace(tmp, final)
  with contextlib.suppress(FileNotFoundError):
    (directory / JOURNAL).unlink()


def recover(directory: str | pathlib.Path) -> bool:
  """Finishes a commit a killed job left half done in `directory` (its journal), and
  removes the partial files of uncommitted outputs; returns whether it finished one."""
  directory = pathlib.Path(directory)
  journal = directory / JOURNAL
  finished = False
  if journal.is_file():
    try:
      renames = json.loads(journal.read_text())
    except json.JSONDecodeError:  # Killed while writing the journal: nothing renamed.
      renames = []
    _finish(directory, renames)
    finished = bool(renames)
  remove_partials(directory)
  return finished
