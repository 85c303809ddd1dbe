"""Unit tests: fast, in memory, no files written (checked at the end of the session).

Tiny models compile in seconds and run in milliseconds, so XLA's optimisation passes
are switched off here: they would cost more than they save.
"""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_disable_most_optimizations", True)

REPO = pathlib.Path(__file__).resolve().parents[2]
_IGNORED = {".git", ".venv", "__pycache__", ".pytest_cache"}


def _tree() -> set[str]:
  files = set()
  for folder, subfolders, names in os.walk(REPO):
    subfolders[:] = [d for d in subfolders if d not in _IGNORED]
    files.update(os.path.join(folder, n) for n in names)
  return files


@pytest.fixture(scope="session", autouse=True)
def no_files_written():
  """Fails the session when a unit test wrote a file into the repository."""
  before = _tree()
  yield
  written = sorted(os.path.relpath(p, REPO) for p in _tree() - before)
  assert not written, f"unit tests wrote files: {written[:10]}"
