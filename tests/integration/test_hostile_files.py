"""Someone's folder of ECG files may hold hostile ones: each costs at most itself (a
skip, with its reason), never the job nor the machine. Header claims bounded by the
files' sizes, a memory cap per reading worker, a worker killed mid-file, SIGTERM and
Ctrl-C, links to folders, and names that are not UTF-8."""

import contextlib
import json
import multiprocessing
import os
import re
import pathlib
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import wfdb

import ecg_fixtures  # In tests/integration/, the test's folder.

from crema_jax.data.readers import ecg_files
from crema_jax.data.readers import wfdb_folder
from crema_jax.data import records
from crema_jax.inference import reading
from crema_jax.package import preprocessing

REPO = pathlib.Path(__file__).resolve().parents[2]
RATE, SECONDS = 500, 10
PRE = preprocessing.Preprocessing(
    sampling_rate=RATE, leads=records.LEADS, seq_len=RATE * SECONDS,
    normalize="per_lead", max_amplitude_mv=30.0, min_seconds=5.0)
CAFE = os.fsdecode(b"caf\xe9.xml")  # A Latin-1 file name: not UTF-8.
CLAIMED = 20_000_000  # Samples a hostile header claims: 12 leads of them are ~2 GB.


def _wave(seed: int = 0) -> np.ndarray:
  """[time, 12] mV: a different sum of sines per lead."""
  rng = np.random.default_rng(seed)
  t = np.arange(RATE * SECONDS)[:, None] / RATE
  return 0.5 * np.sin(2 * np.pi * rng.uniform(1, 8, 12) * t + rng.uniform(0, 6, 12))


def _write_wfdb(folder: pathlib.Path, name: str, seed: int = 0) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  wfdb.wrsamp(name, fs=RATE, units=["mV"] * 12, sig_name=list(records.LEADS),
              p_signal=_wave(seed), fmt=["16"] * 12, write_dir=str(folder))


def _header(name: str, samples: int, signal_file: str, fmt: str = "16") -> str:
  """A 12-lead WFDB header claiming `samples` per lead in `signal_file`."""
  return "".join([f"{name} 12 {RATE} {samples}\n"] + [
      f"{signal_file} {fmt} 200/mV 16 0 0 0 0 {lead}\n" for lead in records.LEADS])


def _read(source, keys, workers=1, **kwargs) -> dict[str, reading.Item]:
  """{key: Item} of read_items, checking they come in the keys' order and that the
  workers are gone once it is done."""
  items = list(reading.read_items(source, keys, PRE, workers, **kwargs))
  assert [item.key for item in items] == [records.printable(k) for k in keys]
  assert not [p for p in multiprocessing.active_children() if p.name == "crema-reading"]
  return {item.key: item for item in items}


def test_wfdb_claims_must_be_backed_by_the_files(tmp_path):
  """A few hundred bytes of header claiming 20,000,000 samples (of null signals, in a
  missing or short signal file, in a null segment) are refused by name before
  ecgdatakit allocates them (the 1 GB cap turns a regression into a MemoryError, not a
  machine out of memory). A file whose name is not UTF-8 is read, its key escaped."""
  root = tmp_path / "ecgs"
  root.mkdir()
  ecg_fixtures.write_hl7_aecg(root / CAFE, _wave(), RATE, records.LEADS, "P-1")
  null = _header("null", CLAIMED, "~", fmt="0")
  assert len(null) < 500
  (root / "null.hea").write_text(null)
  (root / "gone.hea").write_text(_header("gone", CLAIMED, "gone.dat"))
  (root / "short.hea").write_text(_header("short", CLAIMED, "short.dat"))
  (root / "short.dat").write_bytes(bytes(1000))
  _write_wfdb(root, "part")  # 5000 samples.
  (root / "gap.hea").write_text(f"gap/2 12 {RATE} {CLAIMED + 5000}\npart 5000\n"
                                f"~ {CLAIMED}\n")
  source = ecg_files.ECGFiles(root)
  keys = [CAFE, "gap.hea", "gone.hea", "null.hea", "short.hea"]
  got = _read(source, keys, memory_mb=1024)
  expected = {
      "gap.hea": "null segments (~: stored in no file) claim 20000000 samples, more "
                 "than the 5000",
      "gone.hea": f"signal file {root / 'gone.dat'} is missing: the header claims "
                  "20000000 samples",
      "null.hea": "claims 20000000 samples for each of 12 null signal(s) (format 0",
      "short.hea": "holds 1000 bytes; short.hea claims 20000000 samples of 12 "
                   "signal(s) in it: 480000000 bytes"}
  for key, reason in expected.items():
    assert reason in got[key].skipped["reason"], got[key].skipped
  cafe = got["caf\\xe9.xml"]
  assert cafe.skipped is None and cafe.stored.shape == (RATE * SECONDS, 12)
  assert cafe.fields["source_file"] == "caf\\xe9.xml"
  json.dumps([cafe.key, cafe.fields["source_file"]], ensure_ascii=False).encode()


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
  ecg_fixtures.write_hl7_aecg(tmp_path / CAFE, _wave(), RATE, records.LEADS, "P-1")
  source = ecg_files.ECGFiles(tmp_path, sampling_rate=RATE)
  assert source.keys() == [CAFE]
  record = source.read(CAFE)
  assert record.ecg.shape == (RATE * SECONDS, 12)
  assert record.ecg_id == wfdb_folder.stable_id("ecg_files:caf\\xe9.xml")
  report = records.skip_report(CAFE, records.RecordError(str(tmp_path / CAFE), "x"))
  assert report["key"] == "caf\\xe9.xml" and report["path"].endswith("caf\\xe9.xml")
  json.dumps(report, ensure_ascii=False).encode()  # Writable as UTF-8.


