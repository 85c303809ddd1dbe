"""Someone's ECG files -> checked records, read in worker processes, in order.

  folder --reader (registry: ecg_files, dicom, wfdb, ...)--> records (checked as prepare
  checks them) --worker processes--> centred crops --> batches

Files are read in `workers` processes while the main process runs the model, so on a
CPU the two overlap; results come back in file order. A file that cannot be read is
skipped and reported (`records.skip_report`), never passed on. Recordings longer than
`long_seconds` are cut into windows of the view's length (`Windowing`), each an ECG of
its own (`key#wI`, as `windows.Windowed` names them).
"""

from __future__ import annotations

from concurrent import futures
import collections
import dataclasses
import multiprocessing
from typing import Iterator, Sequence

import ml_collections
import numpy as np

from crema_jax.data.readers import registry
from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import windows
from crema_jax.data import records
from crema_jax.inference import preprocessing


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


_SOURCE, _PRE, _WINDOWING = None, None, None


def _init_worker(source: records.Source, pre: preprocessing.Preprocessing,
                 windowing: Windowing | None = None) -> None:
  global _SOURCE, _PRE, _WINDOWING
  _SOURCE, _PRE, _WINDOWING = source, pre, windowing or Windowing(0.0)


def _read(keys: Sequence[str]) -> list[Item]:
  out = []
  leads = tuple(getattr(_SOURCE, "leads", records.LEADS))
  for key in keys:
    try:
      record, stored = records.checked_record(_SOURCE, key, _PRE.max_amplitude_mv,
                                              leads)
    except Exception as e:  # pylint: disable=broad-except
      out.append(Item(key, skipped=records.skip_report(key, e)))
      continue
    fields = {"source_file": record.record_name or key, "ecg_id": record.ecg_id,
              "patient_id": record.patient_id, "age": record.age, "sex": record.sex,
              "start_seconds": 0.0, "seconds": len(stored) / record.sampling_rate}
    items = _windows(key, stored, fields, leads)
    for item in items[:-1]:
      item.last_of_file = False
    out.extend(items)
  return out


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
               chunk: int = 16) -> Iterator[Item]:
  """Every key's `Item`, in order; read in `workers` processes (0: in this one),
  keeping up to `ahead` keys (at least two chunks per worker) in flight, so that the
  workers read the next batches while the consumer runs the model on this one."""
  chunks = [keys[i:i + chunk] for i in range(0, len(keys), chunk)]
  if workers <= 0 or len(chunks) <= 1:
    _init_worker(source, pre, windowing)
    try:
      for part in chunks:
        yield from _read(part)
    finally:
      _init_worker(None, None)
    return
  in_flight = max(2 * workers, -(-ahead // chunk))
  with futures.ProcessPoolExecutor(
      min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
      initializer=_init_worker, initargs=(source, pre, windowing)) as pool:
    todo = iter(chunks)
    pending = collections.deque(
        pool.submit(_read, part) for _, part in zip(range(in_flight), todo))
    while pending:
      done = pending.popleft().result()
      part = next(todo, None)
      if part is not None:
        pending.append(pool.submit(_read, part))
      yield from done
