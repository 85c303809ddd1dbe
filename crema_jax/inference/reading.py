"""Someone's ECG files -> checked records, read in worker processes, in order.

  folder --reader (registry: ecg_files, dicom, wfdb, ...)--> records (checked as prepare
  checks them) --worker processes--> centred crops --> batches

Files are read in `workers` processes (at least one, never in the main process) while
the main process runs the model, so on a CPU the two overlap; results come back in file
order. A file that cannot be read is skipped and reported (`records.skip_report`),
never passed on. Someone's folder may hold hostile files, so a file may cost a worker,
never the job: a worker's address space is capped (`memory_mb`), so a file whose
reading would take more is a skip (MemoryError) rather than a machine out of memory;
a file whose reading kills its worker (a crash, the system's out-of-memory killer) is
skipped, reported, and the worker replaced. SIGTERM and SIGINT stop the workers with
the job. Names that are not UTF-8 are reported with their bytes escaped
(`records.printable`).

Recordings longer than `long_seconds` are cut into windows of the view's length
(`Windowing`), each an ECG of its own (`key#wI`, as `windows.Windowed` names them).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
from multiprocessing import connection
import pathlib
import resource
import signal
import threading
from typing import TYPE_CHECKING, Iterator, Sequence
import warnings

import ml_collections
import numpy as np

from crema_jax.data.readers import registry
from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import windows
from crema_jax.data import records

if TYPE_CHECKING:
  from crema_jax.package import preprocessing

# The address space a reading worker may take beyond what it holds once started (its
# libraries, ~1.5 GB): ample for a 12-lead ECG, or a day of a 3-lead Holter.
DEFAULT_MEMORY_MB = 4096
# Keys sent to a worker and not answered: the one it reads, the next one waiting.
_QUEUED_PER_WORKER = 2
# How often the thread feeding the workers looks whether the consumer took items.
_POLL_SECONDS = 0.05


def input_leads(config: ml_collections.ConfigDict,
                pre: preprocessing.Preprocessing) -> tuple[str, ...]:
  """The leads read from the files: `config.input_leads`, or all the checkpoint's.
  Fewer leads than the checkpoint's are placed at their positions and the others
  zeroed (as the evaluation's reduced-lead mode does), or ValueError naming any lead
  the checkpoint does not have."""
  leads = tuple(config.get("input_leads") or pre.leads)
  unknown = [lead for lead in leads if lead not in pre.leads]
  if unknown:
    raise ValueError(f"input_leads {unknown} are not among the checkpoint's leads "
                     f"{list(pre.leads)}")
  return leads


def build_source(config: ml_collections.ConfigDict,
                 pre: preprocessing.Preprocessing) -> records.Source:
  """The reader `config.input_source` over `config.input`, at the checkpoint's rate,
  reading `input_leads`."""
  data = ml_collections.ConfigDict({
      "source": config.input_source, "raw_dir": config.input, "name": "input",
      "sampling_rate": pre.sampling_rate, "min_seconds": pre.min_seconds,
      "leads": input_leads(config, pre), "lead_aliases": config.lead_aliases,
      "derive_limb_leads": config.derive_limb_leads})
  return registry.build_source(data)


@dataclasses.dataclass(frozen=True)
class Windowing:
  """Recordings longer than `long_seconds` (0: never) become windows of the view's
  length every `stride_seconds` (0: the view's length), each an ECG of its own."""
  long_seconds: float
  stride_seconds: float = 0.0

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "Windowing":
    return cls(float(config.long_seconds), float(config.window_stride_seconds))


@dataclasses.dataclass
class Item:
  """One key's outcome: `stored` [time, leads] float16 mV and its record's fields, or
  `skipped` ({"key", "path", "reason"})."""
  key: str
  stored: np.ndarray | None = None
  fields: dict | None = None
  skipped: dict | None = None
  last_of_file: bool = True  # False for all but a recording's last window.


_SOURCE, _PRE, _WINDOWING, _MEMORY_MB = None, None, None, 0


def _init_worker(source: records.Source, pre: preprocessing.Preprocessing,
                 windowing: Windowing | None = None, memory_mb: int = 0) -> None:
  global _SOURCE, _PRE, _WINDOWING, _MEMORY_MB
  _SOURCE, _PRE, _WINDOWING = source, pre, windowing or Windowing(0.0)
  _MEMORY_MB = memory_mb


def _serve(pipe: connection.Connection, source: records.Source,
           pre: preprocessing.Preprocessing, windowing: Windowing,
           memory_mb: int) -> None:
  """A reading worker's life: sends "" once ready (or why it cannot start), then
  reads the keys sent on `pipe`, one at a time, answering each with its Items, until
  the pipe closes. Ctrl-C is left to the parent, which stops the workers."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    _limit_memory(memory_mb)
    _init_worker(source, pre, windowing, memory_mb)
  except Exception as e:  # pylint: disable=broad-except
    pipe.send(f"{type(e).__name__}: {e}")
    return
  pipe.send("")
  while True:
    try:
      key = pipe.recv()
    except EOFError:
      return  # The job is over (or gone).
    items = _read_key(key)
    try:
      pipe.send(items)
    except OSError:
      return


def _limit_memory(memory_mb: int) -> None:
  """Caps this process's address space at what it holds now (its libraries) plus
  `memory_mb` (0: no cap), so that reading a file that would take more fails with
  MemoryError, one skip, instead of exhausting the machine. Where the system does not
  apply such a cap, a warning says the workers run without one."""
  if memory_mb <= 0:
    return
  try:
    with open("/proc/self/statm") as f:  # Linux: the address space in pages.
      held = int(f.read().split()[0]) * resource.getpagesize()
  except OSError:
    held = 0
  _, hard = resource.getrlimit(resource.RLIMIT_AS)
  limit = held + (memory_mb << 20)
  if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
  try:
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  except (ValueError, OSError) as e:
    warnings.warn(f"reading workers run without a memory limit: {e}")


def _read_key(key: str) -> list[Item]:
  """The Items of `key` (names `records.printable`): its record, its windows, or its
  skip."""
  name = records.printable(key)
  leads = tuple(getattr(_SOURCE, "leads", records.LEADS))
  try:
    record, stored = records.checked_record(_SOURCE, key, _PRE.max_amplitude_mv,
                                            leads)
  except Exception as e:  # pylint: disable=broad-except
    return [Item(name, skipped=_skip_report(key, e))]
  fields = {"source_file": records.printable(record.record_name or key),
            "ecg_id": record.ecg_id, "patient_id": record.patient_id,
            "age": record.age, "sex": record.sex, "start_seconds": 0.0,
            "seconds": len(stored) / record.sampling_rate}
  items = _windows(name, stored, fields, leads)
  for item in items[:-1]:
    item.last_of_file = False
  return items


def _skip_report(key: str, error: Exception) -> dict:
  """records.skip_report of `key`, saying so when its reading ran out of the
  worker's memory (a MemoryError, or an error a reader raised from one)."""
  report = records.skip_report(key, error)
  if _out_of_memory(error):
    report["reason"] = (f"reading it needs more memory than a reading worker may take "
                        f"({_MEMORY_MB} MB beyond its libraries; read_memory_mb sets "
                        f"it): {report['reason']}")
  return report


def _out_of_memory(error: BaseException | None) -> bool:
  """Whether `error` is a MemoryError or was raised from (or while handling) one."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, MemoryError):
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


def _windows(key: str, stored: np.ndarray, fields: dict, leads) -> list[Item]:
  """The record as one Item, or, longer than `long_seconds`, its windows (`key#wI`,
  windows.WINDOW_MARK), each checked as a record of its own (a flat or broken stretch
  is that window's skip). Cut here, from the record read once, rather than by
  `windows.Windowed`, which reads a recording's duration first: for the formats read
  whole (XML, EDF through ecgdatakit) that parses every file twice."""
  rate, window = _PRE.sampling_rate, _PRE.seq_len
  long_seconds = _WINDOWING.long_seconds
  if not long_seconds or len(stored) <= long_seconds * rate:
    return [Item(key, stored, fields)]
  stride = int(round((_WINDOWING.stride_seconds or _PRE.seconds) * rate))
  out = []
  for i, start in enumerate(range(0, len(stored) - window + 1, stride)):
    name = f"{key}{windows.WINDOW_MARK}{i}"
    piece = stored[start:start + window]
    try:
      records.check_signal(piece.astype(np.float32), f"{fields['source_file']} at "
                           f"{start / rate:g} s", rate, _PRE.seconds, leads=leads)
    except records.RecordError as e:
      out.append(Item(name, skipped=records.skip_report(name, e)))
      continue
    out.append(Item(name, piece, {
        **fields, "ecg_id": wfdb_folder.stable_id(f"input:{name}"),
        "start_seconds": start / rate, "seconds": window / rate}))
  return out


def read_items(source: records.Source, keys: Sequence[str],
               pre: preprocessing.Preprocessing, workers: int, *,
               windowing: Windowing | None = None, ahead: int = 128,
               memory_mb: int = DEFAULT_MEMORY_MB) -> Iterator[Item]:
  """Every key's `Item`s, in order, read in `workers` worker processes (at least one:
  a file that crashes its reader must take a worker, not the job), each capped at
  `memory_mb` of address space beyond its libraries (0: none). Up to `ahead` keys
  (at least two per worker) past the one the consumer waits for are read meanwhile,
  so that the workers read the next batches while the consumer runs the model on
  this one. A key whose reading kills its worker is skipped ("the reading worker
  died ..."), the worker replaced. SIGTERM raises SystemExit here while reading, so
  that the workers are stopped on the way out."""
  keys = list(keys)
  if not keys:
    return
  count = max(1, min(workers, len(keys)))
  with _sigterm_exits(), contextlib.closing(_Readers(
      source, keys, count, max(ahead, _QUEUED_PER_WORKER * count),
      (source, pre, windowing or Windowing(0.0), memory_mb))) as readers:
    for index in range(len(keys)):
      yield from readers.take(index)


@contextlib.contextmanager
def _sigterm_exits():
  """SIGTERM raises SystemExit (128 + 15) in the main thread meanwhile, so that the
  `finally` clauses that stop the workers run: its default action would end this
  process at once and leave them running. A handler the program set is kept."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return
  signal.signal(signal.SIGTERM, _exit_on_signal)
  try:
    yield
  finally:
    with contextlib.suppress(ValueError):  # Closed from another thread: left set.
      signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_on_signal(signum, frame):
  del frame
  raise SystemExit(128 + signum)


class _Worker:
  """A reading worker process (`_serve`) and the pipe to it.

  Attributes:
    started: whether it said it is ready.
    sent: the indices of the keys sent to it and not answered, in the order sent: it
      reads them in that order, so the first is the one it is reading.
  """

  def __init__(self, args: tuple):
    self.pipe, theirs = multiprocessing.Pipe()
    self.process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(theirs, *args), name="crema-reading", daemon=True)
    self.process.start()
    theirs.close()
    self.started = False
    self.sent: collections.deque[int] = collections.deque()

  def stop(self) -> None:
    """Ends the process (reading or not) and closes the pipe."""
    self.pipe.close()
    if self.process.is_alive():
      self.process.terminate()
    self.process.join(5)
    if self.process.is_alive():
      self.process.kill()
      self.process.join()

  def ending(self) -> str:
    """How the ended process ended: "signal 9, SIGKILL", "exit status 1"."""
    self.process.join(5)
    code = self.process.exitcode
    if code is None:
      return "closed its pipe"
    if code >= 0:
      return f"exit status {code}"
    try:
      return f"signal {-code}, {signal.Signals(-code).name}"
    except ValueError:
      return f"signal {-code}"


class _Readers:
  """Reads `keys` in `count` worker processes fed by a thread of this one, and hands
  their Items out in key order (`take`).

  Each worker is sent keys one at a time over its own pipe, at most
  _QUEUED_PER_WORKER unanswered, and answers each with that key's Items, in the order
  sent: so the key a dead worker was reading is the first it had not answered. That
  key is skipped and reported, the worker replaced, and the keys queued behind it
  sent again. The thread keeps the workers reading while the consumer runs the model,
  up to `ahead` keys past the one the consumer waits for.
  """

  def __init__(self, source: records.Source, keys: list[str], count: int, ahead: int,
               args: tuple):
    self._root = pathlib.Path(getattr(source, "root", "") or "")
    self._keys, self._ahead, self._args = keys, ahead, args
    self._todo = collections.deque(range(len(keys)))  # Not sent (again) yet.
    self._done: dict[int, list[Item]] = {}
    self._taken = 0  # Keys the consumer took.
    self._error: BaseException | None = None
    self._closing = False
    self._changed = threading.Condition()
    self._workers = []
    try:
      for _ in range(count):
        self._workers.append(_Worker(args))
    except BaseException:
      for worker in self._workers:
        worker.stop()
      raise
    self._thread = threading.Thread(target=self._feed, name="crema-reading",
                                    daemon=True)
    self._thread.start()

  def take(self, index: int) -> list[Item]:
    """The Items of key `index` once read (keys are taken in order); the error that
    stopped the reading, if one did."""
    with self._changed:
      while index not in self._done and self._error is None:
        self._changed.wait()
      if index not in self._done:
        raise self._error
      self._taken = index + 1
      return self._done.pop(index)

  def close(self) -> None:
    """Stops the thread and the workers, whether they are done or not."""
    with self._changed:
      self._closing = True
    self._thread.join()
    for worker in self._workers:
      worker.stop()

  def _feed(self) -> None:
    """The thread: sends keys, collects Items, replaces dead workers, until every
    key is answered, the reading is closed, or an error stops it (handed to
    `take`)."""
    try:
      while not self._closing and (self._todo or any(w.sent for w in self._workers)):
        self._send()
        self._collect()
      error = RuntimeError("the reading ended before this key was read")
    except BaseException as e:  # pylint: disable=broad-except
      error = e
    with self._changed:
      self._error = error  # Raised by `take` for a key without Items.
      self._changed.notify_all()

  def _send(self) -> None:
    """Sends the next keys within `ahead` of the consumer to the least busy
    workers."""
    with self._changed:
      limit = self._taken + self._ahead
    while self._todo and self._todo[0] < limit:
      worker = min(self._workers, key=lambda w: len(w.sent))
      if len(worker.sent) >= _QUEUED_PER_WORKER:
        return
      index = self._todo.popleft()
      worker.pipe.send(self._keys[index])
      worker.sent.append(index)

  def _collect(self) -> None:
    """Takes the answers the workers sent (waiting up to _POLL_SECONDS for one) and
    replaces the workers that ended."""
    pipes = {w.pipe: w for w in self._workers}
    sentinels = {w.process.sentinel: w for w in self._workers}
    for ready in connection.wait([*pipes, *sentinels], _POLL_SECONDS):
      worker = pipes.get(ready) or sentinels[ready]
      if worker in self._workers and not self._receive(worker):
        self._replace(worker)

  def _receive(self, worker: _Worker) -> bool:
    """Takes what `worker` sent; False when it has ended (its pipe closed)."""
    try:
      while worker.pipe.poll():
        message = worker.pipe.recv()
        if not worker.started:
          if message:
            raise RuntimeError(f"a reading worker failed to start: {message}")
          worker.started = True
        else:
          self._finish(worker.sent.popleft(), message)
    except (EOFError, OSError):
      return False
    return worker.process.is_alive()

  def _replace(self, worker: _Worker) -> None:
    """`worker` ended: the key it was reading is skipped as the one that killed it,
    the keys queued behind it go back to the front of the queue, and a new worker
    takes its place."""
    ending = worker.ending()
    if not worker.started:
      raise RuntimeError(f"a reading worker ended before it started ({ending})")
    if worker.sent:
      index = worker.sent.popleft()
      key = self._keys[index]
      self._finish(index, [Item(records.printable(key), skipped=records.skip_report(
          key, records.RecordError(str(self._root / key), f"the reading worker died "
                                   f"({ending}) while reading this file")))])
      self._todo.extendleft(reversed(worker.sent))
    worker.stop()
    self._workers[self._workers.index(worker)] = _Worker(self._args)

  def _finish(self, index: int, items: list[Item]) -> None:
    with self._changed:
      self._done[index] = items
      self._changed.notify_all()