def test_a_file_that_needs_more_memory_than_a_worker_may_take_is_one_skip(tmp_path):
  """12 leads of 3,000,000 samples (a sparse 72 MB file) read as float64 need more
  than a 200 MB cap: that file is skipped, saying so, and the next one is read."""
  _write_wfdb(tmp_path, "a")
  _write_wfdb(tmp_path, "z", seed=1)
  (tmp_path / "big.hea").write_text(_header("big", 3_000_000, "big.dat"))
  with open(tmp_path / "big.dat", "wb") as f:
    f.truncate(12 * 3_000_000 * 2)
  got = _read(wfdb_folder.WFDBFolder(tmp_path), ["a", "big", "z"], memory_mb=200)
  assert got["a"].skipped is None and got["z"].skipped is None
  assert got["big"].skipped["reason"].startswith(
      "reading it needs more memory than a reading worker may take (200 MB"), (
          got["big"].skipped)
  assert "MemoryError" in got["big"].skipped["reason"]


def _parent(pid: str) -> int:
  with open(f"/proc/{pid}/stat") as f:
    return int(f.read().rsplit(")", 1)[1].split()[1])


def _reader_of(fifo: pathlib.Path) -> int | None:
  """The pid of this process's child that has `fifo` open, if one has."""
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      fds = os.listdir(f"/proc/{pid}/fd")
      if (any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(fifo) for fd in fds)
          and _parent(pid) == os.getpid()):
        return int(pid)
    except OSError:  # Gone, or not ours to look at.
      continue
  return None


@contextlib.contextmanager
def _killing_the_reader_of(fifo: pathlib.Path):
  """Meanwhile a thread waits for a child process to open `fifo` (an open that waits
  for a writer), SIGKILLs it and adds its pid to the list yielded. It then closes its
  end, so that an opener it did not find (one in this process) reads the FIFO's end
  and the test fails rather than hangs."""
  killed, stop = [], threading.Event()

  def kill():
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
      try:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
      except OSError:  # ENXIO: nobody opens it yet.
        time.sleep(0.02)
        continue
      try:
        found = time.monotonic() + 5
        while time.monotonic() < found and not killed:
          pid = _reader_of(fifo)
          if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
          time.sleep(0.02)
      finally:
        os.close(writer)
      return

  thread = threading.Thread(target=kill, daemon=True)
  thread.start()
  try:
    yield killed
  finally:
    stop.set()
    thread.join()


@pytest.mark.parametrize("workers, keys", [
    (0, ["r0", "slow", "r1"]),  # One chunk's worth, no workers asked: still one.
    (2, ["r0", "r1", "slow", "r2", "r3", "r4", "r5"]),
], ids=["no-workers-asked", "two-workers"])
def test_a_worker_killed_mid_file_costs_that_file_only(tmp_path, workers, keys):
  """`slow.hea` is a FIFO: the worker reading it waits in open() until the test kills
  it. Only that file is skipped, named, and every other one is read, in order, the
  ones queued behind it by the worker that replaces the dead one."""
  for i, key in enumerate(k for k in keys if k != "slow"):
    _write_wfdb(tmp_path, key, seed=i)
  os.mkfifo(tmp_path / "slow.hea")
  source = wfdb_folder.WFDBFolder(tmp_path)
  with _killing_the_reader_of(tmp_path / "slow.hea") as killed:
    got = _read(source, keys, workers)
  assert len(killed) == 1
  assert got["slow"].skipped == {
      "key": "slow", "path": str(tmp_path / "slow"),
      "reason": "the reading worker died (signal 9, SIGKILL) while reading this file"}
  for key in keys:
    if key != "slow":
      assert got[key].skipped is None and got[key].stored.shape == (RATE * SECONDS, 12)


