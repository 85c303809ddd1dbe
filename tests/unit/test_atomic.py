"""Outputs replaced together: a job killed at any point leaves the old set or the new."""

import json
import os

import pytest

from crema_jax import atomic


def _write(directory, version, crash_after=None, monkeypatch=None):
  """One job's outputs (two data files, then the summary) of `version`; with
  `crash_after`, the job dies after that many of the commit's renames."""
  outputs = atomic.Outputs(directory)
  atomic.write_text(outputs.path("a.csv"), f"a{version}")
  atomic.write_text(outputs.path("b.npz"), f"b{version}")
  if crash_after is not None:
    real, done = os.replace, []

    def replace(src, dst):
      final = not str(dst).endswith((atomic.PARTIAL, atomic.JOURNAL))
      if final and len(done) == crash_after:  # One of the commit's own renames.
        raise KeyboardInterrupt("killed")
      if final:
        done.append(dst)
      real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
  outputs.commit("job.json", {"version": version})


def _versions(directory):
  return {(directory / n).read_text()[1:] if n != "job.json" else
          str(json.loads((directory / n).read_text())["version"])
          for n in ("a.csv", "b.npz", "job.json")}


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_a_commit_killed_among_its_renames_is_finished_by_the_next_job(
    tmp_path, monkeypatch, crash_after):
  _write(tmp_path, 1)
  with pytest.raises(KeyboardInterrupt):
    _write(tmp_path, 2, crash_after, monkeypatch)
  monkeypatch.undo()
  assert (tmp_path / atomic.JOURNAL).is_file()
  assert atomic.recover(tmp_path)
  assert _versions(tmp_path) == {"2"}  # Rolled forward: the new set, whole.
  assert not list(tmp_path.glob(f".*{atomic.PARTIAL}"))


def test_a_job_killed_before_its_commit_leaves_the_old_outputs(tmp_path):
  _write(tmp_path, 1)
  outputs = atomic.Outputs(tmp_path)
  atomic.write_text(outputs.path("a.csv"), "a2")  # Killed here: never committed.
  assert not atomic.recover(tmp_path)
  assert _versions(tmp_path) == {"1"}
  assert not list(tmp_path.glob(f".*{atomic.PARTIAL}"))


def test_formula_cells_are_quoted():
  assert [atomic.spreadsheet_safe(c) for c in
          ("=HYPERLINK(1)", "+1", "-x", "@SUM", "ok.xml", 3)] == [
              "'=HYPERLINK(1)", "'+1", "'-x", "'@SUM", "ok.xml", 3]