JOB = """
import multiprocessing
import sys

from crema_jax.data.readers import wfdb_folder
from crema_jax.inference import reading
from crema_jax.package import preprocessing


def main(root):
  pre = preprocessing.Preprocessing(
      sampling_rate=500, leads=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2",
                                "V3", "V4", "V5", "V6"),
      seq_len=5000, normalize="per_lead", max_amplitude_mv=30.0, min_seconds=5.0)
  items = reading.read_items(wfdb_folder.WFDBFolder(root), ["r0", "slow"], pre, 1)
  try:
    next(items)
    print(*[p.pid for p in multiprocessing.active_children()], flush=True)
    next(items)  # Waits for the FIFO forever.
  except KeyboardInterrupt:
    sys.exit(130)


if __name__ == "__main__":
  main(sys.argv[1])
"""


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def _kill_leftover(pid: int) -> None:
  """SIGKILLs `pid` if it is still a multiprocessing worker (not a reused pid)."""
  with contextlib.suppress(OSError):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      if b"spawn_main" in f.read():
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_job_stops_its_workers(tmp_path, how):
  """A job told to stop while its worker waits on a FIFO: the worker ends with it
  (no orphan). A worker ignores Ctrl-C (SIGINT, which a terminal sends to the whole
  process group): the job stops it, so it prints no traceback of its own."""
  _write_wfdb(tmp_path, "r0")
  os.mkfifo(tmp_path / "slow.hea")
  (tmp_path / "job.py").write_text(textwrap.dedent(JOB))
  with open(tmp_path / "stderr.txt", "w") as stderr:
    job = subprocess.Popen(
        [sys.executable, str(tmp_path / "job.py"), str(tmp_path)], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=stderr, text=True, start_new_session=True)
  workers = []
  try:
    if select.select([job.stdout], [], [], 60)[0]:
      workers = [int(pid) for pid in job.stdout.readline().split()]
    assert workers, "the job printed no workers"
    if how == "SIGTERM":
      job.send_signal(signal.SIGTERM)
    else:
      os.kill(workers[0], signal.SIGINT)
      time.sleep(0.5)
      assert _alive(workers[0]), "a worker stopped by Ctrl-C"
      os.killpg(job.pid, signal.SIGINT)
    job.wait(timeout=30)
    errors = (tmp_path / "stderr.txt").read_text()
    assert job.returncode == (143 if how == "SIGTERM" else 130), errors
    assert "Traceback" not in errors, errors
    deadline = time.monotonic() + 5
    while any(map(_alive, workers)) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)], "workers left running"
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    job.stdout.close()
    for pid in workers:
      _kill_leftover(pid)


class TooSlow(Exception):
  """Not an OSError (TimeoutError is one): a listing would take it for a folder that
  does not read."""


@contextlib.contextmanager
def _within(seconds: float):
  """TooSlow when the block runs longer (a listing that follows a loop would run for
  ever, or nearly: 40 links deep, each level branching)."""
  def timeout(signum, frame):
    del signum, frame
    raise TooSlow(f"still running after {seconds} s")

  previous = signal.signal(signal.SIGALRM, timeout)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_linked_folders_are_read_and_loops_reported(tmp_path):
  """A link to a folder outside is followed; a link back into the tree (a loop, or a
  second path to a folder) and a link to nothing are keys whose read says why:
  reported skipped, never left out silently."""
  root, outside = tmp_path / "ecgs", tmp_path / "elsewhere"
  (root / "a").mkdir(parents=True)
  outside.mkdir()
  ecg_fixtures.write_hl7_aecg(root / "a" / "ecg.xml", _wave(), RATE, records.LEADS,
                              "P-1")
  ecg_fixtures.write_hl7_aecg(outside / "ecg.xml", _wave(1), RATE, records.LEADS, "P-2")
  _write_wfdb(root / "a", "r0")
  _write_wfdb(outside, "r1")
  (root / "linked").symlink_to(outside)
  (root / "a" / "loop").symlink_to(root)
  (root / "again").symlink_to(root / "a")
  (root / "gone.xml").symlink_to(tmp_path / "nothing.xml")
  with _within(10):
    source = ecg_files.ECGFiles(root, sampling_rate=RATE)
    wfdb_source = wfdb_folder.WFDBFolder(root, sampling_rate=RATE)
  assert source.keys() == ["a/ecg.xml", "a/loop", "a/r0.hea", "again", "gone.xml",
                           "linked/ecg.xml", "linked/r1.hea"]
  assert source.read("linked/ecg.xml").ecg.shape == (RATE * SECONDS, 12)
  for key, reason in [("a/loop", f"the folder {root} is listed already"),
                      ("again", f"the folder {root / 'a'} is listed already"),
                      ("gone.xml", "a link to nothing")]:
    with pytest.raises(records.RecordError, match=re.escape(reason)):
      source.read(key)
  assert wfdb_source.keys() == ["a/loop", "a/r0", "again", "linked/r1"]
  assert wfdb_source.read("linked/r1").ecg.shape == (RATE * SECONDS, 12)
  with pytest.raises(records.RecordError, match="listed already"):
    wfdb_source.read("a/loop")
